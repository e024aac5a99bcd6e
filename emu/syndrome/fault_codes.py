"""Fault classification codes: exception classes (ESR_ELx.EC), fault status codes (DFSC/IFSC)
and the names the kernel prints for both.

These are the vocabulary every layer shares: `emu` reports a DFSC, `hyp` and `host` classify it
(translation? permission?), and the oops text names it exactly as a given kernel generation does.

Sources: Arm ARM (DDI 0487, K-era) D24.2.45 ESR_ELx (EC and DFSC tables); Linux
arch/arm64/include/asm/esr.h, arch/arm64/kernel/traps.c (esr_class_str),
arch/arm64/mm/fault.c (fault_info).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from emu.syndrome import bits


class EC(enum.IntEnum):
    """Exception classes, ESR_ELx[31:26] (esr.h names)."""

    UNKNOWN = 0x00
    WFX = 0x01
    CP15_32 = 0x03
    CP15_64 = 0x04
    CP14_MR = 0x05
    CP14_LS = 0x06
    FP_ASIMD = 0x07
    CP10_ID = 0x08
    PAC = 0x09
    OTHER = 0x0A
    CP14_64 = 0x0C
    BTI = 0x0D
    ILL = 0x0E
    SVC32 = 0x11
    HVC32 = 0x12
    SMC32 = 0x13
    SVC64 = 0x15
    HVC64 = 0x16
    SMC64 = 0x17
    SYS64 = 0x18
    SVE = 0x19
    ERET = 0x1A
    FPAC = 0x1C
    SME = 0x1D
    GPC = 0x1E  # Arm ARM: Granule Protection Check exception, reported to EL3 only
    IMP_DEF = 0x1F
    IABT_LOW = 0x20
    IABT_CUR = 0x21
    PC_ALIGN = 0x22
    DABT_LOW = 0x24
    DABT_CUR = 0x25
    SP_ALIGN = 0x26
    MOPS = 0x27
    FP_EXC32 = 0x28
    FP_EXC64 = 0x2C
    GCS = 0x2D
    SERROR = 0x2F
    BREAKPT_LOW = 0x30
    BREAKPT_CUR = 0x31
    SOFTSTP_LOW = 0x32
    SOFTSTP_CUR = 0x33
    WATCHPT_LOW = 0x34
    WATCHPT_CUR = 0x35
    BKPT32 = 0x38
    VECTOR32 = 0x3A
    BRK64 = 0x3C

    @property
    def kernel_name(self) -> str:
        """The string traps.c:esr_get_class_string() prints for this class."""
        return ec_kernel_name(self)


# traps.c esr_class_str[]; classes missing from it print "UNRECOGNIZED EC".
_EC_KERNEL_NAMES = {
    EC.UNKNOWN: "Unknown/Uncategorized",
    EC.WFX: "WFI/WFE",
    EC.CP15_32: "CP15 MCR/MRC",
    EC.CP15_64: "CP15 MCRR/MRRC",
    EC.CP14_MR: "CP14 MCR/MRC",
    EC.CP14_LS: "CP14 LDC/STC",
    EC.FP_ASIMD: "ASIMD",
    EC.CP10_ID: "CP10 MRC/VMRS",
    EC.PAC: "PAC",
    EC.CP14_64: "CP14 MCRR/MRRC",
    EC.BTI: "BTI",
    EC.ILL: "PSTATE.IL",
    EC.SVC32: "SVC (AArch32)",
    EC.HVC32: "HVC (AArch32)",
    EC.SMC32: "SMC (AArch32)",
    EC.SVC64: "SVC (AArch64)",
    EC.HVC64: "HVC (AArch64)",
    EC.SMC64: "SMC (AArch64)",
    EC.SYS64: "MSR/MRS (AArch64)",
    EC.SVE: "SVE",
    EC.ERET: "ERET/ERETAA/ERETAB",
    EC.FPAC: "FPAC",
    EC.SME: "SME",
    EC.IMP_DEF: "EL3 IMP DEF",
    EC.IABT_LOW: "IABT (lower EL)",
    EC.IABT_CUR: "IABT (current EL)",
    EC.PC_ALIGN: "PC Alignment",
    EC.DABT_LOW: "DABT (lower EL)",
    EC.DABT_CUR: "DABT (current EL)",
    EC.SP_ALIGN: "SP Alignment",
    EC.MOPS: "MOPS",
    EC.FP_EXC32: "FP (AArch32)",
    EC.FP_EXC64: "FP (AArch64)",
    EC.GCS: "Guarded Control Stack",
    EC.SERROR: "SError",
    EC.BREAKPT_LOW: "Breakpoint (lower EL)",
    EC.BREAKPT_CUR: "Breakpoint (current EL)",
    EC.SOFTSTP_LOW: "Software Step (lower EL)",
    EC.SOFTSTP_CUR: "Software Step (current EL)",
    EC.WATCHPT_LOW: "Watchpoint (lower EL)",
    EC.WATCHPT_CUR: "Watchpoint (current EL)",
    EC.BKPT32: "BKPT (AArch32)",
    EC.VECTOR32: "Vector catch (AArch32)",
    EC.BRK64: "BRK (AArch64)",
}


def ec_kernel_name(ec: int) -> str:
    """esr_get_class_string() for a raw EC value."""
    return _EC_KERNEL_NAMES.get(ec, "UNRECOGNIZED EC")  # type: ignore[call-overload]


# --------------------------------------------------------------------------------------------
# Fault status codes (DFSC/IFSC, ESR_ELx[5:0])
# --------------------------------------------------------------------------------------------


class DFSC(enum.IntEnum):
    """Data/instruction fault status codes (Arm ARM D24.2.45 DFSC table).

    Level -1 codes need FEAT_LPA2, level -2 codes FEAT_D128, granule protection faults FEAT_RME.
    """

    ADDRESS_SIZE_L0 = 0x00
    ADDRESS_SIZE_L1 = 0x01
    ADDRESS_SIZE_L2 = 0x02
    ADDRESS_SIZE_L3 = 0x03
    TRANSLATION_L0 = 0x04
    TRANSLATION_L1 = 0x05
    TRANSLATION_L2 = 0x06
    TRANSLATION_L3 = 0x07
    ACCESS_FLAG_L0 = 0x08
    ACCESS_FLAG_L1 = 0x09
    ACCESS_FLAG_L2 = 0x0A
    ACCESS_FLAG_L3 = 0x0B
    PERMISSION_L0 = 0x0C
    PERMISSION_L1 = 0x0D
    PERMISSION_L2 = 0x0E
    PERMISSION_L3 = 0x0F
    SYNC_EXTERNAL = 0x10
    TAG_CHECK = 0x11
    SYNC_EXTERNAL_WALK_LM2 = 0x12
    SYNC_EXTERNAL_WALK_LM1 = 0x13
    SYNC_EXTERNAL_WALK_L0 = 0x14
    SYNC_EXTERNAL_WALK_L1 = 0x15
    SYNC_EXTERNAL_WALK_L2 = 0x16
    SYNC_EXTERNAL_WALK_L3 = 0x17
    PARITY = 0x18
    PARITY_WALK_LM1 = 0x1B
    PARITY_WALK_L0 = 0x1C
    PARITY_WALK_L1 = 0x1D
    PARITY_WALK_L2 = 0x1E
    PARITY_WALK_L3 = 0x1F
    ALIGNMENT = 0x21
    GPF_WALK_LM2 = 0x22
    GPF_WALK_LM1 = 0x23
    GPF_WALK_L0 = 0x24
    GPF_WALK_L1 = 0x25
    GPF_WALK_L2 = 0x26
    GPF_WALK_L3 = 0x27
    GPF = 0x28
    ADDRESS_SIZE_LM1 = 0x29
    TRANSLATION_LM2 = 0x2A
    TRANSLATION_LM1 = 0x2B
    ADDRESS_SIZE_LM2 = 0x2C
    TLB_CONFLICT = 0x30
    UNSUPPORTED_ATOMIC_UPDATE = 0x31
    LOCKDOWN = 0x34
    UNSUPPORTED_EXCLUSIVE = 0x35

    @classmethod
    def translation(cls, level: int) -> "DFSC":
        return cls(_TRANSLATION.code(level))

    @classmethod
    def access_flag(cls, level: int) -> "DFSC":
        return cls(_ACCESS_FLAG.code(level))

    @classmethod
    def permission(cls, level: int) -> "DFSC":
        return cls(_PERMISSION.code(level))

    @classmethod
    def address_size(cls, level: int) -> "DFSC":
        return cls(_ADDRESS_SIZE.code(level))

    @classmethod
    def sync_external_walk(cls, level: int) -> "DFSC":
        return cls(_SYNC_EXTERNAL_WALK.code(level))

    @classmethod
    def gpf_walk(cls, level: int) -> "DFSC":
        return cls(_GPF_WALK.code(level))


@dataclass(frozen=True)
class _LevelFamily:
    """One fault kind's codes, one per lookup level.

    Levels 0-3 are four consecutive codes from `base`; levels -2/-1 were added out of line
    (FEAT_D128, FEAT_LPA2), so they are listed in `negative`. DFSC.<kind>(level) and
    dfsc_level() both read these, so each code's level is written down once.
    """

    what: str
    base: int
    negative: tuple[tuple[int, int], ...] = ()  # (level, code)

    def code(self, level: int) -> int:
        if 0 <= level <= 3:
            return self.base + level
        for negative_level, code in self.negative:
            if negative_level == level:
                return code
        raise ValueError(f"no {self.what} fault code for level {level}")

    def levels(self) -> dict[int, int]:
        """code -> level for every code of the family."""
        levels = {self.base + level: level for level in range(4)}
        levels.update({code: level for level, code in self.negative})
        return levels


# Arm ARM D24.2.45 DFSC table.
_ADDRESS_SIZE = _LevelFamily("address size", 0x00, ((-2, 0x2C), (-1, 0x29)))
_TRANSLATION = _LevelFamily("translation", 0x04, ((-2, 0x2A), (-1, 0x2B)))
_ACCESS_FLAG = _LevelFamily("access flag", 0x08)
_PERMISSION = _LevelFamily("permission", 0x0C)
_SYNC_EXTERNAL_WALK = _LevelFamily("external abort on walk", 0x14, ((-2, 0x12), (-1, 0x13)))
_PARITY_WALK = _LevelFamily("parity error on walk", 0x1C, ((-1, 0x1B),))
_GPF_WALK = _LevelFamily("granule protection on walk", 0x24, ((-2, 0x22), (-1, 0x23)))

_LEVELS = {
    code: level
    for family in (_ADDRESS_SIZE, _TRANSLATION, _ACCESS_FLAG, _PERMISSION, _SYNC_EXTERNAL_WALK,
                   _PARITY_WALK, _GPF_WALK)
    for code, level in family.levels().items()
}


def dfsc_is_translation(dfsc: int) -> bool:
    return 0x04 <= dfsc <= 0x07 or dfsc in (0x2A, 0x2B)


def dfsc_is_access_flag(dfsc: int) -> bool:
    return 0x08 <= dfsc <= 0x0B


def dfsc_is_permission(dfsc: int) -> bool:
    return 0x0C <= dfsc <= 0x0F


def dfsc_is_address_size(dfsc: int) -> bool:
    return dfsc <= 0x03 or dfsc in (0x29, 0x2C)


def dfsc_is_external_abort(dfsc: int) -> bool:
    """Synchronous External aborts and (pre-RAS) parity/ECC errors, on or off a table walk."""
    return dfsc == 0x10 or 0x12 <= dfsc <= 0x18 or 0x1B <= dfsc <= 0x1F


def dfsc_is_gpf(dfsc: int) -> bool:
    return 0x22 <= dfsc <= 0x28


def dfsc_level(dfsc: int) -> int | None:
    """Lookup level a fault code names, or None for codes without one (alignment, SEA...)."""
    return _LEVELS.get(dfsc)


def _fault_names(*, lpa2: bool) -> tuple[str, ...]:
    """fault.c fault_info[].name for one kernel generation.

    `lpa2` selects the table after the FEAT_LPA2 series (v6.9): it named codes 0x08, 0x0C, 0x13,
    0x1B, 0x29 and 0x2B, which older kernels print as "unknown N" (an LKFT report on
    6.6.0-rc7-next prints "FSC = 0x2b: unknown 43").
    """
    names = [f"unknown {i}" for i in range(64)]
    names[0] = "ttbr address size fault"
    for level in range(1, 4):
        names[level] = f"level {level} address size fault"
        names[0x08 + level] = f"level {level} access flag fault"
        names[0x0C + level] = f"level {level} permission fault"
    for level in range(4):
        names[0x04 + level] = f"level {level} translation fault"
        names[0x14 + level] = f"level {level} (translation table walk)"
        names[0x1C + level] = f"level {level} synchronous parity error (translation table walk)"
    names[0x10] = "synchronous external abort"
    names[0x11] = "synchronous tag check fault"
    names[0x18] = "synchronous parity or ECC error"
    names[0x21] = "alignment fault"
    names[0x30] = "TLB conflict abort"
    names[0x31] = "Unsupported atomic hardware update fault"
    names[0x34] = "implementation fault (lockdown abort)"
    names[0x35] = "implementation fault (unsupported exclusive)"
    names[0x3D] = "section domain fault"
    names[0x3E] = "page domain fault"
    if lpa2:
        names[0x08] = "level 0 access flag fault"
        names[0x0C] = "level 0 permission fault"
        names[0x13] = "level -1 (translation table walk)"
        names[0x1B] = "level -1 synchronous parity error (translation table walk)"
        names[0x29] = "level -1 address size fault"
        names[0x2B] = "level -1 translation fault"
    return tuple(names)


_FAULT_NAMES_PRE_LPA2 = _fault_names(lpa2=False)
_FAULT_NAMES_LPA2 = _fault_names(lpa2=True)


def _descriptive_names() -> tuple[str, ...]:
    # Mainline prints "unknown 36" for a GPF (fault.c has no entry); give architectural names
    # in the same style for every code the Arm ARM defines.
    names = list(_FAULT_NAMES_LPA2)
    names[0x12] = "level -2 (translation table walk)"
    names[0x22] = "level -2 granule protection fault"
    names[0x23] = "level -1 granule protection fault"
    for level in range(4):
        names[0x24 + level] = f"level {level} granule protection fault"
    names[0x28] = "granule protection fault"
    names[0x2A] = "level -2 translation fault"
    names[0x2C] = "level -2 address size fault"
    return tuple(names)


_DESCRIPTIVE_NAMES = _descriptive_names()


def dfsc_name(dfsc: int) -> str:
    """Kernel-style name of a fault status code, defined for every architectural code.

    Matches the newest fault.c fault_info names where mainline has one; granule protection
    faults and FEAT_D128 codes, which mainline prints as "unknown N", get descriptive names.
    """
    return _DESCRIPTIVE_NAMES[dfsc & bits.FSC_MASK]


# --------------------------------------------------------------------------------------------
# Kernel oops formats
# --------------------------------------------------------------------------------------------


class OopsStyle(enum.Enum):
    """Which kernel generation's mem_abort_decode()/data_abort_decode() text to reproduce.

    V6_1:   ~5.19-6.4: 64-bit ESR, FSC line, "ISV = 0, ISS = ..." and "CM = , WnR = ".
    V6_5:   6.5-6.8: adds ISS2 to the ISV=0 line and the TnD/TagAccess and GCS/Overlay/
            DirtyBit/Xs lines; fault names still pre-LPA2.
    LATEST: 6.9 onward (the 7.x kernels this project loads): as V6_5 with LPA2 fault names.
    """

    V6_1 = "6.1"
    V6_5 = "6.5"
    LATEST = "latest"


def kernel_fault_name(dfsc: int, style: OopsStyle = OopsStyle.LATEST) -> str:
    """fault_info[dfsc].name exactly as that kernel generation prints it."""
    table = _FAULT_NAMES_LPA2 if style is OopsStyle.LATEST else _FAULT_NAMES_PRE_LPA2
    return table[dfsc & bits.FSC_MASK]
