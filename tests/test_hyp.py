"""The pKVM model at EL2: hypercalls over a real `hvc`, the lazy host stage-2, policies, injection, events.

Every expectation is computed here or in reference_fault.py from the sources
they cite (SMCCC, hyp-main.c, mem_protect.c, fault.c, the Arm ARM); the model's
own tables are used only to enumerate what must be covered.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from conftest import ALIAS_VA, CODE_VA, DATA_VA, USER_CODE_VA, USER_DATA_VA, assemble
from kimage.extable_format import ExType, pack_err_zero
from emu.memory import PAGE_SIZE
from abi.linux import Errno
from hyp.hypercalls import HCALL_BY_NAME, HCALLS
from hyp.ownership import PageState
from hyp.policies import POLICIES
from reference_fault import (
    EC_IABT_LOW,
    EC_UNKNOWN,
    EFAULT,
    ESR_IL,
    GUEST_PATTERN,
    ILL_ILLOPC,
    PSTATE_DAIF,
    PSTATE_EL1H,
    PSTATE_PAN,
    SIGILL,
    SMCCC_NOT_SUPPORTED,
    SMCCC_VENDOR_HYP_FAST64,
    STAGE2_DABT_ISS,
    VBAR_CURRENT_SPX,
    VBAR_LOWER_A64,
    entry_pstate,
    injected_esr,
    injection_machine,
    make_system,
    neg,
    oops_line,
    u64,
)

HVC_CODE = "hvc #0; ret"
GFN = 0x10


def fid(name: str) -> int:
    return HCALL_BY_NAME[name].function_id


def test_force_reclaim_is_linux_7_2_function_43():
    # Debian sid's 7.2: pkvm_force_reclaim_guest_page() issues hvc #0 with x0 = 0xc600002b.
    assert fid("__pkvm_force_reclaim_guest_page") == 0xC600_002B
    assert all(h.function_id == SMCCC_VENDOR_HYP_FAST64 | n for n, h in HCALLS.items())


# ------------------------------------------------------------
# Hypercalls with valid arguments: hvc #0 from EL1 == the direct Ownership call
# ------------------------------------------------------------


@dataclass(frozen=True)
class HcallCase:
    """setup(own, pfn) -> context; args(pfn, ctx) -> x1..; direct(own, pfn, ctx) -> expected x1.."""

    setup: Callable
    args: Callable
    direct: Callable


def _np_guest_sharing(own, pfn):
    handle = own.create_guest(protected=False)
    assert own.host_share_guest(pfn, handle, 0x21) == 0
    return handle


def _dying_guest_with_page(own, pfn):
    handle = own.create_guest(protected=True)
    assert own.host_donate_guest(pfn, handle, 0x22) == 0
    assert own.teardown_guest(handle) == 0
    return handle


def _guest_with_page(own, pfn):
    handle = own.create_guest(protected=True)
    assert own.host_donate_guest(pfn, handle, 0x23) == 0
    return handle


HCALL_CASES = {
    "__pkvm_host_share_hyp": HcallCase(
        lambda own, pfn: None, lambda pfn, c: (pfn << 12,), lambda own, pfn, c: (own.host_share_hyp(pfn),)
    ),
    "__pkvm_host_unshare_hyp": HcallCase(
        lambda own, pfn: own.host_share_hyp(pfn),
        lambda pfn, c: (pfn << 12,),
        lambda own, pfn, c: (own.host_unshare_hyp(pfn),),
    ),
    "__pkvm_init_vm": HcallCase(lambda own, pfn: None, lambda pfn, c: (), lambda own, pfn, c: (0, own.create_guest(True))),
    "__pkvm_host_donate_guest": HcallCase(
        lambda own, pfn: own.create_guest(protected=True),
        lambda pfn, h: (pfn << 12, h, 0x20),
        lambda own, pfn, h: (own.host_donate_guest(pfn, h, 0x20),),
    ),
    "__pkvm_host_share_guest": HcallCase(
        lambda own, pfn: own.create_guest(protected=False),
        lambda pfn, h: (pfn << 12, h, 0x21),
        lambda own, pfn, h: (own.host_share_guest(pfn, h, 0x21),),
    ),
    "__pkvm_host_unshare_guest": HcallCase(
        _np_guest_sharing, lambda pfn, h: (h, 0x21), lambda own, pfn, h: (own.host_unshare_guest(h, 0x21),)
    ),
    "__pkvm_start_teardown_vm": HcallCase(
        lambda own, pfn: own.create_guest(protected=True), lambda pfn, h: (h,), lambda own, pfn, h: (own.teardown_guest(h),)
    ),
    "__pkvm_reclaim_dying_guest_page": HcallCase(
        _dying_guest_with_page,
        lambda pfn, h: (h, 0x22),
        lambda own, pfn, h: (own.reclaim_dying_guest_page(h, 0x22),),
    ),
    "__pkvm_force_reclaim_guest_page": HcallCase(
        _guest_with_page, lambda pfn, h: (pfn << 12,), lambda own, pfn, h: (own.host_force_reclaim_guest_page(pfn),)
    ),
    "__pkvm_init_vcpu": HcallCase(
        lambda own, pfn: own.create_guest(protected=True, nr_vcpus=2), lambda pfn, h: (h, 1), lambda own, pfn, h: (own.init_vcpu(h, 1),)
    ),
}


@pytest.mark.parametrize("policy", ["inject", "panic"])
def test_pre_patch_el2_answers_force_reclaim_not_supported(policy):
    """An EL2 without the series has no force-reclaim call: SMCCC NOT_SUPPORTED, nothing changes."""
    s = make_system(policy)
    pfn = s.data_pfns[1]
    _guest_with_page(s.own, pfn)
    before = len(s.own.transitions)
    result = s.machine.call(s.load(HVC_CODE), fid("__pkvm_force_reclaim_guest_page"), pfn << 12)
    assert result.returned and result.regs["x0"] == u64(-1)
    assert len(s.own.transitions) == before


def test_every_hypercall_has_a_case():
    assert set(HCALL_CASES) == {h.name for h in HCALLS.values()}


@pytest.mark.parametrize("name", sorted(HCALL_CASES))
def test_hvc_from_el1_matches_the_direct_ownership_call(name):
    case = HCALL_CASES[name]
    # inject-reclaim: an EL2 with the 2026 series, which serves every call of the table.
    via_hvc, direct = make_system("inject-reclaim"), make_system("inject-reclaim")
    pfn = via_hvc.data_pfns[1]
    assert pfn == direct.data_pfns[1]
    for s in (via_hvc, direct):
        s.fill(pfn)
    ctx = case.setup(via_hvc.own, pfn)
    assert case.setup(direct.own, pfn) == ctx
    code = via_hvc.load(HVC_CODE)
    args = case.args(pfn, ctx)
    result = via_hvc.machine.call(code, fid(name), *args)
    expected = case.direct(direct.own, pfn, ctx)
    assert result.returned, result.outcome
    assert result.regs["x0"] == 0  # SMCCC success: the call was dispatched
    assert [result.regs[f"x{i + 1}"] for i in range(len(expected))] == [u64(v) for v in expected]
    assert via_hvc.own.snapshot() == direct.own.snapshot()
    assert via_hvc.frame(pfn) == direct.frame(pfn)
    assert via_hvc.own.check_invariants() == []
    assert [e.data["name"] for e in result.events_of("hypercall")] == [name]


def test_hvc_call_hints_bit_is_ignored():
    # hyp-main.c handle_host_hcall(): id &= ~ARM_SMCCC_CALL_HINTS (SMCCC 1.3 SVE hint, bit 16).
    s = make_system("inject")
    pfn = s.data_pfns[1]
    result = s.machine.call(s.load(HVC_CODE), fid("__pkvm_host_share_hyp") | (1 << 16), pfn << 12)
    assert (result.regs["x0"], result.regs["x1"]) == (0, 0)
    assert s.own.host_state(pfn) is PageState.SHARED_OWNED


# ------------------------------------------------------------
# Not supported: unknown ids, hvc #imm != 0
# ------------------------------------------------------------

UNKNOWN_IDS = {
    "zero": 0,
    "vendor-hyp-0": SMCCC_VENDOR_HYP_FAST64,
    "vendor-hyp-44": SMCCC_VENDOR_HYP_FAST64 | 44,
    "vendor-hyp-ffff": SMCCC_VENDOR_HYP_FAST64 | 0xFFFF,
    "psci-version": 0x8400_0000,
    "smc32-share-hyp": 0x8600_0002,
    "yielding-share-hyp": 0x4600_0002,
    "upper-bits-share-hyp": (1 << 32) | 0xC600_0002,
    "all-ones": (1 << 64) - 1,
}


@pytest.mark.parametrize("fn", UNKNOWN_IDS.values(), ids=UNKNOWN_IDS.keys())
def test_unknown_function_id_is_not_supported_and_changes_nothing(fn):
    s = make_system("inject")
    pfn = s.data_pfns[1]
    before = s.own.snapshot()
    result = s.machine.call(s.load(HVC_CODE), fn, pfn << 12, 0x1234, 0x5678)
    assert result.returned, result.outcome
    assert result.regs["x0"] == SMCCC_NOT_SUPPORTED
    # Only x0 is written on the "inval" path.
    assert (result.regs["x1"], result.regs["x2"], result.regs["x3"]) == (pfn << 12, 0x1234, 0x5678)
    assert s.own.snapshot() == before


@pytest.mark.parametrize("imm", [1, 0x42, 0xFFFF])
def test_hvc_with_nonzero_immediate_is_not_supported(imm):
    # Model choice (SMCCC: calls use HVC #0); pKVM itself checks the immediate only for SMC.
    s = make_system("inject")
    pfn = s.data_pfns[1]
    before = s.own.snapshot()
    result = s.machine.call(s.load(f"hvc #{imm}; ret"), fid("__pkvm_host_share_hyp"), pfn << 12)
    assert result.returned, result.outcome
    assert result.regs["x0"] == SMCCC_NOT_SUPPORTED
    assert s.own.snapshot() == before


# ------------------------------------------------------------
# Bad arguments: an errno in x1, nothing changed, never a Python exception
# ------------------------------------------------------------


def _bad_cases():
    def first_pa(s):
        return s.machine.phys.base

    # (name, setup(s, pfn) -> ctx, args(s, pfn, ctx), errno): errnos from mem_protect.c's check order.
    share, unshare = "__pkvm_host_share_hyp", "__pkvm_host_unshare_hyp"
    donate, share_g, unshare_g = "__pkvm_host_donate_guest", "__pkvm_host_share_guest", "__pkvm_host_unshare_guest"
    teardown, dying, force = "__pkvm_start_teardown_vm", "__pkvm_reclaim_dying_guest_page", "__pkvm_force_reclaim_guest_page"
    none = lambda s, pfn: None  # noqa: E731
    donated = lambda s, pfn: s.own.host_donate_guest(pfn, s.guest, GFN)  # noqa: E731
    return {
        "share-hyp-unaligned": (share, none, lambda s, p, c: ((p << 12) | 0x10,), Errno.EINVAL),
        "share-hyp-not-memory": (share, none, lambda s, p, c: (0x1000,), Errno.EPERM),
        "share-hyp-top-of-pa-space": (share, none, lambda s, p, c: (u64(-PAGE_SIZE),), Errno.EPERM),
        "share-hyp-donated": (share, donated, lambda s, p, c: (p << 12,), Errno.EPERM),
        "share-hyp-twice": (share, lambda s, p: s.own.host_share_hyp(p), lambda s, p, c: (p << 12,), Errno.EPERM),
        "unshare-hyp-not-shared": (unshare, none, lambda s, p, c: (p << 12,), Errno.EPERM),
        "donate-unknown-vm": (donate, none, lambda s, p, c: (p << 12, 0x5555, GFN), Errno.EINVAL),
        "donate-gfn-out-of-ipa-space": (donate, none, lambda s, p, c: (p << 12, s.guest, 1 << 28), Errno.ERANGE),
        "donate-twice": (donate, donated, lambda s, p, c: (p << 12, s.guest, GFN + 1), Errno.EPERM),
        "donate-not-memory": (donate, none, lambda s, p, c: (first_pa(s) - PAGE_SIZE, s.guest, GFN), Errno.EPERM),
        "donate-to-np-vm": (
            donate,
            lambda s, p: s.own.create_guest(protected=False),
            lambda s, p, h: (p << 12, h, GFN),
            Errno.EINVAL,
        ),
        "share-guest-protected-vm": (share_g, none, lambda s, p, c: (p << 12, s.guest, GFN), Errno.EINVAL),
        "unshare-guest-nothing-shared": (
            unshare_g,
            lambda s, p: s.own.create_guest(protected=False),
            lambda s, p, h: (h, GFN),
            Errno.ENOENT,
        ),
        "teardown-unknown-vm": (teardown, none, lambda s, p, c: (0x5555,), Errno.ENOENT),  # pkvm.c: no VM -> -ENOENT
        "teardown-twice": (teardown, lambda s, p: s.own.teardown_guest(s.guest), lambda s, p, c: (s.guest,), Errno.EINVAL),
        "reclaim-dying-live-vm": (dying, donated, lambda s, p, c: (s.guest, GFN), Errno.EINVAL),
        "force-reclaim-host-owned": (force, none, lambda s, p, c: (p << 12,), Errno.EAGAIN),
        "force-reclaim-hyp-owned": (force, lambda s, p: s.own.host_donate_hyp(p), lambda s, p, c: (p << 12,), Errno.EPERM),
        "force-reclaim-unaligned": (force, donated, lambda s, p, c: ((p << 12) | 8,), Errno.EINVAL),
        "force-reclaim-not-memory": (force, none, lambda s, p, c: (0,), Errno.EPERM),
        "force-reclaim-twice": (
            force,
            lambda s, p: (donated(s, p), s.own.host_force_reclaim_guest_page(p)),
            lambda s, p, c: (p << 12,),
            Errno.EAGAIN,
        ),
    }


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("case", BAD_CASES.values(), ids=BAD_CASES.keys())
def test_bad_arguments_return_errno_and_change_nothing(case):
    name, setup, args, errno = case
    s = make_system("inject-reclaim")  # an EL2 that serves every call, force-reclaim included
    pfn = s.data_pfns[1]
    ctx = setup(s, pfn)
    before = s.own.snapshot()
    result = s.machine.call(s.load(HVC_CODE), fid(name), *args(s, pfn, ctx))
    assert result.returned, result.outcome
    assert (result.regs["x0"], result.regs["x1"]) == (0, neg(-int(errno)))
    assert s.own.snapshot() == before
    assert s.own.check_invariants() == []


EDGE_VALUES = {
    "0": 0,
    "1": 1,
    "0xfff": 0xFFF,
    "page": PAGE_SIZE,
    "2^40": 1 << 40,
    "2^52": 1 << 52,
    "2^63": 1 << 63,
    "-page": u64(-PAGE_SIZE),
    "-1": (1 << 64) - 1,
}


def _edge_positions():
    for name in sorted(HCALL_CASES):
        for position in range(max(HCALL_BY_NAME[name].nargs, 1)):
            yield pytest.param(name, position, id=f"{name}-x{position + 1}")


@pytest.mark.parametrize("name, position", list(_edge_positions()))
def test_edge_arguments_never_raise(name, position):
    """Each argument in turn takes every edge value (the others valid): an errno, never an exception."""
    s = make_system("inject-reclaim")  # an EL2 that serves every call
    pfn = s.data_pfns[1]
    case = HCALL_CASES[name]
    code = s.load(HVC_CODE)
    valid = list(case.args(pfn, case.setup(s.own, pfn)))
    for label, value in EDGE_VALUES.items():
        args = list(valid)
        if args:
            args[position] = value
        result = s.machine.call(code, fid(name), *args)
        assert result.returned, (label, result.outcome)
        assert result.regs["x0"] == 0, label
        if name != "__pkvm_init_vm":
            assert result.regs["x1"] in {u64(int(e)) for e in Errno}, label
    assert s.own.check_invariants() == []


# ------------------------------------------------------------
# hvc from EL0 is UNDEFINED: SIGILL to the task, EL2 never sees it
# ------------------------------------------------------------


def test_hvc_from_el0_is_undefined_and_kills_the_task_with_sigill():
    s = make_system("inject")
    pfn = s.data_pfns[1]
    code = s.load(HVC_CODE, USER_CODE_VA, "rxu")
    before = s.own.snapshot()
    result = s.machine.call(code, fid("__pkvm_host_share_hyp"), pfn << 12, el=0)
    assert result.outcome.kind == "task-killed", result.outcome
    sig = result.outcome.detail
    assert (sig.signo, sig.code, sig.addr) == (SIGILL, ILL_ILLOPC, code)
    # Arm ARM D1.10: an UNDEFINED instruction is EC 0 (unknown reason) with IL = 1; ELR = the hvc.
    assert s.machine.cpu.read_sysreg("ESR_EL1") == (EC_UNKNOWN << 26) | ESR_IL
    assert s.machine.cpu.read_sysreg("ELR_EL1") == code
    assert result.events_of("hypercall") == [] and result.events_of("hvc") == []
    assert s.own.snapshot() == before


# ------------------------------------------------------------
# handle_host_mem_abort: the lazy identity map
# ------------------------------------------------------------


def _stage2_aborts(result, pfn: int) -> list:
    return [
        e.data["abort"]
        for e in result.events_of("abort")
        if e.data["abort"].stage == 2 and e.data["abort"].ipa >> 12 == pfn
    ]


def test_first_access_to_a_host_frame_aborts_once_then_never():
    """In a 2 MiB region that already holds a level-3 table: the frame is mapped alone."""
    s = make_system("inject")
    m = s.machine
    pfn = s.data_pfns[0]
    s.hyp.stage2.split(pfn)
    m.map_page(ALIAS_VA, pfn, "rw")
    code = s.load("ldr x1, [x0]; ldr x2, [x0, #8]; str x2, [x0, #16]; ret")
    first = m.call(code, DATA_VA)
    assert first.returned
    (abort,) = _stage2_aborts(first, pfn)
    assert abort.ipa == pfn << 12 and abort.far == DATA_VA
    assert [e.data["pfn"] for e in first.events_of("idmap")].count(pfn) == 1
    for va in (DATA_VA, ALIAS_VA):  # the host stage 2 maps frames, not VAs
        again = m.call(code, va)
        assert again.returned and _stage2_aborts(again, pfn) == []


@pytest.mark.parametrize("alias", ["linear", "kernel-alias", "user"])
def test_after_donation_every_alias_aborts_to_el2_with_the_guest_owned_decision(alias):
    s = make_system("inject")
    m = s.machine
    pfn = s.data_pfns[1]
    m.map_page(ALIAS_VA, pfn, "rw")
    m.map_page(USER_DATA_VA, pfn, "rwu")
    kcode = s.load("ldr x1, [x0]; ret")
    ucode = s.load("ldr x1, [x0]; ret", USER_CODE_VA, "rxu")
    for va, code, el in ((DATA_VA + PAGE_SIZE, kcode, 1), (ALIAS_VA, kcode, 1), (USER_DATA_VA, ucode, 0)):
        assert m.call(code, va, el=el).returned  # every alias works while the host owns the frame
    s.donate(pfn, GFN)
    va, code, el = {
        "linear": (DATA_VA + PAGE_SIZE + 0x18, kcode, 1),
        "kernel-alias": (ALIAS_VA + 0x18, kcode, 1),
        "user": (USER_DATA_VA + 0x18, ucode, 0),
    }[alias]
    result = m.call(code, va, el=el)
    (abort,) = _stage2_aborts(result, pfn)
    assert abort.ipa == (pfn << 12) | 0x18 and abort.far == va and abort.el == el
    (protected,) = result.events_of("protected-access")
    assert protected.data["owner"] == f"guest {s.guest:#x}"
    assert [e.data["decision"] for e in result.events_of("decision")] == ["inject"]
    assert result.outcome.kind == ("host-oops" if el == 1 else "task-killed"), result.outcome
    assert s.frame(pfn) == bytes([GUEST_PATTERN]) * PAGE_SIZE


# ------------------------------------------------------------
# Every policy on the same abort: a plain kernel load, and a load with an ERR_ZERO fixup
# ------------------------------------------------------------

PLAIN = "ldr x1, [x0]; mov x0, x1; ret"
# ldr at +0 with a fixup to +12: err -> x0 (-EFAULT), zero -> x1.
WITH_FIXUP = "ldr x1, [x0]; mov x0, x1; ret; ret"
GPF_LINE = "unknown 40"  # fault.c fault_info[0x28].name: do_bad, so no fixup is ever tried
PROTECTED_LINE = "access to hypervisor-protected memory"

# policy -> (plain: kind, x0 or oops message, guest keeps page), (fixup: ...)
POLICY_EXPECTATIONS = {
    "panic": (("hyp-panic", None, True), ("hyp-panic", None, True)),
    "inject": (("host-oops", PROTECTED_LINE, True), ("returned", neg(EFAULT), True)),
    "inject-reclaim": (("returned", 0, False), ("returned", neg(EFAULT), True)),
    "reclaim": (("returned", 0, False), ("returned", 0, False)),
    "rme-gpc-reclaim": (("returned", 0, False), ("returned", 0, False)),
    "rme-gpc-el3-inject": (("host-oops", GPF_LINE, True), ("host-oops", GPF_LINE, True)),
    # a realm EL2 injects pKVM's marked abort and serves force-reclaim: as inject-reclaim
    "rme-gpc-realm-inject": (("returned", 0, False), ("returned", neg(EFAULT), True)),
}


def test_every_policy_has_expectations():
    assert set(POLICY_EXPECTATIONS) == set(POLICIES)


@pytest.mark.parametrize("fixup", [False, True], ids=["plain", "err-zero-fixup"])
@pytest.mark.parametrize("policy", sorted(POLICY_EXPECTATIONS))
def test_policy_on_a_kernel_load_of_a_donated_page(policy, fixup):
    s = make_system(policy)
    pfn = s.data_pfns[1]
    s.donate(pfn, GFN)
    code = s.load(WITH_FIXUP if fixup else PLAIN)
    if fixup:
        s.add_extable(code, code + 12, ExType.UACCESS_ERR_ZERO, pack_err_zero(0, 1))
    va = DATA_VA + PAGE_SIZE + 0x40
    result = s.machine.call(code, va)
    kind, value, guest_keeps = POLICY_EXPECTATIONS[policy][fixup]
    assert result.outcome.kind == kind, result.outcome
    if kind == "returned":
        assert result.x0 == value
    if kind == "host-oops":
        assert result.outcome.message == oops_line(value, va)
    if guest_keeps:
        assert s.own.guest_state(s.guest, GFN) is PageState.OWNED
        assert s.frame(pfn) == bytes([GUEST_PATTERN]) * PAGE_SIZE
        assert result.events_of("reclaim") == []
    else:
        assert s.own.guest_state(s.guest, GFN) is PageState.POISON
        assert s.own.poisoned(s.guest) == [GFN]
        assert s.frame(pfn) == bytes(PAGE_SIZE)  # scrubbed before the host could read it
    assert s.own.check_invariants() == []
    if policy == "rme-gpc-el3-inject":
        (injection,) = s.hyp.injections
        assert not injection.architectural
        assert injection.esr.fsc == 0x28 and not injection.esr.s1ptw


# ------------------------------------------------------------
# Injection: the architectural state the host's vector sees
# ------------------------------------------------------------

# (from_el, PSTATE.PAN at the access, SCTLR_EL1.SPAN, NZCV): every PAN/SPAN combination, flags varied.
ORIGINS = {
    "el1-pan0-span0-nzcv9": (1, False, False, 0x9),
    "el1-pan0-span1-nzcvf": (1, False, True, 0xF),
    "el1-pan1-span0-nzcv0": (1, True, False, 0x0),
    "el1-pan1-span1-nzcv6": (1, True, True, 0x6),
    "el0-span0-nzcv5": (0, False, False, 0x5),
    "el0-span1-nzcva": (0, False, True, 0xA),
}


def _injection_cases():
    """Every instruction class from both ELs, and every PAN/SPAN/flags origin for one instruction."""
    pairs = [(i, o) for i in STAGE2_DABT_ISS for o in ("el1-pan1-span0-nzcv0", "el0-span1-nzcva")]
    pairs += [("ldr-x1", o) for o in ORIGINS if ("ldr-x1", o) not in pairs]
    return [pytest.param(STAGE2_DABT_ISS[i], ORIGINS[o], id=f"{i}-{o}") for i, o in pairs]


@pytest.mark.parametrize("insn, origin", _injection_cases())
def test_injected_abort_registers(insn, origin):
    from_el, pan, span, nzcv = origin
    text, iss = insn
    m, hyp, pfn, guest, seen = injection_machine(span)
    if from_el == 1:
        va = 0xFFFF_0000_0040_0000 + 0x28
        m.map_page(va & ~0xFFF, pfn, "rw")
        base, perms = CODE_VA, "rx"
    else:
        va = USER_DATA_VA + 0x28
        m.map_page(USER_DATA_VA, pfn, "rwu")
        base, perms = USER_CODE_VA, "rxu"
    # NZCV comes in x7 (Machine.call passes x0..x7), written just before the access.
    m.load(base, assemble(f"msr nzcv, x7; {text}; ret", base), perms)
    assert hyp.ownership.host_donate_guest(pfn, guest, GFN) == 0
    result = m.call(base, va, 0, 0, 0, 0, 0, 0, nzcv << 28, el=from_el, pan=pan)
    assert result.outcome.kind == "vector", result.outcome
    ((off, pstate, regs),) = seen
    fault_pc = base + 4
    esr_el2 = (0x24 << 26) | ESR_IL | iss
    interrupted = (nzcv << 28) | ((PSTATE_DAIF | PSTATE_EL1H | (PSTATE_PAN if pan else 0)) if from_el == 1 else 0)
    assert off == (VBAR_CURRENT_SPX if from_el == 1 else VBAR_LOWER_A64)
    assert regs["x10"] == injected_esr(esr_el2, from_el=from_el)
    assert regs["x11"] == va
    assert regs["x12"] == fault_pc
    assert regs["x13"] == interrupted
    assert regs["x14"] == 1 << 2  # CurrentEL: EL1
    assert regs["x15"] == PSTATE_DAIF
    assert regs["x16"] == nzcv << 28
    new_pstate = entry_pstate(interrupted, span=span)
    assert regs["x17"] == new_pstate & PSTATE_PAN
    assert pstate == new_pstate
    (injection,) = hyp.injections
    assert (injection.esr.value, injection.far, injection.elr, injection.from_el) == (
        regs["x10"],
        va,
        fault_pc,
        from_el,
    )
    isv = bool(iss & (1 << 24))
    assert set(injection.non_architectural) == ({"ISV", "S1PTW"} if isv else {"S1PTW"})


def test_injected_instruction_abort_from_el1():
    """The host branches into a donated page: EC 0x20 -> 0x21, S1PTW set, FAR = ELR = the target."""
    m, hyp, pfn, guest, seen = injection_machine(span=True)
    target = 0xFFFF_8000_0B00_0000
    m.map_page(target, pfn, "rx")
    m.load(CODE_VA, assemble("blr x0; ret", CODE_VA), "rx")
    assert hyp.ownership.host_donate_guest(pfn, guest, GFN) == 0
    result = m.call(CODE_VA, target)
    assert result.outcome.kind == "vector", result.outcome
    ((off, _pstate, regs),) = seen
    assert off == VBAR_CURRENT_SPX
    assert regs["x10"] == injected_esr((EC_IABT_LOW << 26) | ESR_IL | 0x07, from_el=1) == 0x8600_0087
    assert (regs["x11"], regs["x12"]) == (target, target)
    (injection,) = hyp.injections
    assert set(injection.non_architectural) == {"S1PTW"}


# ------------------------------------------------------------
# The event log of a reclaim-and-retry
# ------------------------------------------------------------

RECLAIM_AND_RETRY = [
    "abort",
    "protected-access",
    "decision",
    "inject",
    "exception-entry",
    "do_mem_abort",
    "hvc",
    "transition",
    "reclaim",
    "hypercall",
    "resume",
]
EL2_RECLAIM = ["abort", "protected-access", "decision", "transition", "reclaim"]


def _second_run_events(policy: str):
    """Run the same plain load twice, each on its own donated page; the first run warms the stage 2."""
    s = make_system(policy)
    for i, pfn in enumerate(s.data_pfns):
        s.donate(pfn, GFN + i)
    code = s.load(PLAIN)
    assert s.machine.call(code, DATA_VA).returned
    result = s.machine.call(code, DATA_VA + PAGE_SIZE)
    assert result.returned and result.x0 == 0
    return result.events


@pytest.mark.parametrize("policy, kinds", [("inject-reclaim", RECLAIM_AND_RETRY), ("reclaim", EL2_RECLAIM)])
def test_reclaim_and_retry_event_sequence_is_exact_and_deterministic(policy, kinds):
    first, second = _second_run_events(policy), _second_run_events(policy)
    assert [e.kind for e in first] == kinds
    assert [str(e) for e in first] == [str(e) for e in second]
