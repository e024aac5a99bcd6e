"""Load/store decoding (emu.access_decoder into emu.access.Access) and the data-abort syndromes built from it.

Every row's expected values are written from the Arm ARM, not from the decoder: the address
from the addressing mode (base + offset, extended/shifted index, PC + literal offset), the
size from the instruction, and the ISS fields from D24.2.45 ("ISV is 0 except for ... AArch64
loads and stores of a single general-purpose register (including the register specified with
0b11111, including those with Acquire/Release semantics, but excluding Load Exclusive or Store
Exclusive and excluding those with writeback)"). Instructions are assembled with keystone;
keystone 0.9.2 rejects LSE atomics, LDAPR/LDAPUR and PAC loads, so those words are composed
here by hand from the Arm ARM encoding diagrams (C4.1).
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import pytest
from keystone import KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN, Ks

from emu.access import Access, AccessKind, UnsupportedInstruction, fault_address, pages_touched
from emu.access_decoder import AccessDecoder, decode_access
from emu.syndrome import Esr, data_abort_esr

# --- register file -------------------------------------------------------------------------
PC = 0xFFFF_8000_0800_1000
SP = 0xFFFF_8000_0801_FFF0
X = {n: 0x0000_AAAA_0000_0000 + 0x1_0000 * n for n in range(31)}
X[2] = 0xFFFF_0000_0001_2340  # the usual base register
X[3] = 0xFFFF_FFFF_FFFF_FFF0  # -16; as W3: 0xFFFFFFF0 (uxtw) or -16 (sxtw)
X[4] = 0x0000_0000_0000_0003
X[5] = 0xFFFF_0000_0004_5678  # DC operand, not line aligned
X[9] = 0x0000_FFFF_F7FF_FFF9

M64 = (1 << 64) - 1


def read_reg(n: int) -> int:
    return SP if n == 31 else X[n]


# --- hand encodings (Arm ARM C4.1) -----------------------------------------------------------
def lse(size: int, opc: int, rs: int, rn: int, rt: int, *, a: int = 0, r: int = 0,
        o3: int = 0) -> int:
    """Atomic memory operations: size:2 111 V=0 00 A R 1 Rs o3 opc:3 00 Rn Rt."""
    return (size << 30) | (0b111 << 27) | (a << 23) | (r << 22) | (1 << 21) | (rs << 16) \
        | (o3 << 15) | (opc << 12) | (rn << 5) | rt


LDADD, LDCLR, LDEOR, LDSET, LDSMAX = 0b000, 0b001, 0b010, 0b011, 0b100


def cas(size: int, rs: int, rn: int, rt: int, *, l: int = 0, o0: int = 0) -> int:
    """Compare and swap: size:2 0010001 L 1 Rs o0 Rt2=11111 Rn Rt."""
    return (size << 30) | (0b0010001 << 23) | (l << 22) | (1 << 21) | (rs << 16) | (o0 << 15) \
        | (0b11111 << 10) | (rn << 5) | rt


def casp(sz: int, rs: int, rn: int, rt: int, *, l: int = 0, o0: int = 0) -> int:
    """Compare and swap pair: 0 sz 0010000 L 1 Rs o0 Rt2=11111 Rn Rt."""
    return (sz << 30) | (0b0010000 << 23) | (l << 22) | (1 << 21) | (rs << 16) | (o0 << 15) \
        | (0b11111 << 10) | (rn << 5) | rt


def ldapr(size: int, rn: int, rt: int) -> int:
    """LDAPR{B,H}: size:2 111000 1 0 1 11111 1100 00 Rn Rt."""
    return (size << 30) | 0x38BFC000 | (rn << 5) | rt


def rcpc_unscaled(size: int, opc: int, imm9: int, rn: int, rt: int) -> int:
    """LDAPUR*/STLUR*: size:2 011001 opc:2 0 imm9 00 Rn Rt."""
    return (size << 30) | (0b011001 << 24) | (opc << 22) | ((imm9 & 0x1FF) << 12) | (rn << 5) | rt


def ldraa(rn: int, rt: int) -> int:
    """LDRAA (offset): 11 111 0 00 M=0 S=0 1 imm9=0 W=0 1 Rn Rt."""
    return 0xF8200400 | (rn << 5) | rt


# --- the table -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    id: str
    code: str | int  # assembler text, or an instruction word encoded above
    kind: AccessKind
    address: int
    size: int
    element: int
    srt: int
    flags: str = ""  # space separated: wb pair excl atomic acqrel unpriv simd sse sf isv

    def has(self, flag: str) -> bool:
        return flag in self.flags.split()


R, W, RMW = AccessKind.READ, AccessKind.WRITE, AccessKind.RMW

ROWS = [
    # single general-register loads/stores: immediate, unscaled, register offset, literal
    Row("ldr-x-uimm", "ldr x1, [x2, #8]", R, X[2] + 8, 8, 8, 1, "sf isv"),
    Row("ldr-w-uimm", "ldr w5, [x2, #4092]", R, X[2] + 4092, 4, 4, 5, "isv"),
    Row("ldrb-uimm", "ldrb w0, [x2, #1]", R, X[2] + 1, 1, 1, 0, "isv"),
    Row("ldrh-uimm", "ldrh w7, [x2, #2]", R, X[2] + 2, 2, 2, 7, "isv"),
    Row("str-x-uimm", "str x3, [x2, #16]", W, X[2] + 16, 8, 8, 3, "sf isv"),
    Row("strb", "strb w4, [x2]", W, X[2], 1, 1, 4, "isv"),
    Row("strh-wzr", "strh wzr, [x2, #6]", W, X[2] + 6, 2, 2, 31, "isv"),
    Row("str-xzr-sp", "str xzr, [sp, #8]", W, SP + 8, 8, 8, 31, "sf isv"),
    Row("ldr-w-sp", "ldr w0, [sp]", R, SP, 4, 4, 0, "isv"),
    Row("ldur-w-neg", "ldur w1, [x2, #-3]", R, X[2] - 3, 4, 4, 1, "isv"),
    Row("stur-x", "stur x1, [x2, #1]", W, X[2] + 1, 8, 8, 1, "sf isv"),
    Row("ldurh", "ldurh w1, [x2, #-1]", R, X[2] - 1, 2, 2, 1, "isv"),
    Row("ldr-x-reg-lsl3", "ldr x1, [x2, x4, lsl #3]", R, X[2] + X[4] * 8, 8, 8, 1, "sf isv"),
    Row("ldr-w-reg-sxtw2", "ldr w1, [x2, w3, sxtw #2]", R, X[2] - 16 * 4, 4, 4, 1, "isv"),
    Row("ldr-w-reg-uxtw", "ldr w1, [x2, w3, uxtw]", R, X[2] + 0xFFFF_FFF0, 4, 4, 1, "isv"),
    Row("ldr-x-reg-sxtx", "ldr x1, [x2, x3, sxtx]", R, X[2] - 16, 8, 8, 1, "sf isv"),
    Row("ldrb-reg-xzr", "ldrb w1, [x2, xzr]", R, X[2], 1, 1, 1, "isv"),
    Row("strh-reg-uxtw1", "strh w1, [x2, w4, uxtw #1]", W, X[2] + 6, 2, 2, 1, "isv"),
    Row("ldr-x-literal", "ldr x1, #0x100", R, PC + 0x100, 8, 8, 1, "sf isv"),
    Row("ldr-w-literal-back", "ldr w2, #-8", R, PC - 8, 4, 4, 2, "isv"),
    Row("ldrsw-literal", "ldrsw x3, #0x40", R, PC + 0x40, 4, 4, 3, "sse sf isv"),
    # sign-extending loads to W and X
    Row("ldrsb-w", "ldrsb w1, [x2]", R, X[2], 1, 1, 1, "sse isv"),
    Row("ldrsb-x", "ldrsb x1, [x2, #3]", R, X[2] + 3, 1, 1, 1, "sse sf isv"),
    Row("ldrsh-w", "ldrsh w6, [x2, #2]", R, X[2] + 2, 2, 2, 6, "sse isv"),
    Row("ldrsh-x", "ldrsh x6, [x2, #2]", R, X[2] + 2, 2, 2, 6, "sse sf isv"),
    Row("ldrsw-x", "ldrsw x9, [x2, #4]", R, X[2] + 4, 4, 4, 9, "sse sf isv"),
    Row("ldursw-x", "ldursw x9, [x2, #-4]", R, X[2] - 4, 4, 4, 9, "sse sf isv"),
    # writeback: address before the update, never ISV
    Row("ldr-x-pre", "ldr x1, [x2, #8]!", R, X[2] + 8, 8, 8, 1, "wb sf"),
    Row("ldr-x-post", "ldr x1, [x2], #8", R, X[2], 8, 8, 1, "wb sf"),
    Row("str-x-pre-sp", "str x30, [sp, #-16]!", W, SP - 16, 8, 8, 30, "wb sf"),
    Row("ldrsw-post-neg", "ldrsw x1, [x2], #-4", R, X[2], 4, 4, 1, "wb sse sf"),
    Row("strb-post", "strb w1, [x2], #1", W, X[2], 1, 1, 1, "wb"),
    # pairs
    Row("ldp-x", "ldp x1, x4, [x2, #16]", R, X[2] + 16, 16, 8, 1, "pair sf"),
    Row("ldp-w", "ldp w1, w4, [x2]", R, X[2], 8, 4, 1, "pair"),
    Row("stp-x-pre-sp", "stp x29, x30, [sp, #-32]!", W, SP - 32, 16, 8, 29, "wb pair sf"),
    Row("ldp-x-post-sp", "ldp x29, x30, [sp], #32", R, SP, 16, 8, 29, "wb pair sf"),
    Row("ldp-w-post", "ldp w1, w4, [x2], #8", R, X[2], 8, 4, 1, "wb pair"),
    Row("ldnp-x", "ldnp x1, x4, [x2, #-16]", R, X[2] - 16, 16, 8, 1, "pair sf"),
    Row("stnp-w", "stnp w1, w4, [x2]", W, X[2], 8, 4, 1, "pair"),
    Row("ldpsw", "ldpsw x1, x4, [x2, #8]", R, X[2] + 8, 8, 4, 1, "pair sse sf"),
    # exclusives (Rt is the data register; stxr's status register is Rs)
    Row("ldxr-x", "ldxr x1, [x2]", R, X[2], 8, 8, 1, "excl sf"),
    Row("stxr-x", "stxr w3, x1, [x2]", W, X[2], 8, 8, 1, "excl sf"),
    Row("ldaxr-w", "ldaxr w1, [x2]", R, X[2], 4, 4, 1, "excl acqrel"),
    Row("stlxr-w", "stlxr w3, w1, [x2]", W, X[2], 4, 4, 1, "excl acqrel"),
    Row("ldxrb", "ldxrb w1, [x2]", R, X[2], 1, 1, 1, "excl"),
    Row("stlxrh", "stlxrh w3, w1, [x2]", W, X[2], 2, 2, 1, "excl acqrel"),
    Row("ldxp-x", "ldxp x1, x4, [x2]", R, X[2], 16, 8, 1, "pair excl sf"),
    Row("stxp-x", "stxp w5, x1, x4, [x2]", W, X[2], 16, 8, 1, "pair excl sf"),
    Row("ldaxp-w", "ldaxp w1, w4, [x2]", R, X[2], 8, 4, 1, "pair excl acqrel"),
    Row("stlxp-x", "stlxp w5, x1, x4, [x2]", W, X[2], 16, 8, 1, "pair excl acqrel sf"),
    # load-acquire / store-release / RCpc: ISV with AR = 1
    Row("ldar-x", "ldar x1, [x2]", R, X[2], 8, 8, 1, "acqrel sf isv"),
    Row("ldar-w", "ldar w1, [x2]", R, X[2], 4, 4, 1, "acqrel isv"),
    Row("ldarb", "ldarb w1, [x2]", R, X[2], 1, 1, 1, "acqrel isv"),
    Row("ldarh", "ldarh w1, [sp]", R, SP, 2, 2, 1, "acqrel isv"),
    Row("stlr-x", "stlr x1, [x2]", W, X[2], 8, 8, 1, "acqrel sf isv"),
    Row("stlr-w", "stlr w1, [x2]", W, X[2], 4, 4, 1, "acqrel isv"),
    Row("stlrb", "stlrb w1, [x2]", W, X[2], 1, 1, 1, "acqrel isv"),
    Row("stlrh-wzr", "stlrh wzr, [x2]", W, X[2], 2, 2, 31, "acqrel isv"),
    Row("ldapr-x", ldapr(0b11, 2, 1), R, X[2], 8, 8, 1, "acqrel sf isv"),
    Row("ldapr-w", ldapr(0b10, 2, 1), R, X[2], 4, 4, 1, "acqrel isv"),
    Row("ldaprb", ldapr(0b00, 2, 1), R, X[2], 1, 1, 1, "acqrel isv"),
    Row("ldaprh-sp", ldapr(0b01, 31, 1), R, SP, 2, 2, 1, "acqrel isv"),
    Row("ldapur-x", rcpc_unscaled(0b11, 0b01, -8, 2, 1), R, X[2] - 8, 8, 8, 1, "acqrel sf isv"),
    Row("ldapursw", rcpc_unscaled(0b10, 0b10, 4, 2, 1), R, X[2] + 4, 4, 4, 1,
        "acqrel sse sf isv"),
    Row("stlur-w", rcpc_unscaled(0b10, 0b00, 3, 2, 1), W, X[2] + 3, 4, 4, 1, "acqrel isv"),
    # unprivileged (EL0 permission checks at EL1): eligible, no writeback
    Row("ldtr-x", "ldtr x1, [x2, #8]", R, X[2] + 8, 8, 8, 1, "unpriv sf isv"),
    Row("ldtr-w", "ldtr w1, [x2, #-4]", R, X[2] - 4, 4, 4, 1, "unpriv isv"),
    Row("ldtrb", "ldtrb w1, [x2]", R, X[2], 1, 1, 1, "unpriv isv"),
    Row("ldtrh", "ldtrh w1, [x2, #2]", R, X[2] + 2, 2, 2, 1, "unpriv isv"),
    Row("ldtrsb-w", "ldtrsb w1, [x2]", R, X[2], 1, 1, 1, "unpriv sse isv"),
    Row("ldtrsb-x", "ldtrsb x1, [x2]", R, X[2], 1, 1, 1, "unpriv sse sf isv"),
    Row("ldtrsh-w", "ldtrsh w1, [x2]", R, X[2], 2, 2, 1, "unpriv sse isv"),
    Row("ldtrsh-x", "ldtrsh x1, [x2]", R, X[2], 2, 2, 1, "unpriv sse sf isv"),
    Row("ldtrsw", "ldtrsw x1, [x2, #4]", R, X[2] + 4, 4, 4, 1, "unpriv sse sf isv"),
    Row("sttr-x", "sttr x1, [x2]", W, X[2], 8, 8, 1, "unpriv sf isv"),
    Row("sttr-w", "sttr w1, [x2, #12]", W, X[2] + 12, 4, 4, 1, "unpriv isv"),
    Row("sttrb", "sttrb w1, [x2]", W, X[2], 1, 1, 1, "unpriv isv"),
    Row("sttrh", "sttrh w1, [x2]", W, X[2], 2, 2, 1, "unpriv isv"),
    # LSE atomics (hand-encoded): read-modify-write, never ISV
    Row("ldadd-x", lse(0b11, LDADD, 1, 2, 4), RMW, X[2], 8, 8, 4, "atomic sf"),
    Row("ldaddal-x", lse(0b11, LDADD, 1, 2, 4, a=1, r=1), RMW, X[2], 8, 8, 4,
        "atomic acqrel sf"),
    Row("ldclrb", lse(0b00, LDCLR, 1, 2, 4), RMW, X[2], 1, 1, 4, "atomic"),
    Row("ldsetlh", lse(0b01, LDSET, 1, 2, 4, r=1), RMW, X[2], 2, 2, 4, "atomic acqrel"),
    Row("ldeor-w", lse(0b10, LDEOR, 1, 2, 4), RMW, X[2], 4, 4, 4, "atomic"),
    Row("ldsmaxa-w", lse(0b10, LDSMAX, 1, 2, 4, a=1), RMW, X[2], 4, 4, 4, "atomic acqrel"),
    Row("swp-x", lse(0b11, 0b000, 1, 2, 4, o3=1), RMW, X[2], 8, 8, 4, "atomic sf"),
    Row("swpa-w", lse(0b10, 0b000, 1, 2, 4, a=1, o3=1), RMW, X[2], 4, 4, 4, "atomic acqrel"),
    Row("stadd-x", lse(0b11, LDADD, 1, 2, 31), RMW, X[2], 8, 8, 31, "atomic sf"),
    Row("staddlb-sp", lse(0b00, LDADD, 5, 31, 31, r=1), RMW, SP, 1, 1, 31, "atomic acqrel"),
    Row("cas-x", cas(0b11, 1, 2, 4), RMW, X[2], 8, 8, 4, "atomic sf"),
    Row("casal-x", cas(0b11, 1, 2, 4, l=1, o0=1), RMW, X[2], 8, 8, 4, "atomic acqrel sf"),
    Row("casb", cas(0b00, 1, 2, 4), RMW, X[2], 1, 1, 4, "atomic"),
    Row("casah", cas(0b01, 1, 2, 4, l=1), RMW, X[2], 2, 2, 4, "atomic acqrel"),
    Row("casp-x", casp(1, 6, 2, 4), RMW, X[2], 16, 8, 4, "pair atomic sf"),
    Row("caspal-w", casp(0, 6, 2, 4, l=1, o0=1), RMW, X[2], 8, 4, 4, "pair atomic acqrel"),
    # SIMD&FP: never ISV
    Row("ldr-b", "ldr b0, [x2, #1]", R, X[2] + 1, 1, 1, 0, "simd"),
    Row("ldr-h", "ldr h1, [x2, #2]", R, X[2] + 2, 2, 2, 1, "simd"),
    Row("ldr-s", "ldr s2, [x2, #4]", R, X[2] + 4, 4, 4, 2, "simd"),
    Row("ldr-d", "ldr d3, [x2, #8]", R, X[2] + 8, 8, 8, 3, "simd"),
    Row("ldr-q", "ldr q4, [x2, #16]", R, X[2] + 16, 16, 16, 4, "simd"),
    Row("str-q-pre", "str q4, [x2, #-16]!", W, X[2] - 16, 16, 16, 4, "wb simd"),
    Row("str-d-reg", "str d3, [x2, x4]", W, X[2] + 3, 8, 8, 3, "simd"),
    Row("ldur-q", "ldur q0, [x2, #1]", R, X[2] + 1, 16, 16, 0, "simd"),
    Row("ldr-q-literal", "ldr q0, #0x20", R, PC + 0x20, 16, 16, 0, "simd"),
    Row("ldp-q", "ldp q0, q1, [x2, #32]", R, X[2] + 32, 32, 16, 0, "pair simd"),
    Row("ldp-s", "ldp s0, s1, [x2]", R, X[2], 8, 4, 0, "pair simd"),
    Row("stp-d-pre", "stp d8, d9, [sp, #-16]!", W, SP - 16, 16, 8, 8, "wb pair simd"),
    Row("ld1-2x16b", "ld1 {v0.16b, v1.16b}, [x2]", R, X[2], 32, 16, 0, "simd"),
    Row("ld1-3x8b-postreg", "ld1 {v0.8b, v1.8b, v2.8b}, [x2], x4", R, X[2], 24, 8, 0, "wb simd"),
    Row("st1-4s-post", "st1 {v7.4s}, [x2], #16", W, X[2], 16, 16, 7, "wb simd"),
    Row("st1-4x2d", "st1 {v0.2d, v1.2d, v2.2d, v3.2d}, [sp]", W, SP, 64, 16, 0, "simd"),
    Row("ld1-lane-s", "ld1 {v0.s}[1], [x2]", R, X[2], 4, 4, 0, "simd"),
    Row("ld1r-4s", "ld1r {v0.4s}, [x2]", R, X[2], 4, 4, 0, "simd"),
    Row("ld4-16b-post", "ld4 {v0.16b, v1.16b, v2.16b, v3.16b}, [x2], #64", R, X[2], 64, 16, 0,
        "wb simd"),
]


# Expected is_write, written per kind from D24.2.45 WnR: an atomic that faults where a read
# would also fault (every translation fault) reports WnR = 0.
WNR_ON_TRANSLATION_FAULT = {R: False, W: True, RMW: False}


@pytest.fixture(scope="module")
def ks() -> Ks:
    return Ks(KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN)


@pytest.fixture(scope="module")
def decoder() -> AccessDecoder:
    return AccessDecoder()


def encode(ks: Ks, code: str | int) -> bytes:
    if isinstance(code, int):
        return struct.pack("<I", code)
    words, _ = ks.asm(code, 0)  # assembled at 0: literal offsets are relative to the insn
    assert len(words) == 4, code
    return bytes(words)


def decoded(ks: Ks, decoder: AccessDecoder, row: Row) -> Access:
    access = decoder.decode(encode(ks, row.code), PC, read_reg)
    assert access is not None, row.id
    return access


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_access_fields(ks, decoder, row):
    a = decoded(ks, decoder, row)
    assert a.kind is row.kind
    assert a.address == row.address & M64
    assert (a.size, a.element_size) == (row.size, row.element)
    assert a.srt == row.srt
    assert a.writeback == row.has("wb")
    assert a.pair == row.has("pair")
    assert a.exclusive == row.has("excl")
    assert a.atomic == row.has("atomic")
    assert a.acquire_release == row.has("acqrel")
    assert a.unprivileged == row.has("unpriv")
    assert a.simd == row.has("simd")
    assert a.sse == row.has("sse")
    assert a.sf == row.has("sf")
    assert a.isv_eligible == row.has("isv")
    assert a.is_write == WNR_ON_TRANSLATION_FAULT[row.kind]
    assert a.operand_address is None


def esr_ref(ec: int, dfsc: int, *, isv=0, sas=0, sse=0, srt=0, sf=0, ar=0, cm=0, s1ptw=0,
            wnr=0) -> int:
    """D24.2.45 bit positions, written out independently of emu.syndrome."""
    return (ec << 26) | (1 << 25) | (isv << 24) | (sas << 22) | (sse << 21) | (srt << 16) \
        | (sf << 15) | (ar << 14) | (cm << 8) | (s1ptw << 7) | (wnr << 6) | dfsc


SAS = {1: 0, 2: 1, 4: 2, 8: 3}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_stage1_fault_to_el1_has_no_instruction_syndrome(ks, decoder, row):
    """A stage-1 translation fault from EL1 taken to EL1: EC 0x25, ISV = 0 for every class."""
    a = decoded(ks, decoder, row)
    wnr = int(WNR_ON_TRANSLATION_FAULT[row.kind])
    esr = data_abort_esr(from_lower_el=False, dfsc=0x07, access=a, wnr=a.is_write,
                         isv_allowed=False)
    assert esr.value == esr_ref(0x25, 0x07, wnr=wnr)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_stage2_fault_to_el2_instruction_syndrome(ks, decoder, row):
    """A stage-2 translation fault from EL1 reported in ESR_EL2: EC 0x24, ISV per class."""
    a = decoded(ks, decoder, row)
    wnr = int(WNR_ON_TRANSLATION_FAULT[row.kind])
    esr = data_abort_esr(from_lower_el=True, dfsc=0x06, access=a, wnr=a.is_write,
                         isv_allowed=True)
    if row.has("isv"):
        expected = esr_ref(0x24, 0x06, isv=1, sas=SAS[row.size], sse=int(row.has("sse")),
                           srt=row.srt, sf=int(row.has("sf")), ar=int(row.has("acqrel")),
                           wnr=wnr)
    else:
        expected = esr_ref(0x24, 0x06, wnr=wnr)
    assert esr.value == expected


# Fully hand-computed ESR_EL2 values (EC 0x24, IL, DFSC 0x07 = level 3 translation).
@pytest.mark.parametrize(
    "code, esr_el2",
    [
        ("ldr x1, [x2, #8]", 0x93C1_8007),  # ISV, SAS=3, SRT=1, SF
        ("ldrsw x9, [x2, #4]", 0x93A9_8007),  # ISV, SAS=2, SSE, SRT=9, SF
        ("strh wzr, [x2, #6]", 0x935F_0047),  # ISV, SAS=1, SRT=31, WnR
        ("stlr w1, [x2]", 0x9381_4047),  # ISV, SAS=2, SRT=1, AR, WnR
        ("ldp x1, x4, [x2, #16]", 0x9200_0007),  # no syndrome
        ("str x1, [x2], #8", 0x9200_0047),  # writeback: no syndrome, WnR
    ],
    ids=["ldr-x", "ldrsw", "strh-wzr", "stlr-w", "ldp", "str-post"],
)
def test_stage2_esr_literal_values(ks, decoder, code, esr_el2):
    a = decoder.decode(encode(ks, code), PC, read_reg)
    esr = data_abort_esr(from_lower_el=True, dfsc=0x07, access=a, wnr=a.is_write,
                         isv_allowed=True)
    assert esr.value == esr_el2


@pytest.mark.parametrize(
    "word, read_would_fault, wnr",
    [
        (lse(0b11, LDADD, 1, 2, 4), True, False),  # translation fault: a read faults too
        (lse(0b11, LDADD, 1, 2, 4), False, True),  # permission fault on a read-only page
        (cas(0b11, 1, 2, 4), True, False),
        (cas(0b11, 1, 2, 4), False, True),
    ],
    ids=["ldadd-translation", "ldadd-readonly", "cas-translation", "cas-readonly"],
)
def test_atomic_wnr_depends_on_whether_a_read_would_fault(decoder, word, read_would_fault, wnr):
    a = decoder.decode(struct.pack("<I", word), PC, read_reg)
    assert a.wnr(read_would_fault=read_would_fault) is wnr
    esr = data_abort_esr(from_lower_el=False, dfsc=0x0F if not read_would_fault else 0x07,
                         access=a, wnr=a.wnr(read_would_fault=read_would_fault),
                         isv_allowed=False)
    assert esr.wnr is wnr


# --- syndrome rules that depend on the fault, not the instruction ---------------------------

def test_stage2_fault_on_stage1_walk_has_no_syndrome(ks, decoder):
    a = decoder.decode(encode(ks, "ldr x1, [x2]"), PC, read_reg)
    esr = data_abort_esr(from_lower_el=True, dfsc=0x07, access=a, wnr=False, s1ptw=True,
                         isv_allowed=True)
    assert esr.value == esr_ref(0x24, 0x07, s1ptw=1)


def test_external_abort_has_no_syndrome(ks, decoder):
    a = decoder.decode(encode(ks, "ldr x1, [x2]"), PC, read_reg)
    esr = data_abort_esr(from_lower_el=True, dfsc=0x10, access=a, wnr=False, isv_allowed=True)
    assert not esr.isv


@pytest.mark.parametrize("offset", range(1, 8))
def test_straddling_load_faulting_on_second_page_has_no_syndrome(ks, decoder, offset):
    """AArch64.Mem: bytes after the first are accessed with lowestaddress = FALSE."""
    page = 0xFFFF_0000_0002_0000
    regs = dict(X)
    regs[2] = page - offset

    def rr(n: int) -> int:
        return SP if n == 31 else regs[n]

    a = decoder.decode(encode(ks, "ldr x1, [x2]"), PC, rr)
    far = fault_address(a, page)
    assert far == page
    on_second = data_abort_esr(from_lower_el=True, dfsc=0x07, access=a, wnr=False,
                               isv_allowed=True, lowest_address=far == a.address)
    assert on_second.value == esr_ref(0x24, 0x07)
    far_first = fault_address(a, page - 4096)
    on_first = data_abort_esr(from_lower_el=True, dfsc=0x07, access=a, wnr=False,
                              isv_allowed=True, lowest_address=far_first == a.address)
    assert on_first.value == esr_ref(0x24, 0x07, isv=1, sas=3, srt=1, sf=1)


# --- prefetch, cache maintenance, DC ZVA ----------------------------------------------------

@pytest.mark.parametrize(
    "code, address",
    [("prfm pldl1keep, [x2, #8]", X[2] + 8), ("prfum pstl2strm, [x2, #-1]", X[2] - 1),
     ("prfm pldl1keep, #0x40", PC + 0x40)],
    ids=["prfm", "prfum", "prfm-literal"],
)
def test_prefetch_never_faults(ks, decoder, code, address):
    a = decoder.decode(encode(ks, code), PC, read_reg)
    assert a.kind is AccessKind.PREFETCH and a.size == 0 and a.address == address
    assert pages_touched(a) == []
    with pytest.raises(ValueError):
        fault_address(a, address)


@pytest.mark.parametrize(
    "code, kind, register, block",
    [
        ("dc zva, x5", AccessKind.DC_ZVA, X[5], 64),
        ("dc civac, x5", AccessKind.CACHE_MAINT, X[5], 64),
        ("dc cvac, x2", AccessKind.CACHE_MAINT, X[2], 64),
        ("dc ivac, x9", AccessKind.CACHE_MAINT, X[9], 64),
        ("ic ivau, x5", AccessKind.CACHE_MAINT, X[5], 64),
        ("dc zva, xzr", AccessKind.DC_ZVA, 0, 64),  # register 31 is XZR here, not SP
    ],
    ids=["dc-zva", "dc-civac", "dc-cvac", "dc-ivac", "ic-ivau", "dc-zva-xzr"],
)
def test_cache_operations(ks, decoder, code, kind, register, block):
    a = decoder.decode(encode(ks, code), PC, read_reg)
    assert a.kind is kind
    assert (a.address, a.size) == (register & ~(block - 1), block)
    assert a.operand_address == register
    assert fault_address(a, register) == register  # D24.2.48: FAR = the register argument
    assert a.is_write and not a.isv_eligible
    esr = data_abort_esr(from_lower_el=False, dfsc=0x07, access=a, wnr=a.is_write,
                         isv_allowed=True)
    # D24.2.45 CM: cache maintenance sets CM (and WnR = 1); DC ZVA is not cache maintenance.
    cm = int(kind is AccessKind.CACHE_MAINT)
    assert esr.value == esr_ref(0x25, 0x07, cm=cm, wnr=1)


def test_dc_zva_block_size_is_a_decoder_parameter(ks):
    a = AccessDecoder(dczva_block_size=256).decode(encode(ks, "dc zva, x5"), PC, read_reg)
    assert (a.address, a.size) == (X[5] & ~255, 256)


# --- not memory / not modelled ---------------------------------------------------------------

@pytest.mark.parametrize(
    "code",
    ["mov x0, x1", "add x0, x1, #1", "b #8", "nop", "at s1e1r, x0", "dc cisw, x0", "ret"],
)
def test_non_memory_instructions_decode_to_none(ks, decoder, code):
    assert decoder.decode(encode(ks, code), PC, read_reg) is None


def test_unmodelled_memory_instruction_raises(decoder):
    with pytest.raises(UnsupportedInstruction):
        decoder.decode(struct.pack("<I", ldraa(2, 1)), PC, read_reg)


def test_decode_access_function_matches_decoder(ks, decoder):
    code = encode(ks, "ldr w1, [x2, w3, sxtw #2]")
    assert decode_access(code, PC, read_reg) == decoder.decode(code, PC, read_reg)


def test_cache_is_keyed_by_word_but_address_follows_registers(ks, decoder):
    code = encode(ks, "ldr x1, [x2, #8]")
    first = decoder.decode(code, PC, read_reg)
    second = decoder.decode(code, PC, lambda n: 0x5000 if n == 2 else read_reg(n))
    assert (first.address, second.address) == (X[2] + 8, 0x5008)
    literal = encode(ks, "ldr x1, #0x100")
    assert decoder.decode(literal, 0x1000, read_reg).address == 0x1100
    assert decoder.decode(literal, 0x2000, read_reg).address == 0x2100


def test_index_register_31_reads_zero_without_calling_read_reg(ks, decoder):
    def rr(n: int) -> int:
        assert n != 31, "xzr index must not be read as SP"
        return X[n]

    assert decoder.decode(encode(ks, "ldrb w1, [x2, xzr]"), PC, rr).address == X[2]


# --- FAR and pages for accesses that straddle a page boundary -------------------------------

PAGE = 0xFFFF_8000_1234_5000


def first_byte_in_page(start: int, size: int, page: int) -> int | None:
    """Reference: walk the bytes in ascending order (AArch64.Mem), first one in `page`."""
    for byte in range(start, start + size):
        if byte & ~0xFFF == page:
            return byte
    return None


@pytest.mark.parametrize("size", [8, 16])
@pytest.mark.parametrize("offset", range(1, 16))
def test_fault_address_for_straddling_access(size, offset):
    start = PAGE - offset
    a = Access(mnemonic="ldr" if size == 8 else "ldr-q", kind=AccessKind.READ, size=size,
               element_size=size, address=start)
    for faulting_page in (PAGE - 0x1000, PAGE):
        expected = first_byte_in_page(start, size, faulting_page)
        if expected is None:
            with pytest.raises(ValueError):
                fault_address(a, faulting_page + 0x123)
        else:
            assert fault_address(a, faulting_page + 0x123) == expected
    expected_pages = sorted({b & ~0xFFF for b in range(start, start + size)})
    assert pages_touched(a) == expected_pages


@pytest.mark.parametrize("offset", range(1, 16))
def test_decoded_ldp_straddling_far(ks, decoder, offset):
    regs = dict(X)
    regs[2] = PAGE - offset

    a = decoder.decode(encode(ks, "ldp x1, x4, [x2]"), PC,
                       lambda n: SP if n == 31 else regs[n])
    assert fault_address(a, PAGE - 0x1000) == PAGE - offset
    assert fault_address(a, PAGE) == first_byte_in_page(PAGE - offset, 16, PAGE)


def test_pages_touched_with_larger_pages():
    a = Access(mnemonic="ld4", kind=AccessKind.READ, size=64, element_size=16,
               address=0x1_0000 - 8, simd=True)
    assert pages_touched(a, page_size=0x1_0000) == [0, 0x1_0000]
    assert fault_address(a, 0x1_0000, page_size=0x1_0000) == 0x1_0000


def test_esr_built_from_decoded_access_prints_like_the_kernel(ks, decoder):
    a = decoder.decode(encode(ks, "ldrsw x21, [x2]"), PC, read_reg)
    esr = data_abort_esr(from_lower_el=True, dfsc=0x04, access=a, wnr=False, isv_allowed=True)
    assert isinstance(esr, Esr)
    text = str(esr).splitlines()
    assert text[7:10] == ["  Access size = 4 byte(s)", "  SSE = 1, SRT = 21", "  SF = 1, AR = 0"]


# --- robustness over the whole load/store encoding space -------------------------------------

def random_load_store_words(count: int, seed: int) -> list[int]:
    """Random words in the load/store group (C4.1: op0 = x1x0, bits[28:25] = x1x0)."""
    rng = random.Random(seed)
    return [(rng.getrandbits(32) & ~(0b0101 << 25)) | (0b0100 << 25) for _ in range(count)]


def check_decodes_or_refuses(decoder: AccessDecoder, words: list[int]) -> int:
    decoded_count = 0
    for word in words:
        try:
            a = decoder.decode(struct.pack("<I", word), PC, read_reg)
        except UnsupportedInstruction:
            continue
        if a is None:
            continue
        decoded_count += 1
        label = f"{word:#010x} {a.mnemonic}"
        if a.operand_address is None:
            assert a.srt == word & 0x1F, label  # Rt is bits[4:0] in every load/store
        assert a.size >= 0 and (a.size == 0 or a.size % a.element_size == 0), label
        if a.isv_eligible:
            assert a.size in (1, 2, 4, 8) and not (a.simd or a.writeback or a.pair), label
            assert a.kind in (AccessKind.READ, AccessKind.WRITE), label
        assert (pages_touched(a) == []) == (a.kind is AccessKind.PREFETCH), label
    return decoded_count


def test_random_load_store_words_decode_or_refuse(decoder):
    assert check_decodes_or_refuses(decoder, random_load_store_words(3000, seed=1)) > 1000


@pytest.mark.sweep
@pytest.mark.parametrize("seed", range(10))  # one item per seed: one item of all ten took 24-53 s
def test_random_load_store_words_sweep(seed):
    check_decodes_or_refuses(AccessDecoder(), random_load_store_words(100_000, seed))
