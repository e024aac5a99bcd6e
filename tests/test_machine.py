"""emu.Machine: translation regimes, aliases, stage-2 revocation, EL switches, exceptions, budget."""
from __future__ import annotations

import pytest

from conftest import ALIAS_VA, CODE_VA, DATA_VA, USER_CODE_VA, USER_DATA_VA, RecordingEl2, assemble
from emu.machine import MachineError, NoAbortHandler
from emu.memory import PAGE_SIZE
from emu.outcome import OutcomeKind

VBAR = 0xFFFF_8000_0900_0000


def test_call_passes_eight_arguments_and_returns_x0(rig):
    code = rig.load_code("; ".join(f"add x0, x0, x{i}" for i in range(1, 8)) + "; ret")
    args = [3**i for i in range(8)]
    result = rig.machine.call(code, *args)
    assert result.returned, result.outcome
    assert result.x0 == sum(args)


def test_el1_call_state_matches_the_kernel_convention(rig):
    code = rig.load_code("mrs x0, CurrentEL; mrs x1, sp_el0; mov x2, sp; mrs x3, daif; ret")
    result = rig.machine.call(code)
    assert result.regs["x0"] == 1 << 2
    assert result.regs["x1"] == rig.machine.task
    assert result.regs["x2"] == rig.machine.kernel_stack_top
    assert result.regs["x3"] == 0xF << 6


@pytest.mark.parametrize("value", [0, 1, 0x8000_0000_0000_0001, (1 << 64) - 1])
def test_alias_write_via_kernel_visible_via_user_mapping(rig, value):
    m = rig.machine
    m.map_page(USER_DATA_VA, rig.data_pfns[0], "rwu")
    writer = rig.load_code("str x1, [x0]; ret")
    reader = rig.load_code("ldr x0, [x0]; ret", USER_CODE_VA, "rxu")
    assert m.call(writer, DATA_VA + 8, value).returned
    result = m.call(reader, USER_DATA_VA + 8, el=0)
    assert result.returned, result.outcome
    assert result.x0 == value
    assert m.read_u64(USER_DATA_VA + 8) == value == int.from_bytes(m.phys.read((rig.data_pfns[0] << 12) + 8, 8), "little")


@pytest.mark.parametrize("alias", ["linear", "alias", "user"])
def test_stage2_revoke_faults_through_every_alias_on_the_next_instruction(rig, stage2, alias):
    m = rig.machine
    pfn = rig.data_pfns[0]
    m.map_page(ALIAS_VA, pfn, "rw")
    m.map_page(USER_DATA_VA, pfn, "rwu")
    el2 = RecordingEl2(stage2)
    m.el2 = el2
    va = {"linear": DATA_VA, "alias": ALIAS_VA, "user": USER_DATA_VA}[alias]
    el = 0 if alias == "user" else 1
    base = USER_CODE_VA if el == 0 else CODE_VA
    # First access fills the TLB; the hvc lets EL2 revoke the frame between two instructions.
    code = rig.load_code("ldr x2, [x0]; hvc #7; ldr x3, [x0]; ret", base, "rxu" if el == 0 else "rx")

    class RevokeOnHvc(RecordingEl2):
        def handle_hvc(self, machine, imm):
            stage2.revoke(pfn)
            return None

    m.el2 = el2 = RevokeOnHvc(stage2)
    if el == 0:
        # hvc is UNDEFINED at EL0: revoke from Python before the run instead, after a first access.
        code = rig.load_code("ldr x2, [x0]; ldr x3, [x0]; ret", base, "rxu")
        stage2.revoke(pfn)
    result = m.call(code, va, el=el)
    assert result.outcome.kind == "stage2-abort"
    (abort,) = el2.aborts
    assert abort.stage == 2
    assert abort.pc == code + (8 if el == 1 else 0)
    assert abort.far == va
    assert abort.ipa == pfn << 12
    assert abort.hpfar == ((pfn << 12) >> 8) & ~0xF


