"""Sparse ownership state: only frames that left the boot state are stored, and nothing else changes."""
from __future__ import annotations

import dataclasses

import pytest

from abi.linux import Errno
from hyp.ownership import HOST, HYP, GuestEntry, Ownership, PageState
from hyp.ownership_frames import BOOT_FRAME, FrameTable
from hyp.page_state import FrameRecord

FIRST_PFN = 0x80000
# A 64 GiB machine: a dense table would build 16M records.
HUGE = 1 << 24


def test_creation_stores_no_frame_and_knows_every_frame():
    m = Ownership(FIRST_PFN, HUGE)
    assert m._frames.stored() == 0
    for pfn in (FIRST_PFN, FIRST_PFN + HUGE // 2, FIRST_PFN + HUGE - 1):
        assert m.is_memory(pfn)
        assert m.host_state(pfn) is PageState.OWNED and m.hyp_state(pfn) is PageState.NOPAGE
        assert m.owner(pfn) == HOST and m.host_may_access(pfn)
        assert m.frame_state(pfn).host_share_guest_count == 0
    assert not m.is_memory(FIRST_PFN + HUGE) and not m.is_memory(FIRST_PFN - 1)
    assert m._frames.stored() == 0, "queries must not store records"
    assert m.check_invariants() == []


def test_transitions_work_on_unstored_frames_and_a_round_trip_restores_the_snapshot():
    m = Ownership(FIRST_PFN, HUGE)
    fresh = m.snapshot()
    pfn = FIRST_PFN + HUGE - 1
    assert m.host_donate_hyp(pfn) == Errno.SUCCESS
    assert m.owner(pfn) == HYP and m.snapshot() != fresh
    assert m.check_invariants() == []
    assert m.hyp_donate_host(pfn) == Errno.SUCCESS
    assert m.snapshot() == fresh, "a frame back in the boot state must not show in the snapshot"
    vm = m.create_guest(protected=True)
    assert m.host_donate_guest(pfn, vm, 7) == Errno.SUCCESS
    assert m.host_donate_guest(FIRST_PFN + HUGE, vm, 8) == Errno.EPERM  # one past the end: not memory
    assert m.check_invariants() == []
    assert m.host_force_reclaim_guest_page(pfn) == Errno.SUCCESS
    assert m.owner(pfn) == HOST and m.check_invariants() == []


def test_invariants_see_a_guest_entry_that_maps_an_unstored_frame():
    """The frame has no record (host OWNED by default), yet a guest owns it too: two owners."""
    m = Ownership(FIRST_PFN, 16)
    vm = m.create_guest(protected=True)
    m._vms[vm].entries[3] = GuestEntry(PageState.OWNED, FIRST_PFN + 5)
    m._by_pfn.setdefault(FIRST_PFN + 5, set()).add((vm, 3))
    assert m._frames.stored() == 0
    problems = m.check_invariants()
    assert any(p.startswith(f"pfn {FIRST_PFN + 5:#x}: 2 owners") for p in problems), problems


def test_invariants_see_a_stored_frame_corrupted_later():
    m = Ownership(FIRST_PFN, 16)
    m._frames[FIRST_PFN + 2].holds_guest_secret = True
    assert m.check_invariants() != []
    m._frames[FIRST_PFN + 2].holds_guest_secret = False
    assert m.check_invariants() == []


def test_the_boot_stand_in_is_the_default_record_and_read_only():
    assert BOOT_FRAME == FrameRecord() and FrameRecord() == BOOT_FRAME
    for f in dataclasses.fields(FrameRecord):
        assert getattr(BOOT_FRAME, f.name) == f.default
        with pytest.raises(AttributeError):
            setattr(BOOT_FRAME, f.name, f.default)


def test_frame_table_lookups():
    t = FrameTable(10, 3)
    assert [p in t for p in (9, 10, 12, 13, "10", True)] == [False, True, True, False, False, False]
    assert t.peek(11) is BOOT_FRAME and t.peek(13) is None and t.stored() == 0
    record = t[11]
    assert t.peek(11) is record and t.stored() == 1
    with pytest.raises(KeyError):
        t[13]
    assert t.get(13) is None and list(t.changed()) == []
    record.hyp_pin_count = 1
    assert list(t.changed()) == [(11, record)]
