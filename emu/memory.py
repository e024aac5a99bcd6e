"""Physical frames and the stage-1 translation tables of the EL1&0 regime.

Unicorn's memory holds *physical* frames only; every virtual address the guest
uses is translated by `Stage1` (and then checked by the stage-2 callback) in the
machine's TLB-fill hook. This is what makes aliases real: several VAs name one
frame, so a write through one is seen through all of them.
"""
from __future__ import annotations

import ctypes
import enum
import functools
from dataclasses import dataclass
from typing import Iterable, Iterator

from unicorn.unicorn_py3.unicorn import uclib as _uclib

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
    af: bool = True  # the descriptor's access flag: 0 gives an Access flag fault (no FEAT_HAFDBS)


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
        # Descriptor reads (four per stage-1 walk, every TLB miss): a direct uc_mem_read into one
        # reused u64 (~0.4 us) instead of the binding's buffer per call (~1.5 us).
        self._u64 = ctypes.create_string_buffer(8)
        # Reads of any size go through one reused buffer (grown to a power of two): a ctypes buffer
        # made per read is also a new array type per size, which only the cycle collector frees.
        self._scratch = ctypes.create_string_buffer(PAGE_SIZE)
        self.base = base
        self.size = size
        uc.mem_map(base, size)
        self._next = base >> PAGE_SHIFT
        # Stage-1 table frames are taken from the top down, below the last frame, which is
        # never handed out: a range that runs off the end of memory meets no table on its way.
        self._top = ((base + size) >> PAGE_SHIFT) - 1
        # Copy on write for checkpoints (emu/checkpoint.py): frame -> its contents when the
        # checkpoint was taken, saved just before the first write since then. None: not tracking.
        self.saved: dict[int, bytes] | None = None

    @property
    def first_pfn(self) -> int:
        return self.base >> PAGE_SHIFT

    @property
    def nr_frames(self) -> int:
        return self.size >> PAGE_SHIFT

    def alloc(self, nr: int = 1) -> int:
        """Allocate `nr` physically contiguous zeroed frames; returns the first pfn."""
        pfn = self._next
        if pfn + nr > self._top:
            raise MemoryError(f"out of physical memory ({self.size >> 20} MiB): raise Machine(phys_size=...)")
        self._next += nr
        return pfn

    def alloc_table(self) -> int:
        """One zeroed frame for a stage-1 translation table, from the top of memory down.

        Apart from `alloc`'s frames so that the frames callers get keep their numbers
        whatever tables were built (the recorded baselines name frames). The very last frame
        of memory is left unused by both.
        """
        if self._top - 1 < self._next:
            raise MemoryError(f"out of physical memory ({self.size >> 20} MiB) for a stage-1 table")
        self._top -= 1
        return self._top

    def read_u64(self, pa: int) -> int:
        if _uclib.uc_mem_read(self._uc._uch, pa, self._u64, 8):
            return int.from_bytes(self._uc.mem_read(pa, 8), "little")  # let the binding raise its own error
        return int.from_bytes(self._u64.raw, "little")

    def write_u64(self, pa: int, value: int) -> None:
        """One descriptor write, through `write` like every other (so whatever watches writes sees it)."""
        self.write(pa, value.to_bytes(8, "little"))

    def read(self, pa: int, size: int) -> bytes:
        # One copy out of the reused buffer (the binding's mem_read makes a new buffer, then a bytearray).
        buf = self._scratch
        if size > len(buf):
            buf = self._scratch = ctypes.create_string_buffer(1 << (size - 1).bit_length())
        if size and _uclib.uc_mem_read(self._uc._uch, pa, buf, size):
            self._uc.mem_read(pa, size)  # let the binding raise its own error
        return ctypes.string_at(ctypes.addressof(buf), size)

    def write(self, pa: int, data: bytes) -> None:
        size = len(data)
        if self.saved is not None and size:
            for pfn in range(pa >> PAGE_SHIFT, ((pa + size - 1) >> PAGE_SHIFT) + 1):
                self.before_write(pfn)
        self._uc.mem_write(pa, data if type(data) is bytes else bytes(data))

    def zero(self, pfn: int) -> None:
        self.write(pfn << PAGE_SHIFT, bytes(PAGE_SIZE))

    # ------------------------------------------------------------ checkpoints
    def before_write(self, pfn: int) -> None:
        """A frame is about to be written (from Python, or the CPU got a writable TLB entry): keep its old contents once."""
        saved = self.saved
        if saved is not None and pfn not in saved:
            saved[pfn] = self.read(pfn << PAGE_SHIFT, PAGE_SIZE)

    def track_writes(self) -> None:
        """Start a new epoch: from now on every frame's first write keeps its contents for `rewind`."""
        self.saved = {}

    def rewind(self) -> list[int]:
        """Put back every frame written since `track_writes`; returns those whose contents really changed.

        A frame written back to what it held (an exit's brk put and removed again) is
        left alone, so its translated code stays valid.
        """
        if self.saved is None:
            raise RuntimeError("rewind without track_writes")
        changed = []
        uc = self._uc
        for pfn, old in self.saved.items():
            pa = pfn << PAGE_SHIFT
            if self.read(pa, PAGE_SIZE) != old:
                uc.mem_write(pa, old)
                changed.append(pfn)
        self.saved = {}
        return changed


