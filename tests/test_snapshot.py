"""Snapshot/restore of labs (faultlab/snapshot.py, emu/checkpoint.py): a restored run is the run a fresh lab makes.

Byte for byte: the JSON record (verdict, expectation, failures), every event
(sequence, kind, PC, EL, message and data), the instruction trace, the final
registers. Fresh runs are the reference: a new machine, pKVM and host per run
(the path before snapshots existed). Restored runs go through a `LabPool` (or a
`VmlinuxShelf`'s booted labs) and are compared at their third use, after two
runs have dirtied the lab. No test asserts a timing.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from emu import checkpoint
from emu.machine import Machine
from emu.memory import PAGE_SIZE
from faultlab import leak
from faultlab.kernel.lab import VmlinuxShelf
from faultlab.lab import Lab, guest_secret
from faultlab.report import write_json
from faultlab.runner import run
from faultlab.scenario import load
from faultlab.snapshot import LabPool, ObjectImage, SnapshotError
from hyp.policies import known

from cached_kernels import SUITES, vmlinux

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = sorted((ROOT / "faultlab" / "builtin").glob("*.toml")) + sorted((ROOT / "scenarios").glob("*.toml"))
KERNEL = sorted((ROOT / "scenarios" / "kernel").glob("*.toml"))
POLICIES = sorted(known())
_ADDR = re.compile(r" at 0x[0-9a-f]+>")


def fingerprint(record) -> str:
    """Everything a run reports, as text: JSON with its trace, then every event with its data."""
    out = io.StringIO()
    write_json([record], out, trace=True)
    res = record.result
    lines = [out.getvalue(), repr(sorted(res.regs.items())), repr((res.segments, res.trace_truncated, res.outcome))]
    for e in res.events:
        lines.append(_ADDR.sub(">", f"{e.seq} {e.kind} {e.pc:#x} {e.el} {e.message} {sorted(e.data.items(), key=lambda kv: kv[0])!r}"))
    return "\n".join(lines)


@pytest.mark.parametrize("path", BUILTIN, ids=lambda p: p.stem)
def test_restored_scenario_runs_equal_fresh_ones_under_every_policy(path):
    sc = load(path)
    pool = LabPool()
    for policy in POLICIES:
        fresh = fingerprint(run(sc, policy, trace=True))
        for _ in range(3):
            again = fingerprint(run(sc, policy, trace=True, labs=pool))
        assert again == fresh, f"{sc.name} under {policy}"
    assert pool.restores == 2 * len(POLICIES)


@pytest.mark.kernel
@pytest.mark.slow  # a fresh boot per (scenario, policy) is the reference: ~70 s for all four
@pytest.mark.parametrize("host", ["model", "real"])
@pytest.mark.parametrize("suite", sorted(SUITES.values()))
def test_restored_kernel_scenarios_equal_fresh_boots(suite, host):
    """Every kernel scenario under every policy: a boot of its own vs the shelf's restored boot (and a pooled lab)."""
    vmlinux({v: k for k, v in SUITES.items()}[suite])  # skips without the cached kernel
    shelf, pool = VmlinuxShelf(host), LabPool()
    for path in KERNEL:
        for sc in load(path).variants():
            if sc.routine.source != suite:
                continue
            for policy in POLICIES:
                fresh = fingerprint(run(sc, policy, trace=True, kernels=VmlinuxShelf(host)))
                for _ in range(2):
                    shelved = fingerprint(run(sc, policy, trace=True, kernels=shelf))
                    pooled = fingerprint(run(sc, policy, trace=True, kernels=shelf, labs=pool))
                assert shelved == fresh, f"{sc.name} under {policy} (host {host}): restored boot"
                assert pooled == fresh, f"{sc.name} under {policy} (host {host}): restored scenario"


@pytest.mark.kernel
@pytest.mark.parametrize("host", ["model", "real"])
def test_restored_kernel_boot_equals_a_fresh_one(host, kernel_shelf):
    """The default run's share of the check above: one kernel scenario, two policies, both hosts.

    The restored side is the session's shelf (its boot may have served other tests first).
    """
    vmlinux("6.1")
    sc = load(ROOT / "scenarios" / "kernel" / "a_zeropad_overread.toml").variants()[0]
    shelf = kernel_shelf(host)
    for policy in ("inject-reclaim", "reclaim"):
        fresh = fingerprint(run(sc, policy, trace=True, kernels=VmlinuxShelf(host)))
        for _ in range(3):
            again = fingerprint(run(sc, policy, trace=True, kernels=shelf))
        assert again == fresh, policy


