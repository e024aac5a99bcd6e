"""Every run ends in a bounded outcome, and non-abort exceptions carry the architecture's syndromes.

Issue 13: the wall-clock deadline holds inside one long stretch, budgets that
cannot bound a run are refused, traces are capped, and smc/svc/misaligned PC are
reported as the Arm ARM (D17.2.37 ESR_EL1 EC values) and the kernel's
esr_class_str[] (arch/arm64/kernel/traps.c) name them.
"""
from __future__ import annotations

import time

import pytest

from conftest import CODE_VA, RecordingEl2, assemble
from emu.machine import SMCCC_RET_NOT_SUPPORTED, BadRunLimits, Machine
from emu.outcome import Outcome, OutcomeKind
from emu.syndrome import EC
from emu.syndrome.bits import EC_SHIFT

VBAR = 0xFFFF_8000_0900_0000
SPIN = "loop: b loop"


# ------------------------------------------------------------ bounded runs
def test_huge_budget_still_ends_at_the_wall_clock_deadline(rig):
    rig.load_code(SPIN)
    start = time.monotonic()
    result = rig.machine.call(CODE_VA, budget=10**12, timeout=0.3)
    elapsed = time.monotonic() - start
    assert result.outcome.kind == OutcomeKind.TIMEOUT
    assert elapsed < 5.0  # one chunk is ~10 ms; before chunking this never ended


def test_budget_is_still_exact_across_chunks(rig, monkeypatch):
    # 7 chunks of 3 instructions then a partial one: the budget counts every instruction once.
    monkeypatch.setattr("emu.machine.STRETCH_CHUNK", 3)
    rig.load_code("add x0, x0, #1\n" * 30 + "ret")
    result = rig.machine.call(CODE_VA, budget=22)
    assert result.outcome.kind == OutcomeKind.BUDGET_EXCEEDED
    assert result.x0 == 22
    assert result.regs["pc"] == CODE_VA + 22 * 4
    assert rig.machine.call(CODE_VA, budget=32).returned  # 30 adds, ret, the sentinel brk


@pytest.mark.parametrize("limits", [dict(budget=0), dict(budget=-1), dict(budget=1.5), dict(max_events=0),
                                    dict(timeout=0), dict(timeout=-2.0), dict(max_trace=0)])
def test_limits_that_cannot_bound_a_run_are_refused(rig, limits):
    rig.load_code(SPIN)
    with pytest.raises(BadRunLimits):
        rig.machine.call(CODE_VA, **limits)
    with pytest.raises(BadRunLimits):
        rig.machine.run(CODE_VA, **limits)


def test_trace_is_capped_and_says_so(rig):
    rig.load_code(SPIN)
    result = rig.machine.call(CODE_VA, budget=50_000, trace=True, max_trace=100)
    assert result.outcome.kind == OutcomeKind.BUDGET_EXCEEDED
    assert len(result.trace) == 100
    assert result.trace_truncated
    marks = result.events_of("trace-truncated")
    assert len(marks) == 1 and marks[0].data["trace_index"] == 100


def test_default_trace_cap_and_raising_it(rig):
    rig.load_code(SPIN)
    capped = rig.machine.call(CODE_VA, budget=20_000, trace=True)
    assert len(capped.trace) == 10_000 and capped.trace_truncated
    raised = rig.machine.call(CODE_VA, budget=20_000, trace=True, max_trace=30_000)
    assert len(raised.trace) == 20_000 and not raised.trace_truncated
    assert not raised.events_of("trace-truncated")


# --------------------------------------------------------------- smc / svc
def test_smc_at_el1_traps_to_el2_and_returns_not_supported_past_the_smc(rig, stage2):
    el2 = RecordingEl2(stage2)  # no handle_smc: the machine's default EL2 answer
    rig.machine.el2 = el2
    rig.load_code("mov x0, #0x1234\nsmc #0\nadd x1, x0, #1\nret")
    result = rig.machine.call(CODE_VA)
    assert result.returned
    assert result.x0 == SMCCC_RET_NOT_SUPPORTED
    assert result.regs["x1"] == 0  # -1 + 1: the instruction after the smc ran once
    (smc,) = result.events_of("smc")
    assert smc.pc == CODE_VA + 4  # the trap is taken at the smc itself (ELR_EL2 = the smc)
    assert not result.events_of("exception")


