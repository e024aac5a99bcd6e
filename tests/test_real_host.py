"""`--host real`: injected aborts handled by the vmlinux's own fault path, against the Python model.

Every verdict here comes from running the image's do_mem_abort (host/real);
the model's (host/fault.py) is run on the same setup and compared. Where the
two disagree the test pins both answers and names the disagreement, so a
change on either side shows up here.
"""
from __future__ import annotations


import pytest

from cached_kernels import SUITES, vmlinux

from emu.memory import USER_RX
from faultlab.kernel.lab import KernelRig
from faultlab.lab import Lab
from faultlab.snapshot import LabPool
from hyp.ownership import PageState

pytestmark = pytest.mark.kernel

FORCE_RECLAIM_X0 = 0xC600002B
NAME_HASH = 0xD843D93D  # full_name_hash(0, "pkvm.c", 6), as the scenario files pin it
UNMAPPED_USER = 0x7000_0000  # no user mapping (and so no VMA) there


# Booted rigs, restored for every case (faultlab/snapshot.py): as good as a fresh boot, byte for byte
# (tests/test_snapshot.py), at the cost of what the last case changed. A kernel thread's rig is the
# session's (tests/conftest.py kernel_shelf: shared with the seed scenarios and other files); a task
# with an mm from the start (user_mm) is booted here.
_BOOTED = LabPool(max_labs=12)
_SESSION: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _session_shelves(kernel_shelf):
    _SESSION["shelf"] = kernel_shelf


def run(key: str, policy: str, case: str, host: str = "real", *, user_mm: bool = False, before=None):
    """One seed case on a freshly booted rig (a booted lab restored): (RunResult, rig)."""
    vm = vmlinux(key)
    if user_mm:
        lab = _BOOTED.get((key, policy, host), lambda: Lab.with_vmlinux(vm, policy, host=host, user_mm=True))
    else:
        lab = _SESSION["shelf"](host).lab(vm.path, policy)
    rig = KernelRig(lab)
    k, m = rig.kernel, rig.machine
    if before:
        before(rig)
    if case == "memcpy":  # c-gup-kernel-alias: a plain kernel access with no extable entry
        buf = k.alloc_buffer(8192)
        rig.protect(buf + 4096)
        result = rig.call("memcpy", buf, buf + 4096, 64, timeout=60)
    elif case == "zeropad":  # a-zeropad-overread
        buf = k.alloc_buffer(8192)
        m.write(buf + 4090, b"pkvm.c")
        rig.protect(buf + 4096)
        result = rig.call("full_name_hash", 0, buf + 4090, 6, timeout=60)
    elif case == "copy_from_user":  # d-copy-from-user
        src, dst = k.map_user(8192), k.alloc_buffer(4096)
        rig.protect(src + 4096)
        result = rig.call("__arch_copy_from_user", dst, src + 4056, 64, timeout=60)
    elif case == "copy_to_user":  # d-copy-to-user
        dst, src = k.map_user(8192), k.alloc_buffer(4096)
        rig.protect(dst + 4096)
        result = rig.call("__arch_copy_to_user", dst + 4056, src, 64, timeout=60)
    elif case in ("el0_load", "el0_unmapped"):  # a VMM-style stray load from EL0 (a guest page, or nothing mapped)
        code = k.map_user(4096, USER_RX)
        m.write(code, (0xF9400000).to_bytes(4, "little") + (0xD65F03C0).to_bytes(4, "little"))  # ldr x0, [x0]; ret
        if case == "el0_load":
            data = k.map_user(4096)
            rig.protect(data)
            result = m.call(code, data + 8, el=0, timeout=60)
        else:
            result = m.call(code, UNMAPPED_USER, el=0, timeout=60)
    else:
        raise ValueError(case)
    return result, rig


def kinds(result, kind: str):
    return [e for e in result.events if e.kind == kind]


KEYS = ["6.1", "7.2"]
INJECT = ["inject", "inject-reclaim"]