def test_rewind_puts_back_only_written_frames_and_the_cpu():
    m = Machine(phys_size=4 << 20)
    pfns = m.map_new(0xFFFF_0000_0010_0000, 3, "rw")
    m.write(0xFFFF_0000_0010_0000, b"\x11" * PAGE_SIZE)
    m.cpu.write_sysreg("TPIDR_EL1", 0x1234)
    cp = checkpoint.take(m)
    m.write(0xFFFF_0000_0010_1000 + 5, b"abc")  # Python write
    m.cpu.write_sysreg("TPIDR_EL1", 0x9999)
    m.map_new(0xFFFF_0000_0020_0000, 1, "rw")
    checkpoint.rewind(m, cp)
    assert m.read(0xFFFF_0000_0010_0000, PAGE_SIZE) == b"\x11" * PAGE_SIZE
    assert m.read(0xFFFF_0000_0010_1000, PAGE_SIZE) == bytes(PAGE_SIZE)
    assert m.cpu.read_sysreg("TPIDR_EL1") == 0x1234
    assert m.stage1.lookup(0xFFFF_0000_0020_0000) is None
    assert m.phys.alloc() == pfns[-1] + 1  # the allocator is back too
    # the written data frame, and the level-2 table and new level-3 table the new mapping wrote
    assert cp.stats.frames_restored == 3
    assert m.stage1.builder.frames == set(cp.builder[1])


def test_rewind_catches_cpu_stores_and_drops_code_it_puts_back():
    """A store by the CPU (through a writable TLB entry) is undone; so is patched code, whose stale translation goes."""
    from kasm import assemble

    code_va, data_va = 0xFFFF_8000_0800_0000, 0xFFFF_0000_0010_0000
    text = """
    str x1, [x0]
    str w3, [x2]
    ret
f:  mov x0, #1
    ret
    """
    m = Machine(phys_size=4 << 20)
    image = assemble(text, code_va)
    f = image.symbols["f"]
    m.load(code_va, image.data, "rwx")
    m.map_new(data_va, 1, "rw")
    m.stage2 = lambda pfn, access: True
    cp = checkpoint.take(m)
    assert m.call(f).regs["x0"] == 1  # translated once, before any patch
    movz_x0_2 = 0xD2800040
    for _ in range(3):
        m.call(code_va, data_va, 0x5555, f, movz_x0_2)
        assert m.read_u64(data_va) == 0x5555
        assert m.call(f).regs["x0"] == 2  # the CPU's own store: Unicorn retranslates
        checkpoint.rewind(m, cp)
        assert m.read_u64(data_va) == 0
        assert m.call(f).regs["x0"] == 1  # the rewind wrote from Python: the translation had to go
    assert cp.stats.code_flushes == 3 and cp.stats.frames_restored == 6


def test_a_stale_checkpoint_is_refused():
    m = Machine(phys_size=4 << 20)
    old = checkpoint.take(m)
    checkpoint.take(m)
    with pytest.raises(RuntimeError, match="latest"):
        checkpoint.rewind(m, old)


def test_lab_restore_brings_back_ownership_guest_and_buffers():
    lab = Lab("inject-reclaim")
    region = lab.alloc("buf", 2)
    snap = lab.snapshot()
    lab.donate(region.pfns[1])
    lab.alloc("more", 1)
    assert not lab.hyp.ownership.host_may_access(region.pfns[1])
    lab.restore(snap)
    assert lab.hyp.ownership.host_may_access(region.pfns[1])
    assert lab.guest_pages == [] and set(lab.regions) == {"buf"}
    assert lab.read(region.va + PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)
    page = lab.donate(region.pfns[1])  # the same donation again gets the same gfn and bytes
    assert page.secret == guest_secret(region.pfns[1]) and lab.read(region.va + PAGE_SIZE, 16) == page.secret[:16]


