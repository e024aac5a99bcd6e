"""The host kernel's fault path (host/): DFSC routing, decision order, EL0 signals, nested faults.

Faults the emulated hardware produces (stage-1 translation and permission
faults, stage-2 aborts injected by the pKVM model) are produced by running
code; the other fault codes are entered through the architectural exception
entry with a chosen ESR/FAR, as the hardware would have delivered them.
Expected results come from reference_fault.py (fault.c's table and handlers).
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from conftest import CODE_VA, DATA_VA, USER_CODE_VA, USER_DATA_VA
from emu.cpu import VectorKind
from kimage.extable_format import ExType, pack_err_zero, pack_zeropad
from emu.memory import PAGE_SIZE
from hyp.ownership import PageState
from reference_fault import (
    EC_DABT_CUR,
    EC_DABT_LOW,
    EFAULT,
    ESR_FNV,
    ESR_IL,
    ESR_S1PTW,
    FAULT_INFO,
    GUEST_PATTERN,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SIGBUS,
    BUS_OBJERR,
    SIGKILL,
    SIGSEGV,
    Expect,
    enter_sync,
    expected_el0_synthetic,
    expected_el1_synthetic,
    make_system,
    neg,
    oops_line,
)

KERNEL_UNMAPPED = 0xFFFF_0000_0070_0000
USER_UNMAPPED = 0x0000_0000_0090_0000
RO_VA = 0xFFFF_0000_0020_0000
WO_VA = 0xFFFF_0000_0020_1000
NX_VA = 0xFFFF_0000_0020_2000
USER_RO_VA = 0x0000_0000_0041_0000
USER_RX_VA = 0x0000_0000_0042_0000
GFN = 0x10


def check(result, expect: Expect) -> None:
    """Compare one run's ending with the reference's expectation."""
    outcome = result.outcome
    if expect.kind == "oops":
        assert outcome.kind == "host-oops", outcome
        assert outcome.message == expect.line
    elif expect.kind == "signal":
        assert outcome.kind == "task-killed", outcome
        sig = outcome.detail
        assert (sig.signo, sig.code, sig.addr) == (expect.signo, expect.code, expect.addr)
    elif expect.kind == "fixup":
        assert outcome.kind == "returned", outcome
        assert result.x0 == neg(EFAULT)
    elif expect.kind == "retry":
        assert outcome.kind == "returned", outcome
        assert result.x0 == 0x77
    else:
        raise AssertionError(expect)


# --------------------------------------------------------------------------------------------
# Faults the hardware produces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HwCase:
    el: int
    text: str
    arg: int
    expect: Expect
    maps: tuple = ()  # (va, perms) pages mapped to fresh frames
    pan: bool = True
    fixup: bool = False  # UACCESS_ERR_ZERO at the first instruction: err -> x0, zero -> x1, resume at +12
    mm: bool = False  # run in a user task (current->mm): fault.c takes a kernel thread's user fault to no_context


def _oops(message: str, far: int) -> Expect:
    return Expect("oops", oops_line(message, far))


def _sig(signo: int, code: int, addr: int) -> Expect:
    return Expect("signal", signo=signo, code=code, addr=addr)


HW_CASES = {
    # EL1, kernel addresses: do_translation_fault -> do_bad_area -> __do_kernel_fault
    "el1-load-unmapped-kernel": HwCase(1, "ldr x1, [x0]; ret", KERNEL_UNMAPPED, _oops("paging request", KERNEL_UNMAPPED)),
    "el1-store-unmapped-kernel": HwCase(1, "str x1, [x0]; ret", KERNEL_UNMAPPED, _oops("paging request", KERNEL_UNMAPPED)),
    "el1-load-unmapped-kernel-fixup": HwCase(
        1, "ldr x1, [x0]; mov x0, x1; ret; ret", KERNEL_UNMAPPED, Expect("fixup"), fixup=True
    ),
    "el1-null-deref": HwCase(1, "ldr x1, [x0]; ret", 0x10, _oops("NULL pointer dereference", 0x10)),
    "el1-null-deref-last-byte": HwCase(1, "ldrb w1, [x0]; ret", 0xFFF, _oops("NULL pointer dereference", 0xFFF)),
    "el1-first-non-null-page": HwCase(1, "ldr x1, [x0]; ret", 0x1000, _oops("paging request", 0x1000)),
    "el1-store-read-only": HwCase(
        1, "str x1, [x0, #8]; ret", RO_VA, _oops("write to read-only memory", RO_VA + 8), maps=((RO_VA, "r"),)
    ),
    "el1-load-unreadable": HwCase(
        1, "ldr x1, [x0]; ret", WO_VA, _oops("read from unreadable memory", WO_VA), maps=((WO_VA, "w"),)
    ),
    "el1-exec-non-executable": HwCase(
        1, "blr x0; ret", NX_VA, _oops("execute from non-executable memory", NX_VA), maps=((NX_VA, "rw"),)
    ),
    "el1-exec-unmapped-no-fixup-for-iabt": HwCase(
        1, "blr x0; ret", KERNEL_UNMAPPED, _oops("paging request", KERNEL_UNMAPPED)
    ),
    # EL1, user addresses: do_page_fault
    "el1-exec-user-memory": HwCase(
        1, "blr x0; ret", USER_RX_VA, _oops("execution of user memory", USER_RX_VA), maps=((USER_RX_VA, "rxu"),), mm=True
    ),
    "el1-pan-load-user-outside-uaccess": HwCase(
        1,
        "ldr x1, [x0]; ret",
        USER_DATA_VA,
        _oops("access to user memory outside uaccess routines", USER_DATA_VA),
        maps=((USER_DATA_VA, "rwu"),),
        mm=True,
    ),
    "el1-load-unmapped-user": HwCase(1, "ldr x1, [x0]; ret", USER_UNMAPPED, _oops("paging request", USER_UNMAPPED)),
    "el1-ldtr-unmapped-user-fixup": HwCase(
        1, "ldtr x1, [x0]; mov x0, x1; ret; ret", USER_UNMAPPED, Expect("fixup"), fixup=True
    ),
    # EL0
    "el0-load-unmapped-user": HwCase(0, "ldr x1, [x0]; ret", USER_UNMAPPED, _sig(SIGSEGV, SEGV_MAPERR, USER_UNMAPPED)),
    "el0-store-read-only-user": HwCase(
        0, "str x1, [x0]; ret", USER_RO_VA, _sig(SIGSEGV, SEGV_ACCERR, USER_RO_VA), maps=((USER_RO_VA, "ru"),)
    ),
    "el0-exec-non-executable-user": HwCase(
        0, "blr x0; ret", USER_RO_VA, _sig(SIGSEGV, SEGV_ACCERR, USER_RO_VA), maps=((USER_RO_VA, "rwu"),)
    ),
    "el0-load-kernel-mapped": HwCase(0, "ldr x1, [x0]; ret", DATA_VA, _sig(SIGSEGV, SEGV_MAPERR, DATA_VA)),
    "el0-load-kernel-unmapped": HwCase(
        0, "ldr x1, [x0]; ret", KERNEL_UNMAPPED, _sig(SIGSEGV, SEGV_MAPERR, KERNEL_UNMAPPED)
    ),
}


@pytest.mark.parametrize("case", HW_CASES.values(), ids=HW_CASES.keys())
def test_hardware_fault_is_routed_as_fault_c_does(case):
    s = make_system("inject")
    s.kernel.task.mm = case.mm
    for va, perms in case.maps:
        s.machine.map_new(va, 1, perms)
    code = s.load(case.text, USER_CODE_VA if case.el == 0 else CODE_VA, "rxu" if case.el == 0 else "rx")
    if case.fixup:
        s.add_extable(code, code + 12, ExType.UACCESS_ERR_ZERO, pack_err_zero(0, 1))
    result = s.machine.call(code, case.arg, el=case.el, pan=case.pan)
    check(result, case.expect)
    if case.expect.kind == "oops":
        die = result.outcome.detail
        assert die.regs["pc"] == (case.arg if case.text.startswith("blr") else code)  # ELR: the faulting insn


def test_el1_pan_off_reads_user_memory():
    s = make_system("inject")
    (pfn,) = s.machine.map_new(USER_DATA_VA, 1, "rwu")
    s.machine.write_u64(USER_DATA_VA, 0x1122_3344_5566_7788)
    result = s.machine.call(s.load("ldr x0, [x0]; ret"), USER_DATA_VA, pan=False)
    assert result.returned and result.x0 == 0x1122_3344_5566_7788


def test_uaccess_cpy_on_the_kernel_side_is_outside_uaccess_routines():
    # extable.c insn_may_access_user(): a UACCESS_CPY entry passes only when ESR.WnR == data bit 0.
    s = make_system("inject")
    s.machine.map_new(USER_DATA_VA, 1, "rwu")
    code = s.load("ldr x1, [x0]; ret; ret; ret")
    s.add_extable(code, code + 12, ExType.UACCESS_CPY, 1)  # the user side of this copy writes
    s.kernel.task.mm = True  # a user task's copy: a kernel thread would not reach insn_may_access_user()
    result = s.machine.call(code, USER_DATA_VA)
    check(result, _oops("access to user memory outside uaccess routines", USER_DATA_VA))


def test_oops_carries_the_decoded_syndrome_and_registers():
    s = make_system("inject")
    code = s.load("ldr x1, [x0]; ret")
    result = s.machine.call(code, KERNEL_UNMAPPED)
    die = result.outcome.detail
    report = die.report().splitlines()
    assert report[0] == oops_line("paging request", KERNEL_UNMAPPED)
    assert report[1] == "Mem abort info:" and report.count("Mem abort info:") == 1
    assert f"  ESR = 0x{die.esr:016x}" in report
    assert die.esr >> 26 == EC_DABT_CUR and die.far == KERNEL_UNMAPPED
    assert f"pc : {code:016x}" in report and die.regs["x0"] == KERNEL_UNMAPPED


# --------------------------------------------------------------------------------------------
# Every DFSC, entered architecturally with a chosen ESR
# --------------------------------------------------------------------------------------------

SYN_PC = CODE_VA + 0x800  # "mov x0, #0x77; ret; ret", with an ERR_ZERO entry -> +8
SYN_PC_NOFIXUP = SYN_PC + 12  # "mov x0, #0x77; ret", no entry


@pytest.fixture(scope="module")
def syn():
    """One system for the synthetic entries: every run starts from a freshly set-up context."""
    s = make_system("inject")
    s.load("mov x0, #0x77; ret; ret; mov x0, #0x77; ret", SYN_PC)  # Machine.load maps a fresh page each time
    s.add_extable(SYN_PC, SYN_PC + 8, ExType.UACCESS_ERR_ZERO, pack_err_zero(0, 1))
    s.load("mov x0, #0x77; ret", USER_CODE_VA, "rxu")
    return s


def _enter(s, *, el: int, esr: int, far: int, pc: int):
    return enter_sync(s, el=el, esr=esr, far=far, pc=pc)


@pytest.mark.parametrize("fixup", [False, True], ids=["no-fixup", "fixup"])
@pytest.mark.parametrize("dfsc", range(64), ids=lambda d: f"dfsc{d:#04x}")
def test_el1_data_abort_every_dfsc(syn, dfsc, fixup):
    esr = (EC_DABT_CUR << 26) | ESR_IL | dfsc
    result = _enter(syn, el=1, esr=esr, far=KERNEL_UNMAPPED, pc=SYN_PC if fixup else SYN_PC_NOFIXUP)
    check(result, expected_el1_synthetic(dfsc, KERNEL_UNMAPPED, esr, has_fixup=fixup))


@pytest.mark.parametrize("dfsc", range(64), ids=lambda d: f"dfsc{d:#04x}")
def test_el0_data_abort_every_dfsc(syn, dfsc):
    esr = (EC_DABT_LOW << 26) | ESR_IL | dfsc
    result = _enter(syn, el=0, esr=esr, far=USER_UNMAPPED, pc=USER_CODE_VA)
    check(result, expected_el0_synthetic(dfsc, USER_UNMAPPED))


def test_el0_external_abort_with_fnv_reports_no_address(syn):
    # fault.c do_sea(): FAR is not valid when ESR.FnV is set, so si_addr is 0.
    esr = (EC_DABT_LOW << 26) | ESR_IL | ESR_FNV | 0x10
    result = _enter(syn, el=0, esr=esr, far=USER_UNMAPPED, pc=USER_CODE_VA)
    check(result, expected_el0_synthetic(0x10, USER_UNMAPPED, fnv=True))
    assert result.outcome.detail.signo == FAULT_INFO[0x10].sig == SIGBUS and result.outcome.detail.code == BUS_OBJERR


@pytest.mark.parametrize("kind", [VectorKind.IRQ, VectorKind.FIQ, VectorKind.SERROR], ids=lambda k: k.name)
def test_unexpected_vectors_end_the_run(syn, kind):
    m = syn.machine
    m.cpu.set_pstate(0b0101 | (0xF << 6))
    entry = m.cpu.take_exception(esr=0, far=None, return_pc=SYN_PC_NOFIXUP, kind=kind)
    result = m.run(entry.vector)
    assert result.outcome.kind == "unexpected-vector"


# --------------------------------------------------------------------------------------------
# The pKVM marker (ESR.S1PTW) and the kernel that sees it
# --------------------------------------------------------------------------------------------

# (kernel: pkvm initialised, force-reclaim path) x (FAR mapped at stage 1?) -> expectation.
# fault.c is_spurious_el1_translation_fault(): AT S1E1R succeeds -> spurious (retry), or with a
# pKVM abort the force-reclaim hypercall decides (0/-EAGAIN -> retry); AT fails -> not spurious.
S1PTW_CASES = {
    "no-pkvm-at-ok": ("rme-gpc-reclaim", True, Expect("retry")),
    "no-pkvm-at-fails": ("rme-gpc-reclaim", False, _oops("paging request", KERNEL_UNMAPPED)),
    # a pKVM host without the force-reclaim path (before the series): "access to hypervisor-protected memory"
    "pkvm-no-reclaim-at-ok": ("inject", True, None),
    "pkvm-no-reclaim-at-fails": ("inject", False, _oops("access to hypervisor-protected memory", KERNEL_UNMAPPED)),
    "pkvm-reclaim-eagain": ("inject-reclaim", True, Expect("retry")),
    "pkvm-reclaim-at-fails": ("inject-reclaim", False, _oops("access to hypervisor-protected memory", KERNEL_UNMAPPED)),
}


@pytest.mark.parametrize("case", S1PTW_CASES.values(), ids=S1PTW_CASES.keys())
def test_s1ptw_marked_el1_translation_fault(case):
    policy, mapped, expect = case
    # "no-reclaim" cases: a host kernel with injection support but without the force-reclaim path
    s = make_system(policy, force_reclaim=policy != "inject")
    s.load("mov x0, #0x77; ret", SYN_PC)
    far = DATA_VA + 0x30 if mapped else KERNEL_UNMAPPED
    expect = expect or _oops("access to hypervisor-protected memory", far)
    esr = (EC_DABT_CUR << 26) | ESR_IL | ESR_S1PTW | 0x07
    result = _enter(s, el=1, esr=esr, far=far, pc=SYN_PC)
    check(result, expect)
    hvcs = result.events_of("hvc")
    if policy == "inject-reclaim" and mapped:
        # The host owns the frame: EL2 answers -EAGAIN, which the kernel counts as handled.
        (hypercall,) = result.events_of("hypercall")
        assert hypercall.data["results"] == [neg(11)]
        assert hvcs[0].data["imm"] == 0
    else:
        assert hvcs == []


@pytest.mark.parametrize("policy, expect", [("inject", _sig(SIGSEGV, SEGV_ACCERR, USER_UNMAPPED)),
                                            ("rme-gpc-reclaim", _sig(SIGSEGV, SEGV_MAPERR, USER_UNMAPPED))])
def test_s1ptw_marked_el0_fault_is_accerr_before_any_vma_lookup(policy, expect):
    s = make_system(policy)
    s.load("mov x0, #0x77; ret", USER_CODE_VA, "rxu")
    esr = (EC_DABT_LOW << 26) | ESR_IL | ESR_S1PTW | 0x07
    check(_enter(s, el=0, esr=esr, far=USER_UNMAPPED, pc=USER_CODE_VA), expect)


# --------------------------------------------------------------------------------------------
# Decision order on a guest page
# --------------------------------------------------------------------------------------------

UACCESS = "ldtr x1, [x0]; mov x0, x1; ret; ret"  # UACCESS_ERR_ZERO at +0 -> +12
PLAIN = "ldr x1, [x0]; mov x0, x1; ret"


def _guest_page_system(policy: str):
    s = make_system(policy)
    pfn = s.data_pfns[1]
    s.machine.map_page(USER_DATA_VA, pfn, "rwu")
    s.donate(pfn, GFN)
    uaccess = s.load(UACCESS)
    s.add_extable(uaccess, uaccess + 12, ExType.UACCESS_ERR_ZERO, pack_err_zero(0, 1))
    plain = s.load(PLAIN, CODE_VA + PAGE_SIZE)
    return s, pfn, uaccess, plain


def test_inject_reclaim_fixes_up_a_uaccess_and_reclaims_only_for_a_plain_access():
    s, pfn, uaccess, plain = _guest_page_system("inject-reclaim")
    fixed = s.machine.call(uaccess, USER_DATA_VA + 8)
    assert fixed.returned and (fixed.x0, fixed.regs["x1"]) == (neg(EFAULT), 0)
    assert fixed.events_of("hvc") == [] and fixed.events_of("reclaim") == []
    assert [f.data["fixup"].kind for f in fixed.events_of("fixup")] == [ExType.UACCESS_ERR_ZERO]
    assert s.own.guest_state(s.guest, GFN) is PageState.OWNED
    assert s.frame(pfn) == bytes([GUEST_PATTERN]) * PAGE_SIZE

    reclaimed = s.machine.call(plain, DATA_VA + PAGE_SIZE + 8)
    assert reclaimed.returned and reclaimed.x0 == 0
    (hvc,) = reclaimed.events_of("hvc")
    (hypercall,) = reclaimed.events_of("hypercall")
    assert hypercall.data["name"] == "__pkvm_force_reclaim_guest_page" and hypercall.data["results"] == [0]
    assert s.own.guest_state(s.guest, GFN) is PageState.POISON
    assert s.frame(pfn) == bytes(PAGE_SIZE)
    # The page is the host's again: the user alias reads the zeroed frame without any fault.
    again = s.machine.call(uaccess, USER_DATA_VA + 8)
    assert again.returned and again.x0 == 0 and again.events_of("abort") == []


def test_inject_oopses_on_a_plain_access_and_fixes_up_a_uaccess():
    s, pfn, uaccess, plain = _guest_page_system("inject")
    fixed = s.machine.call(uaccess, USER_DATA_VA)
    assert fixed.returned and fixed.x0 == neg(EFAULT)
    died = s.machine.call(plain, DATA_VA + PAGE_SIZE + 0x10)
    check(died, _oops("access to hypervisor-protected memory", DATA_VA + PAGE_SIZE + 0x10))
    # The 7.x host asks for a force-reclaim; the pre-patch EL2 answers SMCCC NOT_SUPPORTED (-1).
    (hypercall,) = died.events_of("hypercall")
    assert hypercall.data["status"] == (1 << 64) - 1
    assert s.own.guest_state(s.guest, GFN) is PageState.OWNED
    assert s.frame(pfn) == bytes([GUEST_PATTERN]) * PAGE_SIZE


# --------------------------------------------------------------------------------------------
# EL0: SIGSEGV to a handler registered with rt_sigaction, resumed through rt_sigreturn
# --------------------------------------------------------------------------------------------

SIGACTION = """
    mov x8, #134
    mov x0, #11
    adr x1, handler
    svc #0