# ------------------------------------------------------------------ uaccess and zeropad: real fixups
@pytest.mark.parametrize("policy", INJECT)
@pytest.mark.parametrize("key", KEYS)
def test_uaccess_fixup_is_the_kernels_own(key, policy):
    real, rig = run(key, policy, "copy_from_user")
    model, _ = run(key, policy, "copy_from_user", "model")
    assert real.outcome.kind == "returned"
    (fixup,) = rig.host.fixups
    assert fixup.kind.value == "UACCESS_ERR_ZERO"
    resume = kinds(real, "resume")[-1]
    assert f"eret to {fixup.entry.fixup:#x}" in resume.message  # ELR moved to the routine's fixup label
    assert real.x0 == model.x0 == 24
    assert kinds(real, "do_mem_abort") and not kinds(real, "hvc")


@pytest.mark.parametrize("policy", INJECT)
@pytest.mark.parametrize("key", KEYS)
def test_zeropad_fixup_gives_the_models_hash(key, policy):
    real, rig = run(key, policy, "zeropad")
    model, _ = run(key, policy, "zeropad", "model")
    assert [f.kind.value for f in rig.host.fixups] == ["LOAD_UNALIGNED_ZEROPAD"]
    assert real.x0 == model.x0 == NAME_HASH
    assert rig.hyp.ownership.guest_state(rig.protected[0].handle, rig.protected[0].gfn) is PageState.OWNED


# ------------------------------------------------------------------ plain kernel access, no fixup
def test_72_inject_reclaim_force_reclaims_through_its_own_hvc():
    real, rig = run("7.2", "inject-reclaim", "memcpy")
    assert real.outcome.kind == "returned"
    (hvc,) = kinds(real, "hvc")
    assert f"x0={FORCE_RECLAIM_X0:#x}" in hvc.message
    assert rig.kernel.symbolize(hvc.pc).startswith("pkvm_force_reclaim_guest_page+")
    (reclaim,) = kinds(real, "reclaim")
    assert reclaim.data["result"] == 0 and reclaim.data["by"] == "host"
    prot = rig.protected[0]
    assert rig.hyp.ownership.guest_state(prot.handle, prot.gfn) is PageState.POISON
    (at,) = kinds(real, "at")
    assert at.data["par"] == prot.pfn << 12  # PAR_EL1 from our stage 1: the page's PA
    assert "retry the access" in kinds(real, "resume")[0].message
    assert rig.machine.read(real.x0, 64) == bytes(64)  # the scrubbed page, no guest byte


def test_72_inject_pre_patch_el2_says_not_supported_and_the_host_oopses():
    real, rig = run("7.2", "inject", "memcpy")
    (hcall,) = kinds(real, "hypercall")
    assert hcall.data["status"] == (1 << 64) - 1  # SMCCC NOT_SUPPORTED from an EL2 without the call
    (warn,) = kinds(real, "warn")
    assert warn.data["where"].startswith("arch/arm64/kvm/pkvm.c:")  # pkvm_force_reclaim_guest_page's WARN_ON
    prot = rig.protected[0]
    msg = f"Unable to handle kernel access to hypervisor-protected memory at virtual address {prot.va:016x}"
    assert real.outcome.kind == "host-oops" and real.outcome.message == msg
    model, _ = run("7.2", "inject", "memcpy", "model")
    assert model.outcome.kind == "host-oops" and model.outcome.message == msg
    assert rig.hyp.ownership.guest_state(prot.handle, prot.gfn) is PageState.OWNED


@pytest.mark.parametrize("policy", INJECT)
def test_61_warns_spurious_translation_fault_and_livelocks(policy):
    real, rig = run("6.1", policy, "memcpy")
    assert real.outcome.kind == "livelock"
    assert not kinds(real, "hvc")  # 6.1 has no force-reclaim path
    warns = kinds(real, "warn")
    assert warns and all("Ignoring spurious kernel translation fault at virtual address" in w.message for w in warns)
    assert all(w.data["where"].startswith("arch/arm64/mm/fault.c:") for w in warns)
    assert all("PA" in e.message for e in kinds(real, "at"))  # AT S1E1R succeeds: stage 1 maps the page
    # The Python model follows 6.1's profile (no marker, no force-reclaim): it agrees.
    model, _ = run("6.1", policy, "memcpy", "model")
    assert model.outcome.kind == "livelock" and model.outcome.message == real.outcome.message


