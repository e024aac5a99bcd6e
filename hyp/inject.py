"""Injecting an abort into the host at EL1, as pKVM's inject_host_exception() does.

The facts (docs/facts.md "pKVM at EL2"): the syndrome is the stage-2 abort's
ESR_EL2 with S1PTW (bit 7) set as pKVM's marker, and EC repainted from "lower
EL" to "current EL" when the host was at EL1; FAR_EL1 = FAR_EL2, ELR_EL1 = the
faulting PC, SPSR_EL1 = the interrupted PSTATE; the CPU then enters the host's
vector at VBAR_EL1 + 0x200 (from EL1) or + 0x400 (from EL0) in EL1h with DAIF
masked. The entry itself is the emulator's architectural `take_exception`.
Every injection records whether the hardware could have produced its syndrome.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.outcome import Outcome
from emu.syndrome import EC, Esr, non_architectural_fields

if TYPE_CHECKING:
    from emu.abort import MemoryAbort
    from emu.machine import Machine

_FSC_MASK = 0x3F
DFSC_GPF_NOT_ON_WALK = 0x28


@dataclass(frozen=True)
class Injection:
    esr: Esr
    far: int
    elr: int
    from_el: int
    marker: bool
    non_architectural: tuple[str, ...]

    @property
    def architectural(self) -> bool:
        return not self.non_architectural


def injected_syndrome(abort: "MemoryAbort", *, marker: bool = True, gpf: bool = False) -> Esr:
    """ESR_EL1 for an injected abort: ESR_EL2 (+ S1PTW marker), EC repainted for EL1 (+ a GPF code for RME)."""
    esr = abort.esr
    if marker:
        esr = esr.with_s1ptw()
    if abort.el == 1:
        esr = esr.with_ec(EC.IABT_CUR if esr.ec == EC.IABT_LOW else EC.DABT_CUR)
    if gpf:
        # EL3 reports "granule protection fault, not on a walk" and copies no instruction syndrome.
        esr = Esr((esr.value & ~(_FSC_MASK | (0x7FF << 14))) | DFSC_GPF_NOT_ON_WALK)
    return esr


def inject_host_abort(machine: "Machine", abort: "MemoryAbort", *, marker: bool = True, gpf: bool = False) -> tuple[Injection, Outcome | None]:
    """Inject `abort` into the host; returns the record and the machine's outcome (None: the host runs on)."""
    esr = injected_syndrome(abort, marker=marker, gpf=gpf)
    reasons = list(non_architectural_fields(esr, target_el=1, stage=1, from_el=abort.el))
    if gpf:
        # With SCR_EL3.GPF = 1 (what lets EL3 see the fault at all) the hardware reports GPFs to EL3,
        # never to EL1: this ESR_EL1 was composed by EL3 software.
        reasons.append("GPF syndrome at EL1 although GPFs are routed to EL3")
    injection = Injection(esr, abort.far, abort.pc, abort.el, marker, tuple(reasons))
    machine.log(
        "inject",
        f"inject into host EL1: ESR_EL1={esr.value:#x} FAR_EL1={abort.far:#x} ELR_EL1={abort.pc:#x}"
        + ("" if injection.architectural else f" (not architectural: {', '.join(reasons)})"),
        injection=injection,
    )
    outcome = machine.take_exception_el1(esr.value, abort.far, abort.pc, cause=injection)
    return injection, outcome
