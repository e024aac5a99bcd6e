"""Injecting an abort into the host at EL1, and the syndromes the policies compose for it.

The entry (docs/facts.md "pKVM at EL2", as pKVM's inject_host_exception() does it):
ESR_EL1 = the composed syndrome, FAR_EL1 = FAR_EL2, ELR_EL1 = the faulting PC,
SPSR_EL1 = the interrupted PSTATE; the CPU enters the host's vector at VBAR_EL1 +
0x200 (from EL1) or + 0x400 (from EL0) in EL1h with DAIF masked. The entry itself
is the emulator's architectural `take_exception_el1`. Every injection records
whether hardware could have produced its syndrome.

Three composers, one per proposal in the debate:
- `pkvm_syndrome`: the stage-2 abort's ESR_EL2 with S1PTW set as pKVM's marker and
  EC repainted from "lower EL" to "current EL" when the host was at EL1.
- `el3_gpf_syndrome`: RME, EL3 forwards the granule-protection fault as it saw it.
- `realm_syndrome`: RME, a realm-world EL2 rewrites the GPF as pKVM would inject it.
"""
from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.outcome import Outcome
from emu.syndrome import DFSC, EC, Esr, dfsc_level, non_architectural_fields

from hyp.el2 import Syndrome

if TYPE_CHECKING:
    from emu.abort import MemoryAbort
    from emu.machine import Machine

_FSC_MASK = 0x3F
# Data abort ISS[24:14]: ISV, SAS, SSE, SRT, SF, AR - the instruction syndrome (docs/facts.md).
_INSTRUCTION_SYNDROME = 0x7FF << 14
GPF_ROUTED_TO_EL3 = "GPF syndrome at EL1 although GPFs are routed to EL3"


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


def _repaint_for_el1(esr: Esr, from_el: int) -> Esr:
    """EC 0x24 -> 0x25 / 0x20 -> 0x21 when the host was at EL1 (the exception is taken from the current EL)."""
    if from_el == 1:
        return esr.with_ec(EC.IABT_CUR if esr.ec == EC.IABT_LOW else EC.DABT_CUR)
    return esr


def pkvm_syndrome(abort: "MemoryAbort") -> Syndrome:
    """pKVM: ESR_EL2 with the S1PTW marker, EC repainted; ISS, DFSC and IL unchanged."""
    return _pkvm_syndrome(abort.esr, abort.el)


@functools.lru_cache(maxsize=1024)
def _pkvm_syndrome(esr: Esr, from_el: int) -> Syndrome:
    # A pure function of two frozen values, memoised: a sweep injects the same few syndromes over and over.
    return Syndrome(_repaint_for_el1(esr.with_s1ptw(), from_el), marker=True)


def el3_gpf_syndrome(abort: "MemoryAbort") -> Syndrome:
    """RME EL3: "granule protection fault, not on a walk", no instruction syndrome, no marker."""
    esr = _repaint_for_el1(abort.esr, abort.el)
    esr = Esr((esr.value & ~(_FSC_MASK | _INSTRUCTION_SYNDROME)) | DFSC.GPF)
    # With SCR_EL3.GPF = 1 (what lets EL3 see the fault at all) the hardware reports GPFs
    # to EL3, never to EL1: this ESR_EL1 was composed by EL3 software.
    return Syndrome(esr, marker=False, notes=(GPF_ROUTED_TO_EL3,))


def realm_syndrome(abort: "MemoryAbort") -> Syndrome:
    """RME with a realm EL2: the GPF rewritten as pKVM's injected stage-2 abort.

    EL3 forwards the fault without an instruction syndrome (as `el3_gpf_syndrome`);
    the realm EL2 makes it a translation fault at the level the access faulted at
    (a granule is a last-level page: level 3 when the abort names no level) with
    pKVM's S1PTW marker, EC repainted as pKVM does. The host recognises it only
    if it boots with pKVM initialised (fault.c: is_pkvm_stage2_abort()).
    """
    level = dfsc_level(abort.esr.fsc)
    dfsc = DFSC.translation(3 if level is None else level)
    esr = _repaint_for_el1(abort.esr.with_s1ptw(), abort.el)
    return Syndrome(Esr((esr.value & ~(_FSC_MASK | _INSTRUCTION_SYNDROME)) | dfsc), marker=True)


def _inject_text(injection: Injection) -> str:
    text = f"inject into host EL1: ESR_EL1={injection.esr.value:#x} FAR_EL1={injection.far:#x} ELR_EL1={injection.elr:#x}"
    return text if injection.architectural else f"{text} (not architectural: {', '.join(injection.non_architectural)})"


def inject_host_abort(machine: "Machine", abort: "MemoryAbort", syndrome: Syndrome) -> tuple[Injection, Outcome | None]:
    """Inject `abort` into the host with `syndrome`; returns the record and the machine's outcome (None: the host runs on)."""
    esr = syndrome.esr
    reasons = (*non_architectural_fields(esr, target_el=1, stage=1, from_el=abort.el), *syndrome.notes)
    injection = Injection(esr, abort.far, abort.pc, abort.el, syndrome.marker, reasons)
    pc, el = (abort.pc, abort.el) if machine.debugger is None else (None, None)  # the CPU is still at the access
    machine.log(
        "inject",
        (_inject_text, injection),  # formatted when read (emu/outcome.py Event)
        pc=pc,
        el=el,
        injection=injection,
    )
    outcome = machine.take_exception_el1(esr.value, abort.far, abort.pc, cause=injection)
    return injection, outcome