# ------------------------------------------------------------------ task context: a user task with an mm
def test_61_uaccess_in_a_task_with_an_mm_retries_forever():
    """6.1's do_page_fault has no pKVM check: the VMA is fine, handle_mm_fault has nothing to do, retry."""
    real, _ = run("6.1", "inject", "copy_from_user", user_mm=True)
    assert real.outcome.kind == "livelock"
    mm = [e.data["name"] for e in kinds(real, "mm")]
    assert "lock_mm_and_find_vma" in mm and "handle_mm_fault" in mm
    assert next(e for e in kinds(real, "mm") if e.data["name"] == "handle_mm_fault").data["ret"] == 0


def test_72_uaccess_in_a_task_with_an_mm_is_fixed_up_before_any_vma_lookup():
    real, rig = run("7.2", "inject", "copy_from_user", user_mm=True)
    assert real.outcome.kind == "returned" and real.x0 == 24
    assert not kinds(real, "mm") and len(rig.host.fixups) == 1


def test_el0_stage2_abort_72_signals_61_livelocks():
    real72, rig = run("7.2", "inject", "el0_load", user_mm=True)
    assert real72.outcome.kind == "task-killed"
    (sig,) = [e for e in kinds(real72, "signal") if e.data.get("name") == "arm64_force_sig_fault"]
    assert (sig.data["signal"].signo, sig.data["signal"].code) == (11, 2)  # SIGSEGV, SEGV_ACCERR
    assert rig.host.task.delivered[-1].signo == 11
    model, _ = run("7.2", "inject", "el0_load", "model")
    assert model.outcome.kind == "task-killed"
    real61, _ = run("6.1", "inject", "el0_load", user_mm=True)
    assert real61.outcome.kind == "livelock"
    model61, _ = run("6.1", "inject", "el0_load", "model")  # EL0 code runs in a task with an mm
    assert model61.outcome.kind == "livelock" and model61.outcome.message == real61.outcome.message


# ------------------------------------------------------------------ boundaries reached with their arguments
def test_printk_boundary_renders_the_kernels_oops_lines():
    real, _ = run("7.2", "inject", "memcpy")
    lines = [e.message for e in kinds(real, "printk")]
    assert lines[0].startswith("Unable to handle kernel access to hypervisor-protected memory at virtual address ffff")
    assert "  EC = 0x25: DABT (current EL), IL = 32 bits" in lines
    assert "  EA = 0, S1PTW = 1" in lines  # mem_abort_decode() shows pKVM's marker
    assert real.events[-1].data["name"] == "die"


def test_ubsan_boundary_fires_without_a_booted_tcr():
    """7.2 derives vabits_actual from TCR_EL1.T1SZ: with Unicorn's TCR_EL1 = 0 the shift is by 64."""
    real, _ = run("7.2", "inject-reclaim", "memcpy", before=lambda rig: rig.machine.cpu.write_sysreg("TCR_EL1", 0))
    reports = kinds(real, "ubsan")
    assert reports and "shift_out_of_bounds" in reports[0].message and "from do_translation_fault+" in reports[0].message
    booted, _ = run("7.2", "inject-reclaim", "memcpy")
    assert not kinds(booted, "ubsan")


def test_cannot_run_boundary_names_the_function():
    """A task whose preempt word says 'reschedule' reaches the scheduler from the extable search."""

    def resched_pending(rig):
        layout = rig.kernel.vmlinux.task_layout
        rig.kernel.on_reset_task.append(lambda: rig.machine.write_u64(rig.kernel.task + layout.preempt_count, 0))

    real, _ = run("7.2", "inject", "memcpy", before=resched_pending)
    assert real.outcome.kind == "cannot-run" and real.outcome.detail == "preempt_schedule"


