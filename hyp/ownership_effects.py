"""How an ownership transition changes state: the shared effects every transition of ``hyp.ownership`` uses.

Host-side changes go through ``_set_host`` so that the host stage-2 callback
fires exactly when host access flips (and a frame still holding a guest's
secret is flagged if the host regains it unscrubbed); guest entries go through
``_set_guest`` so the reverse index stays right; ``_scrub`` models
hyp_poison_page(). Kept apart from the transitions so each transition module
(``hyp.ownership_vm``, ``hyp.ownership_host_hyp``, ``hyp.ownership``) holds
only checks and effects in mem_protect.c's order, and from the queries
(``hyp.ownership_view``) so the read side stays free of effects.

Also here: what each transition logs as the frames it concerns (the
``touches`` argument of ``hyp.transition_log.transition``).
"""
from __future__ import annotations

from typing import Callable

from abi.linux import Errno
from hyp.ownership_view import OwnershipView
from hyp.page_checks import check_gfn, check_guest_gfn, get_valid_guest_entry
from hyp.page_state import ACCESSIBLE, DEFAULT_GUEST_IPA_BITS, Annotation, GuestEntry, PageState, VmRecord

OWNED, SHARED_OWNED, SHARED_BORROWED = PageState.OWNED, PageState.SHARED_OWNED, PageState.SHARED_BORROWED
NOPAGE, POISON = PageState.NOPAGE, PageState.POISON


def _noop_stage2(pfn: int, mapped_allowed: bool) -> None:
    pass


def _noop_zero(pfn: int) -> None:
    pass


# What each transition logs as the frames it concerns (see hyp.transition_log).
def no_frame(own: OwnershipEffects, *args: object) -> tuple[()]:
    return ()


def the_pfn(own: OwnershipEffects, pfn: object, *args: object) -> tuple[object]:
    return (pfn,)


def pfn_range(own: OwnershipEffects, pfn: object, nr: object) -> tuple[int, ...]:
    return own._range(pfn, nr)


def entry_frame(own: OwnershipEffects, handle: object, gfn: object) -> tuple[int | None]:
    return (own._entry_pfn(handle, gfn),)


class OwnershipEffects(OwnershipView):
    """The records and queries of :class:`OwnershipView`, plus the effect callbacks and the state setters."""

    def __init__(
        self,
        first_pfn: int,
        nr_pages: int,
        *,
        on_host_stage2_change: Callable[[int, bool], None] | None = None,
        zero_frame: Callable[[int], None] | None = None,
        guest_ipa_bits: int = DEFAULT_GUEST_IPA_BITS,
    ) -> None:
        super().__init__(first_pfn, nr_pages, guest_ipa_bits=guest_ipa_bits)
        self._on_host_stage2_change = on_host_stage2_change or _noop_stage2
        self._zero_frame = zero_frame or _noop_zero

    # ------------------------------------------------------------ checks

    def _check_gfn_free(self, vm: VmRecord, gfn: int) -> Errno:
        """The host may give the guest a page at gfn: inside the IPA space (-ERANGE) and nothing there (-EPERM)."""
        if ret := check_gfn(gfn, self._gfn_limit):
            return ret
        return Errno.SUCCESS if vm.state_at(gfn) is NOPAGE else Errno.EPERM

    def _check_guest_side(
        self, handle: object, gfn: object, *, guest: PageState, host: PageState
    ) -> tuple[Errno, VmRecord | None]:
        """Checks of the guest-initiated transitions: a live VM, a valid entry in state guest, host in state host."""
        ret, vm = check_guest_gfn(self._vms, self._gfn_limit, handle, gfn, dying=False)
        if ret or (ret := get_valid_guest_entry(vm, gfn)):
            return ret, None
        entry = vm.entries[gfn]
        if entry.state is not guest or self._frames[entry.pfn].host is not host:
            return Errno.EPERM, None
        return Errno.SUCCESS, vm

    # State changes. Host changes go through _set_host so that the stage-2
    # callback fires exactly when host access flips.

    def _set_host(self, pfn: int, state: PageState, annotation: Annotation | None = None) -> None:
        frame = self._frames[pfn]
        could = frame.host in ACCESSIBLE
        frame.host = state
        frame.annotation = annotation
        can = state in ACCESSIBLE
        if could != can:
            if can and frame.holds_guest_secret:
                self._violations.append(f"pfn {pfn:#x}: host regained access before the frame was zeroed")
            self._on_host_stage2_change(pfn, can)

    def _scrub(self, pfn: int) -> None:
        # mem_protect.c: hyp_poison_page() clears the whole page.
        self._zero_frame(pfn)
        self._frames[pfn].holds_guest_secret = False

    def _set_guest(self, vm: VmRecord, gfn: int, state: PageState, pfn: int) -> None:
        old = vm.entries.get(gfn)
        if old is not None and old.state is not POISON:
            self._by_pfn[old.pfn].discard((vm.handle, gfn))
        if state is NOPAGE:
            vm.entries.pop(gfn, None)
        else:
            vm.entries[gfn] = GuestEntry(state, pfn)
            if state is not POISON:
                self._by_pfn.setdefault(pfn, set()).add((vm.handle, gfn))
