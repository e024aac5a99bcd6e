"""What the machine does when no EL2 handler takes a trap (emu knows no pKVM; the protocol is emu.machine.El2Handler).

Stage-2 aborts, `hvc` and trapped `smc` leave the guest-visible machine here;
a machine with no handler installed reports that clearly instead of guessing.
"""
from __future__ import annotations

from emu.address_space import AddressSpace, MachineError
from emu.outcome import Outcome

# SMCCC (DEN0028) SMCCC_RET_NOT_SUPPORTED: what an EL2 that traps SMC answers for an unknown function.
SMCCC_RET_NOT_SUPPORTED = (1 << 64) - 1


class NoAbortHandler(MachineError):
    pass


def smc_not_supported(machine: AddressSpace, imm: int) -> Outcome | None:
    """The default EL2 answer to a trapped SMC: SMCCC_RET_NOT_SUPPORTED in x0, resume past the smc.

    pKVM's handle_host_smc() (arch/arm64/kvm/hyp/nvhe/hyp-main.c) forwards calls it does not
    handle to EL3; with no EL3 firmware modelled, an unknown function is NOT_SUPPORTED.
    """
    machine.cpu.set_x(0, SMCCC_RET_NOT_SUPPORTED)
    return None
