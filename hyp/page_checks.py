"""The check half of pKVM's check-then-act: argument and page-state checks that return an Errno.

mem_protect.c runs helpers such as check_range_allowed_memory() and
__host_check_page_state_range() before it changes anything, so a failed check
leaves every page table as it was. These functions are that half of each
transition in ``hyp.ownership``: they only read the model's records and never
change them, which is what lets a transition return early without undoing
anything.
"""
from __future__ import annotations

from typing import Mapping

from abi.linux import Errno
from hyp.page_state import PFN_LIMIT, FrameRecord, PageState, VmRecord


def is_int(value: object) -> bool:
    """Whether value is a plain int: hypercall arguments are registers, so a bool or None is a bad argument."""
    return isinstance(value, int) and not isinstance(value, bool)


def pfn_range_is_valid(pfn: int, nr: int) -> bool:
    # mem_protect.c: pfn_range_is_valid(): the range lies inside the PA space.
    return 0 <= pfn and pfn + nr <= PFN_LIMIT


def check_range_allowed_memory(frames: Mapping[int, FrameRecord], pfn: int, nr: int) -> Errno:
    # mem_protect.c: check_range_allowed_memory(): -EPERM when the start is
    # not memory, -EINVAL when the range leaves its memory region.
    if pfn not in frames:
        return Errno.EPERM
    if pfn + nr - 1 not in frames:
        return Errno.EINVAL
    return Errno.SUCCESS


def check_pfns(frames: Mapping[int, FrameRecord], pfn: object, nr: object, *, pa_check: bool) -> Errno:
    """Well-formed range (-EINVAL), optionally inside the PA space (-EINVAL), then inside memory."""
    if not (is_int(pfn) and is_int(nr)) or nr < 1:
        return Errno.EINVAL
    if pa_check and not pfn_range_is_valid(pfn, nr):
        return Errno.EINVAL
    return check_range_allowed_memory(frames, pfn, nr)


def check_page_states(
    frames: Mapping[int, FrameRecord],
    pfn: object,
    nr: object,
    *,
    host: PageState,
    hyp: PageState,
    pa_check: bool = False,
) -> Errno:
    """check_pfns(), then every frame in the host and the hyp state asked for, else -EPERM.

    mem_protect.c: __host_check_page_state_range() and
    __hyp_check_page_state_range() both return -EPERM, so which side fails
    first cannot be told apart from outside.
    """
    if ret := check_pfns(frames, pfn, nr, pa_check=pa_check):
        return ret
    if any(frames[p].host is not host or frames[p].hyp is not hyp for p in range(pfn, pfn + nr)):
        return Errno.EPERM
    return Errno.SUCCESS


def check_gfn(gfn: int, gfn_limit: int) -> Errno:
    # kvm_pgtable_walk() refuses addresses beyond the guest's IPA size.
    return Errno.SUCCESS if 0 <= gfn < gfn_limit else Errno.ERANGE


def find_vm(
    vms: Mapping[int, VmRecord], handle: object, *, dying: bool | None = None, protected: bool | None = None
) -> VmRecord | None:
    """The VM with this handle if it is in the asked-for lifecycle stage and kind (None: either), else None.

    Every transition answers -EINVAL for a VM it cannot act on: pkvm.c looks
    the VM up by handle, and hyp-main.c refuses the wrong pVM kind.
    """
    vm = vms.get(handle) if is_int(handle) else None
    if vm is None:
        return None
    if (dying is not None and vm.dying != dying) or (protected is not None and vm.protected != protected):
        return None
    return vm


def check_guest_gfn(
    vms: Mapping[int, VmRecord],
    gfn_limit: int,
    handle: object,
    gfn: object,
    *,
    dying: bool | None = None,
    protected: bool | None = None,
) -> tuple[Errno, VmRecord | None]:
    """Checks that start every transition named by (handle, gfn): types and VM (-EINVAL), then IPA range."""
    if not (is_int(handle) and is_int(gfn)):
        return Errno.EINVAL, None
    vm = find_vm(vms, handle, dying=dying, protected=protected)
    if vm is None:
        return Errno.EINVAL, None
    if ret := check_gfn(gfn, gfn_limit):
        return ret, None
    return Errno.SUCCESS, vm


def get_valid_guest_entry(vm: VmRecord, gfn: int) -> Errno:
    # mem_protect.c: get_valid_guest_pte(): poisoned first, then invalid.
    state = vm.state_at(gfn)
    if state is PageState.POISON:
        return Errno.EHWPOISON
    if state is PageState.NOPAGE:
        return Errno.ENOENT
    return Errno.SUCCESS
