"""Alignment faults, class by class, run for real (Arm ARM AArch64.UnalignedAccessFaults, FEAT_LSE2 off).

The expected values are written from the architecture, not read back from the machine:
every misaligned exclusive, atomic and ordered access faults (no FEAT_LSE2), a plain access
faults only with SCTLR_EL1.A = 1 or to Device memory (the MMU-off mode); an Alignment fault
is a stage-1 fault checked before translation (so it beats a stage-1 or stage-2 fault of the
same access): ESR_EL1 EC 0x25 (0x24 from EL0), IL 1, DFSC 0x21, ISV 0, WnR = the access
writes (0 for an atomic: a read would have faulted too), FAR = the access address, and the
instruction has no effect.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from conftest import CODE_VA, DATA_VA, USER_DATA_VA, RecordingEl2, assemble
from emu.alignment import watched_offsets
from emu.machine import Machine
from emu.memory import PAGE_SIZE
from emu.outcome import OutcomeKind
from emu.sctlr import LINUX_SCTLR_EL1, SctlrBit
from kasm.encode import encode_atomic_op, encode_cas, encode_casp, encode_ldapr, encode_lorder, encode_rcpc2, encode_swp


@dataclass(frozen=True)
class Cls:
    insn: str | int  # assembly (keystone) or a hand-encoded word (Rt = x1, Rn = x0)
    align: int  # bytes the address must be aligned to
    write: bool  # ESR.WnR of its alignment fault
    always: bool = True  # checked without SCTLR_EL1.A (exclusive, atomic, ordered)


CLASSES = {
    "ldxr-x": Cls("ldxr x1, [x0]", 8, False),
    "ldxr-w": Cls("ldxr w1, [x0]", 4, False),
    "ldxrh": Cls("ldxrh w1, [x0]", 2, False),
    "ldaxr-x": Cls("ldaxr x1, [x0]", 8, False),
    "stxr-x": Cls("stxr w3, x1, [x0]", 8, True),
    "stlxr-w": Cls("stlxr w3, w1, [x0]", 4, True),
    "ldxp-x": Cls("ldxp x1, x2, [x0]", 16, False),
    "stxp-w": Cls("stxp w3, w1, w2, [x0]", 8, True),
    "ldar-x": Cls("ldar x1, [x0]", 8, False),
    "ldarh": Cls("ldarh w1, [x0]", 2, False),
    "stlr-w": Cls("stlr w1, [x0]", 4, True),
    "stlr-x": Cls("stlr x1, [x0]", 8, True),
    "ldapr-x": Cls(encode_ldapr(3, 1, 0), 8, False),
    "ldapur-w": Cls(encode_rcpc2(2, 1, 0, 1, 0), 4, False),
    "stlur-x": Cls(encode_rcpc2(3, 0, 0, 1, 0), 8, True),
    "ldlar-x": Cls(encode_lorder(True, 3, 1, 0), 8, False),
    "stllr-w": Cls(encode_lorder(False, 2, 1, 0), 4, True),
    "ldadd-x": Cls(encode_atomic_op("add", 0, 0, 3, 2, 1, 0), 8, False),
    "ldsetal-w": Cls(encode_atomic_op("set", 1, 1, 2, 2, 1, 0), 4, False),
    "stadd-h": Cls(encode_atomic_op("add", 0, 0, 1, 2, 31, 0), 2, False),
    "swp-x": Cls(encode_swp(0, 0, 3, 2, 1, 0), 8, False),
    "cas-w": Cls(encode_cas(0, 0, 2, 2, 1, 0), 4, False),
    "casp-x": Cls(encode_casp(0, 0, True, 2, 4, 0), 16, False),
    # Plain accesses: only SCTLR_EL1.A or Device memory. A pair is two accesses of one
    # register; a Q register two 64-bit accesses; a structure one element at a time.
    "ldr-x": Cls("ldr x1, [x0]", 8, False, always=False),
    "str-w": Cls("str w1, [x0]", 4, True, always=False),
    "ldrh": Cls("ldrh w1, [x0]", 2, False, always=False),
    "ldp-x": Cls("ldp x1, x2, [x0]", 8, False, always=False),
    "stp-w": Cls("stp w1, w2, [x0]", 4, True, always=False),
    "ldr-q": Cls("ldr q1, [x0]", 8, False, always=False),
    "ld1-4s": Cls("ld1 {v1.4s}, [x0]", 4, False, always=False),
    "ldrb": Cls("ldrb w1, [x0]", 1, False, always=False),
}

PATTERN = bytes(range(0x40, 0x80))
MIDDLE = DATA_VA + 0x100  # 64 bytes far from both page edges


def _machine(cls: Cls, sctlr: int = LINUX_SCTLR_EL1) -> Machine:
    m = Machine(phys_size=16 << 20)
    m.map_new(DATA_VA, 2, "rw")
    insn = cls.insn.to_bytes(4, "little") if isinstance(cls.insn, int) else assemble(cls.insn, CODE_VA)
    m.load(CODE_VA, insn + assemble("ret", CODE_VA + 4), "rx")
    m.set_sctlr(sctlr)
    return m


def _assert_alignment_fault(m: Machine, result, cls: Cls, address: int, from_el: int) -> None:
    assert result.outcome.kind == OutcomeKind.UNHANDLED_EXCEPTION, result.outcome
    abort = result.outcome.detail
    esr = abort.esr
    assert abort.stage == 1 and abort.pc == CODE_VA
    assert esr.ec == (0x24 if from_el == 0 else 0x25)
    assert esr.il and esr.fsc == 0x21
    assert not esr.isv and (esr.iss >> 14) & 0x7FF == 0
    assert esr.wnr == cls.write
    assert not esr.s1ptw and not esr.cm
    assert abort.far == address
    assert result.regs["x0"] == address and result.regs["x1"] == 0x1111 and result.regs["x2"] == 0x2222


def _cases():
    for name in CLASSES:
        for off in range(0, 17):
            yield pytest.param(name, off, id=f"{name}+{off}")


@pytest.mark.parametrize("name, off", list(_cases()))
def test_misaligned_exclusive_atomic_ordered_fault_and_others_run(name, off):
    cls = CLASSES[name]
    m = _machine(cls)
    m.write(MIDDLE - 32, PATTERN)
    address = MIDDLE + off
    result = m.call(CODE_VA, address, 0x1111, 0x2222, 0, budget=100)
    if cls.always and off % cls.align:
        _assert_alignment_fault(m, result, cls, address, 1)
        assert m.read(MIDDLE - 32, len(PATTERN)) == PATTERN, "a store that alignment-faults writes nothing"
    else:
        assert result.returned, result.outcome


@pytest.mark.parametrize("name, off", [p for p in _cases() if p.values[1] % CLASSES[p.values[0]].align])
def test_sctlr_a_makes_every_unaligned_access_fault(name, off):
    cls = CLASSES[name]
    m = _machine(cls, LINUX_SCTLR_EL1 | SctlrBit.A)
    m.write(MIDDLE - 32, PATTERN)
    result = m.call(CODE_VA, MIDDLE + off, 0x1111, 0x2222, budget=100)
    _assert_alignment_fault(m, result, cls, MIDDLE + off, 1)
    assert m.read(MIDDLE - 32, len(PATTERN)) == PATTERN


@pytest.mark.parametrize("name", ["ldr-x", "ldp-x", "ldr-q", "ld1-4s", "ldrb"])
def test_sctlr_a_lets_aligned_accesses_run(name):
    m = _machine(CLASSES[name], LINUX_SCTLR_EL1 | SctlrBit.A)
    assert m.call(CODE_VA, MIDDLE + 16, budget=100).returned


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("name", ["ldxr-x", "stlr-x", "ldadd-x", "ldapr-x", "stxr-x"])
def test_alignment_is_checked_before_translation(rig, stage2, name, stage):
    """The same misaligned access to a page unmapped at stage 1, or refused at stage 2:
    the Alignment fault is reported (AArch64.UnalignedAccessFaults precedes TranslateAddress)."""
    cls = CLASSES[name]
    m = rig.machine
    insn = cls.insn.to_bytes(4, "little") if isinstance(cls.insn, int) else assemble(cls.insn, CODE_VA)
    m.load(CODE_VA, insn + assemble("ret", CODE_VA + 4), "rx")
    page = DATA_VA + PAGE_SIZE
    if stage == 1:
        m.unmap_page(page)
    else:
        stage2.revoke(rig.data_pfns[1])
        m.el2 = el2 = RecordingEl2(stage2)
    result = m.call(CODE_VA, page + 4 + 1, 0x1111, 0x2222, budget=100)
    _assert_alignment_fault(m, result, cls, page + 5, 1)
    if stage == 2:
        assert el2.aborts == []
    if name == "stxr-x":
        # Aligned and without the monitor, a store-exclusive fails before translating
        # (AArch64.ExclusiveMonitorsPass checks alignment first, then the monitor).
        assert m.call(CODE_VA, page + 16, budget=100).returned
        return
    # Aligned, the same access takes the translation fault instead.
    result = m.call(CODE_VA, page + 16, 0x1111, 0x2222, budget=100)
    abort = result.outcome.detail
    assert abort.stage == stage and abort.esr.fsc == 0x07


@pytest.mark.parametrize("name", ["ldxr-x", "stlr-w", "ldadd-x", "ldar-x"])
def test_alignment_fault_from_el0_is_a_lower_el_abort(name):
    cls = CLASSES[name]
    m = Machine(phys_size=16 << 20)
    m.map_new(USER_DATA_VA, 1, "rwu")
    insn = cls.insn.to_bytes(4, "little") if isinstance(cls.insn, int) else assemble(cls.insn, 0x80_0000)
    m.load(0x80_0000, insn + assemble("ret", 0x80_0004), "rxu")
    result = m.call(0x80_0000, USER_DATA_VA + 3, 0x1111, 0x2222, el=0, budget=100)
    abort = result.outcome.detail
    assert abort.el == 0 and abort.pc == 0x80_0000
    assert abort.esr.ec == 0x24 and abort.esr.fsc == 0x21 and abort.far == USER_DATA_VA + 3
    assert abort.esr.wnr == cls.write


def test_mmu_off_is_identity_and_device_data_faults_when_unaligned():
    """SCTLR_EL1.M = 0: VA = PA, data is Device-nGnRnE (AArch64.S1DisabledOutput): an
    unaligned plain load faults, an aligned one reads the frame; instructions still run."""
    m = Machine(phys_size=16 << 20)
    pfn = m.alloc_frame()
    code_pfn = m.alloc_frame()
    pa, code_pa = pfn << 12, code_pfn << 12
    m.phys.write(pa, PATTERN)
    m.phys.write(code_pa, assemble("ldr x1, [x0]; brk #1", code_pa))  # the machine's exits are high VAs
    m.set_sctlr(LINUX_SCTLR_EL1 & ~SctlrBit.M)
    assert m.translate(pa + 8) == pa + 8
    result = m.call(code_pa, pa + 8, budget=100)
    assert result.outcome.detail.ec == 0x3C and result.regs["pc"] == code_pa + 4
    assert result.regs["x1"] == int.from_bytes(PATTERN[8:16], "little")
    result = m.call(code_pa, pa + 9, 0x1111, 0x2222, budget=100)
    abort = result.outcome.detail
    assert abort.stage == 1 and abort.esr.fsc == 0x21 and abort.far == pa + 9 and abort.pc == code_pa
    m.set_sctlr(LINUX_SCTLR_EL1)  # MMU on again: the code is not mapped at that VA
    assert m.call(code_pa, pa + 8, budget=100).outcome.detail.esr.ec == 0x21  # instruction abort, current EL


def test_watched_encodings_are_exactly_the_classes_unicorn_leaves_to_us():
    words = [CLASSES[n].insn for n in ("ldapr-x", "ldapur-w", "stlur-x", "ldlar-x", "stllr-w")]
    words += [int.from_bytes(assemble(t, 0), "little") for t in ("stxr w3, x1, [x0]", "ldar x1, [x0]", "stlr w1, [x0]")]
    plain = [int.from_bytes(assemble(t, 0), "little")
             for t in ("ldr x1, [x0]", "str w1, [x0, #4]", "ldp x1, x2, [x0]", "nop", "ret", "ldxr x1, [x0]", "ldaxp x1, x2, [x0]")]
    plain += [CLASSES["cas-w"].insn, CLASSES["casp-x"].insn, CLASSES["ldadd-x"].insn]  # Unicorn checks these itself
    frame = b"".join(w.to_bytes(4, "little") for w in plain + words)
    assert watched_offsets(frame + bytes(PAGE_SIZE - len(frame))) == [4 * i for i in range(len(plain), len(plain) + len(words))]


def test_every_watched_instruction_of_a_page_is_checked():
    """Several ordered accesses on one code page, each with its own bounded hook: only the misaligned one faults."""
    m = Machine(phys_size=16 << 20)
    m.map_new(DATA_VA, 1, "rw")
    text = "stlr x1, [x0]; ldar x2, [x0]; stlrh w1, [x3]; ldar w4, [x0]; stlr x1, [x5]; ret"
    m.load(CODE_VA, assemble(text, CODE_VA), "rx")
    for x3, x5, fault_pc, far in ((MIDDLE + 2, MIDDLE + 1, CODE_VA + 16, MIDDLE + 1),
                                  (MIDDLE + 1, MIDDLE, CODE_VA + 8, MIDDLE + 1),
                                  (MIDDLE + 2, MIDDLE + 8, None, None)):
        m.cpu.set_x(3, x3)
        result = m.call(CODE_VA, MIDDLE, 7, 0, x3, 0, x5, budget=100)
        if fault_pc is None:
            assert result.returned
        else:
            abort = result.outcome.detail
            assert abort.pc == fault_pc and abort.esr.fsc == 0x21 and abort.far == far


@pytest.mark.parametrize("per_pc", [None, 2])
@pytest.mark.parametrize("name", [n for n, c in CLASSES.items() if c.always])
def test_one_machine_gives_each_address_its_own_verdict(monkeypatch, name, per_pc):
    """The bounded hook remembers a verdict per (instruction, register values): one machine run at
    every offset, up and down again (each value met before and after others), and with the memo
    bounded to two values per instruction (cleared as it fills), faults exactly where a fresh
    machine per offset does."""
    import emu.alignment

    if per_pc is not None:
        monkeypatch.setattr(emu.alignment, "VERDICTS_PER_PC", per_pc)
    cls = CLASSES[name]
    m = _machine(cls)
    for off in [*range(17), *range(16, -1, -1), 3, 0, 3, 8, 1]:
        m.write(MIDDLE - 32, PATTERN)
        address = MIDDLE + off
        result = m.call(CODE_VA, address, 0x1111, 0x2222, 0, budget=100)
        if off % cls.align:
            _assert_alignment_fault(m, result, cls, address, 1)
        else:
            assert result.returned, (off, result.outcome)
