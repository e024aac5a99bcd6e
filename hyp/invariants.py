"""Ownership invariants, checked from scratch over the model's records.

Kept apart from the transitions in ``hyp.ownership`` so that the checks read
only the state and never reuse the code that produced it: a transition that
breaks an invariant cannot also hide the breakage. The rules are those of
docs/facts.md ("pKVM at EL2"): exactly one owner per frame, a host annotation
exactly while the host state is NOPAGE, share and pin counts that match the
borrowers, and no guest secret the host can read.
"""
from __future__ import annotations

from typing import Mapping

from hyp.ownership_frames import BOOT_FRAME, FrameTable
from hyp.page_state import ACCESSIBLE, HYP, OWNING, ComponentId, FrameRecord, PageState, VmRecord

# (handle, gfn, state) of one guest entry that maps a frame.
GuestMapping = tuple[int, int, PageState]


def check_invariants(frames: FrameTable, vms: Mapping[int, VmRecord]) -> list[str]:
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
