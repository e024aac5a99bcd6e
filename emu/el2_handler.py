"""What the machine expects of the EL2 it hands traps to (the pKVM model implements it; emu knows no pKVM).

Stage-2 aborts, `hvc` and trapped `smc` leave the guest-visible machine here;
a machine with no handler installed reports that clearly instead of guessing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from emu.abort import MemoryAbort
from emu.address_space import MachineError
from emu.outcome import Outcome

if TYPE_CHECKING:
    from emu.machine import Machine

# SMCCC (DEN0028) SMCCC_RET_NOT_SUPPORTED: what an EL2 that traps SMC answers for an unknown function.
SMCCC_RET_NOT_SUPPORTED = (1 << 64) - 1


class NoAbortHandler(MachineError):
    pass


class El2Handler(Protocol):
    """What the hypervisor model installs to receive what traps to EL2."""

    def handle_abort(self, machine: "Machine", abort: MemoryAbort) -> Outcome | None: ...

    def handle_hvc(self, machine: "Machine", imm: int) -> Outcome | None: ...

    def handle_smc(self, machine: "Machine", imm: int) -> Outcome | None:
        """An `smc` trapped to EL2 (HCR_EL2.TSC = 1, as pKVM sets it: arch/arm64/include/asm/kvm_arm.h
        HCR_HOST_NVHE_PROTECTED_FLAGS). Entered with PC past the smc. Handlers without
        this method get `smc_not_supported`.
        """
        ...


def smc_not_supported(machine: "Machine", imm: int) -> Outcome | None:
    """The default EL2 answer to a trapped SMC: SMCCC_RET_NOT_SUPPORTED in x0, resume past the smc.

    pKVM's handle_host_smc() (arch/arm64/kvm/hyp/nvhe/hyp-main.c) forwards calls it does not
    handle to EL3; with no EL3 firmware modelled, an unknown function is NOT_SUPPORTED.
    """
    machine.cpu.set_x(0, SMCCC_RET_NOT_SUPPORTED)
    return None