def test_stage2_grant_and_retry_completes_the_access(rig, stage2):
    m = rig.machine
    m.write_u64(DATA_VA + 16, 0x1122334455667788)
    stage2.revoke(rig.data_pfns[0])
    m.el2 = el2 = RecordingEl2(stage2, grant=True)
    code = rig.load_code("ldr x0, [x0, #16]; ret")
    result = m.call(code, DATA_VA)
    assert result.returned
    assert result.x0 == 0x1122334455667788
    assert len(el2.aborts) == 1


def test_stage2_abort_without_handler_is_a_clear_error(rig, stage2):
    stage2.revoke(rig.data_pfns[1])
    code = rig.load_code("ldr x0, [x0]; ret")
    with pytest.raises(NoAbortHandler, match="no EL2 handler"):
        rig.machine.call(code, DATA_VA + PAGE_SIZE)


def _install_vectors(rig, sync_el1: str, sync_el0: str) -> None:
    m = rig.machine
    table = bytearray(0x800)
    for off, body in ((0x200, sync_el1), (0x400, sync_el0)):
        code = assemble(body, VBAR + off)
        table[off : off + len(code)] = code
    m.load(VBAR, bytes(table), "rx")
    m.cpu.write_sysreg("VBAR_EL1", VBAR)


def test_svc_from_el0_enters_el1_vector_and_eret_returns(rig):
    m = rig.machine
    # EL1 handler: report CurrentEL, ESR, ELR, SPSR in x10..x13, SP_EL0 in x14, then return.
    _install_vectors(
        rig,
        "brk #1",
        "mrs x10, CurrentEL; mrs x11, esr_el1; mrs x12, elr_el1; mrs x13, spsr_el1; mrs x14, sp_el0; eret",
    )
    code = rig.load_code("mov x0, #5; svc #0x42; add x0, x0, #1; ret", USER_CODE_VA, "rxu")
    result = m.call(code, el=0)
    assert result.returned, result.outcome
    r = result.regs
    assert r["x0"] == 6
    assert r["x10"] == 1 << 2
    assert r["x11"] == (0x15 << 26) | (1 << 25) | 0x42  # EC SVC64, IL, imm16
    assert r["x12"] == code + 8  # preferred return: the instruction after svc
    assert r["x13"] & 0xF == 0  # SPSR.M = EL0t
    assert r["x14"] == m.user_stack_top


def test_stage1_fault_from_el1_enters_current_el_spx_vector(rig):
    m = rig.machine
    # The EL1 handler skips the faulting instruction: ELR += 4.
    _install_vectors(rig, "mrs x10, esr_el1; mrs x11, far_el1; mrs x12, elr_el1; add x12, x12, #4; msr elr_el1, x12; eret", "brk #2")
    unmapped = DATA_VA + 0x40_0000
    code = rig.load_code("mov x2, #7; ldr x2, [x0]; ret")
    result = m.call(code, unmapped)
    assert result.returned, result.outcome
    r = result.regs
    assert r["x2"] == 7  # the faulting load did not write its register
    assert r["x10"] >> 26 == 0x25
    assert r["x10"] & 0x3F == 0x06  # translation fault, level 2: that 2 MiB range holds no table
    assert r["x11"] == unmapped
    assert r["x12"] == code + 8


def test_unhandled_exception_without_vectors_is_an_outcome(rig):
    code = rig.load_code("ldr x0, [x0]; ret")
    result = rig.machine.call(code, 0xFFFF_0000_7000_0000)
    assert result.outcome.kind == OutcomeKind.UNHANDLED_EXCEPTION
    assert "VBAR_EL1" in result.outcome.message
    # no entry was made: the CPU still stands at the load, at EL1, ELR/ESR untouched by it
    cpu = rig.machine.cpu
    assert cpu.pc == code and cpu.el == 1 and cpu.read_sysreg("ELR_EL1") != code
    assert not [e for e in result.events if e.kind == "exception-entry"]


