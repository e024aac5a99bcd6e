"""Exception syndromes: building the ESR_ELx the hardware reports for an abort; and the public
face of the syndrome modules.

`emu` builds the syndrome the hardware would report here (`data_abort_esr`), `hyp` reads and
re-injects it, `host` decodes it like arch/arm64/mm/fault.c, and the oracle asks
`non_architectural_fields` whether an injected syndrome is one real hardware could have
produced. Callers import all of it from here; the work is split by job:

    emu.syndrome.bits        where each ESR_ELx field sits
    emu.syndrome.fault_codes     EC and DFSC values, their predicates and kernel names, OopsStyle
    emu.syndrome.esr             Esr: one ESR value, its fields and the kernel's oops decoding
    emu.syndrome.judge  non_architectural_fields: could hardware have reported this?
    emu.syndrome.hpfar           HPFAR_EL2 and when it is valid

Sources: Arm ARM (DDI 0487, K-era) D24.2.45 ESR_EL2 "ISS encoding for an exception from a
Data Abort", J1.1 AArch64.FaultSyndrome / AArch64.InstructionSyndromeValid.
"""
from __future__ import annotations

from typing import Protocol

from emu.syndrome import bits
from emu.syndrome.esr import Esr
from emu.syndrome.fault_codes import (
    DFSC,
    EC,
    OopsStyle,
    dfsc_is_access_flag,
    dfsc_is_address_size,
    dfsc_is_external_abort,
    dfsc_is_gpf,
    dfsc_is_permission,
    dfsc_is_translation,
    dfsc_level,
    dfsc_name,
    ec_kernel_name,
    kernel_fault_name,
)
from emu.syndrome.hpfar import hpfar_from_ipa, hpfar_is_valid, ipa_from_hpfar
from emu.syndrome.judge import non_architectural_fields

__all__ = [
    "DFSC",
    "EC",
    "Esr",
    "MASK64",
    "OopsStyle",
    "SyndromeSource",
    "data_abort_esr",
    "dfsc_is_access_flag",
    "dfsc_is_address_size",
    "dfsc_is_external_abort",
    "dfsc_is_gpf",
    "dfsc_is_permission",
    "dfsc_is_translation",
    "dfsc_level",
    "dfsc_name",
    "ec_kernel_name",
    "hpfar_from_ipa",
    "hpfar_is_valid",
    "instruction_abort_esr",
    "ipa_from_hpfar",
    "kernel_fault_name",
    "non_architectural_fields",
]

from abi.arch import MASK64


class SyndromeSource(Protocol):
    """What data_abort_esr needs from a decoded access; emu.access.Access provides it.

    A Protocol rather than an import keeps this module independent of the decoder.
    """

    @property
    def isv_eligible(self) -> bool: ...
    @property
    def size(self) -> int: ...
    @property
    def sse(self) -> bool: ...
    @property
    def srt(self) -> int: ...
    @property
    def sf(self) -> bool: ...
    @property
    def ar(self) -> bool: ...
    @property
    def cm(self) -> bool: ...


def data_abort_esr(
    *,
    from_lower_el: bool,
    dfsc: int,
    access: SyndromeSource | None,
    wnr: bool,
    isv_allowed: bool,
    s1ptw: bool = False,
    fnv: bool = False,
    ea: bool = False,
    cm: bool | None = None,
    lowest_address: bool = True,
    il32: bool = True,
) -> Esr:
    """The ESR the hardware reports for a data abort.

    isv_allowed: the abort may carry an instruction syndrome at all, i.e. it is a stage-2
        abort reported in ESR_EL2 (Arm ARM D24.2.45: "For other faults reported in ESR_ELx,
        ISV is 0 except for the following stage 2 aborts"). False for every stage-1 fault.
    lowest_address: the faulting byte is the lowest address the instruction accesses. The
        ASL (AArch64.InstructionSyndromeValid) returns FALSE when !accdesc.lowestaddress, and
        AArch64.Mem clears lowestaddress for every byte after the first of an access split
        across pages, so a page-straddling access that faults on its second page has ISV = 0.
    cm: None means "from the access": True for cache maintenance by VA (not DC ZVA).

    ISV/SAS/SSE/SRT/SF/AR are filled only when ISV is 1: isv_allowed, the access is a single
    general-register load/store without writeback (`access.isv_eligible`), the fault is not on
    a stage-1 walk (S1PTW) and not a synchronous External abort (FEAT_RAS assumed).
    """
    if not 0 <= dfsc <= bits.FSC_MASK:
        raise ValueError(f"DFSC {dfsc:#x} does not fit in 6 bits")
    if fnv and dfsc != DFSC.SYNC_EXTERNAL:
        raise ValueError("FnV is RES0 except for a synchronous External abort (DFSC 0x10)")
    if ea and not dfsc_is_external_abort(dfsc):
        raise ValueError("EA is 0 for any abort other than an External abort")
    if cm is None:
        cm = access is not None and access.cm
    if cm and not wnr:
        # Arm ARM: "For faults on cache maintenance and address translation instructions,
        # this bit always returns a value of 1."
        raise ValueError("a cache-maintenance fault always reports WnR = 1")

    ec = EC.DABT_LOW if from_lower_el else EC.DABT_CUR
    value = (ec << bits.EC_SHIFT) | (bits.IL if il32 else 0) | dfsc
    value |= (bits.WNR if wnr else 0) | (bits.S1PTW if s1ptw else 0) | (bits.CM if cm else 0)
    value |= (bits.EA if ea else 0) | (bits.FNV if fnv else 0)

    isv = (
        isv_allowed
        and access is not None
        and access.isv_eligible
        and not s1ptw
        and lowest_address
        and not dfsc_is_external_abort(dfsc)
    )
    if isv:
        assert access is not None
        if access.size not in (1, 2, 4, 8):
            raise ValueError(f"an ISV-eligible access of {access.size} bytes has no SAS encoding")
        sas = access.size.bit_length() - 1
        value |= bits.ISV | (sas << bits.SAS_SHIFT) | (access.srt << bits.SRT_SHIFT)
        value |= (bits.SSE if access.sse else 0) | (bits.SF if access.sf else 0) | (bits.AR if access.ar else 0)
    return Esr(value)


def instruction_abort_esr(
    *, from_lower_el: bool, ifsc: int, s1ptw: bool = False, fnv: bool = False, ea: bool = False
) -> Esr:
    """The ESR for an instruction abort (IL is RES1; ISS[24:13] RES0 without FEAT_THE/PFAR)."""
    if fnv and ifsc != DFSC.SYNC_EXTERNAL:
        raise ValueError("FnV is RES0 except for a synchronous External abort")
    ec = EC.IABT_LOW if from_lower_el else EC.IABT_CUR
    value = (ec << bits.EC_SHIFT) | bits.IL | (ifsc & bits.FSC_MASK)
    value |= (bits.S1PTW if s1ptw else 0) | (bits.FNV if fnv else 0) | (bits.EA if ea else 0)
    return Esr(value)
