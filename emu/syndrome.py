"""Exception syndromes: ESR_ELx, fault status codes, HPFAR_EL2, and the kernel's oops decoding.

Everything a fault handler reads about an abort lives in ESR_ELx, so this module is the single
place where ESR bits are built and taken apart. `emu` builds the syndrome the hardware would
report (`data_abort_esr`), `hyp` reads and re-injects it, `host` decodes it like
arch/arm64/mm/fault.c, and the oracle asks `non_architectural_fields` whether an injected
syndrome is one real hardware could have produced.

Sources: Arm ARM (DDI 0487, K-era) D24.2.45-47 ESR_EL1/EL2/EL3 "ISS encoding for an exception
from a Data Abort", J1.1 AArch64.FaultSyndrome / AArch64.InstructionSyndromeValid, D24.2.76
HPFAR_EL2; Linux arch/arm64/include/asm/esr.h, arch/arm64/kernel/traps.c (esr_class_str),
arch/arm64/mm/fault.c (fault_info, mem_abort_decode, data_abort_decode).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

MASK64 = (1 << 64) - 1

# Field positions (esr.h / Arm ARM D24.2.45).
_EC_SHIFT = 26
_IL = 1 << 25
_ISS_MASK = (1 << 25) - 1
_ISS2_SHIFT = 32
_ISS2_MASK = (1 << 24) - 1
_ISV = 1 << 24
_SAS_SHIFT = 22
_SSE = 1 << 21
_SRT_SHIFT = 16
_SF = 1 << 15
_AR = 1 << 14
_VNCR = 1 << 13
_SET_SHIFT = 11
_FNV = 1 << 10
_EA = 1 << 9
_CM = 1 << 8
_S1PTW = 1 << 7
_WNR = 1 << 6
_FSC_MASK = 0x3F
# ISS[23:14]: the instruction syndrome proper; RES0 whenever ISV is 0.
_ISS_SYNDROME_MASK = 0x3FF << 14


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
        return cls(_leveled(level, {-2: 0x2A, -1: 0x2B}, 0x04, "translation"))

    @classmethod
    def access_flag(cls, level: int) -> "DFSC":
        return cls(_leveled(level, {}, 0x08, "access flag"))

    @classmethod
    def permission(cls, level: int) -> "DFSC":
        return cls(_leveled(level, {}, 0x0C, "permission"))

    @classmethod
    def address_size(cls, level: int) -> "DFSC":
        return cls(_leveled(level, {-2: 0x2C, -1: 0x29}, 0x00, "address size"))

    @classmethod
    def sync_external_walk(cls, level: int) -> "DFSC":
        return cls(_leveled(level, {-2: 0x12, -1: 0x13}, 0x14, "external abort on walk"))

    @classmethod
    def gpf_walk(cls, level: int) -> "DFSC":
        return cls(_leveled(level, {-2: 0x22, -1: 0x23}, 0x24, "granule protection on walk"))


def _leveled(level: int, negative: dict[int, int], base: int, what: str) -> int:
    if 0 <= level <= 3:
        return base + level
    if level in negative:
        return negative[level]
    raise ValueError(f"no {what} fault code for level {level}")


def _level_table() -> dict[int, int]:
    # Families of four codes for levels 0-3; levels -2/-1 were added out of line (LPA2, D128).
    levels = {base + level: level
              for base in (0x00, 0x04, 0x08, 0x0C, 0x14, 0x1C, 0x24) for level in range(4)}
    levels.update({0x12: -2, 0x13: -1, 0x1B: -1, 0x22: -2, 0x23: -1, 0x29: -1, 0x2A: -2,
                   0x2B: -1, 0x2C: -2})
    return levels


_LEVELS = _level_table()


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
    return _DESCRIPTIVE_NAMES[dfsc & _FSC_MASK]


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
    return table[dfsc & _FSC_MASK]


# --------------------------------------------------------------------------------------------
# ESR
# --------------------------------------------------------------------------------------------


def _bit(value: int, mask: int) -> bool:
    return bool(value & mask)


@dataclass(frozen=True)
class Esr:
    """One ESR_ELx value (64 bits: ISS2 in [55:32], EC [31:26], IL [25], ISS [24:0]).

    Field properties follow the Data Abort ISS layout; they are meaningful only for the
    exception classes that use it (`is_data_abort`, and the shared subset for instruction
    aborts). str() gives the kernel's oops decoding (newest format); `oops_lines(style)`
    picks another kernel generation.
    """

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < (1 << 56):
            # Arm ARM: ESR_ELx[63:56] are RES0.
            raise ValueError(f"ESR {self.value:#x} does not fit in ESR_ELx[55:0]")

    # --- whole-register fields -------------------------------------------------------------
    @property
    def ec(self) -> int:
        raw = (self.value >> _EC_SHIFT) & 0x3F
        try:
            return EC(raw)
        except ValueError:
            return raw

    @property
    def il(self) -> bool:
        return _bit(self.value, _IL)

    @property
    def iss(self) -> int:
        return self.value & _ISS_MASK

    @property
    def iss2(self) -> int:
        return (self.value >> _ISS2_SHIFT) & _ISS2_MASK

    @property
    def is_data_abort(self) -> bool:
        return self.ec in (EC.DABT_LOW, EC.DABT_CUR)

    @property
    def is_instruction_abort(self) -> bool:
        return self.ec in (EC.IABT_LOW, EC.IABT_CUR)

    # --- Data Abort ISS ----------------------------------------------------------------------
    @property
    def isv(self) -> bool:
        return _bit(self.value, _ISV)

    @property
    def sas(self) -> int:
        return (self.value >> _SAS_SHIFT) & 0x3

    @property
    def access_size(self) -> int | None:
        """Bytes named by SAS, or None when ISV is 0 (SAS is then RES0)."""
        return 1 << self.sas if self.isv else None

    @property
    def sse(self) -> bool:
        return _bit(self.value, _SSE)

    @property
    def srt(self) -> int:
        return (self.value >> _SRT_SHIFT) & 0x1F

    @property
    def sf(self) -> bool:
        return _bit(self.value, _SF)

    @property
    def ar(self) -> bool:
        return _bit(self.value, _AR)

    @property
    def vncr(self) -> bool:
        return _bit(self.value, _VNCR)

    @property
    def set(self) -> int:
        return (self.value >> _SET_SHIFT) & 0x3

    @property
    def fnv(self) -> bool:
        return _bit(self.value, _FNV)

    @property
    def ea(self) -> bool:
        return _bit(self.value, _EA)

    @property
    def cm(self) -> bool:
        return _bit(self.value, _CM)

    @property
    def s1ptw(self) -> bool:
        return _bit(self.value, _S1PTW)

    @property
    def wnr(self) -> bool:
        return _bit(self.value, _WNR)

    @property
    def fsc(self) -> int:
        """DFSC for data aborts, IFSC for instruction aborts (same bits)."""
        return self.value & _FSC_MASK

    dfsc = fsc
    ifsc = fsc

    # --- ISS2 (data aborts), fault.c data_abort_decode() names ----------------------------------
    @property
    def tnd(self) -> bool:
        return _bit(self.iss2, 1 << 10)

    @property
    def tag_access(self) -> bool:
        return _bit(self.iss2, 1 << 9)

    @property
    def gcs(self) -> bool:
        return _bit(self.iss2, 1 << 8)

    @property
    def overlay(self) -> bool:
        return _bit(self.iss2, 1 << 6)

    @property
    def dirty_bit(self) -> bool:
        return _bit(self.iss2, 1 << 5)

    @property
    def xs(self) -> int:
        return self.iss2 & 0x1F

    # --- derived values ----------------------------------------------------------------------
    def with_s1ptw(self, on: bool = True) -> "Esr":
        """The same syndrome with ISS.S1PTW (bit 7) set or cleared: pKVM's injection marker."""
        return Esr(self.value | _S1PTW if on else self.value & ~_S1PTW)

    def with_ec(self, ec: int) -> "Esr":
        """The same syndrome reported with another exception class (IL, ISS, ISS2 unchanged)."""
        if not 0 <= ec <= 0x3F:
            raise ValueError(f"EC {ec:#x} does not fit in 6 bits")
        return Esr((self.value & ~(0x3F << _EC_SHIFT)) | (ec << _EC_SHIFT))

    # --- kernel decoding ---------------------------------------------------------------------
    def oops_lines(self, style: OopsStyle = OopsStyle.LATEST) -> list[str]:
        """What die_kernel_fault() prints through mem_abort_decode() for this ESR.

        For exception classes other than aborts only the first lines make sense; they are
        produced the same way (the kernel never prints those through this path).
        """
        value = self.value
        lines = [
            "Mem abort info:",
            f"  ESR = 0x{value:016x}",
            f"  EC = 0x{(value >> _EC_SHIFT) & 0x3F:02x}: "
            f"{ec_kernel_name((value >> _EC_SHIFT) & 0x3F)}, IL = {32 if self.il else 16} bits",
            f"  SET = {self.set}, FnV = {int(self.fnv)}",
            f"  EA = {int(self.ea)}, S1PTW = {int(self.s1ptw)}",
            f"  FSC = 0x{self.fsc:02x}: {kernel_fault_name(self.fsc, style)}",
        ]
        if self.is_data_abort:
            lines += self._data_abort_lines(style)
        return lines

    def _data_abort_lines(self, style: OopsStyle) -> list[str]:
        lines = ["Data abort info:"]
        if self.isv:
            lines += [
                f"  Access size = {1 << self.sas} byte(s)",
                f"  SSE = {int(self.sse)}, SRT = {self.srt}",
                f"  SF = {int(self.sf)}, AR = {int(self.ar)}",
            ]
        elif style is OopsStyle.V6_1:
            lines.append(f"  ISV = 0, ISS = 0x{self.iss:08x}")
        else:
            lines.append(f"  ISV = 0, ISS = 0x{self.iss:08x}, ISS2 = 0x{self.iss2:08x}")
        if style is OopsStyle.V6_1:
            lines.append(f"  CM = {int(self.cm)}, WnR = {int(self.wnr)}")
        else:
            lines += [
                f"  CM = {int(self.cm)}, WnR = {int(self.wnr)}, TnD = {int(self.tnd)}, "
                f"TagAccess = {int(self.tag_access)}",
                f"  GCS = {int(self.gcs)}, Overlay = {int(self.overlay)}, "
                f"DirtyBit = {int(self.dirty_bit)}, Xs = {self.xs}",
            ]
        return lines

    def __str__(self) -> str:
        return "\n".join(self.oops_lines())