PA_BITS = 48  # ID_AA64MMFR0_EL1.PARange of the modelled CPU
MMU_OFF_PERMS = Perms(read=True, write=True, exec=True, user=False)


# Span covered by one entry at each level of a 4 KiB-granule, 4-level table.
_LEVEL_SHIFT = {0: 39, 1: 30, 2: 21, 3: 12}


class Stage1:
    """The EL1&0 stage-1 translation: tables in physical frames, and `ptes`, Python's record of them.

    Both halves live here: TTBR0 (user, low VAs) and TTBR1 (kernel, high VAs). Once
    `attach_tables` has given it a builder and a walker (every `AddressSpace` does), `map`
    writes real descriptors (emu/stage1_tables.py) and every translation walks them, so guest
    code that edits a descriptor and issues a TLBI sees its change; the walk results are
    cached per page until `flush_walk_cache` (TLB maintenance, mapping changes, restore).
    Without tables (a bare Stage1), `ptes` is the translation and the level of a translation
    fault is derived from which table ranges hold any mapping, as the tables would give.

    `ptes` records what was mapped from Python (with its permissions); the walk, not
    `ptes`, is what the machine translates with.
    """

    def __init__(self) -> None:
        self.ptes: dict[int, Pte] = {}
        self._tables: dict[int, dict[int, int]] = {0: {}, 1: {}, 2: {}}
        # SCTLR_EL1.M = 0 (emu/sctlr.py): no walk; VA = PA below 2^48 (PARange), every access allowed.
        self.disabled = False
        self.builder = None  # emu.stage1_tables.TableBuilder
        self._walker = None
        self._phys = None
        self._walks: dict[int, tuple] = {}  # page VA -> (Leaf, table frames read, Pte)
        self._stops: dict[int, tuple] = {}  # page VA -> (WalkStop, table frames read, None)
        self._tables_ok: set[int] = set()  # table frames known readable at stage 2 since the last change
        # Every frame ever mapped executable from Python (never shrinks): a checkpoint's rewind drops
        # translated code only when it puts back one of these (emu/checkpoint.py).
        self.exec_frames: set[int] = set()

    def attach_tables(self, builder, walker, phys: "PhysicalMemory") -> None:
        """From now on, mappings are descriptors in frames and translation walks them."""
        self.builder, self._walker, self._phys = builder, walker, phys
        for va, pte in self.ptes.items():
            builder.set_leaf(va, _descriptor(pte))
        self.flush_walk_cache()

    # ------------------------------------------------------------- mappings
    def map(self, va: int, pfn: int, perms: Perms, *, af: bool = True) -> None:
        va, pte = self._record(va, pfn, perms, af)
        if self.builder is not None:
            self.builder.set_leaf(va, _descriptor(pte))
            self._stops.clear()  # new tables change the level at which unmapped neighbours fault

    def map_many(self, mappings: "Iterable[tuple[int, int, Perms]]") -> None:
        """`map(va, pfn, perms)` for each (va, pfn, perms), the descriptors written a level-3 table at a
        time. Why: a kernel image maps thousands of pages at boot; one descriptor read and write per
        page was most of a boot's cost (the same table frames, rewritten entry by entry)."""
        leaves = [(va, _descriptor(pte)) for va, pte in (self._record(va, pfn, perms, True) for va, pfn, perms in mappings)]
        if leaves and self.builder is not None:
            self.builder.set_leaves(leaves)
            self._stops.clear()

    def _record(self, va: int, pfn: int, perms: Perms, af: bool) -> tuple[int, Pte]:
        """Python's record of one new mapping (replacing an old one): the page VA and its Pte."""
        va = _check_page(va)
        if va in self.ptes:
            self.unmap(va)
        pte = self.ptes[va] = Pte(pfn, perms, af)
        if perms.exec:
            self.exec_frames.add(pfn)
        for level, counts in self._tables.items():
            key = va >> _LEVEL_SHIFT[level]
            counts[key] = counts.get(key, 0) + 1
        self._walks.pop(va, None)
        return va, pte

    def unmap(self, va: int) -> None:
        va = _check_page(va)
        if self.ptes.pop(va, None) is None:
            return
        for level, counts in self._tables.items():
            key = va >> _LEVEL_SHIFT[level]
            counts[key] -= 1
            if not counts[key]:
                del counts[key]
        if self.builder is not None:
            self.builder.clear_leaf(va)
            self._walks.pop(va, None)

    def set_access_flag(self, va: int, on: bool) -> None:
        """Set or clear the AF bit of a page mapped from Python (AF = 0: Access flag fault, no FEAT_HAFDBS)."""
        va = _check_page(va)
        pte = self.ptes[va]
        self.map(va, pte.pfn, pte.perms, af=on)

    def move_table(self, va: int, level: int, pfn: int) -> int:
        """Put the level-`level` table of `va`'s walk in frame `pfn` (emu/stage1_tables.py
        TableBuilder.move_table); returns the frame it was in. Then flush the TLB."""
        def copy(src: int, dst: int) -> None:
            self._phys.write(dst << PAGE_SHIFT, self._phys.read(src << PAGE_SHIFT, PAGE_SIZE))

        old = self.builder.move_table(va, level, pfn, copy)
        self.flush_walk_cache()
        return old

    # ----------------------------------------------------------- the walk
    def flush_walk_cache(self) -> None:
        """TLB maintenance (or a restore): forget every cached walk."""
        self._walks.clear()
        self._stops.clear()
        self._tables_ok.clear()

    def stage2_changed(self) -> None:
        """Stage 2 changed: walks stay valid, but their table frames must be asked again."""
        self._tables_ok.clear()

    def _walk(self, va: int) -> tuple:
        """(Leaf | WalkStop, table frames read, Pte | None) for the page of `va`, cached."""
        page = va & PAGE_MASK & VA_MASK
        cached = self._walks.get(page) or self._stops.get(page)
        if cached is None:
            leaf, tables = self._walker.walk(self.builder.root_for(page, create=False), page)
            cached = (leaf, tables, _pte_of(leaf))
            (self._stops if leaf.kind_is_stop else self._walks)[page] = cached
        return cached

    def lookup(self, va: int) -> Pte | None:
        """The valid leaf translating `va`, ignoring permissions, AF and stage 2 (a debugger's view)."""
        if self.disabled:
            return None if va & VA_MASK >= 1 << PA_BITS else Pte((va & VA_MASK) >> PAGE_SHIFT, MMU_OFF_PERMS)
        if self.builder is None:
            return self.ptes.get(va & PAGE_MASK & VA_MASK)
        return self._walk(va)[2]

    def translation_fault_level(self, va: int) -> int:
        """Level of the first invalid descriptor on the walk for `va`."""
        va &= VA_MASK
        if self.builder is not None:
            return self._walk(va)[0].level
        for level in (0, 1, 2):
            if (va >> _LEVEL_SHIFT[level]) not in self._tables[level]:
                return level
        return 3

    def check(self, va: int, access: AccessType, *, el0: bool, pan: bool, stage2=None) -> "Pte | WalkFault":
        """Translate `va` for an access made with EL0 or EL1 privilege (PAN applies to EL1 data accesses).

        stage2(pfn, access) -> True or a refusal: when given, the walk's own reads of table
        frames are checked at stage 2, and a refused one gives an `S1ptwFault`.
        """
        if self.disabled:
            # AArch64.S1DisabledOutput: an address above the PA size is an Address size fault, level 0.
            pte = self.lookup(va)
            return WalkFault("address-size", 0) if pte is None else pte
        if self.builder is None:
            pte = self.ptes.get(va & PAGE_MASK & VA_MASK)
            if pte is None:
                return WalkFault("translation", self.translation_fault_level(va))
            level = 3
        else:
            leaf, tables, pte = self._walk(va)
            if stage2 is not None:
                for table in tables:
                    if table not in self._tables_ok:
                        fault = _table_refused(self, va, table, stage2)
                        if fault is not None:
                            return fault
            if leaf.kind_is_stop:
                return WalkFault("translation", leaf.level)
            level = leaf.level
        if not pte.af:
            return WalkFault("access-flag", level)
        return pte if access in allowed_accesses(pte.perms, el0=el0, pan=pan) else WalkFault("permission", level)

    def aliases(self, pfn: int) -> Iterator[int]:
        """Every VA that maps frame `pfn` (of those mapped from Python)."""
        return (va for va, pte in self.ptes.items() if pte.pfn == pfn)