@pytest.mark.parametrize("pan", [False, True])
def test_ldtr_from_el1_uses_el0_permissions(rig, pan):
    """ldtr to a privileged-only page faults (permission, level 3) even at EL1; PAN does not apply to it."""
    m = rig.machine
    m.map_page(USER_DATA_VA, rig.data_pfns[1], "rwu")
    m.write_u64(USER_DATA_VA, 0xABCD)
    ok = m.call(rig.load_code("ldtr x0, [x0]; ret"), USER_DATA_VA, pan=pan)
    assert ok.returned and ok.x0 == 0xABCD
    denied = m.call(rig.load_code("ldtr x0, [x0]; ret", CODE_VA + 0x100), DATA_VA, pan=pan)
    assert denied.outcome.kind == OutcomeKind.UNHANDLED_EXCEPTION
    abort = denied.outcome.detail
    assert abort.stage == 1 and abort.unprivileged
    assert abort.esr.ec == 0x25 and abort.esr.dfsc == 0x0F


def test_code_rewritten_in_place_is_classified_again(rig):
    """The LDTR/STTR classification is kept per PC until code is written: the same address holding
    ldr then ldtr then ldr, with data writes in between, is checked as each one in turn."""
    m = rig.machine
    m.map_page(USER_DATA_VA, rig.data_pfns[1], "rwu")
    for text, allowed in (("ldr x0, [x0]; ret", False), ("ldtr x0, [x0]; ret", True), ("ldr x0, [x0]; ret", False)):
        code = rig.load_code(text, CODE_VA + 0x200)
        m.write_u64(USER_DATA_VA, 0x5EED)  # a data write: the classification of code stays what it is
        result = m.call(code, USER_DATA_VA, pan=True)
        if allowed:
            assert result.returned and result.x0 == 0x5EED, text
        else:
            assert result.outcome.kind == OutcomeKind.UNHANDLED_EXCEPTION, text
            assert not result.outcome.detail.unprivileged and result.outcome.detail.esr.dfsc == 0x0F


@pytest.mark.parametrize("pan", [False, True])
def test_pan_blocks_plain_el1_access_to_user_pages(rig, pan):
    m = rig.machine
    m.map_page(USER_DATA_VA, rig.data_pfns[1], "rwu")
    result = m.call(rig.load_code("ldr x0, [x0]; ret"), USER_DATA_VA, pan=pan)
    if pan:
        assert result.outcome.kind == OutcomeKind.UNHANDLED_EXCEPTION
        assert result.outcome.detail.esr.dfsc == 0x0F
    else:
        assert result.returned


def test_msr_pan_from_guest_code_takes_effect(rig):
    m = rig.machine
    m.map_page(USER_DATA_VA, rig.data_pfns[1], "rwu")
    # MSR PAN, #imm (Arm ARM C6.2.229, op1=000 op2=100, CRm=imm): keystone lacks it.
    msr_pan = lambda imm: (0xD500409F | (imm << 8)).to_bytes(4, "little")  # noqa: E731
    ldr = assemble("ldr x1, [x0]", CODE_VA)
    m.load(CODE_VA, msr_pan(0) + ldr + msr_pan(1) + ldr + assemble("ret", CODE_VA), "rx")
    code = CODE_VA
    result = m.call(code, USER_DATA_VA, pan=True)
    assert result.outcome.kind == OutcomeKind.UNHANDLED_EXCEPTION
    assert result.outcome.detail.pc == code + 12


@pytest.mark.parametrize(
    "name",
    ["ESR_EL1", "FAR_EL1", "ELR_EL1", "SPSR_EL1", "VBAR_EL1", "SP_EL0", "TPIDR_EL1"],
)
def test_sysregs_python_and_guest_agree(rig, name):
    m = rig.machine
    asm_name = name.lower()
    value = 0xFFFF_8000_0000_0800 if name == "VBAR_EL1" else 0x0000_1234_5678_9AB0
    if name == "SPSR_EL1":
        value = 0x3C5
    code = rig.load_code(f"mrs x1, {asm_name}; msr {asm_name}, x0; ret")
    m.cpu.write_sysreg(name, value)
    # call() itself sets SP_EL0 to the task page; check the guest sees exactly that.
    new = value ^ 0x1000  # VBAR_EL1[10:0] are RES0: flip a bit every register keeps
    result = m.call(code, new)
    expected_seen = m.task if name == "SP_EL0" else value
    assert result.regs["x1"] == expected_seen
    assert m.cpu.read_sysreg(name) == new


