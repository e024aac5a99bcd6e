"""Faults as the machine reports them, instruction class by instruction class, run for real.

Expected syndromes are written from the Arm ARM (D24.2.45 ESR_ELx ISS for data aborts):
a stage-1 fault taken to EL1 never carries an instruction syndrome (ISV = 0); a stage-2
fault reported in ESR_EL2 carries one (ISV = 1, SAS/SSE/SRT/SF/AR) only for a single
general-register load/store without writeback, when the faulting byte is the lowest one
accessed. HPFAR_EL2.FIPA = IPA[47:12] in bits [43:4].
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from conftest import CODE_VA, DATA_VA, USER_DATA_VA, RecordingEl2, assemble
from emu.memory import PAGE_SIZE
from emu.outcome import OutcomeKind

FAULT_PAGE = DATA_VA + PAGE_SIZE  # the second of the rig's two data pages


@dataclass(frozen=True)
class Row:
    text: str | int  # assembly, or a hand-encoded word for what keystone lacks
    size: int
    wnr: bool
    isv: bool = False  # eligible for an instruction syndrome at stage 2
    sse: bool = False
    sf: bool = False
    ar: bool = False
    srt: int = 1
    x0_offset: int = 0  # x0 = fault address + this (for negative offsets)
    user: bool = False
    far_is_x0: bool = False


# LDADD x2, x1, [x0] (C6.2.125): size=11 111000 A=0 R=0 1 Rs=2 0 000 00 Rn=0 Rt=1
LDADD_X = 0xF8200000 | (2 << 16) | (0 << 5) | 1
# CAS x2, x1, [x0] (C6.2.58): size=11 0010001 L=0 1 Rs=2 o0=0 11111 Rn=0 Rt=1
CAS_X = 0xC8A07C00 | (2 << 16) | (0 << 5) | 1

ROWS = {
    "ldrb": Row("ldrb w1, [x0]", 1, False, isv=True),
    "ldrh": Row("ldrh w1, [x0]", 2, False, isv=True),
    "ldr-w": Row("ldr w1, [x0]", 4, False, isv=True),
    "ldr-x": Row("ldr x1, [x0]", 8, False, isv=True, sf=True),
    "strb": Row("strb w1, [x0]", 1, True, isv=True),
    "strh": Row("strh w1, [x0]", 2, True, isv=True),
    "str-w": Row("str w1, [x0]", 4, True, isv=True),
    "str-x": Row("str x1, [x0]", 8, True, isv=True, sf=True),
    "ldrsb-x": Row("ldrsb x1, [x0]", 1, False, isv=True, sse=True, sf=True),
    "ldrsb-w": Row("ldrsb w1, [x0]", 1, False, isv=True, sse=True),
    "ldrsh-x": Row("ldrsh x1, [x0]", 2, False, isv=True, sse=True, sf=True),
    "ldrsw": Row("ldrsw x1, [x0]", 4, False, isv=True, sse=True, sf=True),
    "ldur": Row("ldur x1, [x0, #-8]", 8, False, isv=True, sf=True, x0_offset=8),
    "stur": Row("stur w1, [x0, #-4]", 4, True, isv=True, x0_offset=4),
    "ldr-pre": Row("ldr x1, [x0, #8]!", 8, False, x0_offset=-8),
    "ldr-post": Row("ldr x1, [x0], #8", 8, False),
    "str-post": Row("str x1, [x0], #8", 8, True),
    "ldp": Row("ldp x1, x2, [x0]", 16, False),
    "stp": Row("stp x1, x2, [x0]", 16, True),
    "ldp-w": Row("ldp w1, w2, [x0]", 8, False),
    "ldxr": Row("ldxr x1, [x0]", 8, False),
    # (No stxr row: a store-exclusive without the monitor held need not access memory at
    # all (Arm ARM B2.9.5), and QEMU's does not, so it cannot be made to fault on its own.)
    "ldar": Row("ldar x1, [x0]", 8, False, isv=True, sf=True, ar=True),
    "stlr": Row("stlr w1, [x0]", 4, True, isv=True, ar=True),
    # An atomic's WnR is 0 when a read would have faulted too: true for translation faults.
    "ldadd": Row(LDADD_X, 8, False),
    "cas": Row(CAS_X, 8, False),
    "ldtr": Row("ldtr x1, [x0]", 8, False, isv=True, sf=True, user=True),
    "sttr": Row("sttrb w1, [x0]", 1, True, isv=True, user=True),
    "ldr-q": Row("ldr q1, [x0]", 16, False),
    "ldr-d": Row("ldr d1, [x0]", 8, False),
    "ld1": Row("ld1 {v1.16b}, [x0]", 16, False),
    # DC ZVA writes a 64-byte block; FAR is the register operand (D24.2.48), CM = 0.
    "dc-zva": Row("dc zva, x0", 64, True, x0_offset=0x10, far_is_x0=True),
}


def _code(rig, row: Row, base: int, perms: str) -> int:
    m = rig.machine
    insn = row.text.to_bytes(4, "little") if isinstance(row.text, int) else assemble(row.text, base)
    m.load(base, insn + assemble("ret", base + 4), perms)
    return base


def _fault_setup(rig, row: Row, stage: int, stage2):
    m = rig.machine
    if row.user:
        page = USER_DATA_VA + PAGE_SIZE
        m.map_page(USER_DATA_VA, rig.data_pfns[0], "rwu")
        if stage == 2:
            m.map_page(page, rig.data_pfns[1], "rwu")
    else:
        page = FAULT_PAGE
        if stage == 1:
            m.unmap_page(FAULT_PAGE)
    if stage == 2:
        stage2.revoke(rig.data_pfns[1])
        m.el2 = RecordingEl2(stage2)
    return page


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("name", list(ROWS))
def test_fault_syndrome_per_instruction_class(rig, stage2, name, stage):
    row = ROWS[name]
    m = rig.machine
    page = _fault_setup(rig, row, stage, stage2)
    code = _code(rig, row, CODE_VA, "rx")
    x0 = page + row.x0_offset
    result = m.call(code, x0, 0x1111, 0x2222, pan=not row.user)
    if stage == 1:
        assert result.outcome.kind == OutcomeKind.UNHANDLED_EXCEPTION, result.outcome
    else:
        assert result.outcome.kind == "stage2-abort", result.outcome
    abort = result.outcome.detail
    esr = abort.esr
    assert abort.stage == stage
    assert abort.pc == code, "the abort stops at exactly the faulting instruction"
    assert result.regs["x0"] == x0, "no writeback happened"
    assert result.regs["x1"] == 0x1111 and result.regs["x2"] == 0x2222
    expected_va = x0 if row.far_is_x0 else (x0 - row.x0_offset if row.x0_offset > 0 else x0)
    if name == "ldr-pre":
        expected_va = page
    assert abort.far == expected_va
    assert esr.ec == (0x25 if stage == 1 else 0x24)
    assert esr.il
    assert esr.fsc == 0x07  # level 3 translation fault: the neighbouring page's table exists
    assert esr.wnr == row.wnr
    assert not esr.s1ptw and not esr.fnv and not esr.ea
    assert not esr.cm
    isv = stage == 2 and row.isv
    assert esr.isv == isv
    if isv:
        assert 1 << esr.sas == row.size
        assert (esr.sse, esr.sf, esr.ar, esr.srt) == (row.sse, row.sf, row.ar, row.srt)
    else:
        assert (esr.iss >> 14) & 0x7FF == 0, "SAS..AR are RES0 without ISV"
    if stage == 2:
        pa = (rig.data_pfns[1] << 12) | (abort.far & 0xFFF)
        assert abort.ipa == pa
        assert abort.hpfar == (pa >> 8) & ~0xF
    else:
        assert abort.hpfar is None


STRADDLERS = {
    "ldr-x": ("ldr x1, [x0]", 8, False),
    "ldur-x": ("ldur x1, [x0, #0]", 8, False),
    "ldrh": ("ldrh w1, [x0]", 2, False),
    "str-x": ("str x1, [x0]", 8, True),
    "str-w": ("str w1, [x0]", 4, True),
    "ldp-x": ("ldp x1, x2, [x0]", 16, False),
    "stp-x": ("stp x1, x2, [x0]", 16, True),
}


def _straddle_cases():
    for name, (text, size, write) in STRADDLERS.items():
        for off in range(1, size):
            for stage in (1, 2):
                yield pytest.param(name, off, stage, id=f"{name}-straddle-{off}-s{stage}")


@pytest.mark.parametrize("name, off, stage", list(_straddle_cases()))
def test_page_straddling_access_faults_on_the_second_page(rig, stage2, name, off, stage):
    """FAR = first byte of the faulting page; PC and registers as before the instruction.

    Documented choice (measured, unicorn 2.1.4 with a TLB-fill MMU): a straddling single
    store writes nothing before the fault; a pair is two accesses, so a pair store whose
    first register lies wholly in the first page has written it when the second faults.
    """
    text, size, write = STRADDLERS[name]
    m = rig.machine
    if stage == 1:
        m.unmap_page(FAULT_PAGE)
    else:
        stage2.revoke(rig.data_pfns[1])
        m.el2 = RecordingEl2(stage2)
    before = bytes(range(0x20, 0x20 + 32))
    m.write(FAULT_PAGE - 32, before)
    code = rig.load_code(text + "; ret")
    x0 = FAULT_PAGE - off
    v1, v2 = 0xA1A2A3A4A5A6A7A8, 0xB1B2B3B4B5B6B7B8
    result = m.call(code, x0, v1, v2)
    abort = result.outcome.detail
    assert abort.stage == stage and abort.pc == code
    assert abort.far == FAULT_PAGE
    assert abort.esr.wnr == write
    assert not abort.esr.isv  # the faulting byte is not the lowest one accessed
    assert (result.regs["x0"], result.regs["x1"], result.regs["x2"]) == (x0, v1, v2)
    after = m.read(FAULT_PAGE - 32, 32)
    expected = bytearray(before)
    if write and name == "stp-x" and off >= 8:  # the first register lies wholly below the page
        expected[32 - off : 32 - off + 8] = v1.to_bytes(8, "little")
    assert after == bytes(expected)
