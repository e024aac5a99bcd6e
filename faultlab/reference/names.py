"""Reference models of load_unaligned_zeropad and its name-hashing users (fs/namei.c, fs/dcache.c).

load_unaligned_zeropad (arm64 extable.c): the bytes before the fault,
then zeros; a fault on the first byte's aligned word is a fault in the
fault handler. full_name_hash, hashlen_string and dentry_name_cmp read
whole words through it, so their access pattern is part of the contract
and is modelled; the hash itself is computed here from fs/namei.c.
"""
from __future__ import annotations

from faultlab.reference.model import MASK64, Expected, RefCase, RefMemory, simulate
from faultlab.reference.policy import Access
from faultlab.reference.strings import first_zero

GOLDEN_RATIO_64 = 0x61C8864680B583EB  # include/linux/hash.h


def _rol64(v: int, s: int) -> int:
    return ((v << s) | (v >> (64 - s))) & MASK64


def hash_mix(x: int, y: int, a: int) -> tuple[int, int]:
    """fs/namei.c HASH_MIX, 64-bit."""
    x ^= a
    y ^= x
    x = _rol64(x, 12)
    x = (x + y) & MASK64
    y = _rol64(y, 45)
    y = (y * 9) & MASK64
    return x, y


def fold_hash(x: int, y: int) -> int:
    y ^= (x * GOLDEN_RATIO_64) & MASK64
    y = (y * GOLDEN_RATIO_64) & MASK64
    return y >> 32


def name_hash(salt: int, name: bytes) -> int:
    """full_name_hash of a name held in memory that reads as it is: whole words, then the last part."""
    x, y = 0, salt & MASK64
    pos = 0
    while len(name) - pos >= 8:
        x, y = hash_mix(x, y, int.from_bytes(name[pos : pos + 8], "little"))
        pos += 8
    if pos < len(name):
        x ^= int.from_bytes(name[pos:], "little")
    return fold_hash(x, y)


def load_unaligned_zeropad(case: RefCase) -> Expected:
    (addr,) = case.args
    mem = RefMemory(case)
    return simulate(mem, lambda: {"x0": mem.load_zeropad(addr)})


def full_name_hash(case: RefCase) -> Expected:
    salt, name, length = case.args
    length &= 0xFFFF_FFFF
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        seen = bytearray()
        pos = 0
        while length - pos > 0:
            word = mem.load_zeropad(name + pos).to_bytes(8, "little")
            take = min(8, length - pos)
            seen += word[:take]
            pos += take
        return {"x0": name_hash(salt, bytes(seen))}

    return simulate(mem, body)


def hashlen_string(case: RefCase) -> Expected:
    salt, name = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        seen = bytearray()
        while True:
            word = mem.load_zeropad(name + len(seen)).to_bytes(8, "little")
            z = first_zero(word)
            if z is not None:
                seen += word[:z]
                return {"x0": (len(seen) << 32) | name_hash(salt, bytes(seen))}
            seen += word

    return simulate(mem, body)


def dentry_name_cmp(case: RefCase) -> Expected:
    """0 if cs[0..tcount) == ct[0..tcount) (ct as load_unaligned_zeropad sees it), 1 otherwise."""
    cs, ct, tcount = case.args
    tcount &= 0xFFFF_FFFF
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        pos = 0
        while True:
            a = mem.read(cs + pos, 8, Access.PLAIN)
            b = mem.load_zeropad(ct + pos).to_bytes(8, "little")
            left = tcount - pos
            if left < 8:
                return {"x0": int(a[:left] != b[:left])}
            if a != b:
                return {"x0": 1}
            pos += 8
            if pos == tcount:
                return {"x0": 0}

    return simulate(mem, body)