def test_sctlr_and_pan_from_python(rig):
    m = rig.machine
    code = rig.load_code("mrs x0, s3_0_c4_c2_3; ret")  # PAN: keystone has no name for it
    assert m.call(code, pan=True).x0 == 1 << 22
    assert m.call(code, pan=False).x0 == 0
    sctlr = m.cpu.read_sysreg("SCTLR_EL1")
    m.cpu.write_sysreg("SCTLR_EL1", sctlr | (1 << 23))
    assert m.cpu.read_sysreg("SCTLR_EL1") & (1 << 23)


def test_budget_ends_runaway_code(rig):
    code = rig.load_code("1: b 1b".replace("1:", "loop:").replace("1b", "loop"))
    result = rig.machine.call(code, budget=10_000)
    assert result.outcome.kind == OutcomeKind.BUDGET_EXCEEDED


def test_fault_loop_ends_at_event_limit(rig, stage2):
    """An EL2 handler that retries without fixing anything must not hang the run."""
    m = rig.machine
    stage2.revoke(rig.data_pfns[0])

    class Stubborn(RecordingEl2):
        def handle_abort(self, machine, abort):
            return None

    m.el2 = Stubborn(stage2)
    result = m.call(rig.load_code("ldr x0, [x0]; ret"), DATA_VA, max_events=50)
    assert result.outcome.kind == OutcomeKind.EVENT_LIMIT


def test_hvc_reaches_el2_with_imm_and_arguments(rig, stage2):
    m = rig.machine
    m.el2 = el2 = RecordingEl2(stage2)
    code = rig.load_code("movz x0, #0xc600, lsl #16; movk x0, #0x2b; mov x1, #0x1000; hvc #0; ret")
    result = m.call(code)
    assert result.returned
    assert el2.hvcs == [(0, 0xC600002B, 0x1000)]
    assert result.x0 == 0


def test_lse_atomic_executes(rig):
    m = rig.machine
    m.write_u64(DATA_VA, 40)
    # ldadd x1, x2, [x0]: keystone lacks LSE, so the word is written from the Arm ARM encoding
    # (C6.2.125 LDADD: size=11 111000 A=0 R=0 1 Rs 0 000 00 Rn Rt).
    word = 0xF8200000 | (1 << 16) | (0 << 5) | 2
    code = assemble("nop", CODE_VA)[:0] + word.to_bytes(4, "little") + assemble("ret", CODE_VA + 4)
    m.load(CODE_VA, code, "rx")
    result = m.call(CODE_VA, DATA_VA, 2)
    assert result.returned
    assert result.regs["x2"] == 40
    assert m.read_u64(DATA_VA) == 42


def test_pac_and_bti_hints_run_as_nops(rig):
    m = rig.machine
    paciasp, autiasp, bti_c = 0xD503233F, 0xD50323BF, 0xD503245F
    body = b"".join(w.to_bytes(4, "little") for w in (bti_c, paciasp, autiasp))
    m.load(CODE_VA, body + assemble("mov x0, x30; ret", CODE_VA + 12), "rx")
    result = m.call(CODE_VA)
    assert result.returned and result.x0 == m.return_sentinel


def test_trace_is_deterministic_and_disassembled(rig):
    code = rig.load_code("mov x1, #3; loop: subs x1, x1, #1; b.ne loop; ret")
    first = rig.machine.call(code, trace=True)
    second = rig.machine.call(code, trace=True)
    assert [str(s) for s in first.trace] == [str(s) for s in second.trace]
    texts = [s.text for s in first.trace]
    assert texts[0] == "mov x1, #3"
    assert texts.count("subs x1, x1, #1") == 3
    assert texts[-1] == "ret"


def test_call_rejects_bad_arguments(rig):
    with pytest.raises(MachineError):
        rig.machine.call(CODE_VA, *range(9))
    with pytest.raises(MachineError):
        rig.machine.call(CODE_VA, el=2)