def test_unknown_c_state_is_refused_not_skipped():
    import array

    with pytest.raises(SnapshotError, match="array"):
        ObjectImage([{"a": array.array("b", [1])}])


def test_pool_evicts_least_recently_used():
    pool = LabPool(max_labs=2)
    labs = [pool.get(k, lambda: Lab("panic")) for k in "abc"]
    assert len(pool) == 2 and pool.builds == 3
    assert pool.get("c", lambda: None) is labs[2] and pool.restores == 1


def test_memoised_leak_grams_are_the_rule():
    """grams() memoised and set-built gives exactly the runs of n bytes that are not one repeated byte."""
    for seed, pfn in ((0, 0x40010), (3, 0x40777)):
        secret = guest_secret(pfn, seed)
        for n in (1, 2, 4, 8):
            want = {secret[i : i + n] for i in range(len(secret) - n + 1) if len(set(secret[i : i + n])) > 1}
            assert leak.grams(secret, n) == want
    assert leak.grams(b"\x80\x80\x80\x81", 2) == {b"\x80\x81"}


# ------------------------------------------------------------------ sweep cases on restored labs
def _case_summary(run) -> tuple:
    """What a sweep case decided: the judge's problems, the outcome, registers, reclaims, and the memory
    windows with which of their pages the guest held. A reused bench leaves a page the case does not
    want with the guest when it already was (faultlab/sweep/bench.py), so the same case may meet a
    guest page outside its reach there and a host page on a lab restored to its setup: that page's
    bytes are the guest's or the host's accordingly, and only the layout they share is compared."""
    layout = tuple(sorted((k, w.guest) for k, w in run.windows.items()))
    return (run.problems, run.outcome, tuple(sorted(run.regs.items())), run.reclaimed), layout, run.memory


def _same_case(want: tuple, got: tuple, case) -> bool:
    (verdict_a, layout_a, memory_a), (verdict_b, layout_b, memory_b) = want, got
    assert verdict_a == verdict_b, case
    if layout_a == layout_b:
        assert memory_a == memory_b, case
        return True
    return False


def _judged_policies() -> list[str]:
    from faultlab import reference as ref

    return [p for p in POLICIES if ref.reference_traits(p) is not None]


def _restored_vs_reused(spec, todo, make_bench, restore_every_case) -> None:
    """Each case on a lab restored to its state after setup vs on a bench reused case after case: same answers."""
    from faultlab.sweep import run_case

    reused, fresh = make_bench(), make_bench()
    restore_every_case(fresh, spec, todo)
    same_layout = 0
    for case in todo:
        want = _case_summary(run_case(reused, spec, case))
        got = _case_summary(restore_every_case(fresh, spec, [case]))
        same_layout += _same_case(want, got, case)
    assert same_layout >= len(todo) // 2  # most cases compared their memory too


def _guest_asm_restorer():
    from faultlab.sweep import run_case

    snaps: dict[str, object] = {}

    def restore_every_case(bench, spec, todo):
        if not snaps:  # warm: every policy's lab with this routine's buffers, then snapshot
            for policy in sorted({c.policy for c in todo}):
                run_case(bench, spec, next(c for c in todo if c.policy == policy))
                snaps[policy] = bench.lab(policy).snapshot()
            return None
        (case,) = todo
        bench.lab(case.policy).restore(snaps[case.policy])
        return run_case(bench, spec, case)

    return restore_every_case


def _sweep_sample(spec, count: int):
    from faultlab.sweep import cases

    todo = list(cases(spec, True, _judged_policies()))
    step = max(1, len(todo) // count)
    return todo[::step][:count]


def _check_guest_asm_routine(name: str, count: int) -> None:
    from faultlab.sweep import ROUTINES, Bench

    spec = ROUTINES[name]
    _restored_vs_reused(spec, _sweep_sample(spec, count), Bench, _guest_asm_restorer())


SWEEP_ROUTINES = sorted(__import__("faultlab.sweep", fromlist=["ROUTINES"]).ROUTINES)


@pytest.mark.parametrize("name", SWEEP_ROUTINES)
def test_sweep_cases_on_restored_labs_equal_a_reused_bench(name):
    _check_guest_asm_routine(name, 30)


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEP_ROUTINES)
def test_hundreds_of_sweep_cases_on_restored_labs(name):
    _check_guest_asm_routine(name, 300)


