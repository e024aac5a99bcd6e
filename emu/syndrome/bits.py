"""Where each field sits in ESR_ELx: the bit layout shared by the builders, the decoder and the judge.

Kept apart so that building (emu.syndrome), reading (emu.syndrome.esr) and judging (emu.syndrome.judge)
a syndrome agree on one layout. Sources: Arm ARM (DDI 0487) D24.2.45 ESR_EL1 "ISS encoding for
an exception from a Data Abort"; Linux arch/arm64/include/asm/esr.h (ESR_ELx_* names).
"""
from __future__ import annotations

EC_SHIFT = 26
EC_MASK = 0x3F  # EC is ESR_ELx[31:26]
IL = 1 << 25
ISS_MASK = (1 << 25) - 1
ISS2_SHIFT = 32
ISS2_MASK = (1 << 24) - 1
ISV = 1 << 24
SAS_SHIFT = 22
SSE = 1 << 21
SRT_SHIFT = 16
SF = 1 << 15
AR = 1 << 14
VNCR = 1 << 13
SET_SHIFT = 11
FNV = 1 << 10
EA = 1 << 9
CM = 1 << 8
S1PTW = 1 << 7
WNR = 1 << 6
FSC_MASK = 0x3F
# ISS[23:14]: the instruction syndrome proper; RES0 whenever ISV is 0.
ISS_SYNDROME_MASK = 0x3FF << 14