def test_fast_register_reads_match_the_binding(rig):
    """Cpu.read64 bypasses the binding (speed); it must agree with uc.reg_read, 32-bit registers included."""
    from unicorn import arm64_const as A

    m = rig.machine
    ids = [getattr(A, f"UC_ARM64_REG_X{i}") for i in range(29)] + [A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30]
    for i, reg in enumerate(ids):
        m.uc.reg_write(reg, (0xF0F0_0000_0000_0000 | i) << (i % 3))
    m.cpu.set_pstate(0x600003C5)
    for reg in ids + [A.UC_ARM64_REG_PC, A.UC_ARM64_REG_SP, A.UC_ARM64_REG_PSTATE, A.UC_ARM64_REG_NZCV]:
        m.cpu.read64(ids[7])  # leave a 64-bit value with high bits in the shared buffer
        assert m.cpu.read64(reg) == m.uc.reg_read(reg), reg


def test_load_into_a_mapped_page_keeps_its_other_bytes(rig):
    m = rig.machine
    first = rig.load_code("mov x0, #7; ret")
    rig.load_code("mov x0, #9; ret", CODE_VA + 0x100)
    assert m.call(first).x0 == 7
    assert m.call(CODE_VA + 0x100).x0 == 9


def test_remove_exit_restores_the_instruction(rig):
    m = rig.machine
    code = rig.load_code("mov x0, #1; mov x0, #2; ret")
    original = m.read(code + 4, 4)
    from emu.outcome import Outcome

    m.add_exit(code + 4, lambda machine: Outcome("stopped", "at the exit"))
    assert m.call(code).outcome.kind == "stopped"
    m.remove_exit(code + 4)
    assert m.read(code + 4, 4) == original
    assert m.call(code).x0 == 2


def test_fast_register_writes_match_the_binding(rig):
    from unicorn import arm64_const as A

    m = rig.machine
    for i in range(31):
        m.cpu.set_x(i, (0x8765_4321_0000_0000 | i) + (1 << 64) * (i % 2))  # values wider than 64 bits wrap
        assert m.uc.reg_read(getattr(A, f"UC_ARM64_REG_X{i}") if i < 29 else (A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30)[i - 29]) == 0x8765_4321_0000_0000 | i


def test_batched_register_access_matches_one_by_one():
    """Cpu.snapshot/set_all_x (one uc_reg_*_batch call) see and set what the single-register path does."""
    import random

    from emu.machine import Machine

    m = Machine(phys_size=4 << 20)
    rng = random.Random(12)
    for pstate in (0x3C5, 0x3C4, 0x400003C5, 0x0):
        values = [rng.getrandbits(64) for _ in range(31)]
        m.cpu.set_all_x(values)
        m.cpu.set_pstate(pstate)
        m.cpu.sp = rng.getrandbits(64) & ~0xF
        one = {f"x{i}": m.cpu.x(i) for i in range(31)}
        one.update(sp=m.cpu.sp, pc=m.cpu.pc, pstate=m.cpu.pstate)
        assert m.cpu.snapshot() == one
        assert m.cpu.all_x() == [one[f"x{i}"] for i in range(31)]
        assert [one[f"x{i}"] for i in range(31)] == values


def test_enter_el1h_leaves_what_the_one_register_at_a_time_path_leaves():
    """Machine.call's entry batch (Cpu.enter_el1h) against set_pstate, the SP setters and set_all_x,
    from every SP selection and EL a call may start in; a non-EL1h PSTATE is refused."""
    import random

    from unicorn import arm64_const as A

    from emu.cpu import PSTATE_PAN, PSTATE_SP
    from emu.machine import Machine

    rng = random.Random(5)
    u64 = lambda: rng.getrandbits(64) & ~0xF  # noqa: E731
    def state(m):
        cpu = m.cpu
        return (cpu.snapshot(), cpu.sp_el0, cpu.sp_el1, cpu.read_sysreg("SCTLR_EL1"), cpu.el, cpu.pan)

    for old in (0x0, 0x4, 0x5, 0x3C5 | PSTATE_PAN, 0x3C4):
        for new in (0x3C5, 0x3C5 | PSTATE_PAN, 0x5):
            one, batched = Machine(phys_size=4 << 20), Machine(phys_size=4 << 20)
            start = [u64() for _ in range(3)]
            for m in (one, batched):
                m.cpu.write64(A.UC_ARM64_REG_PSTATE, old)
                m.cpu.write64(A.UC_ARM64_REG_SP_EL0, start[0])
                m.cpu.write64(A.UC_ARM64_REG_SP_EL1, start[1])
                m.cpu.sp = start[2]
            sp, sp0, x = u64(), u64(), [rng.getrandbits(64) for _ in range(31)]
            one.cpu.set_pstate(new)
            one.cpu.sp = sp
            one.cpu.set_all_x(x)
            one.cpu.sp_el0 = sp0
            batched.cpu.enter_el1h(new, sp, sp0, x)
            assert state(batched) == state(one), (hex(old), hex(new))
            assert batched.cpu.sp == batched.cpu.sp_el1 == sp and batched.cpu.el == 1
    m = Machine(phys_size=4 << 20)
    for bad in (0x4, 0x0, 0x9):  # EL1t, EL0t, EL2h
        with pytest.raises(ValueError):
            m.cpu.enter_el1h(bad, 0, 0, [0] * 31)
    with pytest.raises(ValueError):
        m.cpu.enter_el1h(0x4 | PSTATE_SP, 0, 0, [0] * 30)