def test_locking_boundaries_record_their_arguments():
    real, _ = run("6.1", "inject", "copy_from_user", user_mm=True)
    (up,) = {e.message.split("(")[0] for e in kinds(real, "stub") if "up_read" in e.message}
    assert up == "up_read"


# ------------------------------------------------------------------ every seed scenario, real vs model
SCENARIOS = sorted((__import__("pathlib").Path(__file__).parent.parent / "scenarios" / "kernel").glob("*.toml"))
# Where the kernel's own code and the Python model (which follows 7.x's fault.c) disagree: pinned, reported.
KNOWN_DISAGREEMENTS: dict[tuple[str, str], tuple[str, str]] = {}  # none left: the model follows each kernel's profile


@pytest.fixture
def seed_shelves(kernel_shelf):
    """The session's shelf per host (tests/conftest.py): each (kernel, policy) boots once and is restored after."""
    return kernel_shelf("real"), kernel_shelf("model")


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_seed_scenarios_real_vs_model(path, seed_shelves):
    from faultlab.runner import run as run_scenario
    from faultlab.scenario import load
    from hyp.policies import POLICIES

    real, model = seed_shelves
    for scenario in load(path).variants():  # one per kernel the file names
        vmlinux("6.1" if scenario.routine.source == "bookworm" else "7.2")  # skip when missing
        for policy in POLICIES:
            m = run_scenario(scenario, policy, kernels=model).verdict
            r = run_scenario(scenario, policy, kernels=real).verdict
            known = KNOWN_DISAGREEMENTS.get((scenario.name, policy))
            if known:
                assert (m.outcome, r.outcome) == known, (policy, m.detail, r.detail)
                continue
            for field in ("outcome", "detail", "x0", "fixups", "signals", "guest", "guest_pages_lost", "reclaims"):
                assert getattr(r, field) == getattr(m, field), (scenario.name, policy, field, getattr(m, field), getattr(r, field))


# ------------------------------------------------------------------ task context from the scenario, on both hosts
def _scenario(path: str):
    from faultlab.scenario import load

    return load(__import__("pathlib").Path(__file__).parent.parent / path)


@pytest.mark.parametrize("host", ["model", "real"])
def test_scenario_task_context_reaches_the_host(host, kernel_shelf):
    """`[routine] task` is the host's Task.mm; the real host's `current->mm` follows it (an mm_struct, or NULL)."""
    from faultlab.runner import run as run_scenario

    shelf = kernel_shelf(host)
    user = _scenario("scenarios/kernel/d_copy_from_user.toml").on_kernel("bookworm")
    kthread = _scenario("scenarios/kernel/c_gup_kernel_alias.toml").on_kernel("bookworm")
    vmlinux("6.1")
    assert (user.routine.task, kthread.routine.task) == ("user", "kthread")
    for scenario, has_mm in ((user, True), (kthread, False)):
        record = run_scenario(scenario, "inject", kernels=shelf)
        assert record.lab.kernel.task.mm is has_mm
        if host == "real":
            ctx, k = record.lab.kernel.task_context, record.lab.image
            mm = record.lab.machine.read_u64(k.task + ctx.layout.task_mm)
            assert (mm == ctx.mm != 0) if has_mm else mm == 0
    # the verdicts that differ by task context: 6.1 retries a uaccess fault in a user task forever
    assert run_scenario(user, "inject", kernels=shelf).verdict.outcome == "livelock"