# --------------------------------------------------------------------------------------------
# Building syndromes
# --------------------------------------------------------------------------------------------


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
    if not 0 <= dfsc <= _FSC_MASK:
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
    value = (ec << _EC_SHIFT) | (_IL if il32 else 0) | dfsc
    value |= (_WNR if wnr else 0) | (_S1PTW if s1ptw else 0) | (_CM if cm else 0)
    value |= (_EA if ea else 0) | (_FNV if fnv else 0)

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
        value |= _ISV | (sas << _SAS_SHIFT) | (access.srt << _SRT_SHIFT)
        value |= (_SSE if access.sse else 0) | (_SF if access.sf else 0) | (_AR if access.ar else 0)
    return Esr(value)


def instruction_abort_esr(
    *, from_lower_el: bool, ifsc: int, s1ptw: bool = False, fnv: bool = False, ea: bool = False
) -> Esr:
    """The ESR for an instruction abort (IL is RES1; ISS[24:13] RES0 without FEAT_THE/PFAR)."""
    if fnv and ifsc != DFSC.SYNC_EXTERNAL:
        raise ValueError("FnV is RES0 except for a synchronous External abort")
    ec = EC.IABT_LOW if from_lower_el else EC.IABT_CUR
    value = (ec << _EC_SHIFT) | _IL | (ifsc & _FSC_MASK)
    value |= (_S1PTW if s1ptw else 0) | (_FNV if fnv else 0) | (_EA if ea else 0)
    return Esr(value)


# --------------------------------------------------------------------------------------------
# Judging syndromes
# --------------------------------------------------------------------------------------------


_DEFINED_FSC = frozenset(int(code) for code in DFSC)
# Codes that only a data access can produce (PC misalignment has its own EC).
_DATA_ONLY_FSC = frozenset({DFSC.TAG_CHECK, DFSC.ALIGNMENT, DFSC.UNSUPPORTED_EXCLUSIVE})


def non_architectural_fields(
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
        elif value & _ISS_SYNDROME_MASK:
            fields = (("SAS", 0x3 << _SAS_SHIFT), ("SSE", _SSE), ("SRT", 0x1F << _SRT_SHIFT),
                      ("SF", _SF), ("AR", _AR))
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


# --------------------------------------------------------------------------------------------
# HPFAR_EL2
# --------------------------------------------------------------------------------------------

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
