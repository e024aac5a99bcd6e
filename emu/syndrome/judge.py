"""Judging an abort syndrome: could real hardware have reported it?

The oracle asks this of every syndrome the pKVM model injects into the host: pKVM re-injects
a stage-2 abort's ESR_EL2 into EL1 with S1PTW set, which no PE would report for a stage-1 fault.

Sources: Arm ARM (DDI 0487, K-era) D24.2.45-47 ESR_EL1/EL2/EL3 "ISS encoding for an exception
from a Data Abort" and "... from an Instruction Abort", J1.1 AArch64.InstructionSyndromeValid.
"""
from __future__ import annotations

import functools

from emu.syndrome import bits
from emu.syndrome.esr import Esr
from emu.syndrome.fault_codes import DFSC, EC, dfsc_is_external_abort


_DEFINED_FSC = frozenset(int(code) for code in DFSC)
# Codes that only a data access can produce (PC misalignment has its own EC).
_DATA_ONLY_FSC = frozenset({DFSC.TAG_CHECK, DFSC.ALIGNMENT, DFSC.UNSUPPORTED_EXCLUSIVE})


def non_architectural_fields(
    esr: Esr, *, target_el: int, stage: int, from_el: int | None = None
) -> tuple[str, ...]:
    """Fields of an abort syndrome that no AArch64 hardware could have reported (see _judge).

    Memoised: a pure function of four small values, asked once per injected abort.
    """
    return _judged(esr.value, target_el, stage, from_el)


@functools.lru_cache(maxsize=4096)
def _judged(value: int, target_el: int, stage: int, from_el: int | None) -> tuple[str, ...]:
    return _judge(Esr(value), target_el=target_el, stage=stage, from_el=from_el)


def _judge(
    esr: Esr, *, target_el: int, stage: int, from_el: int | None = None
) -> tuple[str, ...]:
    """Fields of an abort syndrome that no AArch64 hardware could have reported.

    target_el: the EL whose ESR holds the syndrome; stage: the translation stage the fault
    claims to come from (1 for anything delivered to EL1: stage-2 aborts are always taken to
    EL2); from_el: the EL the faulting access ran at, if known (checks EC).

    Assumes a PE with FEAT_RAS and without FEAT_LS64/NV2/MTE/S1POE/S1PIE/GCS/THE/PFAR/SVE-FnP,
    which is the machine this project models. Names come back in ESR bit order, high first.
    Example: pKVM's injected ESR_EL1 (ESR_EL2 with S1PTW set, EC 0x24 -> 0x25) gives
    ("S1PTW",) for an ldp and ("ISV", "S1PTW") for an ldr whose ESR_EL2 had ISV = 1.
    """
    if stage not in (1, 2):
        raise ValueError("stage is 1 or 2")
    if stage == 2 and target_el < 2:
        raise ValueError("stage-2 aborts are taken to EL2 or EL3, never to EL1")
    if not (esr.is_data_abort or esr.is_instruction_abort):
        raise ValueError(f"EC {int(esr.ec):#x} is not an abort")
    value = esr.value
    fsc = esr.fsc
    bad: list[str] = []

    if esr.iss2:
        # Every ISS2 field needs a feature the modelled PE lacks (LS64, MTE, GCS, S1POE...).
        bad.append("ISS2")
    if from_el is not None:
        lower = esr.ec in (EC.DABT_LOW, EC.IABT_LOW)
        if lower != (from_el < target_el):
            bad.append("EC")
    if not esr.il:
        # IL is RES1 for aborts with ISV = 0, and 1 (32-bit instruction) for A64 with ISV = 1.
        bad.append("IL")

    if esr.is_instruction_abort:
        # IABT ISS: [24:13] RES0, [8] RES0, [6] RES0.
        if value & (0xFFF << 13):
            bad.append("ISS[24:13]")
    else:
        isv_possible = (
            stage == 2 and target_el >= 2 and not esr.s1ptw and not dfsc_is_external_abort(fsc)
        )
        if esr.isv and not isv_possible:
            bad.append("ISV")
        if esr.isv:
            if esr.sse and (esr.sas == 3 or esr.wnr):
                bad.append("SSE")  # only byte/halfword/word loads sign-extend
            if esr.sas == 3 and not esr.sf:
                bad.append("SF")  # a doubleword transfer uses an X register
        elif value & bits.ISS_SYNDROME_MASK:
            fields = (("SAS", 0x3 << bits.SAS_SHIFT), ("SSE", bits.SSE), ("SRT", 0x1F << bits.SRT_SHIFT),
                      ("SF", bits.SF), ("AR", bits.AR))
            bad += [name for name, mask in fields if value & mask]
        if esr.vncr and target_el != 2:
            bad.append("VNCR")  # ESR_EL1/EL3 bit 13 is RES0; VNCR exists only in ESR_EL2

    if esr.set and not dfsc_is_external_abort(fsc):
        bad.append("SET")
    if esr.fnv and fsc != DFSC.SYNC_EXTERNAL:
        bad.append("FnV")
    if esr.ea and not dfsc_is_external_abort(fsc):
        bad.append("EA")
    if esr.is_instruction_abort and esr.cm:
        bad.append("CM")
    if esr.s1ptw and stage == 1:
        # Arm ARM: "For any abort other than a stage 2 fault this bit is RES0."
        bad.append("S1PTW")
    if esr.is_data_abort and esr.cm and not esr.wnr:
        bad.append("WnR")
    if esr.is_instruction_abort and esr.wnr:
        bad.append("WnR")
    if fsc not in _DEFINED_FSC or (esr.is_instruction_abort and fsc in _DATA_ONLY_FSC):
        bad.append("FSC")
    return tuple(bad)