@pytest.mark.parametrize("key", KEYS)
def test_kernel_alias_verdict_does_not_depend_on_the_task(key, kernel_shelf):
    """The GUP alias is a kernel-half address: do_translation_fault never consults the mm (why kthread is no shortcut)."""
    import dataclasses

    from faultlab.runner import run as run_scenario

    vmlinux(key)
    base = _scenario("scenarios/kernel/c_gup_kernel_alias.toml").on_kernel(SUITES[key])
    as_user = dataclasses.replace(base, routine=dataclasses.replace(base.routine, task="user"))
    for host in ("model", "real"):
        shelf = kernel_shelf(host)
        for policy in INJECT:
            a, b = (run_scenario(s, policy, kernels=shelf).verdict for s in (base, as_user))
            assert (a.outcome, a.detail, a.guest, a.reclaims) == (b.outcome, b.detail, b.guest, b.reclaims), (host, policy)


# ------------------------------------------------------------------ each boundary reached, with its arguments
def _sent(rig):
    d = rig.host.task.delivered[-1]
    return d.signo, d.code, d.addr


def _named(result, kind: str, name: str):
    return [e for e in kinds(result, kind) if e.data.get("name") == name]


@pytest.mark.parametrize("case,write", [("copy_from_user", False), ("copy_to_user", True)])
def test_mm_boundaries_get_current_mm_the_fault_address_and_the_access(case, write):
    """6.1 in a user task: lock_mm_and_find_vma(current->mm, FAR), handle_mm_fault(that VMA, FAR, flags)."""
    real, rig = run("6.1", "inject", case, user_mm=True)
    ctx = rig.host.task_context
    far = rig.protected[0].va
    (find, *_) = _named(real, "mm", "lock_mm_and_find_vma")
    assert find.data["args"][:2] == (ctx.mm, far) and find.data["ret"] == ctx.vma
    (handle, *_) = _named(real, "mm", "handle_mm_fault")
    vma, addr, flags = handle.data["args"][:3]
    assert (vma, addr, handle.data["ret"]) == (ctx.vma, far, 0)
    assert bool(flags & 0x1) is write  # FAULT_FLAG_WRITE from ESR.WnR
    lay = ctx.layout  # the VMA our stub built: one page, the user PTE's permissions (VM_READ|VM_WRITE)
    assert rig.machine.read_u64(ctx.vma + lay.vma_start) == far and rig.machine.read_u64(ctx.vma + lay.vma_end) == far + 4096
    assert rig.machine.read_u64(ctx.vma + lay.vma_flags) & 0x3 == 0x3
    (up,) = {e.data["args"][0] for e in _named(real, "stub", "up_read")}
    assert up != 0  # the mmap lock of our mm_struct


@pytest.mark.parametrize("key", KEYS)
def test_vma_lookup_misses_an_unmapped_user_address_and_signals(key):
    """An EL0 load where nothing is mapped: no VMA, SIGSEGV SEGV_MAPERR through arm64_force_sig_fault; 7.2 tries the
    per-VMA lock first (NULL from our stub). The model agrees."""
    real, rig = run(key, "inject", "el0_unmapped", user_mm=True)
    names = [e.data["name"] for e in kinds(real, "mm")]
    assert names == (["lock_vma_under_rcu", "lock_mm_and_find_vma"] if key == "7.2" else ["lock_mm_and_find_vma"])
    assert all(e.data["ret"] == 0 and e.data["args"][1] == UNMAPPED_USER for e in kinds(real, "mm"))
    (sig,) = _named(real, "signal", "arm64_force_sig_fault")
    assert (sig.data["signal"].signo, sig.data["signal"].code, sig.data["signal"].addr) == (11, 1, UNMAPPED_USER)
    assert real.outcome.kind == "task-killed"
    model, mrig = run(key, "inject", "el0_unmapped", "model")
    assert model.outcome.kind == "task-killed" and _sent(mrig) == _sent(rig)


