"""Syndromes of the synchronous exceptions that are not memory aborts (Arm ARM D17.2.37 ESR_EL1).

Also the Unicorn interrupt numbers that report them, so the machine's run loop
and this module name them the same way. Names follow the kernel's
esr_class_str[] (arch/arm64/kernel/traps.c), so a report labels an exception
as the kernel's own oops would.
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.syndrome import EC, ec_kernel_name
from emu.syndrome.bits import EC_SHIFT, IL

# Unicorn interrupt numbers (QEMU's EXCP_*), measured with unicorn 2.1.4.
INTNO_UDEF = 1
INTNO_SVC = 2
INTNO_DATA_ABORT = 4  # raised by Unicorn only for a misaligned exclusive/atomic (emu/alignment.py)
INTNO_BKPT = 7
INTNO_HVC = 11
INTNO_SMC = 13


@dataclass(frozen=True)
class ExceptionSyndrome:
    name: str
    value: int

    @property
    def ec(self) -> int:
        return self.value >> EC_SHIFT

    @property
    def class_name(self) -> str:
        """The kernel's esr_class_str[] name of this exception class (e.g. "SVC (AArch64)")."""
        return ec_kernel_name(self.ec)


def _named(ec: EC, detail: str, value: int) -> ExceptionSyndrome:
    return ExceptionSyndrome(f"{ec_kernel_name(ec)}: {detail}", value)


def exception_syndrome(intno: int, word: int, from_el: int, *, pc: int = 0) -> ExceptionSyndrome:
    """ESR for svc (imm16 in ISS), brk (imm16 in ISS), a PC alignment fault or an undefined instruction.

    Unicorn reports a misaligned PC as an undefined instruction (QEMU raises
    EXCP_UDEF with the PC-alignment syndrome, which Unicorn does not expose): a
    UDEF whose PC is not a multiple of 4 is the PC alignment fault, EC 0x22, IL 1,
    ISS 0 (Arm ARM D1.3.5 "PC alignment checking"; D17.2.37 EC 0b100010).
    """
    imm16 = (word >> 5) & 0xFFFF
    if intno == INTNO_SVC:
        return _named(EC.SVC64, f"svc #{imm16}", (EC.SVC64 << EC_SHIFT) | IL | imm16)
    if intno == INTNO_BKPT:
        return _named(EC.BRK64, f"brk #{imm16:#x}", (EC.BRK64 << EC_SHIFT) | IL | imm16)
    if intno == INTNO_UDEF and pc & 3:
        return _named(EC.PC_ALIGN, f"misaligned pc {pc:#x}", (EC.PC_ALIGN << EC_SHIFT) | IL)
    # smc with no EL2 to trap it (and no EL3) and any undefined encoding: EC 0 "unknown reason"
    return _named(EC.UNKNOWN, f"undefined instruction {word:#010x}", (EC.UNKNOWN << EC_SHIFT) | IL)
