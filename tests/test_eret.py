"""Illegal exception returns (emu/eret.py): an eret from EL1 whose SPSR names a mode it may not enter.

Reference (written here from the Arm ARM, DDI 0487, "Illegal return events from AArch64
state", not from emu/eret.py): from EL1 on a CPU with AArch64 only, exactly EL0t
(M = 0b00000), EL1t (0b00100) and EL1h (0b00101) are legal returns. Anything else sets
PSTATE.IL and the next instruction (at ELR) takes the Illegal Execution state exception:
EC 0x0E, IL 1, ISS 0, ELR_EL1 = that instruction, SPSR_EL1 = the PSTATE after the
return (IL set, EL1 mode kept); the kernel labels it "PSTATE.IL" (esr_class_str[]) and
el1h_64_sync_handler() has no case for it: __panic_unhandled().
"""
from __future__ import annotations

import pytest

from conftest import CODE_VA, assemble
from emu.eret import illegal_return_reason
from emu.outcome import OutcomeKind

VBAR = 0xFFFF_8000_0900_0000
LEGAL_FROM_EL1 = {0b00000, 0b00100, 0b00101}
PSTATE_IL = 1 << 20


@pytest.mark.parametrize("mode", range(32))
def test_which_modes_an_el1_eret_may_return_to(mode):
    assert (illegal_return_reason(mode | 0x3C0, 1) is None) == (mode in LEGAL_FROM_EL1)


def _eret_to(rig, mode: int):
    """EL1 code: SPSR_EL1 = mode with DAIF masked, ELR_EL1 = `back`, eret; `back` returns 1 (EL1 modes only)."""
    m = rig.machine
    m.load(VBAR, assemble("brk #1\n" * 0x200, VBAR), "rx")
    m.cpu.write_sysreg("VBAR_EL1", VBAR)
    rig.load_code(f"mov x1, #{0x3C0 | mode:#x}\nmsr spsr_el1, x1\nadr x2, back\nmsr elr_el1, x2\neret\nnop\nback: mov x0, #1\nret")
    return m.call(CODE_VA, max_events=4)


@pytest.mark.parametrize("mode", sorted(set(range(32)) - LEGAL_FROM_EL1))
def test_an_illegal_return_takes_the_illegal_execution_state_exception_at_elr(rig, mode):
    result = _eret_to(rig, mode)
    back = CODE_VA + 24
    (illegal,) = result.events_of("illegal-return")
    assert illegal.pc == CODE_VA + 16  # the eret
    exc = result.events_of("exception")[0]
    assert exc.data["esr"] == (0x0E << 26) | (1 << 25) and exc.data["ec_name"] == "PSTATE.IL"
    entry = result.events_of("exception-entry")[0].data["entry"]
    assert entry.elr == back and entry.vector == VBAR + 0x200  # current EL, SP_ELx
    spsr = entry.spsr  # what the entry saved in SPSR_EL1
    assert spsr & PSTATE_IL and spsr & 0x1F == 0b00101  # still EL1h, IL set
    assert spsr & 0x3C0 == 0x3C0  # DAIF from the SPSR the eret used
    assert result.outcome.kind is not OutcomeKind.RETURNED


@pytest.mark.parametrize("mode", [0b00100, 0b00101])
def test_a_legal_return_to_el1_runs_on(rig, mode):
    result = _eret_to(rig, mode)
    assert result.returned and result.x0 == 1
    assert not result.events_of("illegal-return") and not result.events_of("exception")


def test_spsr_written_from_python_is_checked_too(rig):
    """No msr in the code: SPSR_EL1 set before the run (rearm) still makes the eret illegal."""
    m = rig.machine
    m.load(VBAR, assemble("brk #1\n" * 0x200, VBAR), "rx")
    m.cpu.write_sysreg("VBAR_EL1", VBAR)
    rig.load_code("adr x2, back\nmsr elr_el1, x2\neret\nback: ret")
    m.cpu.write_sysreg("SPSR_EL1", 0x3C9)  # EL2h
    result = m.run(CODE_VA, budget=100, max_events=4)
    assert [e.kind for e in result.events][:2] == ["illegal-return", "exception"]


SCENARIO = """\
name = "{name}"

[routine]
asm = "{asm}"
symbol = "f"
"""


@pytest.mark.parametrize(
    "name, asm, label",
    [
        ("eret-el2h", r"f: adr x1, 1f\n msr elr_el1, x1\n mov x2, #0x3c9\n msr spsr_el1, x2\n eret\n1: ret",
         "Unhandled 64-bit el1h sync exception on CPU0, ESR 0x000000003a000000 -- PSTATE.IL"),
        ("svc-el1", r"f: svc #0\n ret", "Unhandled 64-bit el1h sync exception on CPU0, ESR 0x0000000056000000 -- SVC (AArch64)"),
        ("pc-align", r"f: adr x1, 1f\n add x1, x1, #2\n br x1\n1: ret", "Internal error: SP/PC alignment exception: 000000008a000000 [#1]"),
        ("undefined", r"f: .word 0x00000000\n ret", "Internal error: Oops - Undefined instruction: 0000000002000000 [#1]"),
    ],
)
def test_the_host_labels_each_el1_exception_as_the_kernel_does(tmp_path, capsys, name, asm, label):
    """entry-common.c el1h_64_sync_handler(): undefined -> do_el1_undef(), PC alignment ->
    do_sp_pc_abort(), svc and PSTATE.IL (no case) -> __panic_unhandled()."""
    from faultlab.cli import main

    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(name=name, asm=asm))
    assert main(["run", str(path), "--policy", "inject"]) == 0
    out = capsys.readouterr().out
    assert f"outcome          host-oops: {label}" in out