def test_batched_entry_exit_and_pstate_switch_match_one_register_at_a_time():
    """entry_frame / exit_frame / set_pstate / take_exception move registers in batches; what they
    read and leave must be what the register-at-a-time path gives, in every SP selection."""
    import random

    from unicorn import arm64_const as A

    from emu.cpu import PSTATE_PAN, PSTATE_SP, VectorKind
    from emu.machine import Machine

    m = Machine(phys_size=4 << 20)
    cpu = m.cpu
    rng = random.Random(7)
    u64 = lambda: rng.getrandbits(64) & ~0xF  # noqa: E731
    # EL0t, EL1t, EL1h; each with and without PAN and with flags set
    states = [0x0, 0x4, 0x5, 0x4 | PSTATE_PAN, 0x5 | 0x6000_0000, 0x3C5, 0x3C4]
    def enter(pstate: int) -> tuple[int, int]:
        """PSTATE and both SP banks set one register at a time, the live SP the selected bank's."""
        cpu.write64(A.UC_ARM64_REG_PSTATE, pstate)
        sp0, sp1 = u64(), u64()
        cpu.write64(A.UC_ARM64_REG_SP_EL0, sp0)
        cpu.write64(A.UC_ARM64_REG_SP_EL1, sp1)
        cpu.sp = sp0 if ((pstate >> 2) & 3) == 0 or not pstate & PSTATE_SP else sp1
        return sp0, sp1

    for old in states:
        for new in states:
            sp0, sp1 = enter(old)
            cpu.set_pstate(new)
            assert cpu.pstate == new
            assert (cpu.sp_el0, cpu.sp_el1) == (sp0, sp1), (old, new)
            assert cpu.sp == (sp0 if ((new >> 2) & 3) == 0 or not new & PSTATE_SP else sp1)
            # kernel_entry's frame: x0-x30, the interrupted SP (SP_EL0 from EL0), ELR, SPSR
            values = [rng.getrandbits(64) for _ in range(31)]
            cpu.set_all_x(values)
            elr, spsr = u64(), rng.choice(states)
            cpu.write_sysreg("ELR_EL1", elr)
            cpu.write_sysreg("SPSR_EL1", spsr)
            interrupted = cpu.sp_el0 if (spsr >> 2) & 3 == 0 else cpu.sp
            assert cpu.entry_frame() == (values, interrupted, elr, spsr)
            esr, far = u64() & 0xFFFF_FFFF, u64()
            cpu.write_sysreg("ESR_EL1", esr)
            cpu.write_sysreg("FAR_EL1", far)
            assert cpu.entry_frame_and_syndrome() == ((values, interrupted, elr, spsr), esr, far)
            # kernel_exit: the frame written back, SP_EL0 (returning to EL0) or the current SP
            back = [rng.getrandbits(64) for _ in range(31)]
            to_sp, to_elr = u64(), u64()
            keep_other = cpu.sp if (spsr >> 2) & 3 == 0 else cpu.sp_el0
            resume_at = rng.choice([None, u64()])
            pc_before = cpu.pc
            cpu.exit_frame(back, to_sp, to_elr, spsr, resume_at=resume_at)
            assert cpu.pc == (pc_before if resume_at is None else resume_at)
            assert [cpu.x(i) for i in range(31)] == back
            assert (cpu.read_sysreg("ELR_EL1"), cpu.read_sysreg("SPSR_EL1")) == (to_elr, spsr)
            if (spsr >> 2) & 3 == 0:
                assert cpu.sp_el0 == to_sp
                if ((new >> 2) & 3) != 0 and new & PSTATE_SP:
                    assert cpu.sp == keep_other
            else:
                assert cpu.sp == to_sp
                if ((new >> 2) & 3) != 0 and new & PSTATE_SP:  # SP is SP_EL1 here: SP_EL0 untouched
                    assert cpu.sp_el0 == keep_other
    # exception entry: the registers the Arm ARM's TakeException sets, read back one at a time
    cpu.write_sysreg("VBAR_EL1", 0xFFFF_0000_1234_0000)
    for old in states:
        sp0, sp1 = enter(old)
        entry = cpu.take_exception(esr=0x9600_0045, far=0xDEAD_B000, return_pc=0x4000_1000, kind=VectorKind.SYNC)
        assert cpu.read_sysreg("ELR_EL1") == 0x4000_1000 and cpu.read_sysreg("SPSR_EL1") == old
        assert cpu.read_sysreg("ESR_EL1") == 0x9600_0045 and cpu.read_sysreg("FAR_EL1") == 0xDEAD_B000
        assert cpu.el == 1 and cpu.pstate & PSTATE_SP and cpu.pc == entry.vector
        assert entry.vector == 0xFFFF_0000_1234_0000 + (0x400 if (old >> 2) & 3 == 0 else 0x200 if old & PSTATE_SP else 0)
        assert (cpu.sp_el0, cpu.sp_el1, cpu.sp) == (sp0, sp1, sp1)


