"""The host stage 2 maps the largest block the table allows (hyp/stage2.py), as pKVM does.

Facts (mem_protect.c host_stage2_adjust_range / host_stage2_idmap, kvm_pgtable.c
stage2_map_walk_leaf): the walk for the faulting address stops at an invalid,
unannotated entry; EL2 maps the largest granule from that level down that lies
wholly inside the memory region (4 KiB granule: level 1 = 1 GiB, level 2 = 2 MiB,
level 3 = the page). Writing a smaller leaf (an annotation, a page) where a block
was deletes the block for an empty table: the block's other pages are rebuilt lazily.

`RefTable` below is an independent model of the table itself - entries by
level and index - checked against HostStage2's sets on random operation
sequences, including memories large enough for a 1 GiB block.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from faultlab.lab import Lab
from hyp.stage2 import BLOCK_PAGES, HostStage2

SHIFT = {1: 18, 2: 9, 3: 0}
TABLE, BLOCK, PAGE = "table", "block", "page"


class RefTable:
    """A 4 KiB-granule stage 2 from level 1 down: {(level, index): TABLE | BLOCK | PAGE | ("owner", id)}."""

    def __init__(self, first: int, end: int) -> None:
        self.entries: dict[tuple[int, int], object] = {}
        self.first, self.end = first, end

    def leaf(self, pfn: int) -> tuple[int, object]:
        """kvm_pgtable_get_leaf: the level the walk stops at and the entry there (None: invalid, zero)."""
        for level in (1, 2, 3):
            entry = self.entries.get((level, pfn >> SHIFT[level]))
            if entry != TABLE:
                return level, entry
        raise AssertionError("a level-3 entry is never a table")

    def valid(self, pfn: int) -> bool:
        return self.leaf(pfn)[1] in (BLOCK, PAGE)

    def idmap(self, pfn: int) -> range:
        level, entry = self.leaf(pfn)
        if entry in (BLOCK, PAGE):
            return range(0)  # -EAGAIN
        assert entry is None, "idmap of an annotated frame"
        for lv in range(level, 4):
            size = 1 << SHIFT[lv]
            start = pfn & ~(size - 1)
            if lv == 3 or (self.first <= start and start + size <= self.end):
                self._install(lv, start, BLOCK if lv < 3 else PAGE)
                return range(start, start + size)
        raise AssertionError("unreachable")

    def annotate(self, pfn: int) -> None:
        self._install(3, pfn, ("owner", 1))

    def map_page(self, pfn: int) -> None:
        self._install(3, pfn, PAGE)

    def _install(self, level: int, pfn: int, entry: object) -> None:
        for above in range(1, level):
            key = (above, pfn >> SHIFT[above])
            if self.entries.get(key) != TABLE:
                self.entries[key] = TABLE  # a block here is deleted: an empty table replaces it
                for child in [k for k in self.entries if k[0] > above and k[1] >> (SHIFT[above] - SHIFT[k[0]]) == key[1]]:
                    del self.entries[child]
        self.entries[(level, pfn >> SHIFT[level])] = entry


GIB = 1 << 18  # pfns in 1 GiB
BASE = 0x40000  # 1 GiB, the machine's default PA base


@st.composite
def scenarios(draw):
    big = draw(st.booleans())
    if big:  # 1-2 GiB of memory: level-1 blocks become possible
        first, end = BASE, BASE + draw(st.sampled_from([GIB, GIB + 3 * BLOCK_PAGES + 5, 2 * GIB]))
    else:
        first = BASE + draw(st.integers(0, 3)) * 7
        # ends on, just before and just after a 2 MiB boundary, or anywhere
        end = draw(st.one_of(st.integers(first + 1, first + 5 * BLOCK_PAGES),
                             st.builds(lambda k, d: max(first + 1, BASE + k * BLOCK_PAGES + d), st.integers(1, 5), st.integers(-1, 1))))
    span = end - first
    # pfns near region boundaries and the memory's ends are where the choices differ
    near = st.one_of(
        st.integers(first, end - 1),
        st.sampled_from([p for p in (first, end - 1, (first | (BLOCK_PAGES - 1)), ((first >> 9) + 1 << 9), first + span // 2) if first <= p < end]),
    )
    ops = draw(st.lists(st.tuples(st.sampled_from(["touch", "touch", "donate", "give-back"]), near), max_size=30))
    return first, end, ops


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_matches_a_table_model(scenario):
    _check_against_the_table_model(scenario)


@pytest.mark.sweep
@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_matches_a_table_model_sweep(scenario):
    _check_against_the_table_model(scenario)


def _check_against_the_table_model(scenario) -> None:
    first, end, ops = scenario
    flushes = []
    s2 = HostStage2(lambda: flushes.append(1), first, end)
    ref = RefTable(first, end)
    owned_by_guest: set[int] = set()
    probes = {first, end - 1}
    for op, pfn in ops:
        probes |= {pfn, max(first, pfn - 1), min(end - 1, pfn + 1)}
        if op == "touch" and pfn not in owned_by_guest:
            assert s2.idmap(pfn) == ref.idmap(pfn)
        elif op == "donate" and pfn not in owned_by_guest:
            owned_by_guest.add(pfn)
            had, before = len(flushes), set(s2.mapped)
            s2.on_ownership_change(pfn, False)
            ref.annotate(pfn)
            if before - s2.mapped:
                assert len(flushes) > had  # an unmapped frame must not stay in the TLB
        elif op == "give-back" and pfn in owned_by_guest:
            owned_by_guest.discard(pfn)
            s2.on_ownership_change(pfn, True)
            ref.map_page(pfn)
        for p in probes:
            assert s2(p, None) == ref.valid(p), (op, hex(pfn), hex(p))
        assert not (owned_by_guest & s2.mapped)
    assert len(s2.mapped) == sum(1 << SHIFT[k[0]] for k, e in ref.entries.items() if e in (BLOCK, PAGE))


def _lab_with_a_whole_region(pages: int = 1024):
    """A lab and a buffer that holds one whole 2 MiB region (its first pfn), nothing of it mapped yet."""
    lab = Lab("inject")
    lab.load_asm("t.S", text="f: ldr x1, [x0]\n ret")
    buf = lab.alloc("buf", pages)
    assert buf.pfns == list(range(buf.pfns[0], buf.pfns[0] + pages))
    region_pfn = -(-buf.pfns[0] // BLOCK_PAGES) * BLOCK_PAGES
    s2 = lab.hyp.stage2
    assert region_pfn + BLOCK_PAGES <= buf.pfns[-1] + 1 and not s2.mapped & set(range(region_pfn, region_pfn + BLOCK_PAGES))
    assert region_pfn >> 9 not in s2.tables[2]
    return lab, buf, region_pfn, lambda pfn: buf.va + (pfn - buf.pfns[0]) * 4096


def test_a_first_touch_maps_its_2mib_block_and_the_rest_of_the_block_never_aborts():
    lab, buf, region_pfn, va_of = _lab_with_a_whole_region()
    result = lab.call("f", va_of(region_pfn + 77) + 8)
    assert result.returned
    (idmap,) = [e for e in result.events_of("idmap") if e.data["pfn"] == region_pfn + 77]
    assert (idmap.data["first_pfn"], idmap.data["pages"]) == (region_pfn, BLOCK_PAGES)
    assert idmap.message == f"host stage-2 idmap pfn {region_pfn + 77:#x}: 2 MiB block, pfns {region_pfn:#x}-{region_pfn + BLOCK_PAGES - 1:#x}"
    assert set(range(region_pfn, region_pfn + BLOCK_PAGES)) <= lab.hyp.stage2.mapped
    for pfn in (region_pfn, region_pfn + 1, region_pfn + BLOCK_PAGES - 1):
        again = lab.call("f", va_of(pfn))
        assert again.returned and again.events_of("abort") == [], hex(pfn)


def test_donating_a_page_deletes_the_block_and_its_neighbours_fault_again_page_by_page():
    lab, buf, region_pfn, va_of = _lab_with_a_whole_region()
    assert lab.call("f", va_of(region_pfn)).returned  # maps the block
    s2 = lab.hyp.stage2
    assert region_pfn >> 9 in s2.blocks[2]
    lab.donate(region_pfn + 1)
    assert region_pfn >> 9 not in s2.blocks[2] and region_pfn >> 9 in s2.tables[2]
    assert not s2.mapped & set(range(region_pfn, region_pfn + BLOCK_PAGES))  # the whole block went
    result = lab.call("f", va_of(region_pfn + 2))
    assert result.returned
    (idmap,) = result.events_of("idmap")
    assert (idmap.data["pfn"], idmap.data["first_pfn"], idmap.data["pages"]) == (region_pfn + 2, region_pfn + 2, 1)
    assert idmap.message == f"host stage-2 idmap pfn {region_pfn + 2:#x}"
    assert region_pfn not in s2.mapped and region_pfn + 3 not in s2.mapped  # only the touched page came back
    assert lab.call("f", va_of(region_pfn + 1)).events_of("protected-access")  # the guest's page stays refused


def test_memory_that_ends_inside_a_block_is_mapped_page_by_page_there():
    s2 = HostStage2(lambda: None, BASE, BASE + BLOCK_PAGES + 3)
    assert s2.idmap(BASE + 5) == range(BASE, BASE + BLOCK_PAGES)
    assert s2.idmap(BASE + BLOCK_PAGES + 1) == range(BASE + BLOCK_PAGES + 1, BASE + BLOCK_PAGES + 2)
    assert s2.idmap(BASE + BLOCK_PAGES + 1) == range(0)  # mapped already: retry


def test_a_page_mapped_inside_a_block_deletes_the_block_and_flushes():
    """No transition gives back a frame a block still covers (the frame went page-granular when it
    was given away), but the map must not leave the block's other pages in the TLB if one did."""
    flushes = []
    s2 = HostStage2(lambda: flushes.append(1), BASE, BASE + 4 * BLOCK_PAGES)
    assert s2.idmap(BASE + 5) == range(BASE, BASE + BLOCK_PAGES)
    s2.map_page(BASE + 7)
    assert s2.mapped & set(range(BASE, BASE + BLOCK_PAGES)) == {BASE + 7}
    assert flushes == [1]
    s2.map_page(BASE + 9)  # a table there now: nothing else unmapped, no flush
    assert flushes == [1] and BASE + 9 in s2.mapped
