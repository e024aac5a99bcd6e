"""One ESR_ELx value: its fields, and how the kernel's oops decodes it.

Everything a fault handler reads about an abort lives in ESR_ELx; `Esr` names each field so no
caller shifts and masks by hand. Build one with emu.syndrome.data_abort_esr /
instruction_abort_esr; judge one with emu.syndrome.judge.non_architectural_fields.

Sources: Arm ARM (DDI 0487, K-era) D24.2.45-47 ESR_EL1/EL2/EL3 "ISS encoding for an exception
from a Data Abort"; Linux arch/arm64/include/asm/esr.h, arch/arm64/mm/fault.c
(mem_abort_decode, data_abort_decode).
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.syndrome import bits
from emu.syndrome.fault_codes import EC, OopsStyle, ec_kernel_name, kernel_fault_name


_EC_BY_VALUE = {int(member): member for member in EC}


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
        """EC as its `EC` member, or the raw number for a class the enum does not name."""
        raw = (self.value >> bits.EC_SHIFT) & bits.EC_MASK
        return _EC_BY_VALUE.get(raw, raw)  # a dict lookup: EC(raw) builds through the enum machinery (~1 us, every access)

    @property
    def il(self) -> bool:
        return _bit(self.value, bits.IL)

    @property
    def iss(self) -> int:
        return self.value & bits.ISS_MASK

    @property
    def iss2(self) -> int:
        return (self.value >> bits.ISS2_SHIFT) & bits.ISS2_MASK

    @property
    def is_data_abort(self) -> bool:
        return self.ec in (EC.DABT_LOW, EC.DABT_CUR)

    @property
    def is_instruction_abort(self) -> bool:
        return self.ec in (EC.IABT_LOW, EC.IABT_CUR)

    # --- Data Abort ISS ----------------------------------------------------------------------
    @property
    def isv(self) -> bool:
        return _bit(self.value, bits.ISV)

    @property
    def sas(self) -> int:
        return (self.value >> bits.SAS_SHIFT) & 0x3

    @property
    def access_size(self) -> int | None:
        """Bytes named by SAS, or None when ISV is 0 (SAS is then RES0)."""
        return 1 << self.sas if self.isv else None

    @property
    def sse(self) -> bool:
        return _bit(self.value, bits.SSE)

    @property
    def srt(self) -> int:
        return (self.value >> bits.SRT_SHIFT) & 0x1F

    @property
    def sf(self) -> bool:
        return _bit(self.value, bits.SF)

    @property
    def ar(self) -> bool:
        return _bit(self.value, bits.AR)

    @property
    def vncr(self) -> bool:
        return _bit(self.value, bits.VNCR)

    @property
    def set(self) -> int:
        return (self.value >> bits.SET_SHIFT) & 0x3

    @property
    def fnv(self) -> bool:
        return _bit(self.value, bits.FNV)

    @property
    def ea(self) -> bool:
        return _bit(self.value, bits.EA)

    @property
    def cm(self) -> bool:
        return _bit(self.value, bits.CM)

    @property
    def s1ptw(self) -> bool:
        return _bit(self.value, bits.S1PTW)

    @property
    def wnr(self) -> bool:
        return _bit(self.value, bits.WNR)

    @property
    def fsc(self) -> int:
        """DFSC for data aborts, IFSC for instruction aborts (same bits)."""
        return self.value & bits.FSC_MASK

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
        return Esr(self.value | bits.S1PTW if on else self.value & ~bits.S1PTW)

    def with_ec(self, ec: int) -> "Esr":
        """The same syndrome reported with another exception class (IL, ISS, ISS2 unchanged)."""
        if not 0 <= ec <= bits.EC_MASK:
            raise ValueError(f"EC {ec:#x} does not fit in 6 bits")
        return Esr((self.value & ~(bits.EC_MASK << bits.EC_SHIFT)) | (ec << bits.EC_SHIFT))

    # --- kernel decoding ---------------------------------------------------------------------
    def oops_lines(self, style: OopsStyle = OopsStyle.LATEST) -> list[str]:
        """What die_kernel_fault() prints through mem_abort_decode() for this ESR.

        For exception classes other than aborts only the first lines make sense; they are
        produced the same way (the kernel never prints those through this path).
        """
        raw_ec = (self.value >> bits.EC_SHIFT) & bits.EC_MASK
        lines = [
            "Mem abort info:",
            f"  ESR = 0x{self.value:016x}",
            f"  EC = 0x{raw_ec:02x}: {ec_kernel_name(raw_ec)}, IL = {32 if self.il else 16} bits",
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
