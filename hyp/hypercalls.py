"""Host hypercalls: `hvc #0` with an SMCCC function id in x0 and arguments in x1...

The host kernel reaches pKVM through `kvm_call_hyp_nvhe()`: x0 = a fast SMC64
vendor-hypervisor function id (0xc6000000 | n), arguments in x1..x7. EL2
answers the SMCCC status in x0 (0 success, -1 not supported) and the handler's
own return value (0 or -errno) in x1, with further results after it. The same
handlers are callable from Python, so scenario setup performs exactly the
transitions a host would request.

Which n names which call is the host kernel's: asm/kvm_asm.h's
`enum __kvm_host_smccc_func` differs between kernels (share_hyp is 9 on 6.1,
29 on 7.2). A `HostAbi` maps ids to the names this model's handlers carry;
`MODEL_ABI` is the model's own numbering (our snippets), and a lab around a
vmlinux passes the image's own table (faultlab/stack.py reads it with
kimage.hcalls: hyp never reads a Linux image).
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from abi.arch import MASK64, PAGE_SHIFT
from abi.linux import Errno
from hyp.page_state import HANDLE_MASK

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
    handle = hyp.ownership.create_guest(protected=True)
    return (handle,) if handle < 0 else (0, handle)  # -ENOMEM: no free vm_table slot


# Handles: hyp-main.c reads them with DECLARE_REG(pkvm_handle_t, ...), a u32: the register's upper
# half is ignored (HANDLE_MASK), so 0x1_0000_1000 names VM 0x1000.
def _donate_guest(hyp: "El2", phys: int, handle: int, gfn: int) -> tuple[int, ...]:
    pfn = _pfn_of(phys)
    return (int(Errno.EINVAL if pfn is None else hyp.ownership.host_donate_guest(pfn, handle & HANDLE_MASK, gfn)),)


def _share_guest(hyp: "El2", phys: int, handle: int, gfn: int) -> tuple[int, ...]:
    pfn = _pfn_of(phys)
    return (int(Errno.EINVAL if pfn is None else hyp.ownership.host_share_guest(pfn, handle & HANDLE_MASK, gfn)),)


def _unshare_guest(hyp: "El2", handle: int, gfn: int) -> tuple[int, ...]:
    return (int(hyp.ownership.host_unshare_guest(handle & HANDLE_MASK, gfn)),)


def _teardown(hyp: "El2", handle: int) -> tuple[int, ...]:
    return (int(hyp.ownership.teardown_guest(handle & HANDLE_MASK)),)


def _reclaim_dying(hyp: "El2", handle: int, gfn: int) -> tuple[int, ...]:
    return (int(hyp.ownership.reclaim_dying_guest_page(handle & HANDLE_MASK, gfn)),)


def _init_vcpu(hyp: "El2", handle: int, vcpu_idx: int) -> tuple[int, ...]:
    # The index is the host vCPU's vcpu_idx, an unsigned int in struct kvm_vcpu.
    return (int(hyp.ownership.init_vcpu(handle & HANDLE_MASK, vcpu_idx & HANDLE_MASK)),)


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
        Hcall(26, "__pkvm_init_vcpu", 2, _init_vcpu),
        Hcall(43, "__pkvm_force_reclaim_guest_page", 1, _errno_of_pfn_call(_force_reclaim)),
    )
}
HCALL_BY_NAME = {h.name: h for h in HCALLS.values()}


@dataclass(frozen=True)
class HostAbi:
    """The host kernel's hypercall numbering: SMCCC function id -> hypercall name.

    Names are hyp-main.c's (`__pkvm_host_share_hyp`), the handler's name without
    `handle_`; only the names in HCALL_BY_NAME have a handler here. Ids are
    looked up exactly (all 64 bits of x0, hint bit cleared): handle_host_hcall()
    indexes host_hcall[] with the unsigned long `id - KVM_HOST_SMCCC_ID(0)`, so
    an id with upper bits set is past the table.
    """

    names: Mapping[int, str]
    origin: str  # where the numbering comes from, for the event log and errors
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {n: i for i, n in self.names.items()})

    def name_of(self, fid: int) -> str | None:
        return self.names.get(fid)

    def id_of(self, name: str) -> int | None:
        return self._ids.get(name)

    def with_call(self, fid: int, name: str, why: str) -> "HostAbi":
        """This numbering with `fid` naming `name` too (a what-if host bringing its own id for a call)."""
        return HostAbi({**self.names, fid: name}, f"{self.origin} + {fid:#x} {name} ({why})")


# Our snippets (guest_asm, tests) number hypercalls as HCALLS does.
MODEL_ABI = HostAbi({h.function_id: h.name for h in HCALLS.values()}, "pKVM model")


class Refusal(enum.StrEnum):
    """Why EL2 answered SMCCC NOT_SUPPORTED: the `hypercall` event's `refused`."""

    UNKNOWN_ID = "unknown function id"  # the host's numbering names no call with this id
    NOT_MODELLED = "not modelled"  # a call of this kernel that this pKVM model has no handler for
    NOT_SERVED = "not served by policy"  # a call the policy's EL2 predates (force-reclaim under `inject`)
    NONZERO_IMM = "hvc immediate not 0"  # hyp-main.c: only hvc #0 is a host hypercall


@dataclass(frozen=True)
class Answer:
    """What EL2 answered one host hypercall: x0, then x1.. ; `name` as the host's numbering names the id."""

    fid: int
    name: str | None
    status: int
    results: tuple[int, ...] = ()
    refused: Refusal | None = None

    def label(self, policy: str) -> str:
        """The call as the event log shows it."""
        if self.refused is None:
            return str(self.name)
        if self.refused is Refusal.NOT_SERVED:
            return f"{self.name} (not implemented by policy {policy})"
        if self.refused is Refusal.NOT_MODELLED:
            return f"{self.name} (not modelled by this EL2)"
        if self.refused is Refusal.NONZERO_IMM:
            return f"{self.fid:#x} ({self.refused})"
        return f"unknown function id {self.fid:#x}"


def dispatch(hyp: "El2", policy: "Policy", regs: list[int], abi: HostAbi = MODEL_ABI) -> Answer:
    """Run the hypercall in x0 (numbered as `abi` numbers it) with arguments regs[1:].

    Answered SMCCC NOT_SUPPORTED, as hyp-main.c handle_host_hcall() answers an id
    outside its table: an id the host's numbering does not name, a call this
    model has no handler for, and one the policy's EL2 predates (e.g.
    force-reclaim under `inject`; the policy refuses by name).
    """
    fid = regs[0] & ~SMCCC_CALL_HINTS
    name = abi.name_of(fid)
    if name is None:
        return Answer(fid, None, SMCCC_RET_NOT_SUPPORTED, refused=Refusal.UNKNOWN_ID)
    hcall = HCALL_BY_NAME.get(name)
    if hcall is None:
        return Answer(fid, name, SMCCC_RET_NOT_SUPPORTED, refused=Refusal.NOT_MODELLED)
    if not policy.serves(name):
        return Answer(fid, name, SMCCC_RET_NOT_SUPPORTED, refused=Refusal.NOT_SERVED)
    results = hcall.handler(hyp, *regs[1 : 1 + hcall.nargs])
    return Answer(fid, name, SMCCC_RET_SUCCESS, tuple(r & MASK64 for r in results))
