"""Syndromes of the synchronous exceptions that are not memory aborts (Arm ARM D17.2.37 ESR_EL1)."""
from __future__ import annotations

from dataclasses import dataclass

EC_UNKNOWN = 0x00
EC_SVC64 = 0x15
EC_HVC64 = 0x16
EC_BRK64 = 0x3C
IL = 1 << 25

# Unicorn interrupt numbers (QEMU EXCP_*), measured with unicorn 2.1.4
_UDEF, _SVC, _BKPT, _SMC = 1, 2, 7, 13


@dataclass(frozen=True)
class ExceptionSyndrome:
    name: str
    value: int


def exception_syndrome(intno: int, word: int, from_el: int) -> ExceptionSyndrome:
    """ESR for svc (imm16 in ISS), brk (imm16 in ISS) or an undefined instruction (EC 0, IL 1)."""
    imm16 = (word >> 5) & 0xFFFF
    if intno == _SVC:
        return ExceptionSyndrome(f"svc #{imm16}", (EC_SVC64 << 26) | IL | imm16)
    if intno == _BKPT:
        return ExceptionSyndrome(f"brk #{imm16:#x}", (EC_BRK64 << 26) | IL | imm16)
    # smc with no EL3 and any undefined encoding: EC 0 "unknown reason"
    return ExceptionSyndrome(f"undefined instruction {word:#010x}", (EC_UNKNOWN << 26) | IL)
