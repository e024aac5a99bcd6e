"""HPFAR_EL2: the faulting IPA the hardware reports to EL2 for a stage-2 abort, and when it is valid.

Stage-2 abort handlers (hyp) need the IPA, which FAR_EL2 does not hold; HPFAR_EL2 gives its page.
Source: Arm ARM (DDI 0487, K-era) D24.2.76 HPFAR_EL2.
"""
from __future__ import annotations

from emu.syndrome.esr import Esr
from emu.syndrome.fault_codes import (
    dfsc_is_access_flag,
    dfsc_is_address_size,
    dfsc_is_gpf,
    dfsc_is_permission,
    dfsc_is_translation,
)

_FIPA_BITS = 40  # HPFAR_EL2[43:4] = IPA[51:12] (FEAT_LPA; the 48-bit form leaves [43:40] zero)


def hpfar_from_ipa(ipa: int) -> int:
    """HPFAR_EL2 for a fault on `ipa`: FIPA (bits [43:4]) = IPA[51:12]; the page offset is lost."""
    if not 0 <= ipa < (1 << 52):
        raise ValueError(f"IPA {ipa:#x} wider than 52 bits")
    return (ipa >> 12) << 4


def ipa_from_hpfar(hpfar: int) -> int:
    """The page-aligned IPA in HPFAR_EL2.FIPA (ignores NS, bit 63)."""
    return ((hpfar >> 4) & ((1 << _FIPA_BITS) - 1)) << 12


def hpfar_is_valid(esr: Esr) -> bool:
    """Whether the hardware wrote HPFAR_EL2 for this stage-2 abort (D24.2.76).

    Written for translation, access flag and address size faults, for permission faults only
    on a stage-1 table walk (S1PTW), and for granule protection faults; UNKNOWN otherwise,
    notably for a stage-2 permission fault on the data access itself.
    """
    fsc = esr.fsc
    if dfsc_is_translation(fsc) or dfsc_is_access_flag(fsc) or dfsc_is_address_size(fsc):
        return True
    if dfsc_is_permission(fsc):
        return esr.s1ptw
    return dfsc_is_gpf(fsc)
