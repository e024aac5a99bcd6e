"""Ownership invariants, checked from scratch over the model's records.

Kept apart from the transitions in ``hyp.ownership`` so that the checks read
only the state and never reuse the code that produced it: a transition that
breaks an invariant cannot also hide the breakage. The rules are those of
docs/facts.md ("pKVM at EL2"): exactly one owner per frame, a host annotation
exactly while the host state is NOPAGE, share and pin counts that match the
borrowers, and no guest secret the host can read.
"""
from __future__ import annotations

from typing import Hashable, Mapping

from hyp.ownership_frames import BOOT_FRAME, FrameTable
from hyp.page_state import (
    ACCESSIBLE,
    HYP,
    OWNING,
    Annotation,
    Component,
    ComponentId,
    FrameRecord,
    GuestEntry,
    PageState,
    VmRecord,
)

# (handle, gfn, state) of one guest entry that maps a frame.
GuestMapping = tuple[int, int, PageState]


# States with at most this many stored frame records plus guest entries are memoised by value
# (check_invariants). A restored lab replays the same few small states run after run (issue 12: the
# checks were ~65 us of a ~500 us scenario run); a long random walk rarely repeats a big state, and
# building its key would only add to the check.
MEMO_MAX_ITEMS = 64
MEMO_MAX_STATES = 4096


class _Memo:
    """state key -> the problems the full check found for that state; emptied when full (a bounded cache)."""

    def __init__(self) -> None:
        self.results: dict[Hashable, tuple[str, ...]] = {}

    def get(self, key: Hashable) -> tuple[str, ...] | None:
        return self.results.get(key)

    def put(self, key: Hashable, problems: list[str]) -> None:
        if len(self.results) >= MEMO_MAX_STATES:
            self.results.clear()
        self.results[key] = tuple(problems)


# A cache of a pure function (state value -> messages), like faultlab.leak.grams: never semantic state.
_MEMO = _Memo()


def state_key(frames: FrameTable, vms: Mapping[int, VmRecord]) -> Hashable | None:
    """Every value the full check reads, as one hashable value; None for a state not to memoise.

    What check_from_scratch reads: the memory range (``pfn in frames``); each stored
    record's fields (an unstored frame reads as BOOT_FRAME, a constant); each VM in
    iteration order (that orders the messages and each frame's mappings): its handle,
    whether it is protected, its entries in order and its poisoned gfns (membership
    only). Nothing else (not ``dying``, not the vcpus) enters a decision or a message.
    Only states whose values all have their declared types are keyed: then equal keys
    mean identical values (an int equals an int of the same value, an enum member
    only itself), so the full check takes the same branches and prints the same
    messages; a state with a stray type (a test corrupting a record with a raw int)
    is checked in full. tests/test_invariants_memo.py compares both on random and
    corrupted states.
    """
    records = frames._records  # noqa: SLF001 - the table's own storage, read only
    if len(records) + sum(len(vm.entries) for vm in vms.values()) > MEMO_MAX_ITEMS or type(frames) is not FrameTable:
        return None
    frame_key = []
    for pfn, r in records.items():
        if not (type(r) is FrameRecord and type(r.host) is PageState and type(r.hyp) is PageState
                and type(r.host_share_guest_count) is int and type(r.hyp_pin_count) is int
                and type(r.holds_guest_secret) is bool and (r.annotation is None or _canonical(r.annotation))):
            return None
        frame_key.append((pfn, r.host, r.hyp, r.annotation, r.host_share_guest_count, r.hyp_pin_count, r.holds_guest_secret))
    vm_key = []
    for vm in vms.values():
        if not (type(vm) is VmRecord and type(vm.handle) is int and type(vm.protected) is bool):
            return None
        entries = []
        for gfn, e in vm.entries.items():
            if not (type(gfn) is int and type(e) is GuestEntry and type(e.state) is PageState and type(e.pfn) is int):
                return None
            entries.append((gfn, e.state, e.pfn))
        vm_key.append((vm.handle, vm.protected, tuple(entries), tuple(vm.poisoned)))
    return (frames.first_pfn, frames.end_pfn, tuple(frame_key), tuple(vm_key))


_OPTIONAL_INT = (int, type(None))


def _canonical(ann: object) -> bool:
    """An Annotation whose fields all have their declared types (so equality means identity of values)."""
    return (type(ann) is Annotation and type(ann.owner) is Component and type(ann.owner.id) is ComponentId
            and type(ann.owner.handle) in _OPTIONAL_INT and type(ann.gfn) in _OPTIONAL_INT)


def check_invariants(frames: FrameTable, vms: Mapping[int, VmRecord]) -> list[str]:
    """check_from_scratch(frames, vms), memoised by the value of the (small) state it reads.

    Equivalent by construction: the key holds every value the full check reads
    (state_key), and a state not seen before is checked in full.
    """
    key = state_key(frames, vms)
    if key is None:
        return check_from_scratch(frames, vms)
    cached = _MEMO.get(key)
    if cached is not None:
        return list(cached)
    problems = check_from_scratch(frames, vms)
    _MEMO.put(key, problems)
    return problems