@pytest.mark.parametrize("key", KEYS)
def test_notify_die_signals_a_user_task_and_the_kernel_dies(key):
    """A granule-protection fault is an 'unknown' row of fault_info: arm64_notify_die(name, regs, SIGKILL, SI_KERNEL,
    FAR) for EL0; from EL1 do_mem_abort dies with the row's name. The model agrees on both."""
    real, rig = run(key, "rme-gpc-el3-inject", "el0_load", user_mm=True)
    (sig,) = _named(real, "signal", "arm64_notify_die")
    s = sig.data["signal"]
    assert (s.signo, s.code, s.addr, s.why) == (9, 0x80, rig.protected[0].va + 8, "unknown 40")
    model, mrig = run(key, "rme-gpc-el3-inject", "el0_load", "model")
    assert real.outcome.kind == model.outcome.kind == "task-killed"
    assert _sent(mrig) == _sent(rig)
    kernel, _ = run(key, "rme-gpc-el3-inject", "memcpy")
    assert kernel.outcome.kind == "host-oops" and kernel.outcome.message.startswith("Unable to handle kernel unknown 40 at virtual address")
    assert kernel.events[-1].data["name"] == "die"
    mkernel, _ = run(key, "rme-gpc-el3-inject", "memcpy", "model")
    assert mkernel.outcome.message == kernel.outcome.message


def test_bug_boundary_is_an_outcome_with_the_tables_file_and_line():
    """A brk #0x800 whose __bug_table entry is not a warning ends the run as host-bug (the kernel's BUG())."""
    rig = KernelRig.boot(vmlinux("7.2"), "inject", host="real")
    site = next(s for s in rig.host.bugs.sites() if not s.warning and s.file.startswith("arch/arm64/"))
    result = rig.call(site.addr, timeout=60)
    assert result.outcome.kind == "host-bug" and result.outcome.message == f"kernel BUG at {site.where}!"
    warn = next(s for s in rig.host.bugs.sites() if s.warning)
    assert rig.host.bugs.find(warn.addr).warning and not rig.host.bugs.find(site.addr).warning


# Every boundary of host/real/boundaries.py is reached by one of these paths (and pinned by a test above with
# its arguments) or listed here as unreachable on the fault path, with why (docs/kernels.md repeats the list).
def _resched_pending(rig):
    layout = rig.kernel.vmlinux.task_layout
    rig.kernel.on_reset_task.append(lambda: rig.machine.write_u64(rig.kernel.task + layout.preempt_count, 0))


PATHS = (
    ("inject", "memcpy", False, None),
    ("inject", "copy_from_user", True, None),
    ("inject", "copy_to_user", True, None),
    ("inject", "el0_load", True, None),
    ("inject", "el0_unmapped", True, None),
    ("rme-gpc-el3-inject", "el0_load", True, None),
    ("rme-gpc-el3-inject", "memcpy", False, None),
    ("inject", "memcpy", False, _resched_pending),
    ("inject-reclaim", "memcpy", False, lambda rig: rig.machine.cpu.write_sysreg("TCR_EL1", 0)),
)
REACHED = {
    "6.1": {"__warn_printk", "_printk", "lock_mm_and_find_vma", "handle_mm_fault", "up_read", "arm64_force_sig_fault", "arm64_notify_die", "die"},
    "7.2": {"_printk", "lock_vma_under_rcu", "lock_mm_and_find_vma", "arm64_force_sig_fault", "arm64_notify_die", "die", "preempt_schedule", "__ubsan_handle_shift_out_of_bounds"},
}


@pytest.mark.parametrize("key", KEYS)
def test_boundaries_reached_on_the_fault_path(key):
    from host.real.boundaries import BOUNDARIES

    reached = set()
    for policy, case, user, before in PATHS:
        result, _ = run(key, policy, case, user_mm=user, before=before)
        reached |= {e.data["name"] for e in result.events if e.kind in ("stub", "mm", "signal", "printk", "ubsan", "oops") and e.data.get("name")}
    assert reached == REACHED[key]
    listed = {b.name for b in BOUNDARIES}
    assert all(n in listed or any(b.prefix and n.startswith(b.name) for b in BOUNDARIES) for n in reached)


