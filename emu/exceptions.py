"""Syndromes of the synchronous exceptions that are not memory aborts (Arm ARM D17.2.37 ESR_EL1).

Also the Unicorn interrupt numbers that report them, so the machine's run loop
and this module name them the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.syndrome import EC
from emu.syndrome.bits import EC_SHIFT, IL

# Unicorn interrupt numbers (QEMU's EXCP_*), measured with unicorn 2.1.4.
INTNO_UDEF = 1
INTNO_SVC = 2
INTNO_BKPT = 7
INTNO_HVC = 11
INTNO_SMC = 13


@dataclass(frozen=True)
class ExceptionSyndrome:
    name: str
    value: int


def exception_syndrome(intno: int, word: int, from_el: int) -> ExceptionSyndrome:
    """ESR for svc (imm16 in ISS), brk (imm16 in ISS) or an undefined instruction (EC 0, IL 1)."""
    imm16 = (word >> 5) & 0xFFFF
    if intno == INTNO_SVC:
        return ExceptionSyndrome(f"svc #{imm16}", (EC.SVC64 << EC_SHIFT) | IL | imm16)
    if intno == INTNO_BKPT:
        return ExceptionSyndrome(f"brk #{imm16:#x}", (EC.BRK64 << EC_SHIFT) | IL | imm16)
    # smc with no EL3 and any undefined encoding: EC 0 "unknown reason"
    return ExceptionSyndrome(f"undefined instruction {word:#010x}", (EC.UNKNOWN << EC_SHIFT) | IL)