def _check_kernel_routine(key: str, name: str, host: str, count: int, monkeypatch) -> None:
    """A kernel bench that goes back to its boot before (nearly) every case vs one that never does."""
    import faultlab.sweep.bench as sweep_bench
    import faultlab.sweep.kernel as ks
    from faultlab.sweep import run_case

    vm = vmlinux(key)
    spec = ks.kernel_spec(vm, name)
    todo = _sweep_sample(spec, count)
    reused = ks.KernelBench(vm, fault_path=host)
    want = [_case_summary(run_case(reused, spec, c)) for c in todo]
    monkeypatch.setattr(sweep_bench, "RECYCLE_AFTER_DONATIONS", 1)
    fresh = ks.KernelBench(vm, fault_path=host)
    got = [_case_summary(run_case(fresh, spec, c)) for c in todo]
    assert fresh.recycles > 0 and fresh.boots == reused.boots
    same_layout = sum(_same_case(a, b, case) for case, a, b in zip(todo, want, got))
    assert same_layout >= len(todo) // 2


@pytest.mark.kernel
def test_kernel_sweep_cases_after_restoring_the_boot(monkeypatch):
    _check_kernel_routine("6.1", "__arch_copy_from_user", "model", 30, monkeypatch)


@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("host", ["model", "real"])
@pytest.mark.parametrize("name", sorted(__import__("faultlab.sweep.kernel", fromlist=["KERNEL_ROUTINES"]).KERNEL_ROUTINES))
@pytest.mark.parametrize("key", sorted(SUITES))
def test_hundreds_of_kernel_sweep_cases_after_restoring_the_boot(key, name, host, monkeypatch):
    _check_kernel_routine(key, name, host, 300, monkeypatch)


def test_new_in_memory_scans_the_changed_span_with_the_same_answer():
    """leak.new_in_memory against the rule as first written: any window of `after` in the guest's grams that no window of `before` is."""
    import random

    def rule(before, after, guest, n):
        old = {before[i : i + n] for i in range(len(before) - n + 1)}
        return any(after[i : i + n] in g and after[i : i + n] not in old for i in range(len(after) - n + 1) for g in guest)

    rng = random.Random(5)
    secret = guest_secret(0x40123, 1)
    leaks = 0
    for trial in range(400):
        n = rng.choice((2, 4, 6))
        before = bytearray(rng.randbytes(512).translate(bytes(range(128)) * 2))  # host bytes 0x00-0x7f
        if trial % 3 == 0:  # some guest data already there
            at = rng.randrange(0, 500)
            before[at : at + 8] = secret[at : at + 8]
        after = bytearray(before)
        for _ in range(rng.randrange(0, 4)):
            at, size = rng.randrange(0, 512), rng.randrange(1, 12)
            src = rng.randrange(0, 4000)
            after[at : at + size] = (secret if rng.random() < 0.6 else rng.randbytes(16) * 300)[src : src + size]
        after = bytes(after[:512])
        grams = [leak.grams(secret, n)]
        want = rule(bytes(before), after, grams, n)
        assert leak.new_in_memory(bytes(before), after, grams, n) == want, trial
        leaks += want
    assert 40 < leaks < 360  # both answers are exercised


@pytest.mark.parametrize("path", BUILTIN, ids=lambda p: p.stem)
def test_host_events_take_pc_and_el_from_the_vector_as_a_register_read_would(path, monkeypatch):
    """host/kernel.py logs its handler's events at the vector it entered (unless a nested run moved
    PC): every built-in under every policy, compared whole with the same runs reading PC/EL live."""
    from host.kernel import HostKernel

    sc = load(path)
    kept = {policy: fingerprint(run(sc, policy, trace=True)) for policy in POLICIES}

    def live(self, kind, message, **data):
        self.machine.log(kind, message, **data)

    monkeypatch.setattr(HostKernel, "log", live)
    for policy in POLICIES:
        assert fingerprint(run(sc, policy, trace=True)) == kept[policy], f"{sc.name} under {policy}"