"""
EL0_PROGRAM = """
    mov x19, x0
    mov x20, x1
{sigaction}
    ldr x1, [x19]
    mov x0, x1
    ret
resume:
    mov x0, #0x55
    ret
handler:
    stp x0, x1, [x20]
    stp x2, x3, [x20, #16]
    adr x0, resume
    ret
"""
SCRATCH_VA = USER_DATA_VA + 0x10_0000


def _el0_system(policy: str, handler: bool):
    s = make_system(policy)
    pfn = s.data_pfns[1]
    s.machine.map_page(USER_DATA_VA, pfn, "rwu")
    s.machine.map_new(SCRATCH_VA, 1, "rwu")
    s.donate(pfn, GFN)
    code = s.load(EL0_PROGRAM.format(sigaction=SIGACTION if handler else ""), USER_CODE_VA, "rxu")
    fault_pc = code + (6 if handler else 2) * 4
    return s, pfn, code, fault_pc


@pytest.mark.parametrize("policy", ["inject", "inject-reclaim"])
def test_el0_handler_gets_segv_accerr_and_resumes(policy):
    s, pfn, code, fault_pc = _el0_system(policy, handler=True)
    far = USER_DATA_VA + 0x28
    result = s.machine.call(code, far, SCRATCH_VA, el=0)
    assert result.returned, result.outcome
    assert result.x0 == 0x55  # rt_sigreturn resumed at the pc the handler returned
    seen = [s.machine.read_u64(SCRATCH_VA + 8 * i) for i in range(4)]
    assert seen == [SIGSEGV, far, SEGV_ACCERR, fault_pc]
    assert s.own.guest_state(s.guest, GFN) is PageState.OWNED
    assert s.frame(pfn) == bytes([GUEST_PATTERN]) * PAGE_SIZE
    (signal,) = result.events_of("signal")
    assert signal.data["signal"].addr == far


def test_el0_without_handler_is_killed():
    s, pfn, code, fault_pc = _el0_system("inject-reclaim", handler=False)
    result = s.machine.call(code, USER_DATA_VA + 0x28, SCRATCH_VA, el=0)
    check(result, _sig(SIGSEGV, SEGV_ACCERR, USER_DATA_VA + 0x28))
    assert result.outcome.detail.pc == fault_pc
    assert s.own.guest_state(s.guest, GFN) is PageState.OWNED


@pytest.mark.parametrize("policy", ["reclaim", "rme-gpc-reclaim"])
def test_el0_under_reclaim_gets_no_signal_and_the_guest_loses_the_page(policy):
    s, pfn, code, fault_pc = _el0_system(policy, handler=True)
    result = s.machine.call(code, USER_DATA_VA + 0x28, SCRATCH_VA, el=0)
    assert result.returned and result.x0 == 0
    assert result.events_of("signal") == []
    assert s.machine.read(SCRATCH_VA, 32) == bytes(32)  # the handler never ran
    assert s.own.guest_state(s.guest, GFN) is PageState.POISON
    assert s.frame(pfn) == bytes(PAGE_SIZE)


def test_el0_gpf_injected_by_el3_is_sigkill_even_with_a_handler():
    # fault.c: DFSC 0x28 is do_bad with SIGKILL; no handler can catch it.
    s, pfn, code, fault_pc = _el0_system("rme-gpc-el3-inject", handler=True)
    result = s.machine.call(code, USER_DATA_VA + 0x28, SCRATCH_VA, el=0)
    check(result, _sig(SIGKILL, 0x80, USER_DATA_VA + 0x28))


# --------------------------------------------------------------------------------------------
# A fault inside a fixup: the zeropad handler's aligned re-read faults
# --------------------------------------------------------------------------------------------

ZEROPAD = "ldr x1, [x0]; mov x0, x1; ret"


@pytest.mark.parametrize("policy", ["inject", "inject-reclaim"])
def test_zeropad_whose_first_page_is_unmapped_oopses_in_the_fixup(policy):
    s = make_system(policy)
    code = s.load(ZEROPAD)
    s.add_extable(code, code + 4, ExType.LOAD_UNALIGNED_ZEROPAD, pack_zeropad(1, 0))
    addr = KERNEL_UNMAPPED + 0x13
    result = s.machine.call(code, addr)
    # The handler's own load (no extable entry) faults on the aligned word: a plain kernel oops.
    check(result, _oops("paging request", addr & ~7))
    assert [f.data["fixup"] for f in result.events_of("fixup")] == []


def test_zeropad_whose_first_page_is_donated_oopses_under_inject():
    s = make_system("inject")
    pfn = s.data_pfns[1]
    s.donate(pfn, GFN)
    code = s.load(ZEROPAD)
    s.add_extable(code, code + 4, ExType.LOAD_UNALIGNED_ZEROPAD, pack_zeropad(1, 0))
    addr = DATA_VA + PAGE_SIZE + 0x13
    result = s.machine.call(code, addr)
    check(result, _oops("access to hypervisor-protected memory", addr & ~7))
    assert len(s.hyp.injections) == 2  # the load, then the fixup's re-read
    assert s.own.guest_state(s.guest, GFN) is PageState.OWNED


def test_zeropad_whose_first_page_is_donated_reclaims_in_the_fixup_under_inject_reclaim():
    """The re-read's fault is an ordinary kernel fault with no fixup: the seed patch reclaims and retries it.

    fault.c: the nested abort goes through __do_kernel_fault() like any other; the
    handler's load has no extable entry, so the pKVM force-reclaim path runs.
    """
    s = make_system("inject-reclaim")
    pfn = s.data_pfns[1]
    s.donate(pfn, GFN)
    code = s.load(ZEROPAD)
    s.add_extable(code, code + 4, ExType.LOAD_UNALIGNED_ZEROPAD, pack_zeropad(1, 0))
    result = s.machine.call(code, DATA_VA + PAGE_SIZE + 0x13)
    assert result.returned and result.x0 == 0
    assert [e.kind for e in result.events if e.kind in ("fixup", "reclaim")] == ["reclaim", "fixup"]
    assert s.own.guest_state(s.guest, GFN) is PageState.POISON


# --------------------------------------------------------------------------------------------
# Other synchronous exceptions (traps.c)
# --------------------------------------------------------------------------------------------

UDF_0 = (0).to_bytes(4, "little")  # Arm ARM C6.2.385 UDF #0: permanently undefined, keystone lacks it


@pytest.mark.parametrize(
    "el, code, kind, expect",
    [
        (1, "brk #0x800", "host-bug", "Internal error: Oops - BUG: 00000000f2000800 [#1]"),
        (1, "brk #0x1", "host-oops", "Internal error: Oops - BRK: 00000000f2000001 [#1]"),
        (1, UDF_0, "host-oops", "Internal error: Oops - Undefined instruction: 0000000002000000 [#1]"),
        (0, "brk #0x5", "task-killed", (5, 1)),  # SIGTRAP, TRAP_BRKPT
        (0, UDF_0, "task-killed", (4, 1)),  # SIGILL, ILL_ILLOPC
    ],
    ids=["el1-bug", "el1-brk", "el1-udf", "el0-brk", "el0-udf"],
)
def test_other_synchronous_exceptions(el, code, kind, expect):
    s = make_system("inject")
    va, perms = (USER_CODE_VA, "rxu") if el == 0 else (CODE_VA, "rx")
    if isinstance(code, bytes):
        s.machine.load(va, code, perms)
    else:
        s.load(code, va, perms)
    result = s.machine.call(va, el=el)
    assert result.outcome.kind == kind, result.outcome
    if el == 1:
        assert result.outcome.message == expect
    else:
        sig = result.outcome.detail
        assert (sig.signo, sig.code, sig.addr) == (*expect, va)


def test_el0_access_flag_fault_on_a_mapped_page_is_handled_and_retried(syn):
    """handle_mm_fault() succeeds for a mapping that allows the access: no signal, the access runs again."""
    m = syn.machine
    if m.stage1.lookup(USER_DATA_VA) is None:
        m.map_new(USER_DATA_VA, 1, "rwu")
    esr = (EC_DABT_LOW << 26) | ESR_IL | 0x0B  # level 3 access flag fault
    result = _enter(syn, el=0, esr=esr, far=USER_DATA_VA + 8, pc=USER_CODE_VA)
    assert result.returned and result.x0 == 0x77
    assert result.events_of("signal") == []