def test_smc_goes_to_the_el2_handlers_handle_smc(rig, stage2):
    class SmcEl2(RecordingEl2):
        def handle_smc(self, machine, imm):
            self.hvcs.append(("smc", imm))
            machine.cpu.set_x(0, 7)

    el2 = SmcEl2(stage2)
    rig.machine.el2 = el2
    rig.load_code("smc #5\nret")
    result = rig.machine.call(CODE_VA)
    assert result.returned and result.x0 == 7 and el2.hvcs == [("smc", 5)]


def test_smc_without_el2_is_undefined_at_the_smc_not_the_next_instruction(rig):
    rig.load_code("smc #0\nret")
    result = rig.machine.call(CODE_VA)
    assert result.outcome.kind == OutcomeKind.UNHANDLED_EXCEPTION
    assert f"pc={CODE_VA:#x}" in result.outcome.message
    (exc,) = result.events_of("exception")
    assert exc.data["esr"] >> EC_SHIFT == EC.UNKNOWN
    assert exc.data["ec_name"] == "Unknown/Uncategorized"


def _with_vectors(rig) -> Machine:
    rig.machine.load(VBAR, assemble("brk #1\n" * 0x200, VBAR), "rx")
    rig.machine.cpu.write_sysreg("VBAR_EL1", VBAR)
    return rig.machine


def test_svc_at_el1_is_ec_0x15_labelled_as_the_kernel_does(rig):
    m = _with_vectors(rig)
    rig.load_code("svc #3\nret")
    result = m.call(CODE_VA, max_events=3)
    (exc, *_) = result.events_of("exception")
    assert exc.data["esr"] == (0x15 << EC_SHIFT) | (1 << 25) | 3
    assert exc.data["ec_name"] == "SVC (AArch64)"
    assert exc.message.startswith("SVC (AArch64)")
    (entry, *_) = result.events_of("exception-entry")
    assert entry.data["entry"].elr == CODE_VA + 4  # svc's preferred return: the next instruction


def test_misaligned_pc_is_a_pc_alignment_fault(rig):
    m = _with_vectors(rig)
    rig.load_code("adr x1, tgt\nadd x1, x1, #2\nbr x1\nnop\ntgt: ret")
    result = m.call(CODE_VA, max_events=3)
    (exc, *_) = result.events_of("exception")
    assert exc.data["esr"] >> EC_SHIFT == EC.PC_ALIGN == 0x22
    assert exc.data["ec_name"] == "PC Alignment"
    bad_pc = CODE_VA + 16 + 2
    (entry, *_) = result.events_of("exception-entry")
    assert entry.data["entry"].elr == bad_pc and entry.data["entry"].far == bad_pc
    assert m.cpu.read_sysreg("FAR_EL1") == bad_pc


def test_unicorn_itself_does_not_make_eret_to_el2_an_illegal_return(rig):
    """Pinned Unicorn limitation (why emu/eret.py exists): with our guard's hooks removed, an eret
    from EL1 to EL2h carries on at EL1 instead of an illegal exception return (Arm ARM D1.4.x). If
    this starts failing, Unicorn began to model it: the guard may go."""
    m = rig.machine
    m.eret_guard.close()
    rig.load_code("mov x1, #0x3c9\nmsr spsr_el1, x1\nadr x2, back\nmsr elr_el1, x2\neret\nnop\nback: mov x0, #1\nret")
    result = m.call(CODE_VA)
    assert result.returned and result.x0 == 1
    assert not result.events_of("exception")


def test_pkvm_model_answers_a_host_smc_with_not_supported(rig):
    from hyp.pkvm import Hyp

    Hyp(rig.machine)
    rig.load_code("mov x0, #0x84000000\nsmc #0\nret")  # an SMCCC function pKVM does not model
    result = rig.machine.call(CODE_VA)
    assert result.returned and result.x0 == SMCCC_RET_NOT_SUPPORTED
    assert [e.pc for e in result.events_of("smc")] == [CODE_VA + 4]
