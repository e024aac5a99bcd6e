"""Physical frames and the stage-1 translation tables of the EL1&0 regime.

Unicorn's memory holds *physical* frames only; every virtual address the guest
uses is translated by `Stage1` (and then checked by the stage-2 callback) in the
machine's TLB-fill hook. This is what makes aliases real: several VAs name one
frame, so a write through one is seen through all of them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator

from abi.arch import MASK64 as VA_MASK
from abi.arch import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE


def is_kernel_va(va: int) -> bool:
    """TTBR1 (kernel) half of the address space: the top bit of a 64-bit VA (48-bit VAs, TBI off)."""
    return bool(va >> 63)


class AccessType(enum.Enum):
    """The three kinds of access a translation is asked for."""

    READ = "read"
    WRITE = "write"
    EXEC = "exec"


@dataclass(frozen=True)
class Perms:
    """Stage-1 permissions of one page, in the terms of the arm64 descriptor (AP, UXN, PXN)."""

    read: bool = True
    write: bool = True
    exec: bool = False
    user: bool = False  # AP[1]: EL0 may access; PAN then denies EL1 data accesses

    @classmethod
    def parse(cls, text: str) -> "Perms":
        """'rwxu' style: any subset of r, w, x, u ('-' ignored)."""
        bad = set(text) - set("rwxu-")
        if bad:
            raise ValueError(f"bad permission letters {''.join(sorted(bad))!r} in {text!r} (use r, w, x, u)")
        return cls(read="r" in text, write="w" in text, exec="x" in text, user="u" in text)

    def __str__(self) -> str:
        return "".join(c if on else "-" for c, on in zip("rwxu", (self.read, self.write, self.exec, self.user)))


KERNEL_RW = Perms(read=True, write=True, exec=False, user=False)
KERNEL_RX = Perms(read=True, write=False, exec=True, user=False)
USER_RW = Perms(read=True, write=True, exec=False, user=True)
USER_RX = Perms(read=True, write=False, exec=True, user=True)


@dataclass(frozen=True)
class Pte:
    """A valid last-level stage-1 entry."""

    pfn: int
    perms: Perms


@dataclass(frozen=True)
class WalkFault:
    """Why a translation stage refused: a translation fault (no entry) or a permission fault, with its level."""

    kind: str  # "translation" | "permission" | "access-flag" | "address-size" | "alignment" (level unused)
    level: int


class PhysicalMemory:
    """A contiguous physical range of 4 KiB frames, handed out by number (pfn).

    The range is mapped into Unicorn once (Unicorn allocates host pages lazily), so
    frames cost nothing until written. Frame allocation is a bump allocator (frames
    are never freed): the addresses a test sees are deterministic.
    """

    def __init__(self, uc, base: int, size: int) -> None:
        if base % PAGE_SIZE or size % PAGE_SIZE or size <= 0:
            raise ValueError("physical memory base and size must be page aligned")
        self._uc = uc
        self.base = base
        self.size = size
        uc.mem_map(base, size)
        self._next = base >> PAGE_SHIFT

    @property
    def first_pfn(self) -> int:
        return self.base >> PAGE_SHIFT

    @property
    def nr_frames(self) -> int:
        return self.size >> PAGE_SHIFT

    def alloc(self, nr: int = 1) -> int:
        """Allocate `nr` physically contiguous zeroed frames; returns the first pfn."""
        pfn = self._next
        if (pfn + nr) << PAGE_SHIFT > self.base + self.size:
            raise MemoryError(f"out of physical memory ({self.size >> 20} MiB): raise Machine(phys_size=...)")
        self._next += nr
        return pfn

    def read(self, pa: int, size: int) -> bytes:
        return bytes(self._uc.mem_read(pa, size))

    def write(self, pa: int, data: bytes) -> None:
        self._uc.mem_write(pa, bytes(data))

    def zero(self, pfn: int) -> None:
        self._uc.mem_write(pfn << PAGE_SHIFT, bytes(PAGE_SIZE))


PA_BITS = 48  # ID_AA64MMFR0_EL1.PARange of the modelled CPU
MMU_OFF_PERMS = Perms(read=True, write=True, exec=True, user=False)


# Span covered by one entry at each level of a 4 KiB-granule, 4-level table.
_LEVEL_SHIFT = {0: 39, 1: 30, 2: 21, 3: 12}


@dataclass
class Stage1:
    """The EL1&0 stage-1 tables as a map from page VA to `Pte`.

    Both halves live here: TTBR0 (user, low VAs) and TTBR1 (kernel, high VAs).
    The level of a translation fault is the first level whose entry would be
    invalid, derived from which table ranges hold any mapping at all, so an
    unmapped page next to mapped ones faults at level 3, as on hardware where
    its last-level table exists.
    """

    ptes: dict[int, Pte] = field(default_factory=dict)
    _tables: dict[int, dict[int, int]] = field(default_factory=lambda: {0: {}, 1: {}, 2: {}})
    # SCTLR_EL1.M = 0 (emu/sctlr.py): no walk; VA = PA below 2^48 (PARange), every access allowed.
    disabled: bool = False

    def map(self, va: int, pfn: int, perms: Perms) -> None:
        va = _check_page(va)
        if va in self.ptes:
            self.unmap(va)
        self.ptes[va] = Pte(pfn, perms)
        for level, counts in self._tables.items():
            key = va >> _LEVEL_SHIFT[level]
            counts[key] = counts.get(key, 0) + 1

    def unmap(self, va: int) -> None:
        va = _check_page(va)
        if self.ptes.pop(va, None) is None:
            return
        for level, counts in self._tables.items():
            key = va >> _LEVEL_SHIFT[level]
            counts[key] -= 1
            if not counts[key]:
                del counts[key]

    def lookup(self, va: int) -> Pte | None:
        if self.disabled:
            return None if va & VA_MASK >= 1 << PA_BITS else Pte((va & VA_MASK) >> PAGE_SHIFT, MMU_OFF_PERMS)
        return self.ptes.get(va & PAGE_MASK & VA_MASK)

    def translation_fault_level(self, va: int) -> int:
        """Level of the first invalid descriptor on the walk for `va`."""
        va &= VA_MASK
        for level in (0, 1, 2):
            if (va >> _LEVEL_SHIFT[level]) not in self._tables[level]:
                return level
        return 3

    def check(self, va: int, access: AccessType, *, el0: bool, pan: bool) -> Pte | WalkFault:
        """Translate `va` for an access made with EL0 or EL1 privilege (PAN applies to EL1 data accesses)."""
        pte = self.lookup(va)
        if self.disabled:
            # AArch64.S1DisabledOutput: an address above the PA size is an Address size fault, level 0.
            return WalkFault("address-size", 0) if pte is None else pte
        if pte is None:
            return WalkFault("translation", self.translation_fault_level(va))
        return pte if access in allowed_accesses(pte.perms, el0=el0, pan=pan) else WalkFault("permission", 3)

    def aliases(self, pfn: int) -> Iterator[int]:
        """Every VA that maps frame `pfn`."""
        return (va for va, pte in self.ptes.items() if pte.pfn == pfn)


def allowed_accesses(p: Perms, *, el0: bool, pan: bool) -> tuple[AccessType, ...]:
    """The accesses a regime may make through a page with permissions `p`."""
    if el0:
        if not p.user:
            return ()
        return tuple(a for a, ok in ((AccessType.READ, p.read), (AccessType.WRITE, p.write), (AccessType.EXEC, p.exec)) if ok)
    data_ok = not (pan and p.user)
    # arm64 Linux maps user pages PXN: the kernel never executes them.
    return tuple(
        a
        for a, ok in ((AccessType.READ, p.read and data_ok), (AccessType.WRITE, p.write and data_ok), (AccessType.EXEC, p.exec and not p.user))
        if ok
    )


def _check_page(va: int) -> int:
    va &= VA_MASK
    if va & (PAGE_SIZE - 1):
        raise ValueError(f"VA {va:#x} is not page aligned")
    return va