def test_system_registers_fast_path_matches_the_binding():
    """Cpu's direct uc_reg_* calls for system registers read and write what Unicorn's own cpr/reg calls do."""
    from unicorn import arm64_const as A

    from emu.cpu import _CP, _REG
    from emu.machine import Machine

    m = Machine(phys_size=4 << 20)
    for name, enc in _CP.items():
        assert m.cpu.read_sysreg(name) == m.uc.cpr_read(*enc), name
    m.cpu.write_sysreg("SPSR_EL1", 0x600003C5)
    assert m.uc.cpr_read(*_CP["SPSR_EL1"]) == 0x600003C5
    for i, name in enumerate(_REG):
        if name == "PAR_EL1":
            continue
        value = 0xFFFF_8000_0000_0000 | (i << 12)
        m.cpu.write_sysreg(name, value)
        assert m.uc.reg_read(_REG[name]) == value == m.cpu.read_sysreg(name), name
    m.cpu.pc = 0xFFFF_8000_1234_5678
    assert m.uc.reg_read(A.UC_ARM64_REG_PC) == 0xFFFF_8000_1234_5678


def test_event_messages_format_once_when_read_and_compare_as_text():
    """Events may carry a recipe for their message (formatted on first read, once): they compare,
    hash, print, pickle and copy as the event with the formatted text would."""
    import copy
    import pickle

    from emu.outcome import Event

    calls = []

    def recipe() -> str:
        calls.append(1)
        return "idmap pfn 0x4000e"

    lazy = Event.make(3, "idmap", 0x1000, 1, recipe, {"pfn": 0x4000E})
    plain = Event(3, "idmap", 0x1000, 1, "idmap pfn 0x4000e", {"pfn": 0x4000E})
    assert calls == []
    assert lazy == plain and hash(lazy) == hash(plain) and str(lazy) == str(plain) and repr(lazy) == repr(plain)
    assert lazy.message == "idmap pfn 0x4000e" and calls == [1]  # formatted once
    assert pickle.loads(pickle.dumps(Event.make(4, "k", 1, 0, lambda: "m", {}))) == Event(4, "k", 1, 0, "m", {})
    assert copy.deepcopy(lazy) == plain
    assert Event.make(3, "idmap", 0x1000, 1, lambda: "other", {}) != plain


