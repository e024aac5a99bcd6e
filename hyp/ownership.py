"""pKVM page ownership: who may touch each physical frame, and the checked moves between owners.

This is the model of arch/arm64/kvm/hyp/nvhe/mem_protect.c that the rest of
``hyp`` consults. Every frame has a state on the host side and on the hyp side
(pKVM keeps both in ``struct hyp_page``); a guest's state lives in its own
stage-2 entry for a gfn. Each ownership change is one method named after the
kernel function it models. Like the kernel, a method first checks both sides
and returns an :class:`Errno` without touching anything when a check fails;
only then does it change both sides. Bad arguments are reported the same way:
no transition raises, except where pKVM itself BUG()s (``HypBug``: the refcount
checks of hyp_pin_shared_mem()/hyp_unpin_shared_mem(), which no hypercall reaches).

The pieces live in modules of their own: the states, components and records
in ``hyp.page_state`` (re-exported here), the queries in
``hyp.ownership_view``, the state setters and effect callbacks in
``hyp.ownership_effects``, the checks in ``hyp.page_checks``, the invariants
in ``hyp.invariants`` and the transition log in ``hyp.transition_log``. The
transitions are grouped by who they involve: the VM lifecycle in
``hyp.ownership_vm``, host <-> hyp in ``hyp.ownership_host_hyp``, and
host <-> guest (both directions, and forced reclaim) here. :class:`Ownership`
joins them: it is the one class callers use.

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

from abi.linux import Errno
from hyp.ownership_effects import NOPAGE, OWNED, POISON, SHARED_BORROWED, SHARED_OWNED, entry_frame, the_pfn
from hyp.ownership_host_hyp import HostHypTransitions
from hyp.ownership_vm import VmLifecycle
from hyp.page_checks import check_guest_gfn, check_pfns, check_range_allowed_memory, find_vm, is_int
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
)
from hyp.transition_log import transition

__all__ = [
    "ACCESSIBLE", "DEFAULT_GUEST_IPA_BITS", "FIRST_VM_HANDLE", "HOST", "HYP", "OWNING", "PA_BITS", "PAGE_SHIFT",
    "PFN_LIMIT", "Annotation", "Component", "ComponentId", "FrameState", "GuestEntry", "Ownership", "PageState",
    "Transition",
]


class Ownership(VmLifecycle, HostHypTransitions):
    """Page ownership of one machine: frames [first_pfn, first_pfn + nr_pages) and its guests.

    The queries and the records come from :class:`OwnershipView`, the effects
    from :class:`OwnershipEffects`; the VM lifecycle and the host <-> hyp
    transitions from their mixins; this class adds the host <-> guest
    transitions. Constructor: ``Ownership(first_pfn, nr_pages, *,
    on_host_stage2_change=None, zero_frame=None, guest_ipa_bits=...)``.
    Transitions on frames outside the range fail the way pKVM's
    check_range_allowed_memory() does.
    """

    @transition("__pkvm_host_donate_guest", the_pfn)
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

    @transition("__pkvm_host_share_guest", the_pfn)
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

    @transition("__pkvm_host_unshare_guest", entry_frame)
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

    @transition("__pkvm_guest_share_host", entry_frame)
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

    @transition("__pkvm_guest_unshare_host", entry_frame)
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

    @transition("__pkvm_host_force_reclaim_page_guest", the_pfn)
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
