"""SCTLR_EL1 as Linux leaves it, its EL0 traps (EC 0x18), SIMD&FP accessors, identity layouts, PAN in results."""
from __future__ import annotations

import itertools

import pytest

from conftest import CODE_VA, DATA_VA, assemble
from emu.identity import map_identity
from emu.machine import Machine
from emu.sctlr import LINUX_SCTLR_EL1, UNICORN_RESET_SCTLR_EL1, SctlrBit, describe

USER_CODE, USER_DATA = 0x80_0000, 0x40_0000

# Bit positions of INIT_SCTLR_EL1_MMU_ON (arch/arm64/include/asm/sysreg.h, v6.1..v7.x), written out
# independently: M 0, C 2, SA 3, SA0 4, SED 8, EOS 11, I 12, DZE 14, UCT 15, nTWE 18, TSCXT 20,
# IESB 21, EIS 22, SPAN 23, UCI 26, nTLSMD 28, LSMAOE 29, ITFSB 37, EPAN 57; then SPAN cleared by
# cpu_enable_pan (FEAT_PAN) and EPAN RES0 (no FEAT_PAN3).
LINUX_BITS = {0, 2, 3, 4, 8, 11, 12, 14, 15, 18, 20, 21, 22, 26, 28, 29, 37}


def test_the_machine_starts_with_linux_sctlr():
    m = Machine(phys_size=16 << 20)
    assert LINUX_SCTLR_EL1 == sum(1 << b for b in LINUX_BITS)
    assert m.cpu.read_sysreg("SCTLR_EL1") == LINUX_SCTLR_EL1 != UNICORN_RESET_SCTLR_EL1
    assert "DZE" in describe(LINUX_SCTLR_EL1).split() and "SPAN" not in describe(LINUX_SCTLR_EL1).split()


# (instruction at EL0, the SCTLR_EL1 bit that allows it, expected ISS: Op0, Op2, Op1, CRn, CRm, Direction)
EL0_TRAPS = {
    "dc zva, x0": (SctlrBit.DZE, (1, 1, 3, 7, 4, 0)),
    "mrs x0, ctr_el0": (SctlrBit.UCT, (3, 1, 3, 0, 0, 1)),
    "dc civac, x0": (SctlrBit.UCI, (1, 1, 3, 7, 14, 0)),
    "dc cvau, x0": (SctlrBit.UCI, (1, 1, 3, 7, 11, 0)),
    "ic ivau, x0": (SctlrBit.UCI, (1, 1, 3, 7, 5, 0)),
}


@pytest.mark.parametrize("text", list(EL0_TRAPS))
@pytest.mark.parametrize("allowed", [True, False])
def test_el0_system_instructions_trap_to_el1_with_ec_0x18_when_sctlr_says(text, allowed):
    bit, (op0, op2, op1, crn, crm, direction) = EL0_TRAPS[text]
    m = Machine(phys_size=16 << 20)
    m.map_new(USER_DATA, 1, "rwu")
    m.load(USER_CODE, assemble(text + "; ret", USER_CODE), "rxu")
    m.set_sctlr(LINUX_SCTLR_EL1 if allowed else LINUX_SCTLR_EL1 & ~bit)
    result = m.call(USER_CODE, USER_DATA, el=0, budget=100)
    if allowed:
        assert result.returned, result.outcome
        return
    esr = result.outcome.detail.value
    assert esr >> 26 == 0x18 and esr >> 25 & 1
    iss = esr & 0x1FFFFFF
    fields = (iss >> 20 & 3, iss >> 17 & 7, iss >> 14 & 7, iss >> 10 & 0xF, iss >> 1 & 0xF, iss & 1)
    assert fields == (op0, op2, op1, crn, crm, direction) and iss >> 5 & 0x1F == 0  # Rt = x0
    assert result.regs["pc"] == USER_CODE


