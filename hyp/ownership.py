"""pKVM page ownership: who may touch each physical frame, and the checked moves between owners.

This is the model of arch/arm64/kvm/hyp/nvhe/mem_protect.c that the rest of
``hyp`` consults. Every frame has a state on the host side and on the hyp side
(pKVM keeps both in ``struct hyp_page``); a guest's state lives in its own
stage-2 entry for a gfn. Each ownership change is one method named after the
kernel function it models. Like the kernel, a method first checks both sides
and returns an :class:`Errno` without touching anything when a check fails;
only then does it change both sides. Bad arguments are reported the same way:
no transition raises.

The pieces live in modules of their own: the states, components and records
in ``hyp.page_state`` (re-exported here), the queries in
``hyp.ownership_view`` (the base class), the checks in ``hyp.page_checks``,
the invariants in ``hyp.invariants`` and the transition log in
``hyp.transition_log``. This module holds the transitions and their effects.

Effects the emulator must see are delivered through two callbacks given to the
constructor (this module imports nothing from ``emu``):

- ``on_host_stage2_change(pfn, mapped_allowed)`` when the host loses or regains
  the right to access a frame (host stage-2 unmap / lazy map allowed again);
- ``zero_frame(pfn)`` to scrub a frame (``hyp_poison_page()``).

Where this model departs from pKVM, or picks one of several behaviours, the
method docstring says so. Facts are cited as ``mem_protect.c: ...`` (upstream
Linux with the 2026 pKVM guest-memory / forced-reclaim series), read through
the search tool; no code was copied.
"""
from __future__ import annotations

from typing import Callable

from abi.linux import Errno
from hyp.page_checks import (
    check_gfn,
    check_guest_gfn,
    check_page_states,
    check_pfns,
    check_range_allowed_memory,
    find_vm,
    get_valid_guest_entry,
    is_int,
    pfn_range_is_valid,
)
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
    Annotation,
    Component,
    ComponentId,
    FrameState,
    GuestEntry,
    PageState,
    Transition,
    VmRecord,
)
from hyp.ownership_view import OwnershipView
from hyp.transition_log import transition

__all__ = [
    "ACCESSIBLE", "DEFAULT_GUEST_IPA_BITS", "FIRST_VM_HANDLE", "HOST", "HYP", "OWNING", "PA_BITS", "PAGE_SHIFT",
    "PFN_LIMIT", "Annotation", "Component", "ComponentId", "FrameState", "GuestEntry", "Ownership", "PageState",
    "Transition",
]

OWNED, SHARED_OWNED, SHARED_BORROWED = PageState.OWNED, PageState.SHARED_OWNED, PageState.SHARED_BORROWED
NOPAGE, POISON = PageState.NOPAGE, PageState.POISON


def _noop_stage2(pfn: int, mapped_allowed: bool) -> None:
    pass


def _noop_zero(pfn: int) -> None:
    pass


# What each transition logs as the frames it concerns (see hyp.transition_log).
def _no_frame(own: Ownership, *args: object) -> tuple[()]:
    return ()


def _the_pfn(own: Ownership, pfn: object, *args: object) -> tuple[object]:
    return (pfn,)


def _pfn_range(own: Ownership, pfn: object, nr: object) -> tuple[int, ...]:
    return own._range(pfn, nr)


def _entry_frame(own: Ownership, handle: object, gfn: object) -> tuple[int | None]:
    return (own._entry_pfn(handle, gfn),)


