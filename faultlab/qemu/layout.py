"""Addresses and translation-table entries both sides of the differential share.

FAR, HPFAR and the memory window are compared as values, so QEMU and our machine must see the
same VAs and the same physical frames: the data pages, the EL0 and EL1 instruction stubs and
(for a later S1PTW family) the stage-1 table frame are placed here once. The machine's physical
memory starts where QEMU virt's RAM does (0x4000_0000), and the machine side allocates its frames
so that they land on the same PAs.

Descriptor layouts: Arm ARM (DDI 0487) D8.3 (VMSAv8-64 descriptors, 4 KiB granule):
stage 1 page: bits[1:0] = 0b11, AttrIndx[4:2], AP[7:6], SH[9:8], AF[10], PXN[53], UXN[54];
stage 2 page: bits[1:0] = 0b11, MemAttr[5:2], S2AP[7:6], SH[9:8], AF[10], XN[54:53].
"""
from __future__ import annotations

import enum

PAGE = 0x1000

RAM_BASE = 0x4000_0000
RAM_SIZE = 64 << 20

# The harness image (EL2 code, EL1 vectors, EL1 stubs, config) at VA = IPA = PA, EL1-executable.
HARNESS_PA = 0x4020_0000
# Translation tables the harness boots with (2 MiB of frames, never touched by cases).
TABLES_PA = 0x4030_0000
CASES_PA = 0x4040_0000  # the case table (CASE_BYTES each)
CASES_END = 0x4080_0000
RESULTS_PA = 0x4200_0000  # the result records (RESULT_BYTES each)
RESULTS_END = 0x4300_0000
CASE_BYTES = 128
RESULT_BYTES = 256
MAX_CASES_PER_BOOT = min((CASES_END - CASES_PA) // CASE_BYTES, (RESULTS_END - RESULTS_PA) // RESULT_BYTES)

# One 2 MiB region mapped by a stage-2 level-3 table, so single frames in it can fault at stage 2:
# the two data frames, the EL0 stub frame and the stage-1 level-3 table of the data VAs.
FRAMES_PA = 0x4100_0000
DATA_LO_PA = FRAMES_PA + 0x1000
DATA_HI_PA = FRAMES_PA + 0x2000
EL0_STUB_PA = FRAMES_PA + 0x4000
S1_DATA_L3_PA = FRAMES_PA + 0x8000  # stage-1 level-3 table for the data VAs (the s1ptw family's target)
S1_DATA_L2_PA = FRAMES_PA + 0x9000
S1_EL0_L3_PA = FRAMES_PA + 0xA000  # stage-1 level-3 table of the EL0 stub page (apart from the data's)

# VAs (TTBR0, 39-bit VA space): the two data pages meet at BOUNDARY_VA.
DATA_LO_VA = 0x8000_1000
DATA_HI_VA = 0x8000_2000
BOUNDARY_VA = DATA_HI_VA
EL0_STUB_VA = 0x8020_0000  # its own level-3 table: an S1PTW case on the data's table leaves EL0 fetches alone
STUB_BYTES = 8  # the instruction under test and the instruction that reports completion
MAX_STUBS = PAGE // STUB_BYTES

# The window of memory compared after every case: 64 bytes either side of the boundary
# (the largest access, LD4/ST4 of four Q registers, is 64 bytes).
WINDOW_BEFORE = 64
WINDOW_BYTES = 128
WINDOW_PA = DATA_HI_PA - WINDOW_BEFORE


def window_pattern() -> bytes:
    """What the window holds before every case: distinct bytes, none zero (DC ZVA shows)."""
    return bytes((0x11 + 7 * i) & 0xFF or 0x5A for i in range(WINDOW_BYTES))


# Register values at entry of every case (x0 is the case's base address).
X_REGS = (
    0,  # x0: per case
    0xA1A2_A3A4_A5A6_A7A8,
    0xB1B2_B3B4_B5B6_B7B8,
    0xC1C2_C3C4_C5C6_C7C8,
    0xD1D2_D3D4_D5D6_D7D8,
    0x10,  # x5: an index register (forms "[x0, x5]")
    0xFFFF_FFFF_FFFF_FFF8,  # x6: -8 (forms "[x0, w6, sxtw]")
    0xE1E2_E3E4_E5E6_E7E8,
)
V_REGS = tuple(int.from_bytes(bytes((0x80 + 16 * n + j) & 0xFF for j in range(16)), "little") for n in range(8))


class S1(enum.Enum):
    """A stage-1 page entry of the EL1&0 regime, as a case asks for it."""

    KERNEL_RW = "kernel-rw"
    KERNEL_RO = "kernel-ro"
    USER_RW = "user-rw"
    USER_RO = "user-ro"
    USER_RX = "user-rx"
    KERNEL_RW_OLD = "kernel-rw-old"  # AF = 0 (Linux: pte_mkold), TCR_EL1.HA = 0: an Access flag fault
    USER_RW_OLD = "user-rw-old"
    INVALID = "invalid"


class S2(enum.Enum):
    """A stage-2 page entry (identity IPA -> PA), as a case asks for it."""

    RW = "rw"
    RO = "ro"
    OLD = "old"  # read/write with AF = 0, VTCR_EL2.HA = 0: an Access flag fault
    INVALID = "invalid"


_AP = {S1.KERNEL_RW: 0b00, S1.USER_RW: 0b01, S1.KERNEL_RO: 0b10, S1.USER_RO: 0b11, S1.USER_RX: 0b11,
       S1.KERNEL_RW_OLD: 0b00, S1.USER_RW_OLD: 0b01}
_S1_OLD = frozenset({S1.KERNEL_RW_OLD, S1.USER_RW_OLD})
NORMAL_ATTR_INDEX = 0  # MAIR_EL1 attr0 = 0xFF, Normal write-back
SH_INNER = 0b11


def s1_page(pa: int, entry: S1) -> int:
    """A stage-1 level-3 page descriptor (Normal memory, inner shareable; AF = 1 unless an *_OLD kind)."""
    if entry is S1.INVALID:
        return 0
    pxn = 1
    uxn = 0 if entry is S1.USER_RX else 1
    af = 0 if entry in _S1_OLD else 1
    return (pa | 0b11 | NORMAL_ATTR_INDEX << 2 | _AP[entry] << 6 | SH_INNER << 8 | af << 10
            | pxn << 53 | uxn << 54)


def s1_table(pa: int) -> int:
    """A stage-1 table descriptor (no hierarchical permission limits)."""
    return pa | 0b11


def s1_block(pa: int, *, el1_exec: bool) -> int:
    """A stage-1 level-1/2 block descriptor, EL1 read/write, EL0 no access."""
    return pa | 0b01 | NORMAL_ATTR_INDEX << 2 | SH_INNER << 8 | 1 << 10 | (0 if el1_exec else 1) << 53 | 1 << 54


_S2AP = {S2.RW: 0b11, S2.RO: 0b01, S2.OLD: 0b11}
S2_NORMAL_WB = 0b1111  # MemAttr: Normal, outer and inner write-back


def s2_page(pa: int, entry: S2) -> int:
    """A stage-2 level-3 page descriptor, identity-mapped, executable."""
    if entry is S2.INVALID:
        return 0
    af = 0 if entry is S2.OLD else 1
    return pa | 0b11 | S2_NORMAL_WB << 2 | _S2AP[entry] << 6 | SH_INNER << 8 | af << 10


def s2_block(pa: int) -> int:
    """A stage-2 level-2 block descriptor (2 MiB), read/write, executable."""
    return pa | 0b01 | S2_NORMAL_WB << 2 | 0b11 << 6 | SH_INNER << 8 | 1 << 10


def s2_table(pa: int) -> int:
    return pa | 0b11
