"""The host's stage-2 page table: an identity map that pKVM fills lazily, a block at a time where it can.

pKVM does not map all of memory for the host up front: the first host access
to a frame aborts to EL2, which checks the frame's host state and, when the
host owns or shares it, installs an identity mapping and lets the access retry
(mem_protect.c: host_stage2_idmap). The mapping is as large as the table
allows (host_stage2_adjust_range): the walk for the address stops at an
invalid, unannotated entry at some level, and EL2 maps the largest block at
that level or below that lies wholly inside the memory region holding the
address. With 4 KiB pages a level-2 block is 2 MiB; a level-1 block (1 GiB)
never fits the memory a lab has, so in practice: a 2 MiB block when the
2 MiB region has no level-3 table yet, else the one page.

Frames the host gave away are never mapped: taking one away writes an
annotation (an invalid entry naming the owner) at level 3, which turns its
2 MiB region into a table for good. If the region was block-mapped, the block
is deleted and replaced by that table: the rest of the region is rebuilt
lazily, page by page (kvm_pgtable.c stage2_map_walk_leaf; the comment on
mem_protect.c host_stage2_force_pte_cb states the assumption). A frame given
back to the host is mapped again at once with a page mapping (the model's
reading of host_stage2_set_owner_locked for the host), so its region is a
table as well. The TLB flush after an unmap makes it visible to the very next
host instruction.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from emu.memory import AccessType

# The block levels of a 4 KiB granule (KVM_PGTABLE_MIN_BLOCK_LEVEL = 1) and the pfn bits each spans:
# level 1 maps 1 GiB, level 2 maps 2 MiB (kvm_granule_size()).
BLOCK_LEVELS = ((1, 18), (2, 9))
BLOCK_SHIFT = 9  # a level-2 block: the block the memory of a lab fits
BLOCK_PAGES = 1 << BLOCK_SHIFT


class HostStage2:
    """The valid identity mappings of the host's stage 2, consulted by the emulator's TLB fill.

    `mapped` holds every frame a valid entry (page or block) covers. Per block level,
    `tables[level]` holds the regions (pfn >> that level's shift) whose entry is a table,
    `blocks[level]` those mapped by one block entry. Memory is frames [first_pfn, end_pfn):
    one region in the sense of find_mem_range().
    """

    def __init__(self, flush: Callable[[], None], first_pfn: int = 0, end_pfn: int = 0) -> None:
        self._flush = flush
        self.first_pfn = first_pfn
        self.end_pfn = end_pfn
        self.mapped: set[int] = set()
        self.tables: dict[int, set[int]] = {level: set() for level, _ in BLOCK_LEVELS}
        self.blocks: dict[int, set[int]] = {level: set() for level, _ in BLOCK_LEVELS}

    def __call__(self, pfn: int, access: "AccessType") -> bool:
        """The emu stage-2 callback: is `pfn` mapped? Pure: no side effects on the fill path."""
        return pfn in self.mapped

    def idmap(self, pfn: int) -> range:
        """host_stage2_idmap for a host-accessible frame: map the largest block around it that the
        walk allows (no table at that level) and memory holds whole, else the page. Returns the
        frames mapped (empty when `pfn` was mapped already: the kernel's -EAGAIN, the access retries)."""
        if pfn in self.mapped:
            return range(0)
        for level, shift in BLOCK_LEVELS:
            region = pfn >> shift
            if region in self.tables[level]:
                continue  # the walk goes down the table
            first, size = region << shift, 1 << shift
            if self.first_pfn <= first and first + size <= self.end_pfn:
                self._tables_above(level, pfn)
                self.blocks[level].add(region)
                frames = range(first, first + size)
                self.mapped.update(frames)
                return frames
            # not inside memory: a smaller granule, under a table this mapping creates
        self._tables_above(None, pfn)
        self.mapped.add(pfn)
        return range(pfn, pfn + 1)

    def map_page(self, pfn: int) -> None:
        """A page mapping written by EL2 itself (a frame given back to the host): its regions become tables.

        A frame given back was unmapped when it went, so its regions are tables already; should a
        block still cover it, that block goes, and its other pages must leave the TLB too."""
        dropped = self._split(pfn)
        self.mapped.add(pfn)
        if dropped:
            self._flush()

    def unmap(self, pfn: int) -> None:
        """The host lost `pfn`: its level-3 entry becomes an annotation (a block around it is deleted)."""
        dropped = self._split(pfn)
        if pfn in self.mapped or dropped:
            self.mapped.discard(pfn)
            self._flush()

    def split(self, pfn: int) -> None:
        """Tables down to level 3 around `pfn`, as any page-level operation there leaves (tests use
        it to set up page-granular regions without changing ownership)."""
        if self._split(pfn):
            self._flush()

    def _tables_above(self, level: int | None, pfn: int) -> None:
        """A mapping at `level` (None: a page) needs tables at every block level above it."""
        for above, shift in BLOCK_LEVELS:
            if above == level:
                return
            self.tables[above].add(pfn >> shift)

    def _split(self, pfn: int) -> bool:
        """Tables at every block level around `pfn`; a block that covered it is deleted (True), all its pages unmapped."""
        dropped = False
        for level, shift in BLOCK_LEVELS:
            region = pfn >> shift
            if region in self.blocks[level]:
                self.blocks[level].discard(region)
                self.mapped.difference_update(range(region << shift, (region + 1) << shift))
                dropped = True
            self.tables[level].add(region)
        return dropped

    def on_ownership_change(self, pfn: int, host_may_access: bool) -> None:
        """Ownership's callback: unmap what the host lost; map again what it got back (reclaim)."""
        if host_may_access:
            self.map_page(pfn)
        else:
            self.unmap(pfn)
