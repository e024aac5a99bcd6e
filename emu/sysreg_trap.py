"""EL0 system instructions that SCTLR_EL1 traps to EL1: EC 0x18, not "undefined".

Unicorn raises an undefined-instruction interrupt for them (intno 1, PC at the
instruction) without saying why; QEMU itself would report the trap syndrome. The Arm ARM
(SCTLR_EL1.{DZE,UCT,UCI,UMA}; ESR_ELx "ISS encoding for an exception from MSR, MRS, or
System instruction execution in AArch64 state") traps, from EL0, to EL1 with EC 0x18:
- DC ZVA when SCTLR_EL1.DZE = 0;
- MRS CTR_EL0 when SCTLR_EL1.UCT = 0;
- DC CVAU/CVAC/CVAP/CVADP/CIVAC and IC IVAU when SCTLR_EL1.UCI = 0;
- MSR/MRS DAIF and MSR DAIFSet/DAIFClr when SCTLR_EL1.UMA = 0.
ISS: Op0 [21:20], Op2 [19:17], Op1 [16:14], CRn [13:10], Rt [9:5], CRm [4:1],
Direction [0] (1 for a read: MRS).
Linux's SCTLR_EL1 (emu/sctlr.py) sets DZE, UCT and UCI and leaves UMA clear.
"""
from __future__ import annotations

from emu.exceptions import ExceptionSyndrome
from emu.sctlr import SctlrBit
from emu.syndrome import EC, ec_kernel_name
from emu.syndrome.bits import EC_SHIFT, IL

UMA = 1 << 9  # SCTLR_EL1.UMA: EL0 access to PSTATE.{D,A,I,F}

_DC_ZVA = (1, 3, 7, 4, 1)
_EL0_CACHE_MAINT = {
    (1, 3, 7, 11, 1),  # DC CVAU
    (1, 3, 7, 10, 1),  # DC CVAC
    (1, 3, 7, 12, 1),  # DC CVAP
    (1, 3, 7, 13, 1),  # DC CVADP
    (1, 3, 7, 14, 1),  # DC CIVAC
    (1, 3, 7, 5, 1),  # IC IVAU
}
_CTR_EL0 = (3, 3, 0, 0, 1)
_DAIF = (3, 3, 4, 2, 1)


def _trapping_bit(op0: int, op1: int, crn: int, crm: int, op2: int, read: bool) -> int | None:
    key = (op0, op1, crn, crm, op2)
    if op0 == 1 and not read:
        if key == _DC_ZVA:
            return SctlrBit.DZE
        return SctlrBit.UCI if key in _EL0_CACHE_MAINT else None
    if key == _CTR_EL0 and read:
        return SctlrBit.UCT
    if key == _DAIF:
        return UMA
    if op0 == 0 and op1 == 3 and crn == 4 and op2 in (6, 7) and not read:
        return UMA  # MSR DAIFSet / DAIFClr (immediate)
    return None


def el0_sysreg_trap(word: int, sctlr: int) -> ExceptionSyndrome | None:
    """The EC 0x18 syndrome for an EL0 instruction that `sctlr` traps, or None (really undefined)."""
    if word & 0xFFC00000 != 0xD5000000:  # System instruction class: 1101 0101 00 L op0 ...
        return None
    read = bool(word >> 21 & 1)
    op0, op1 = word >> 19 & 3, word >> 16 & 7
    crn, crm, op2, rt = word >> 12 & 0xF, word >> 8 & 0xF, word >> 5 & 7, word & 0x1F
    bit = _trapping_bit(op0, op1, crn, crm, op2, read)
    if bit is None or sctlr & bit:
        return None
    iss = (op0 << 20) | (op2 << 17) | (op1 << 14) | (crn << 10) | (rt << 5) | (crm << 1) | int(read)
    value = (EC.SYS64 << EC_SHIFT) | IL | iss
    return ExceptionSyndrome(f"{ec_kernel_name(EC.SYS64)}: EL0 use trapped by SCTLR_EL1", value)
