"""Host hypercalls: `hvc #0` with an SMCCC function id in x0 and arguments in x1...

The host kernel reaches pKVM through `kvm_call_hyp_nvhe()`: x0 = a fast SMC64
vendor-hypervisor function id (0xc6000000 | n), arguments in x1..x7. EL2
answers the SMCCC status in x0 (0 success, -1 not supported) and the handler's
own return value (0 or -errno) in x1, with further results after it. The same
handlers are callable from Python, so scenario setup performs exactly the
transitions a host would request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from abi.arch import MASK64, PAGE_SHIFT
from abi.linux import Errno

if TYPE_CHECKING:
    from hyp.el2 import El2
    from hyp.policies import Policy

SMCCC_FAST_64_VENDOR_HYP = 0xC600_0000
SMCCC_RET_SUCCESS = 0
SMCCC_RET_NOT_SUPPORTED = MASK64  # SMCCC: NOT_SUPPORTED is -1
# SMCCC v1.3 "SVE live state" hint (bit 16): hyp-main.c handle_host_hcall() clears it before decoding.
SMCCC_CALL_HINTS = 1 << 16


@dataclass(frozen=True)
class Hcall:
    number: int
    name: str
    nargs: int
    handler: Callable[..., tuple[int, ...]]

    @property
    def function_id(self) -> int:
        return SMCCC_FAST_64_VENDOR_HYP | self.number


def _pfn_of(phys: int) -> int | None:
    """Physical addresses must be page aligned, as pKVM's handlers require."""
    return None if phys & ((1 << PAGE_SHIFT) - 1) else phys >> PAGE_SHIFT


def _errno_of_pfn_call(fn: Callable[[int], Errno]) -> Callable[["El2", int], tuple[int, ...]]:
    def call(hyp: "El2", phys: int) -> tuple[int, ...]:
        pfn = _pfn_of(phys)
        return (int(Errno.EINVAL if pfn is None else fn(hyp, pfn)),)

    return call


def _share_hyp(hyp: "El2", pfn: int) -> Errno:
    return hyp.ownership.host_share_hyp(pfn)


def _unshare_hyp(hyp: "El2", pfn: int) -> Errno:
    return hyp.ownership.host_unshare_hyp(pfn)


def _force_reclaim(hyp: "El2", pfn: int) -> Errno:
    return hyp.force_reclaim(pfn, requested_by="host")


def _create_guest(hyp: "El2") -> tuple[int, ...]:
    return (0, hyp.ownership.create_guest(protected=True))


def _donate_guest(hyp: "El2", phys: int, handle: int, gfn: int) -> tuple[int, ...]:
    pfn = _pfn_of(phys)
    return (int(Errno.EINVAL if pfn is None else hyp.ownership.host_donate_guest(pfn, handle, gfn)),)


def _share_guest(hyp: "El2", phys: int, handle: int, gfn: int) -> tuple[int, ...]:
    pfn = _pfn_of(phys)
    return (int(Errno.EINVAL if pfn is None else hyp.ownership.host_share_guest(pfn, handle, gfn)),)


def _unshare_guest(hyp: "El2", handle: int, gfn: int) -> tuple[int, ...]:
    return (int(hyp.ownership.host_unshare_guest(handle, gfn)),)


def _teardown(hyp: "El2", handle: int) -> tuple[int, ...]:
    return (int(hyp.ownership.teardown_guest(handle)),)


def _reclaim_dying(hyp: "El2", handle: int, gfn: int) -> tuple[int, ...]:
    return (int(hyp.ownership.reclaim_dying_guest_page(handle, gfn)),)


# Numbers: 43 is __pkvm_force_reclaim_guest_page in Debian sid's Linux 7.2
# (`__kvm_nvhe_host_hcall`, and pkvm_force_reclaim_guest_page issues x0 = 0xc600002b;
# host/kernel.py keeps that id as the host's own ABI constant).
# The others are this model's own numbers, kept clear of 43.
HCALLS: dict[int, Hcall] = {
    h.number: h
    for h in (
        Hcall(2, "__pkvm_host_share_hyp", 1, _errno_of_pfn_call(_share_hyp)),
        Hcall(3, "__pkvm_host_unshare_hyp", 1, _errno_of_pfn_call(_unshare_hyp)),
        Hcall(20, "__pkvm_init_vm", 0, _create_guest),
        Hcall(21, "__pkvm_host_donate_guest", 3, _donate_guest),
        Hcall(22, "__pkvm_host_share_guest", 3, _share_guest),
        Hcall(23, "__pkvm_host_unshare_guest", 2, _unshare_guest),
        Hcall(24, "__pkvm_start_teardown_vm", 1, _teardown),
        Hcall(25, "__pkvm_reclaim_dying_guest_page", 2, _reclaim_dying),
        Hcall(43, "__pkvm_force_reclaim_guest_page", 1, _errno_of_pfn_call(_force_reclaim)),
    )
}
HCALL_BY_NAME = {h.name: h for h in HCALLS.values()}


def dispatch(hyp: "El2", policy: "Policy", regs: list[int]) -> tuple[int, list[int], str]:
    """Run the hypercall in x0 with arguments regs[1:]; returns (x0 status, results for x1.., name).

    An id this EL2 does not implement - unknown, or one the policy's EL2 predates
    (e.g. force-reclaim under `inject`) - gets SMCCC NOT_SUPPORTED, as
    hyp-main.c handle_host_hcall() answers an id outside its table.
    """
    fid = regs[0] & ~SMCCC_CALL_HINTS
    if fid & ~0xFFFF != SMCCC_FAST_64_VENDOR_HYP or (fid & 0xFFFF) not in HCALLS:
        return SMCCC_RET_NOT_SUPPORTED, [], f"unknown function id {fid:#x}"
    hcall = HCALLS[fid & 0xFFFF]
    if not policy.serves(hcall.name):
        return SMCCC_RET_NOT_SUPPORTED, [], f"{hcall.name} (not implemented by policy {policy.name})"
    results = hcall.handler(hyp, *regs[1 : 1 + hcall.nargs])
    return SMCCC_RET_SUCCESS, [r & MASK64 for r in results], hcall.name
