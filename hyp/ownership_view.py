"""The read side of the page-ownership model: the per-frame and per-VM records, and every query over them.

``hyp.ownership.Ownership`` adds the transitions on top of this class; keeping
the queries here means nothing in this module can change ownership, so a
caller that only asks (the abort handler, the oracle, reports) reads code
that has no effects. Frames outside [first_pfn, first_pfn + nr_pages) are
"not memory": queries report them as NOPAGE / not accessible / unowned.
"""
from __future__ import annotations

from typing import Iterable

from hyp.invariants import check_invariants
from hyp.ownership_frames import FrameTable
from hyp.page_checks import find_vm, is_int
from hyp.page_state import (
    ACCESSIBLE,
    DEFAULT_GUEST_IPA_BITS,
    FIRST_VM_HANDLE,
    HOST,
    HYP,
    OWNING,
    PA_BITS,
    PAGE_SHIFT,
    PFN_LIMIT,
    Component,
    ComponentId,
    FrameState,
    PageState,
    Transition,
    VmRecord,
)

NOPAGE, POISON = PageState.NOPAGE, PageState.POISON


class OwnershipView:
    """The ownership state of one machine's frames and guests, and the questions one may ask of it.

    All frames start owned by the host (as after pKVM init, before anything is
    donated).
    """

    def __init__(self, first_pfn: int, nr_pages: int, *, guest_ipa_bits: int = DEFAULT_GUEST_IPA_BITS) -> None:
        if not (is_int(first_pfn) and is_int(nr_pages)) or first_pfn < 0 or nr_pages < 1:
            raise ValueError(f"bad frame range: first_pfn={first_pfn!r} nr_pages={nr_pages!r}")
        if first_pfn + nr_pages > PFN_LIMIT:
            raise ValueError(f"frame range ends beyond the {PA_BITS}-bit physical address space")
        self.first_pfn = first_pfn
        self.nr_pages = nr_pages
        self._gfn_limit = 1 << (guest_ipa_bits - PAGE_SHIFT)
        # Only frames that left the boot state (host OWNED) are stored: creation is O(1) in nr_pages.
        self._frames = FrameTable(first_pfn, nr_pages)
        self._vms: dict[int, VmRecord] = {}
        # pfn -> {(handle, gfn)} of the guest entries (POISON excluded) that map it: the reverse
        # of the guests' stage-2, kept by Ownership._set_guest, so a transition does not scan
        # every entry of every guest (that made long sweeps slow down as donations piled up).
        self._by_pfn: dict[int, set[tuple[int, int]]] = {}
        self._next_handle = FIRST_VM_HANDLE
        # Broken rules noticed while a transition ran, reported by check_invariants().
        self._violations: list[str] = []
        self.transitions: list[Transition] = []

    # ------------------------------------------------------------------ queries

    def is_memory(self, pfn: object) -> bool:
        return pfn in self._frames

    def host_state(self, pfn: int) -> PageState:
        frame = self._frames.peek(pfn) if is_int(pfn) else None
        return frame.host if frame is not None else NOPAGE

    def hyp_state(self, pfn: int) -> PageState:
        frame = self._frames.peek(pfn) if is_int(pfn) else None
        return frame.hyp if frame is not None else NOPAGE

    def host_may_access(self, pfn: int) -> bool:
        """Whether the host stage-2 may map this frame (the lazy idmap of handle_host_mem_abort())."""
        return self.host_state(pfn) in ACCESSIBLE

    def host_share_guest_count(self, pfn: int) -> int:
        return self._frames.peek(pfn).host_share_guest_count if self.is_memory(pfn) else 0

    def hyp_pin_count(self, pfn: int) -> int:
        return self._frames.peek(pfn).hyp_pin_count if self.is_memory(pfn) else 0

    def annotation(self, pfn: int) -> tuple[int, int] | None:
        """(VM handle, gfn) recorded in the host stage-2 for a frame donated to a guest, else None.

        Hyp-owned frames carry an annotation too (owner hyp, no metadata);
        owner() reports those.
        """
        if not self.is_memory(pfn):
            return None
        ann = self._frames.peek(pfn).annotation
        if ann is None or ann.owner.id is not ComponentId.GUEST:
            return None
        return (ann.owner.handle, ann.gfn)

    def owner(self, pfn: int) -> Component | None:
        """The one component whose state is OWNED or SHARED_OWNED, or None outside memory."""
        if not self.is_memory(pfn):
            return None
        frame = self._frames.peek(pfn)
        if frame.host in OWNING:
            return HOST
        if frame.annotation is not None:
            return frame.annotation.owner
        if frame.hyp in OWNING:
            return HYP
        for handle, _gfn, state in self._mappings_of(pfn):
            if state in OWNING:
                return Component.guest(handle)
        return None

    def guests(self) -> tuple[int, ...]:
        return tuple(sorted(self._vms))

    def is_dying(self, handle: int) -> bool:
        vm = find_vm(self._vms, handle)
        return bool(vm and vm.dying)

    def guest_state(self, handle: int, gfn: int) -> PageState | None:
        """The guest's state at gfn (NOPAGE when nothing is there), or None for an unknown VM."""
        vm = find_vm(self._vms, handle)
        if vm is None:
            return None
        return vm.state_at(gfn) if is_int(gfn) else NOPAGE

    def guest_frames(self, handle: int) -> dict[int, int]:
        """gfn -> pfn for every valid (accessible) entry of the guest."""
        vm = find_vm(self._vms, handle)
        if vm is None:
            return {}
        return {gfn: e.pfn for gfn, e in sorted(vm.entries.items()) if e.state in ACCESSIBLE}

    def poisoned(self, handle: int) -> list[int]:
        """gfns this guest lost to a forced reclaim, oldest first."""
        vm = find_vm(self._vms, handle)
        return list(vm.poisoned) if vm else []

    def guest_in_poison_fault(self, handle: int, gfn: int) -> bool:
        """Whether a guest access to gfn hits a poisoned entry.

        mem_protect.c: __pkvm_vcpu_in_poison_fault(); the host's
        pkvm_pgtable_stage2_map() turns that into -EFAULT from KVM_RUN.
        """
        return self.guest_state(handle, gfn) is POISON

    def frame_state(self, pfn: int) -> FrameState | None:
        if not self.is_memory(pfn):
            return None
        frame = self._frames.peek(pfn)
        return FrameState(
            pfn=pfn,
            host=frame.host,
            hyp=frame.hyp,
            owner=self.owner(pfn),
            annotation=frame.annotation,
            host_share_guest_count=frame.host_share_guest_count,
            hyp_pin_count=frame.hyp_pin_count,
            guest_mappings=tuple(self._mappings_of(pfn)),
        )

    def snapshot(self) -> tuple:
        """A hashable copy of the whole ownership state (not the transition log), to compare before/after.

        Frames in the boot state (host OWNED, nothing else) are left out: equal
        states give equal snapshots whichever frames were ever stored.
        """
        frames = tuple(
            (pfn, f.host, f.hyp, f.annotation, f.host_share_guest_count, f.hyp_pin_count, f.holds_guest_secret)
            for pfn, f in self._frames.changed()
        )
        vms = tuple(
            (h, vm.protected, vm.dying, tuple(sorted(vm.entries.items())), tuple(vm.poisoned))
            for h, vm in sorted(self._vms.items())
        )
        return (frames, vms, self._next_handle)

    def check_invariants(self) -> list[str]:
        """Every ownership invariant, checked from scratch; returns one message per broken one.

        Violations noticed while a transition ran (the host regaining access
        to an unscrubbed frame) come first.
        """
        return self._violations + check_invariants(self._frames, self._vms)

    # ------------------------------------------------------------ internals

    def _mappings_of(self, pfn: int) -> Iterable[tuple[int, int, PageState]]:
        for handle, gfn in sorted(self._by_pfn.get(pfn, ())):
            yield (handle, gfn, self._vms[handle].entries[gfn].state)

    def _entry_pfn(self, handle: object, gfn: object) -> int | None:
        vm = find_vm(self._vms, handle)
        entry = vm.entries.get(gfn) if vm is not None and is_int(gfn) else None
        if entry is None or entry.state is POISON:
            return None
        return entry.pfn

    def _range(self, pfn: object, nr: object) -> tuple[int, ...]:
        if not (is_int(pfn) and is_int(nr)) or nr < 1:
            return ()
        return tuple(p for p in range(pfn, pfn + min(nr, self.nr_pages + 1)) if p in self._frames)

