"""The VM lifecycle side of page ownership: create a guest, tear it down, reclaim its pages, forget it.

pkvm.c's __pkvm_init_vm(), __pkvm_start_teardown_vm(),
__pkvm_reclaim_dying_guest_page() and __pkvm_finalize_teardown_vm(): the
bookkeeping of guests as a whole, as opposed to the per-page moves between
host, hyp and a live guest (``hyp.ownership``, ``hyp.ownership_host_hyp``).
A mixin of :class:`hyp.ownership.Ownership`, the one class callers use; one
checked method per kernel function, as there.
"""
from __future__ import annotations

from abi.linux import Errno
from hyp.ownership_effects import NOPAGE, OWNED, SHARED_BORROWED, SHARED_OWNED, OwnershipEffects, entry_frame, no_frame
from hyp.page_checks import check_guest_gfn, find_vm, is_int
from hyp.page_state import FIRST_VM_HANDLE, KVM_MAX_PVMS, Transition, VmRecord
from hyp.transition_log import transition


class VmLifecycle(OwnershipEffects):
    """Guest creation and teardown; ``reclaim_all_dying_guest_pages`` also uses ``Ownership.host_unshare_guest``."""

    def create_guest(self, protected: bool = True, nr_vcpus: int = 1) -> int:
        """Create a VM and return its handle, or -errno (pkvm.c: __pkvm_reserve_vm() + __pkvm_init_vm()).

        ``protected`` selects the pVM kind: hyp-main.c only lets the host
        donate to protected VMs and only share with non-protected ones.
        ``nr_vcpus`` is the host's created_vcpus: fewer than one -> -EINVAL.
        """
        args = (bool(protected), nr_vcpus)
        if not is_int(nr_vcpus) or nr_vcpus < 1:
            self.transitions.append(Transition("__pkvm_init_vm", None, args, Errno.EINVAL, (), ()))
            return Errno.EINVAL
        # A full vm_table: allocate_vm_table_entry() returns -ENOMEM (pkvm.c).
        if len(self._vms) >= KVM_MAX_PVMS:
            self.transitions.append(Transition("__pkvm_init_vm", None, args, Errno.ENOMEM, (), ()))
            return Errno.ENOMEM
        handle = self._next_handle
        self._vms[handle] = VmRecord(handle=handle, protected=bool(protected), nr_vcpus=nr_vcpus)
        self._next_handle = self._first_free_handle()
        self.transitions.append(Transition("__pkvm_init_vm", None, args, Errno.SUCCESS, (), ()))
        return handle

    @transition("__pkvm_init_vcpu", no_frame)
    def init_vcpu(self, handle: int, vcpu_idx: int) -> Errno:
        """Give a VM its vCPU number vcpu_idx (pkvm.c: __pkvm_init_vcpu()).

        No VM with this handle -> -ENOENT (get_vm_by_handle()); vcpu_idx not
        below created_vcpus, or that vCPU already initialised -> -EINVAL. The
        vCPU state pages the host donates are not modelled.
        """
        vm = find_vm(self._vms, handle)
        if vm is None:
            return Errno.ENOENT
        if not is_int(vcpu_idx) or not 0 <= vcpu_idx < vm.nr_vcpus or vcpu_idx in vm.vcpus:
            return Errno.EINVAL
        vm.vcpus.add(vcpu_idx)
        return Errno.SUCCESS

    def _first_free_handle(self) -> int:
        """HANDLE_OFFSET + the first free vm_table slot (pkvm.c allocate_vm_table_entry())."""
        return next(h for h in range(FIRST_VM_HANDLE, FIRST_VM_HANDLE + KVM_MAX_PVMS + 1) if h not in self._vms)

    @transition("__pkvm_start_teardown_vm", no_frame)
    def teardown_guest(self, handle: int) -> Errno:
        """Mark the VM dying (pkvm.c: __pkvm_start_teardown_vm()): no such VM -> -ENOENT, already dying -> -EINVAL."""
        vm = find_vm(self._vms, handle)
        if vm is None:
            return Errno.ENOENT
        if vm.dying:
            return Errno.EINVAL
        vm.dying = True
        return Errno.SUCCESS

    @transition("__pkvm_reclaim_dying_guest_page", entry_frame)
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

    @transition("__pkvm_finalize_teardown_vm", no_frame)
    def finalize_teardown_guest(self, handle: int) -> Errno:
        """Forget a dying VM (pkvm.c: __pkvm_finalize_teardown_vm()).

        No such VM -> -ENOENT; not dying -> -EBUSY (pkvm.c). Model choice:
        -EBUSY also while the guest still has any stage-2 entry; pKVM relies on
        the host having reclaimed everything first, and refusing keeps every
        annotation pointing at a live VM.
        """
        vm = find_vm(self._vms, handle)
        if vm is None:
            return Errno.ENOENT
        if not vm.dying or vm.entries:
            return Errno.EBUSY
        del self._vms[handle]
        self._next_handle = self._first_free_handle()  # the slot is free for the next __pkvm_init_vm
        return Errno.SUCCESS