@pytest.mark.parametrize("caller_enabled", [True, False])
def test_a_run_pauses_automatic_collection_and_puts_the_callers_setting_back(caller_enabled):
    """Machine.run disables the cyclic GC while it runs (docs/performance.md: the collector's passes
    over a run's live events) and restores what the caller had, also when a handler raises."""
    import gc

    from emu.machine import Machine

    m = Machine(phys_size=4 << 20)
    m.load(CODE_VA, assemble("brk #1\n ret", CODE_VA), "rx")
    seen = []

    def handler(machine):
        seen.append(gc.isenabled())
        raise RuntimeError("a handler's bug")

    m.add_exit(CODE_VA, handler)
    was = gc.isenabled()
    try:
        (gc.enable if caller_enabled else gc.disable)()
        with pytest.raises(RuntimeError, match="a handler's bug"):
            m.call(CODE_VA)
        assert seen == [False]  # paused inside the run
        assert gc.isenabled() is caller_enabled
        m.remove_exit(CODE_VA)
        m.load(CODE_VA, assemble("ret", CODE_VA), "rx")
        assert m.call(CODE_VA).returned and gc.isenabled() is caller_enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_write_regs_batch_equals_single_writes_and_refuses_banked_registers():
    """Cpu.write_regs (one batch) leaves what set_x / sp / pc one at a time leave; PSTATE and the
    banked SPs are refused (their setters have side effects a plain write would skip)."""
    import random

    from emu.machine import Machine

    rng = random.Random(3)
    a, b = Machine(phys_size=4 << 20).cpu, Machine(phys_size=4 << 20).cpu
    for _ in range(20):
        names = rng.sample([f"x{i}" for i in range(31)] + ["sp", "pc"], 7)
        values = [rng.getrandbits(64) & ~0x3 for _ in names]
        a.write_regs(tuple(zip(names, values)))
        for name, value in zip(names, values):
            if name == "sp":
                b.sp = value
            elif name == "pc":
                b.pc = value
            else:
                b.set_x(int(name[1:]), value)
        assert a.snapshot() == b.snapshot()
    for bad in ("sp_el0", "pstate", "SPSR_EL1"):
        with pytest.raises(KeyError, match="write_regs writes x0-x30"):
            a.write_regs(((bad, 0),))


def test_narrow_registers_read_without_stale_upper_bytes():
    """Unicorn stores only the low 4, 2 or 1 bytes of a narrow register (PSTATE, NZCV, Wn, Sn, Hn,
    Bn, ...): read64 must not show the bytes an earlier 64-bit read left in its buffer."""
    from unicorn import arm64_const as A

    from emu.machine import Machine

    m = Machine(phys_size=4 << 20)
    cpu = m.cpu
    cpu.set_x(0, 0x0123_4567_89AB_CDEF)
    cpu.set_x(5, 0xFFFF_FFFF_FFFF_FFFF)
    cpu.set_q(3, (0xFFEE_DDCC_BBAA_9988 << 64) | 0x7766_5544_3322_1100)
    narrow = {
        A.UC_ARM64_REG_W0: 0x89AB_CDEF, A.UC_ARM64_REG_S3: 0x3322_1100, A.UC_ARM64_REG_H3: 0x1100,
        A.UC_ARM64_REG_B3: 0x00, A.UC_ARM64_REG_PSTATE: m.uc.reg_read(A.UC_ARM64_REG_PSTATE),
        A.UC_ARM64_REG_NZCV: m.uc.reg_read(A.UC_ARM64_REG_NZCV), A.UC_ARM64_REG_WZR: 0,
    }
    for reg, want in narrow.items():
        assert cpu.read64(A.UC_ARM64_REG_X5) == 0xFFFF_FFFF_FFFF_FFFF  # fills the shared buffer
        assert cpu.read64(reg) == want, reg
    # and in a batch: a PSTATE slot after a read that filled it with a 64-bit value
    batch = cpu._banks_read
    cpu.write64(A.UC_ARM64_REG_SP, 0xFFFF_FFFF_FFFF_FFF0)
    pstate = m.uc.reg_read(A.UC_ARM64_REG_PSTATE)
    batch.vals[0] = 0xFFFF_FFFF_0000_0000
    assert batch.read(cpu)[0] == pstate