@dataclass(frozen=True)
class S1ptwFault(WalkFault):
    """A stage-2 fault on a stage-1 walk: the table frame at `table_pfn` could not be read.

    `kind`/`level` are the stage-2 fault's (what DFSC reports); `desc_pa` is the descriptor
    the walk was reading (HPFAR_EL2 holds its IPA, FAR the VA being translated).
    """

    table_pfn: int = 0
    desc_pa: int = 0
    s1_level: int = 0


def _table_refused(stage1: Stage1, va: int, table: int, stage2) -> "S1ptwFault | None":
    verdict = stage2(table, AccessType.READ)
    if verdict is True:
        stage1._tables_ok.add(table)
        return None
    from emu.stage1_tables import index

    tables = stage1._walk(va)[1]
    s1_level = tables.index(table)
    fault = verdict if isinstance(verdict, WalkFault) else WalkFault("translation", 3)
    return S1ptwFault(fault.kind, fault.level, table, (table << PAGE_SHIFT) | index(va, s1_level) * 8, s1_level)


_DESC_BITS: dict[tuple[Perms, bool], int] = {}


def _descriptor(pte: Pte) -> int:
    """The page descriptor of a Python mapping (its attribute bits memoised per permissions)."""
    bits = _DESC_BITS.get((pte.perms, pte.af))
    if bits is None:
        from emu.stage1_tables import page_descriptor

        p = pte.perms
        bits = _DESC_BITS[(pte.perms, pte.af)] = page_descriptor(0, read=p.read, write=p.write, exec_=p.exec, user=p.user, af=pte.af)
    return bits | (pte.pfn << PAGE_SHIFT)


