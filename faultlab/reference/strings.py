"""Reference models of the string routines: strncpy_from_user, strnlen_user and strscpy.

lib/strncpy_from_user.c, lib/strnlen_user.c, lib/string.c: a word at a
time while whole words remain, so the access pattern is part of the
contract. A user word that faults is retried byte by byte (strncpy) or
ends the count (strnlen); strscpy's word loads go through
load_unaligned_zeropad, its byte tail does not.
"""
from __future__ import annotations

from faultlab.reference.model import E2BIG, EFAULT, AccessFault, Expected, RefCase, RefMemory, neg, simulate
from faultlab.reference.policy import Access


def first_zero(word: bytes) -> int | None:
    """The index of the first NUL in `word`, or None."""
    i = word.find(0)
    return None if i < 0 else i


def _store_word(mem: RefMemory, va: int, word: bytes) -> int | None:
    """Store one word of a string copy, the word holding the NUL zero-padded after it; the NUL's index or None."""
    z = first_zero(word)
    mem.write(va, word if z is None else word[:z] + bytes(8 - z), Access.PLAIN)
    return z


def strncpy_from_user(case: RefCase) -> Expected:
    """Length if the NUL is within count, count if not, -EFAULT if a needed byte faulted.

    Words while 8 or more bytes remain; a word that faults switches to one
    byte at a time from the same position for the rest. The word that holds
    the NUL is stored with zeros after it.
    """
    dst, src, count = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        res = 0
        while count - res >= 8:
            try:
                word = mem.read(src + res, 8, Access.FIXUP)
            except AccessFault:
                break
            z = _store_word(mem, dst + res, word)
            if z is not None:
                return {"x0": res + z}
            res += 8
        while res < count:
            try:
                c = mem.read(src + res, 1, Access.FIXUP)
            except AccessFault:
                return {"x0": neg(EFAULT)}
            mem.write(dst + res, c, Access.PLAIN)
            if c == b"\0":
                return {"x0": res}
            res += 1
        return {"x0": res}

    return simulate(mem, body)


def strnlen_user(case: RefCase) -> Expected:
    """strlen + 1 if the NUL is in the first count bytes, count + 1 if not, 0 on a fault or count <= 0.

    Aligned words from src & ~7 up to the word holding src[count - 1] or the NUL.
    """
    src, count = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        if count <= 0 or count >> 63:
            return {"x0": 0}
        base = src & ~7
        align = src - base
        word_va = base
        while True:
            try:
                word = bytearray(mem.read(word_va, 8, Access.FIXUP))
            except AccessFault:
                return {"x0": 0}
            if word_va == base:
                word[:align] = b"\xff" * align
            z = first_zero(bytes(word))
            if z is not None:
                length = word_va - src + z
                return {"x0": length + 1 if length < count else count + 1}
            word_va += 8
            if word_va >= src + count:
                return {"x0": count + 1}

    return simulate(mem, body)


def strscpy(case: RefCase) -> Expected:
    """Length copied, or -E2BIG (count 0, or no NUL in the first count bytes: dst gets count-1 bytes and a NUL)."""
    dst, src, count = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        if count == 0:
            return {"x0": neg(E2BIG)}
        res = 0
        while count - res >= 8:
            z = _store_word(mem, dst + res, mem.load_zeropad(src + res).to_bytes(8, "little"))
            if z is not None:
                return {"x0": res + z}
            res += 8
        while res < count:
            c = mem.read(src + res, 1, Access.PLAIN)
            mem.write(dst + res, c, Access.PLAIN)
            if c == b"\0":
                return {"x0": res}
            res += 1
        mem.write(dst + count - 1, b"\0", Access.PLAIN)
        return {"x0": neg(E2BIG)}

    return simulate(mem, body)
