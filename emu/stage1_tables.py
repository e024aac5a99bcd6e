"""Stage-1 translation tables in physical frames, and the walk that reads them through stage 2.

Linux's geometry (arch/arm64, 4 KiB pages, CONFIG_ARM64_VA_BITS_48; TCR_EL1.T0SZ = T1SZ = 16
as host/real/boot.py writes it): four levels, 9 bits of VA each from level 0 (VA[47:39])
to level 3 (VA[20:12]); TTBR0_EL1 for VA[63:48] all zeros, TTBR1_EL1 for all ones, anything
else is a level-0 translation fault. Descriptors are the architecture's (Arm ARM D8.3,
VMSAv8-64 descriptor formats):

    bits[1:0]  0b11 table (levels 0-2) or page (level 3); 0b01 block (levels 1-2); x0 invalid
    [47:12]    next-level table address / output address (blocks: [47:30] or [47:21])
    AttrIndx[4:2] = 0 (MAIR_EL1 index 0, Normal)   AP[1] bit 6: EL0 access   AP[2] bit 7: read-only
    SH[9:8] = 0b11 (Inner Shareable)   AF bit 10   nG bit 11   PXN bit 53   UXN bit 54
    bit 55: a software bit (ignored by the hardware walk) that this model uses for "no read"

Walk reads are memory accesses of the walk itself: each table frame must be readable at
stage 2, else the walk stops with a stage-2 fault on a stage-1 walk (ESR S1PTW = 1, HPFAR =
the table frame's IPA, FAR = the VA being translated: Arm ARM ESR_ELx.S1PTW, "stage 2
fault on an access made for a stage 1 translation table walk"). The access flag is checked, never set: FEAT_HAFDBS is not
implemented (abi/cpu.py), so AF = 0 is an Access flag fault (DFSC 0x08 + level).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from abi.arch import MASK64, PAGE_SHIFT, PAGE_SIZE

DESC_VALID = 1 << 0
DESC_TABLE = 1 << 1  # with VALID: a table (levels 0-2) or a page (level 3)
AP_EL0 = 1 << 6  # AP[1]
AP_RDONLY = 1 << 7  # AP[2]
SH_INNER = 3 << 8
AF = 1 << 10
NG = 1 << 11
PXN = 1 << 53
UXN = 1 << 54
SW_NOREAD = 1 << 55  # software use (Arm ARM: bits[58:55] are ignored by the walk)
OA_MASK = ((1 << 48) - 1) & ~(PAGE_SIZE - 1)

LEVEL_SHIFT = (39, 30, 21, 12)
VA_BITS = 48


def index(va: int, level: int) -> int:
    """The descriptor index of `va` in its level-`level` table."""
    return (va >> LEVEL_SHIFT[level]) & 0x1FF


def page_descriptor(pfn: int, *, read: bool, write: bool, exec_: bool, user: bool, af: bool = True) -> int:
    """A level-3 page descriptor as Linux would write it (PAGE_KERNEL / PAGE_USER style).

    User pages are PXN (the kernel never executes them); kernel pages are UXN.
    """
    desc = (pfn << PAGE_SHIFT) & OA_MASK | DESC_VALID | DESC_TABLE | SH_INNER
    desc |= (AP_EL0 if user else 0) | (0 if write else AP_RDONLY) | (AF if af else 0) | (NG if user else 0)
    desc |= PXN if (user or not exec_) else 0
    desc |= UXN if (not user or not exec_) else 0
    desc |= 0 if read else SW_NOREAD
    return desc


@dataclass(frozen=True)
class Leaf:
    """A valid last-level (page or block) descriptor, decoded for one page."""

    pfn: int
    read: bool
    write: bool
    exec_: bool
    user: bool
    af: bool
    level: int
    kind_is_stop = False


@dataclass(frozen=True)
class WalkStop:
    """The walk ended without a leaf: `kind` "translation" at `level`, or a table frame refused at stage 2."""

    kind: str  # "translation" | "s1ptw"
    level: int
    table_pfn: int | None = None  # s1ptw: the frame the walk could not read
    desc_pa: int | None = None  # s1ptw: the descriptor it was reading
    stage2_fault: object = None  # s1ptw: the stage-2 verdict (a WalkFault) or None for the default
    kind_is_stop = True


def decode_leaf(desc: int, va: int, level: int) -> Leaf:
    """A page (level 3) or block (levels 1-2) descriptor, for the page holding `va`."""
    span = 1 << LEVEL_SHIFT[level]
    base = desc & OA_MASK & ~(span - 1)
    pa = base | (va & (span - 1))
    user = bool(desc & AP_EL0)
    return Leaf(
        pfn=pa >> PAGE_SHIFT,
        read=not desc & SW_NOREAD,
        write=not desc & AP_RDONLY,
        exec_=not desc & (UXN if user else PXN),
        user=user,
        af=bool(desc & AF),
        level=level,
    )


Stage2Read = Callable[[int], "bool | object"]  # pfn -> True, or False / a WalkFault


class TableWalker:
    """Reads descriptors from physical memory: the hardware walk for one VA."""

    def __init__(self, read_u64: Callable[[int], int]) -> None:
        self._read_u64 = read_u64

    def walk(self, root_pfn: int | None, va: int, stage2: Stage2Read | None = None) -> tuple[Leaf | WalkStop, tuple[int, ...]]:
        """Walk from `root_pfn`; returns the leaf or why the walk stopped, and the table frames read."""
        top = va >> VA_BITS  # VA[63:48]: all zeros (TTBR0) or all ones (TTBR1), else no table covers it
        if top not in (0, (1 << (64 - VA_BITS)) - 1) or root_pfn is None:
            return WalkStop("translation", 0), ()
        tables: list[int] = []
        table = root_pfn
        for level in range(4):
            desc_pa = (table << PAGE_SHIFT) | (index(va, level) * 8)
            if stage2 is not None:
                verdict = stage2(table)
                if verdict is not True:
                    return WalkStop("s1ptw", level, table, desc_pa, verdict or None), tuple(tables)
            tables.append(table)
            desc = self._read_u64(desc_pa)
            if not desc & DESC_VALID:
                return WalkStop("translation", level), tuple(tables)
            if level == 3:
                if not desc & DESC_TABLE:
                    return WalkStop("translation", 3), tuple(tables)
                return decode_leaf(desc, va, 3), tuple(tables)
            if not desc & DESC_TABLE:
                if level == 0:
                    return WalkStop("translation", 0), tuple(tables)  # no level-0 blocks with 4 KiB pages
                return decode_leaf(desc, va, level), tuple(tables)
            table = (desc & OA_MASK) >> PAGE_SHIFT
        raise AssertionError("unreachable")


class TableBuilder:
    """Writes the tables for pages mapped from Python: allocates table frames, sets descriptors.

    Table frames come from `alloc_table()` (the top of physical memory, so the frames
    handed out to callers keep the numbers they had before tables existed). The table
    descriptors are followed as the memory holds them; `_last` (VA >> 21 -> the level-2
    descriptor's address and value) is only a hint that saves two reads when mapping page
    after page, checked against memory before use.
    """

    def __init__(self, read_u64: Callable[[int], int], write_u64: Callable[[int, int], None],
                 alloc_table: Callable[[], int], *, read: Callable[[int, int], bytes],
                 write: Callable[[int, bytes], None]) -> None:
        self._read_u64 = read_u64
        self._write_u64 = write_u64
        self._read = read  # whole-table reads and writes, for set_leaves
        self._write = write
        self._alloc = alloc_table
        self.roots: dict[int, int] = {}  # 0: TTBR0, 1: TTBR1 -> root table pfn
        self.frames: set[int] = set()  # every table frame allocated
        self._last: dict[int, int] = {}

    def forget(self) -> None:
        self._last.clear()

    def state(self) -> tuple:
        """What a checkpoint keeps of the builder (with PhysicalMemory's table allocator)."""
        return dict(self.roots), frozenset(self.frames)

    def restore(self, state: tuple) -> None:
        roots, frames = state
        self.roots, self.frames = dict(roots), set(frames)
        self._last.clear()

    def root_for(self, va: int, *, create: bool) -> int | None:
        half = (va >> 63) & 1
        root = self.roots.get(half)
        if root is None and create:
            root = self.roots[half] = self._new_table()
        return root

    def _new_table(self) -> int:
        pfn = self._alloc()
        self.frames.add(pfn)
        return pfn

    def _last_table(self, va: int, *, create: bool) -> int | None:
        table = self.root_for(va, create=create)
        for level in range(3):
            if table is None:
                return None
            pa = (table << PAGE_SHIFT) | (index(va, level) * 8)
            entry = self._read_u64(pa)
            if entry & DESC_VALID and entry & DESC_TABLE:
                table = (entry & OA_MASK) >> PAGE_SHIFT
            elif create:
                child = self._new_table()
                self._write_u64(pa, (child << PAGE_SHIFT) | DESC_VALID | DESC_TABLE)
                table = child
            else:
                return None
        return table

    def set_leaf(self, va: int, desc: int) -> None:
        """Write the level-3 descriptor of `va`, creating the tables on the way.

        The hint for `va`'s 2 MiB is checked against the level-2 descriptor in memory (one
        read), so a restore or a guest that relinked the tables is followed.
        """
        table = self._last_table_cached(va)
        self._write_u64((table << PAGE_SHIFT) | (((va >> 12) & 0x1FF) << 3), desc & MASK64)

    def set_leaves(self, leaves: "list[tuple[int, int]]") -> None:
        """`set_leaf` for many (va, descriptor) pairs: each level-3 table touched is read once and
        written back once (the tables on the way are found or made as `set_leaf` does)."""
        by_table: dict[int, dict[int, int]] = {}
        for va, desc in leaves:
            table = self._last_table_cached(va)
            by_table.setdefault(table, {})[(va >> 12) & 0x1FF] = desc & MASK64
        for table, entries in by_table.items():
            pa = table << PAGE_SHIFT
            if len(entries) == 1:
                (i, desc), = entries.items()
                self._write_u64(pa | (i << 3), desc)
                continue
            image = bytearray(self._read(pa, PAGE_SIZE))
            for i, desc in entries.items():
                image[i * 8 : i * 8 + 8] = desc.to_bytes(8, "little")
            self._write(pa, bytes(image))

    def _last_table_cached(self, va: int) -> int:
        """The level-3 table of `va` (made if missing), through the hint for its 2 MiB when memory still agrees."""
        hint = self._last.get(va >> 21)
        if hint is not None and self._read_u64(hint[0]) == hint[1]:
            return (hint[1] & OA_MASK) >> PAGE_SHIFT
        table = self._last_table(va, create=True)
        l2 = self.table_pa(va, 2)
        self._last[va >> 21] = (l2, self._read_u64(l2))
        return table

    def leaf_pa(self, va: int) -> int | None:
        """Physical address of the level-3 descriptor of `va`, if its tables exist."""
        table = self._last_table(va, create=False)
        return None if table is None else (table << PAGE_SHIFT) | (index(va, 3) * 8)

    def clear_leaf(self, va: int) -> None:
        pa = self.leaf_pa(va)
        if pa is not None:
            self._write_u64(pa, 0)

    def move_table(self, va: int, level: int, pfn: int, copy_frame: Callable[[int, int], None]) -> int:
        """Make frame `pfn` the level-`level` table on `va`'s walk (levels 1-3): its entries are
        copied there and the parent descriptor re-pointed. Returns the frame it replaces.

        For layouts that must match another machine's (the QEMU differential puts a table at a
        fixed PA); the caller owns `pfn` (allocated, not otherwise used).
        """
        if not 1 <= level <= 3:
            raise ValueError("only a level 1-3 table has a parent descriptor to re-point")
        parent = self.table_pa(va, level - 1)
        old = self.table_pa(va, level)
        if parent is None or old is None:
            raise ValueError(f"no level-{level} table on the walk of {va:#x}")
        old_pfn = old >> PAGE_SHIFT
        copy_frame(old_pfn, pfn)
        self._write_u64(parent, (pfn << PAGE_SHIFT) | DESC_VALID | DESC_TABLE)
        self.frames.add(pfn)
        self._last.clear()
        return old_pfn

    def table_pa(self, va: int, level: int) -> int | None:
        """Physical address of the level-`level` descriptor of `va` (for tests, debuggers, differentials)."""
        table = self.root_for(va, create=False)
        for lvl in range(level):
            if table is None:
                return None
            entry = self._read_u64((table << PAGE_SHIFT) | (index(va, lvl) * 8))
            table = (entry & OA_MASK) >> PAGE_SHIFT if entry & DESC_VALID and entry & DESC_TABLE else None
        return None if table is None else (table << PAGE_SHIFT) | (index(va, level) * 8)


def tlbi_handler(stage1, *also: "Callable[[], None]"):
    """A `SysInsnHooks` handler: every TLBI drops the cached stage-1 walks (and calls `also`), then executes.

    Unicorn's own TLB is flushed by the TLBI itself (QEMU's implementation); only the walk
    cache, and whatever else the caller keeps about that TLB, is ours. Every TLBI drops every
    walk: correct for all of them (VAE1, ASIDE1, VMALLE1, ...), merely pessimistic for the by-VA forms.
    """
    from emu.sys_insn import is_tlbi

    def on_sys(uc, reg: int, cp) -> bool:
        if is_tlbi(cp):
            stage1.flush_walk_cache()
            for forget in also:
                forget()
        return False

    return on_sys