def _pte_of(leaf) -> Pte | None:
    if leaf.kind_is_stop:
        return None
    return Pte(leaf.pfn, Perms(read=leaf.read, write=leaf.write, exec=leaf.exec_, user=leaf.user), leaf.af)


def allowed_accesses(p: Perms, *, el0: bool, pan: bool) -> tuple[AccessType, ...]:
    """The accesses a regime may make through a page with permissions `p`."""
    return _allowed(p.read, p.write, p.exec, p.user, el0, pan)


@functools.lru_cache(maxsize=64)
def _allowed(read: bool, write: bool, exec_: bool, user: bool, el0: bool, pan: bool) -> tuple[AccessType, ...]:
    # A pure function of six booleans, memoised: every TLB fill asks it twice (the access, then
    # the other accesses the entry may allow), and building the tuple was most of its cost.
    if el0:
        if not user:
            return ()
        return tuple(a for a, ok in ((AccessType.READ, read), (AccessType.WRITE, write), (AccessType.EXEC, exec_)) if ok)
    data_ok = not (pan and user)
    # arm64 Linux maps user pages PXN: the kernel never executes them.
    return tuple(
        a
        for a, ok in ((AccessType.READ, read and data_ok), (AccessType.WRITE, write and data_ok), (AccessType.EXEC, exec_ and not user))
        if ok
    )


def _check_page(va: int) -> int:
    va &= VA_MASK
    if va & (PAGE_SIZE - 1):
        raise ValueError(f"VA {va:#x} is not page aligned")
    return va
