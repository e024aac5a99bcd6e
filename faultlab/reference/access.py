"""Reference models of the single accesses and the chunked kernel copies.

get_user/put_user: 0, or -EFAULT and a zeroed value. copy_{from,to}_kernel_nofault
(mm/maccess.c): 0 or -EFAULT, in chunks of 8/4/2/1 bytes. futex_atomic_add:
the old value, or -EFAULT. Each of these is exact: one outcome, one set of
registers, one memory image (up to a straddling store, see RefMemory.alt).
"""
from __future__ import annotations

from typing import Callable

from faultlab.reference.model import EFAULT, AccessFault, Expected, RefCase, RefMemory, neg, simulate
from faultlab.reference.policy import Access

def get_user(size: int) -> Callable[[RefCase], Expected]:
    def model(case: RefCase) -> Expected:
        (uaddr,) = case.args
        mem = RefMemory(case)

        def body() -> dict[str, int]:
            try:
                value = int.from_bytes(mem.read(uaddr, size, Access.FIXUP), "little")
            except AccessFault:
                return {"x0": neg(EFAULT), "x1": 0}
            return {"x0": 0, "x1": value}

        return simulate(mem, body)

    return model


def put_user(size: int) -> Callable[[RefCase], Expected]:
    def model(case: RefCase) -> Expected:
        value, uaddr = case.args
        mem = RefMemory(case)

        def body() -> dict[str, int]:
            try:
                mem.write(uaddr, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"), Access.FIXUP)
            except AccessFault:
                return {"x0": neg(EFAULT)}
            return {"x0": 0}

        return simulate(mem, body)

    return model


def _nofault_chunks(n: int) -> list[tuple[int, int]]:
    """mm/maccess.c: 8-byte chunks while 8 or more remain, then one each of 4, 2, 1 as needed."""
    chunks, pos = [], 0
    while n - pos >= 8:
        chunks.append((pos, 8))
        pos += 8
    for size in (4, 2, 1):
        if n - pos >= size:
            chunks.append((pos, size))
            pos += size
    return chunks


def _clear_prefix(mem: RefMemory, dst: int, src: int, n: int, chunks: list[tuple[int, int]]) -> int:
    """Bytes of whole leading chunks that touch no guest page on either side (0 when the buffers overlap:
    then a chunk may read what an earlier one wrote, and only the chunk loop is exact)."""
    if not n or not (dst + n <= src or src + n <= dst):
        return 0
    firsts = [g - base for g, base in ((mem.first_guest_byte(src, n), src), (mem.first_guest_byte(dst, n), dst)) if g is not None]
    limit = min(firsts, default=n)
    done = 0
    for pos, size in chunks:
        if pos + size > limit:
            break
        done = pos + size
    return done


def _nofault(case: RefCase, *, bad_is_src: bool) -> Expected:
    dst, src, n = case.args
    mem = RefMemory(case)

    read_as, write_as = (Access.FIXUP, Access.PLAIN) if bad_is_src else (Access.PLAIN, Access.FIXUP)

    def body() -> dict[str, int]:
        chunks = _nofault_chunks(n)
        i = 0
        while i < len(chunks):
            at = chunks[i][0]
            done = _clear_prefix(mem, dst + at, src + at, n - at, [(pos - at, size) for pos, size in chunks[i:]])
            if done:
                # The chunks before the next one that reaches a guest page only copy: one step.
                mem.write(dst + at, mem.read(src + at, done, read_as), write_as)
                while i < len(chunks) and chunks[i][0] < at + done:
                    i += 1
                continue
            pos, size = chunks[i]
            try:
                data = mem.read(src + pos, size, read_as)
                mem.write(dst + pos, data, write_as)
            except AccessFault:
                return {"x0": neg(EFAULT)}
            i += 1
        return {"x0": 0}

    return simulate(mem, body)


def copy_from_kernel_nofault(case: RefCase) -> Expected:
    return _nofault(case, bad_is_src=True)


def copy_to_kernel_nofault(case: RefCase) -> Expected:
    return _nofault(case, bad_is_src=False)


def futex_atomic_add(case: RefCase) -> Expected:
    """*uaddr += inc atomically; x0 = 0 or -EFAULT, x1 = the old value (0 after a fault)."""
    uaddr, inc = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        try:
            old = int.from_bytes(mem.read(uaddr, 4, Access.FIXUP), "little")
            mem.write(uaddr, ((old + inc) & 0xFFFF_FFFF).to_bytes(4, "little"), Access.FIXUP)
        except AccessFault:
            return {"x0": neg(EFAULT), "x1": 0}
        return {"x0": 0, "x1": old}

    return simulate(mem, body)