def test_docs_list_every_boundary_no_path_reaches():
    from host.real.boundaries import BOUNDARIES

    text = (__import__("pathlib").Path(__file__).parent.parent / "docs" / "kernels.md").read_text()
    section = text.split("#### Not reached on the fault path", 1)[1].split("\n#", 1)[0]
    reached = set().union(*REACHED.values())
    unreached = [b.name for b in BOUNDARIES if b.name not in reached and not (b.prefix and any(n.startswith(b.name) for n in reached))]
    assert unreached and all(f"`{n}" in section for n in unreached), [n for n in unreached if f"`{n}" not in section]


# ------------------------------------------------------------------ --host real on every command
def test_cli_kernel_call_host_real_and_task(capsys):
    from faultlab.cli.main import main

    vmlinux("6.1")
    argv = ["kernel", "call", "bookworm", "__arch_copy_from_user", "buf", "ubuf+4056", "64", "--buffer", "4096",
            "--user-buffer", "8192", "--protect", "ubuf+4096", "--policy", "inject", "--host", "real"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(real host, user)" in out and "calling the kernel's do_mem_abort" in out and "lock_mm_and_find_vma" in out
    assert "outcome: livelock" in out  # 6.1 in a user task: VMA found, nothing to do, retry
    assert main([*argv, "--task", "kthread"]) == 0
    out = capsys.readouterr().out
    assert "(real host, kthread)" in out and "outcome: returned" in out and "x0: 0x18 (24)" in out
    assert "UACCESS_ERR_ZERO" in out and "real fixup" in out


def test_cli_kernel_sweep_host_real(capsys):
    import json

    from faultlab.cli.main import main

    vmlinux("7.2")
    assert main(["kernel", "sweep", "sid", "__arch_copy_from_user", "--host", "real", "--limit", "15", "--policy", "inject-reclaim", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["cases"] == 15 and not rec["failures"] and rec["symbol"] == "__arch_copy_from_user"


def test_kernel_bench_boots_real_labs():
    from faultlab.sweep.kernel import KernelBench
    from host.real import RealHost

    bench = KernelBench(vmlinux("7.2"), fault_path="real")
    assert isinstance(bench.lab("inject").kernel, RealHost) and bench.lab("inject") is bench.lab("inject")


@pytest.fixture
def kernel_cache():
    """The kernel cache folder, found before pytester points HOME at its own folder (and the 6.1 image opened)."""
    from faultlab.kernel.fetch import cache_root

    vmlinux("6.1")
    return cache_root()


def test_pytest_plugin_runs_scenarios_on_the_real_host(kernel_cache, pytester, monkeypatch):
    """`pytest --faultlab-host real`: the scenario items run with the image's do_mem_abort (a failure says so).

    In process (pytester, as tests/conftest.py explains): the sessions' plugin and its shelf are new.
    """
    from pathlib import Path

    monkeypatch.setenv("FAULTLAB_KCACHE", str(kernel_cache))
    repo = Path(__file__).resolve().parent.parent
    src = (repo / "scenarios" / "kernel" / "d_copy_from_user.toml").read_text()
    # a wrong expectation, so the report shows which host ran it
    (pytester.path / "wrong.toml").write_text(src.replace('[expect.inject.bookworm]\noutcome = "livelock"', '[expect.inject.bookworm]\noutcome = "fixed-up"'))
    installed = pytester._request.config.pluginmanager.has_plugin("faultlab")
    args = ["-q", "-p", "no:cacheprovider", *([] if installed else ["-p", "faultlab.pytest_plugin"]),
            "-k", "bookworm and inject and not reclaim and not rme", str(pytester.path / "wrong.toml")]
    real = pytester.runpytest_inprocess(*args, "--faultlab-host", "real")
    out = real.stdout.str()
    assert real.ret == 1 and "under inject (real host)" in out and "calling the kernel's do_mem_abort" in out, out[-3000:]
    model = pytester.runpytest_inprocess(*args)
    assert model.ret == 1 and "under inject (model host)" in model.stdout.str()
