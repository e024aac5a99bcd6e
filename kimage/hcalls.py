"""The pKVM host hypercall table of a vmlinux: SMCCC function ids by name, read from the binary.

nVHE/pKVM hyp code is linked into the kernel image with a `__kvm_nvhe_`
prefix; `__kvm_nvhe_host_hcall` is hyp-main.c's `host_hcall[]`, an array of
handler pointers indexed by the function number of asm/kvm_asm.h's
`enum __kvm_host_smccc_func`. The function id the host puts in x0 is
KVM_HOST_SMCCC_ID(n) = ARM_SMCCC_CALL_VAL(FAST_CALL, SMC_64,
ARM_SMCCC_OWNER_VENDOR_HYP, n) (include/linux/arm-smccc.h: bit 31 fast, bit 30
SMC64, owner 6 in bits 29:24) = 0xC6000000 | n. Entry 0 (`__kvm_hyp_init`) is
served by the init stub, not the table, so it is NULL in the array.

handle_host_hcall (hyp-main.c) answers SMCCC NOT_SUPPORTED for an id past the
array, a NULL entry, and — once pKVM is finalised — any id below
`__pkvm_prot_finalize` (the init-time calls; `HcallTable.min_after_finalize`).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from kimage.elf import Vmlinux, VmlinuxError

TABLE_SYMBOL = "__kvm_nvhe_host_hcall"
HANDLER_PREFIX = "__kvm_nvhe_handle_"
ARM_SMCCC_FAST_CALL = 1 << 31
ARM_SMCCC_SMC_64 = 1 << 30
ARM_SMCCC_OWNER_VENDOR_HYP = 6
ARM_SMCCC_OWNER_SHIFT = 24
KVM_HOST_SMCCC_BASE = ARM_SMCCC_FAST_CALL | ARM_SMCCC_SMC_64 | (ARM_SMCCC_OWNER_VENDOR_HYP << ARM_SMCCC_OWNER_SHIFT)
SMCCC_RET_NOT_SUPPORTED = -1  # include/linux/arm-smccc.h
PROT_FINALIZE = "__pkvm_prot_finalize"
FORCE_RECLAIM = "__pkvm_force_reclaim_guest_page"


def kvm_host_smccc_id(func: int) -> int:
    return KVM_HOST_SMCCC_BASE | func


@dataclass(frozen=True)
class HcallTable:
    """SMCCC id <-> host hypercall name (the handler's name without `__kvm_nvhe_handle_`)."""

    names: dict[int, str]  # id -> name, filled entries only
    size: int  # ARRAY_SIZE(host_hcall)

    @classmethod
    def read(cls, vmlinux: Vmlinux) -> "HcallTable":
        sym = vmlinux.symbols.get(TABLE_SYMBOL)
        if sym is None:
            raise VmlinuxError(f"{vmlinux.path} has no {TABLE_SYMBOL}: no nVHE/pKVM hyp code linked in")
        words = struct.unpack(f"<{sym.size // 8}Q", vmlinux.read(sym.addr, sym.size))
        names: dict[int, str] = {}
        for func, ptr in enumerate(words):
            if not ptr:
                continue
            handler = vmlinux.symbols.function_at(ptr)
            if handler is None or handler.addr != ptr or not handler.name.startswith(HANDLER_PREFIX):
                raise VmlinuxError(f"host_hcall[{func}] = {ptr:#x} is not a {HANDLER_PREFIX}* function")
            names[kvm_host_smccc_id(func)] = handler.name.removeprefix(HANDLER_PREFIX)
        return cls(names, len(words))

    def __len__(self) -> int:
        return len(self.names)

    def name_of(self, smccc_id: int) -> str | None:
        """The hypercall an id names, or None (the hyp answers NOT_SUPPORTED)."""
        return self.names.get(smccc_id & 0xFFFFFFFF)

    def id_of(self, name: str) -> int | None:
        """The id of a hypercall by name, or None when this kernel has no such call."""
        return next((i for i, n in self.names.items() if n == name), None)

    def __contains__(self, name: str) -> bool:
        return self.id_of(name) is not None

    @property
    def min_after_finalize(self) -> int | None:
        """Ids below this are refused once pKVM is finalised (hyp-main.c hcall_min)."""
        return self.id_of(PROT_FINALIZE)