def check_from_scratch(frames: FrameTable, vms: Mapping[int, VmRecord]) -> list[str]:
    """Every broken invariant of frames and VMs, one message each: VMs first, then frames by pfn.

    The whole state is checked although only some frames are stored: every frame
    that left the boot state and every frame a guest entry maps is checked on its
    own; each remaining frame is the boot record with no guest mapping, which
    is checked once (and must pass: a host-owned frame nobody borrows).
    """
    problems: list[str] = []
    mappings: dict[int, list[GuestMapping]] = {}
    for vm in vms.values():
        problems += _check_vm(vm, frames, mappings)
    problems += [f"boot state: {p}" for p in _check_frame(BOOT_FRAME, [])]
    pfns = {pfn for pfn, _ in frames.changed()} | mappings.keys()
    for pfn in sorted(pfns):
        problems += [f"pfn {pfn:#x}: {p}" for p in _check_frame(frames.peek(pfn), mappings.get(pfn, []))]
    return problems


def _check_vm(vm: VmRecord, frames: FrameTable, mappings: dict[int, list[GuestMapping]]) -> list[str]:
    """Check one VM's entries and add its valid ones to mappings (pfn -> entries that map it)."""
    problems = []
    who = f"guest {vm.handle:#x}"
    for gfn, entry in vm.entries.items():
        if entry.state is PageState.POISON:
            if gfn not in vm.poisoned:
                problems.append(f"{who} gfn {gfn:#x}: POISON entry without a forced reclaim")
            continue
        if entry.state is PageState.NOPAGE:
            problems.append(f"{who} gfn {gfn:#x}: stored NOPAGE entry")
            continue
        if entry.pfn not in frames:
            problems.append(f"{who} gfn {gfn:#x}: maps pfn {entry.pfn:#x} outside memory")
            continue
        # hyp-main.c: protected VMs only receive donations, others only shares.
        if vm.protected == (entry.state is PageState.SHARED_BORROWED):
            kind = "protected" if vm.protected else "non-protected"
            problems.append(f"{who} gfn {gfn:#x}: {entry.state} in a {kind} VM")
        mappings.setdefault(entry.pfn, []).append((vm.handle, gfn, entry.state))
    return problems


def _check_frame(frame: FrameRecord, maps: list[GuestMapping]) -> list[str]:
    """Check one frame's host and hyp states against the guest entries that map it."""
    problems = []
    if frame.host is PageState.POISON or frame.hyp is PageState.POISON:
        problems.append("POISON on the host or hyp side")
    owners = (frame.host in OWNING) + (frame.hyp in OWNING) + sum(s in OWNING for _h, _g, s in maps)
    if owners != 1:
        problems.append(f"{owners} owners")
    if (frame.host is PageState.NOPAGE) != (frame.annotation is not None):
        problems.append(f"host {frame.host} with annotation {frame.annotation}")
    if frame.hyp_pin_count < 0 or frame.host_share_guest_count < 0:
        problems.append("negative count")
    if frame.hyp_pin_count and frame.hyp is not PageState.SHARED_BORROWED:
        problems.append(f"{frame.hyp_pin_count} hyp pins on hyp {frame.hyp}")
    hyp_shared = frame.hyp in (PageState.SHARED_BORROWED, PageState.SHARED_OWNED)
    if hyp_shared and frame.host is not PageState.SHARED_OWNED:
        problems.append(f"hyp {frame.hyp} but host {frame.host}")
    borrowed = [m for m in maps if m[2] is PageState.SHARED_BORROWED]
    if frame.host_share_guest_count != len(borrowed):
        problems.append(f"share count {frame.host_share_guest_count} but {len(borrowed)} guest borrowers")
    problems += _check_host_side(frame, maps, borrowed)
    if frame.holds_guest_secret:
        if frame.host in ACCESSIBLE:
            problems.append("host may access a frame holding guest data that was never scrubbed")
        if PageState.OWNED not in {m[2] for m in maps}:
            problems.append("guest data left behind in a frame no guest owns")
    return problems


def _check_host_side(frame: FrameRecord, maps: list[GuestMapping], borrowed: list[GuestMapping]) -> list[str]:
    """What the host state (or, for NOPAGE, its annotation) says the hyp and guest sides must be."""
    problems = []
    guest_holders = {m[2] for m in maps} - {PageState.SHARED_BORROWED}
    if frame.host is PageState.OWNED:
        if frame.hyp is not PageState.NOPAGE or maps:
            problems.append(f"host OWNED but hyp {frame.hyp}, guests {maps}")
    elif frame.host is PageState.SHARED_OWNED:
        if (frame.hyp is PageState.SHARED_BORROWED) == bool(borrowed):
            problems.append("host SHARED_OWNED must be shared with hyp or with guests, not both or neither")
        if guest_holders:
            problems.append(f"host SHARED_OWNED but a guest holds it: {maps}")
    elif frame.host is PageState.SHARED_BORROWED:
        if frame.hyp is not PageState.NOPAGE or [m[2] for m in maps] != [PageState.SHARED_OWNED]:
            problems.append(f"host SHARED_BORROWED needs one guest SHARED_OWNED and hyp NOPAGE: {maps}")
    elif frame.annotation is not None:
        owner = frame.annotation.owner
        if owner == HYP:
            if frame.hyp is not PageState.OWNED or maps:
                problems.append(f"annotated hyp but hyp {frame.hyp}, guests {maps}")
        elif owner.id is ComponentId.GUEST:
            expected = [(owner.handle, frame.annotation.gfn, PageState.OWNED)]
            if frame.hyp is not PageState.NOPAGE or maps != expected:
                problems.append(f"annotated {owner} gfn {frame.annotation.gfn} but guests {maps}, hyp {frame.hyp}")
        else:
            problems.append(f"annotated with owner {owner}")
    return problems