class Ownership(OwnershipView):
    """Page ownership of one machine: frames [first_pfn, first_pfn + nr_pages) and its guests.

    The queries and the records come from :class:`OwnershipView`; this class
    adds one method per transition. Transitions on frames outside the range
    fail the way pKVM's check_range_allowed_memory() does.
    """

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

    # ---------------------------------------------------------- VM lifecycle

    def create_guest(self, protected: bool = True) -> int:
        """Create a VM and return its handle (pkvm.c: __pkvm_init_vm()).

        ``protected`` selects the pVM kind: hyp-main.c only lets the host
        donate to protected VMs and only share with non-protected ones.
        """
        handle = self._next_handle
        self._next_handle += 1
        self._vms[handle] = VmRecord(handle=handle, protected=bool(protected))
        self.transitions.append(Transition("__pkvm_init_vm", None, (bool(protected),), Errno.SUCCESS, (), ()))
        return handle

    @transition("__pkvm_start_teardown_vm", _no_frame)
    def teardown_guest(self, handle: int) -> Errno:
        """Mark the VM dying (pkvm.c: __pkvm_start_teardown_vm()): -EINVAL if unknown or already dying."""
        vm = find_vm(self._vms, handle, dying=False)
        if vm is None:
            return Errno.EINVAL
        vm.dying = True
        return Errno.SUCCESS

    @transition("__pkvm_reclaim_dying_guest_page", _entry_frame)
    def reclaim_dying_guest_page(self, handle: int, gfn: int) -> Errno:
        """Give one page of a dying VM back to the host (pkvm.c: __pkvm_reclaim_dying_guest_page()).

        Order: unknown VM or not dying -> -EINVAL; gfn outside the IPA space
        -> -ERANGE; then by guest state (mem_protect.c:
        __pkvm_host_reclaim_page_guest()):
        NOPAGE -> -ENOENT (get_valid_guest_pte());
        POISON -> 0, entry dropped (the kernel maps -EHWPOISON to 0);
        OWNED -> scrub, host OWNED (host regains access after the scrub);
        SHARED_OWNED (shared back to the host) -> host OWNED, no scrub, the host already saw it;
        SHARED_BORROWED -> -EPERM (a host share leaves through host_unshare_guest()).
        """
        ret, vm = check_guest_gfn(self._vms, self._gfn_limit, handle, gfn, dying=True)
        if ret:
            return ret
        state = vm.state_at(gfn)
        if state is NOPAGE:
            return Errno.ENOENT
        if state is SHARED_BORROWED:
            return Errno.EPERM
        pfn = vm.entries[gfn].pfn
        self._set_guest(vm, gfn, NOPAGE, pfn)
        if state is OWNED:
            self._scrub(pfn)
            self._set_host(pfn, OWNED)
        elif state is SHARED_OWNED:
            self._set_host(pfn, OWNED)
        return Errno.SUCCESS

    def reclaim_all_dying_guest_pages(self, handle: int) -> Errno:
        """Return every page of a dying VM, as the host's stage-2 destroy does: one transition per gfn.

        Pages the host shared with the guest are unshared (host_unshare_guest),
        the others reclaimed. Stops at the first error and returns it. Not a
        transition itself: only the per-page calls are logged.
        """
        vm = find_vm(self._vms, handle, dying=True)
        if vm is None:
            return Errno.EINVAL
        for gfn, entry in sorted(vm.entries.items()):
            if entry.state is SHARED_BORROWED:
                ret = self.host_unshare_guest(handle, gfn)
            else:
                ret = self.reclaim_dying_guest_page(handle, gfn)
            if ret:
                return ret
        return Errno.SUCCESS

    @transition("__pkvm_finalize_teardown_vm", _no_frame)
    def finalize_teardown_guest(self, handle: int) -> Errno:
        """Forget a dying VM (pkvm.c: __pkvm_finalize_teardown_vm()).

        -EINVAL if unknown or not dying. Model choice: -EBUSY while the guest
        still has any stage-2 entry; pKVM relies on the host having reclaimed
        everything first, and refusing keeps every annotation pointing at a
        live VM.
        """
        vm = find_vm(self._vms, handle, dying=True)
        if vm is None:
            return Errno.EINVAL
        if vm.entries:
            return Errno.EBUSY
        del self._vms[handle]
        return Errno.SUCCESS

    # -------------------------------------------------------- host <-> hyp

    @transition("__pkvm_host_share_hyp", _the_pfn)
    def host_share_hyp(self, pfn: int) -> Errno:
        """host OWNED -> SHARED_OWNED, hyp NOPAGE -> SHARED_BORROWED (mem_protect.c: __pkvm_host_share_hyp()).

        Not memory -> -EPERM (check_range_allowed_memory()); wrong host state,
        then wrong hyp state -> -EPERM.
        """
        if ret := check_page_states(self._frames, pfn, 1, host=OWNED, hyp=NOPAGE):
            return ret
        self._set_host(pfn, SHARED_OWNED)
        self._frames[pfn].hyp = SHARED_BORROWED
        return Errno.SUCCESS

    @transition("__pkvm_host_unshare_hyp", _the_pfn)
    def host_unshare_hyp(self, pfn: int) -> Errno:
        """Reverse of host_share_hyp (mem_protect.c: __pkvm_host_unshare_hyp()).

        Checks host SHARED_OWNED, hyp SHARED_BORROWED (-EPERM), then the pin
        count (__hyp_check_page_count_range(): -EBUSY while hyp holds pins).
        """
        if ret := check_page_states(self._frames, pfn, 1, host=SHARED_OWNED, hyp=SHARED_BORROWED):
            return ret
        if self._frames[pfn].hyp_pin_count:
            return Errno.EBUSY
        self._frames[pfn].hyp = NOPAGE
        self._set_host(pfn, OWNED)
        return Errno.SUCCESS

    @transition("hyp_pin_shared_mem", _pfn_range)
    def hyp_pin_shared_mem(self, pfn: int, nr: int = 1) -> Errno:
        """Take a hyp reference on frames the host shares with hyp (mem_protect.c: hyp_pin_shared_mem()).

        Every frame must be host SHARED_OWNED and hyp SHARED_BORROWED: -EPERM,
        or -EINVAL for a range that runs out of memory.
        """
        if ret := check_page_states(self._frames, pfn, nr, host=SHARED_OWNED, hyp=SHARED_BORROWED):
            return ret
        for p in range(pfn, pfn + nr):
            self._frames[p].hyp_pin_count += 1
        return Errno.SUCCESS

    @transition("hyp_unpin_shared_mem", _pfn_range)
    def hyp_unpin_shared_mem(self, pfn: int, nr: int = 1) -> Errno:
        """Drop a hyp reference (mem_protect.c: hyp_unpin_shared_mem()).

        pKVM checks nothing here and BUG()s on a zero refcount; the model
        checks the shared states (-EPERM) and returns -EINVAL for an unpinned
        frame instead of panicking.
        """
        if ret := check_page_states(self._frames, pfn, nr, host=SHARED_OWNED, hyp=SHARED_BORROWED):
            return ret
        if any(self._frames[p].hyp_pin_count == 0 for p in range(pfn, pfn + nr)):
            return Errno.EINVAL
        for p in range(pfn, pfn + nr):
            self._frames[p].hyp_pin_count -= 1
        return Errno.SUCCESS

    @transition("__pkvm_host_donate_hyp", _pfn_range)
    def host_donate_hyp(self, pfn: int, nr: int = 1) -> Errno:
        """host OWNED -> NOPAGE (annotated hyp), hyp NOPAGE -> OWNED (mem_protect.c: __pkvm_host_donate_hyp()).

        pfn_range_is_valid() -> -EINVAL; memory check -> -EPERM / -EINVAL;
        any host frame not OWNED, then any hyp frame not NOPAGE -> -EPERM.
        """
        if ret := check_page_states(self._frames, pfn, nr, host=OWNED, hyp=NOPAGE, pa_check=True):
            return ret
        for p in range(pfn, pfn + nr):
            self._frames[p].hyp = OWNED
            self._set_host(p, NOPAGE, Annotation(HYP))
        return Errno.SUCCESS

    @transition("__pkvm_hyp_donate_host", _pfn_range)
    def hyp_donate_host(self, pfn: int, nr: int = 1) -> Errno:
        """hyp OWNED -> NOPAGE, host NOPAGE -> OWNED (mem_protect.c: __pkvm_hyp_donate_host()).

        The hyp check comes first; pKVM does no memory check here (only EL2
        calls it), the model adds pfn_range_is_valid() -> -EINVAL. No scrub:
        pKVM leaves clearing to the caller. The -EBUSY pin check of pKVM cannot
        fire in this model (pins need a shared frame).
        """
        if not (is_int(pfn) and is_int(nr)) or nr < 1 or not pfn_range_is_valid(pfn, nr):
            return Errno.EINVAL
        pfns = range(pfn, pfn + nr)
        # Outside memory the hyp state reads as NOPAGE, so the hyp check fails first.
        if any(self.hyp_state(p) is not OWNED for p in pfns):
            return Errno.EPERM
        if any(self._frames[p].host is not NOPAGE for p in pfns):
            return Errno.EPERM
        for p in pfns:
            self._frames[p].hyp = NOPAGE
            self._set_host(p, OWNED)
        return Errno.SUCCESS

    # ------------------------------------------------------- host <-> guest

    @transition("__pkvm_host_donate_guest", _the_pfn)
    def host_donate_guest(self, pfn: int, handle: int, gfn: int) -> Errno:
        """host OWNED -> NOPAGE annotated (handle, gfn); guest NOPAGE -> OWNED.

        mem_protect.c: __pkvm_host_donate_guest().

        Order: bad argument types -> -EINVAL; unknown, dying or non-protected
        VM -> -EINVAL (hyp-main.c: the handler needs a loaded protected vCPU,
        and none can be loaded once the VM is dying); not memory or host not
        OWNED -> -EPERM; gfn outside the IPA space -> -ERANGE; guest entry not
        NOPAGE (POISON included) -> -EPERM.
        """
        if not (is_int(pfn) and is_int(handle) and is_int(gfn)):
            return Errno.EINVAL
        vm = find_vm(self._vms, handle, dying=False, protected=True)
        if vm is None:
            return Errno.EINVAL
        if ret := check_range_allowed_memory(self._frames, pfn, 1):
            return ret
        if self._frames[pfn].host is not OWNED:
            return Errno.EPERM
        if ret := self._check_gfn_free(vm, gfn):
            return ret
        self._set_guest(vm, gfn, OWNED, pfn)
        self._set_host(pfn, NOPAGE, Annotation(Component.guest(handle), gfn))
        self._frames[pfn].holds_guest_secret = True
        return Errno.SUCCESS

    @transition("__pkvm_host_share_guest", _the_pfn)
    def host_share_guest(self, pfn: int, handle: int, gfn: int) -> Errno:
        """host OWNED/SHARED_OWNED -> SHARED_OWNED (count + 1); guest NOPAGE -> SHARED_BORROWED.

        mem_protect.c: __pkvm_host_share_guest(). Order: bad types, unknown,
        dying or protected VM -> -EINVAL; pfn_range_is_valid() -> -EINVAL; not
        memory -> -EPERM; gfn outside IPA space -> -ERANGE; guest entry not
        NOPAGE -> -EPERM; host OWNED, or SHARED_OWNED with a non-zero share
        count (multi-sharing with non-protected guests is tolerated), else
        -EPERM (e.g. a frame shared with hyp). pKVM's -EBUSY at a count of
        U32_MAX is not modelled.
        """
        if not (is_int(pfn) and is_int(handle) and is_int(gfn)):
            return Errno.EINVAL
        vm = find_vm(self._vms, handle, dying=False, protected=False)
        if vm is None:
            return Errno.EINVAL
        if ret := check_pfns(self._frames, pfn, 1, pa_check=True):
            return ret
        if ret := self._check_gfn_free(vm, gfn):
            return ret
        frame = self._frames[pfn]
        shareable = frame.host is OWNED or (frame.host is SHARED_OWNED and frame.host_share_guest_count > 0)
        if not shareable:
            return Errno.EPERM
        self._set_host(pfn, SHARED_OWNED)
        frame.host_share_guest_count += 1
        self._set_guest(vm, gfn, SHARED_BORROWED, pfn)
        return Errno.SUCCESS

    @transition("__pkvm_host_unshare_guest", _entry_frame)
    def host_unshare_guest(self, handle: int, gfn: int) -> Errno:
        """Undo one host share (mem_protect.c: __pkvm_host_unshare_guest(), __check_host_shared_guest()).

        Order: bad types, unknown or protected VM -> -EINVAL (works on a dying
        VM: the handler looks it up by handle); gfn outside IPA space ->
        -ERANGE; no valid entry -> -ENOENT; entry not SHARED_BORROWED ->
        -EPERM. The host goes back to OWNED when the count reaches 0.
        """
        ret, vm = check_guest_gfn(self._vms, self._gfn_limit, handle, gfn, protected=False)
        if ret:
            return ret
        state = vm.state_at(gfn)
        if state in (NOPAGE, POISON):
            return Errno.ENOENT
        if state is not SHARED_BORROWED:
            return Errno.EPERM
        pfn = vm.entries[gfn].pfn
        frame = self._frames[pfn]
        if frame.host is not SHARED_OWNED:
            return Errno.EPERM
        if frame.host_share_guest_count == 0:
            return Errno.EINVAL
        self._set_guest(vm, gfn, NOPAGE, pfn)
        frame.host_share_guest_count -= 1
        if frame.host_share_guest_count == 0:
            self._set_host(pfn, OWNED)
        return Errno.SUCCESS

    @transition("__pkvm_guest_share_host", _entry_frame)
    def guest_share_host(self, handle: int, gfn: int) -> Errno:
        """Guest-initiated: guest OWNED -> SHARED_OWNED, host NOPAGE -> SHARED_BORROWED.

        mem_protect.c: __pkvm_guest_share_host(). Order: bad types, unknown or
        dying VM (its vCPUs cannot run) -> -EINVAL; gfn outside IPA space ->
        -ERANGE; get_valid_guest_pte(): POISON -> -EHWPOISON, nothing mapped
        -> -ENOENT; guest not OWNED, then host not NOPAGE -> -EPERM. The host
        annotation is replaced by a valid mapping: the host may access it.
        """
        ret, vm = self._check_guest_side(handle, gfn, guest=OWNED, host=NOPAGE)
        if ret:
            return ret
        pfn = vm.entries[gfn].pfn
        self._set_guest(vm, gfn, SHARED_OWNED, pfn)
        # The guest chose to expose the contents: nothing secret is left.
        self._frames[pfn].holds_guest_secret = False
        self._set_host(pfn, SHARED_BORROWED)
        return Errno.SUCCESS

    @transition("__pkvm_guest_unshare_host", _entry_frame)
    def guest_unshare_host(self, handle: int, gfn: int) -> Errno:
        """Guest-initiated: guest SHARED_OWNED -> OWNED, host SHARED_BORROWED -> NOPAGE annotated again.

        mem_protect.c: __pkvm_guest_unshare_host(); same argument checks as
        guest_share_host, then guest not SHARED_OWNED, host not
        SHARED_BORROWED -> -EPERM.
        """
        ret, vm = self._check_guest_side(handle, gfn, guest=SHARED_OWNED, host=SHARED_BORROWED)
        if ret:
            return ret
        pfn = vm.entries[gfn].pfn
        self._set_guest(vm, gfn, OWNED, pfn)
        self._set_host(pfn, NOPAGE, Annotation(Component.guest(vm.handle), gfn))
        self._frames[pfn].holds_guest_secret = True
        return Errno.SUCCESS

    @transition("__pkvm_host_force_reclaim_page_guest", _the_pfn)
    def host_force_reclaim_guest_page(self, pfn: int) -> Errno:
        """Take a donated page back from a guest: the seed patch.

        mem_protect.c: __pkvm_host_force_reclaim_page_guest().

        Order (host_stage2_get_guest_info(), then the guest check): not
        memory -> -EPERM; host state not NOPAGE (already reclaimed, or shared
        back) -> -EAGAIN; annotation owner not a guest (hyp) -> -EPERM; VM
        gone -> -EAGAIN; guest entry not OWNED -> -EPERM.
        Then, in pKVM's order: guest entry -> POISON; the frame is zeroed;
        only then host OWNED (its stage-2 may map it again).
        A dying VM is not refused: pKVM tests is_dying only in vCPU load,
        teardown and reclaim, so forced reclaim works on it too.
        """
        if not is_int(pfn):
            return Errno.EINVAL
        if pfn not in self._frames:
            return Errno.EPERM
        frame = self._frames[pfn]
        if frame.host is not NOPAGE:
            return Errno.EAGAIN
        owner, gfn = frame.annotation.owner, frame.annotation.gfn
        if owner.id is not ComponentId.GUEST:
            return Errno.EPERM
        vm = find_vm(self._vms, owner.handle)
        if vm is None:
            # host_stage2_decode_gfn_meta(): the VM went away under us. finalize
            # refuses while pages remain, so this is defensive in the model.
            return Errno.EAGAIN
        if vm.state_at(gfn) is not OWNED:
            return Errno.EPERM
        self._set_guest(vm, gfn, POISON, pfn)
        vm.poisoned.append(gfn)
        self._scrub(pfn)
        self._set_host(pfn, OWNED)
        return Errno.SUCCESS

    # ------------------------------------------------------------ internals

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