def test_an_undefined_el0_instruction_stays_ec_0():
    m = Machine(phys_size=16 << 20)
    m.load(USER_CODE, assemble("mrs x0, sctlr_el1; ret", USER_CODE), "rxu")
    assert m.call(USER_CODE, el=0, budget=100).outcome.detail.value >> 26 == 0


@pytest.mark.parametrize("n", [0, 1, 17, 31])
def test_simd_accessors_agree_with_instructions(n):
    m = Machine(phys_size=16 << 20)
    m.map_new(DATA_VA, 1, "rw")
    value = int.from_bytes(bytes(range(0x10, 0x20)), "little")
    m.write(DATA_VA, value.to_bytes(16, "little"))
    code = assemble(f"ldr q{n}, [x0]; str d{n}, [x0, #16]; ret", CODE_VA)
    m.load(CODE_VA, code, "rx")
    assert m.call(CODE_VA, DATA_VA, budget=100).returned
    assert m.cpu.q(n) == value
    assert m.cpu.d(n) == value & (2**64 - 1) == m.read_u64(DATA_VA + 16)
    assert m.cpu.s(n) == value & 0xFFFFFFFF
    m.cpu.set_q(n, (1 << 127) | 5)
    m.cpu.set_d(n, 0xAB)  # as `fmov dN, x`: the upper half becomes 0
    assert m.cpu.q(n) == 0xAB
    m.cpu.set_q(n, 2**128 - 1)
    m.load(CODE_VA, assemble(f"str q{n}, [x0]; ret", CODE_VA), "rx")
    assert m.call(CODE_VA, DATA_VA, budget=100).returned
    assert m.read(DATA_VA, 16) == b"\xff" * 16
    with pytest.raises(ValueError):
        m.cpu.q(32)


def test_identity_layout_runs_code_at_va_equal_pa():
    m = Machine(phys_size=16 << 20)
    base = map_identity(m, 2, "rwx")
    assert all(m.translate(base + off) == base + off for off in (0, 4096, 8191))
    m.write(base, assemble("ldr x0, [x0]; ret", base))
    m.write_u64(base + 4096, 0x1234)
    assert m.call(base, base + 4096, budget=100).x0 == 0x1234


@pytest.mark.parametrize("el, pan", list(itertools.product((0, 1), (True, False))))
def test_call_results_say_which_pan_the_callee_started_with(el, pan):
    m = Machine(phys_size=16 << 20)
    code = USER_CODE if el == 0 else CODE_VA
    m.load(code, assemble("mrs x0, nzcv; ret", code), "rxu" if el == 0 else "rx")
    result = m.call(code, el=el, pan=pan, budget=100)
    assert result.returned and result.entry_pan == (pan and el == 1)


def test_the_machines_modes_follow_sctlr_writes_from_python():
    """Cpu.write_sysreg (what a checkpoint restore or a differential harness uses) switches the
    MMU-off and strict-alignment modes exactly as Machine.set_sctlr does."""
    m = Machine(phys_size=16 << 20)
    m.map_new(DATA_VA, 1, "rw")
    m.load(CODE_VA, assemble("ldr x1, [x0]; ret", CODE_VA), "rx")
    assert m.call(CODE_VA, DATA_VA + 1, budget=100).returned
    m.cpu.write_sysreg("SCTLR_EL1", LINUX_SCTLR_EL1 | SctlrBit.A)
    assert m.call(CODE_VA, DATA_VA + 1, budget=100).outcome.detail.esr.fsc == 0x21
    m.cpu.write_sysreg("SCTLR_EL1", LINUX_SCTLR_EL1 & ~SctlrBit.M)
    assert m.translate(0x4000_0000) == 0x4000_0000 and m.stage1.disabled
    m.cpu.write_sysreg("SCTLR_EL1", LINUX_SCTLR_EL1)
    assert not m.stage1.disabled and m.call(CODE_VA, DATA_VA + 1, budget=100).returned
