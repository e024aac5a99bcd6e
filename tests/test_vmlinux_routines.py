"""Real routines of Debian's Linux 6.1 and 7.2 swept against our reference contracts and our own routines.

* Sweeps: the quick plan of every supported routine under every policy
  (default run), the full plans with `-m sweep`; the judge is the one our
  guest_asm routines face (faultlab/reference/), widened only where
  faultlab/sweep/kernel.py documents the kernel as looser.
* Every documented looseness is pinned here by a hand-built case with the
  expected bytes worked out in the test, so it says what the kernel does and
  cannot hide a different deviation.
* Differential: our guest_asm routine and the kernel's on the same cases
  (same bytes, same boundary, same policy) agree on the outcome, what EL2
  took back, the return value of the exact routines and every host byte;
  for copies the reported progress may differ, within measured bounds.
* Scenario files naming a vmlinux, the pytest plugin's skip, `kernel sweep`.

Kernels are found as in tests/test_vmlinux.py (FAULTLAB_VMLINUX_61/_72, the
fetch cache); kernel tests skip with the reason when they are missing.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

from kimage.profiles import profile_for

from kimage.extable_format import ExType
from kimage.profiles import LINUX_6_1, Looseness
from faultlab.sweep import kernel as ks
from faultlab import sweep
from faultlab.cli.main import main as kernel_main
from faultlab.kernel.lab import VmlinuxShelf
from faultlab.lab import Lab, LabError
from faultlab.runner import RunError, run
from faultlab.scenario import load, parse
from faultlab.sweep import ROUTINES, Case, run_case
from faultlab.sweep.hosts import PairSummary, host_bytes_differing
from host.ptregs import PtRegs
from hyp.policies import POLICIES
from test_vmlinux import KERNEL_IDS, KERNELS, full_name_hash_ref, open_kernel

MASK64 = (1 << 64) - 1
EFAULT = (-14) & MASK64
PAGE = 4096
REPO = Path(__file__).resolve().parent.parent
KERNEL_SCENARIOS = REPO / "scenarios" / "kernel"
ROUTINE_NAMES = list(ks.KERNEL_ROUTINES)


# ------------------------------------------------------------------ benches (one per kernel per module)
@pytest.fixture(scope="module")
def benches():
    made: dict[str, ks.KernelBench] = {}

    def get(key: str) -> ks.KernelBench:
        vm = open_kernel(key)
        if key not in made:
            made[key] = ks.KernelBench(vm)
        return made[key]

    return get


@pytest.fixture(scope="module")
def real_benches():
    """The same kernels with injected aborts handled by the image's own do_mem_abort (`--host real`)."""
    made: dict[str, ks.KernelBench] = {}

    def get(key: str) -> ks.KernelBench:
        if key not in made:
            made[key] = ks.KernelBench(open_kernel(key), fault_path="real")
        return made[key]

    return get


@pytest.fixture(scope="module")
def ours():
    """Our routines on the same host kernel as the kernel's (its fault path's features), one bench per kernel."""
    made: dict[str, sweep.Bench] = {}

    def get(key: str) -> sweep.Bench:
        if key not in made:
            made[key] = sweep.Bench(host=profile_for(open_kernel(key)).host)
        return made[key]

    return get


# ------------------------------------------------------------------ sweeps against the reference contracts
@pytest.mark.kernel
@pytest.mark.parametrize("name", ROUTINE_NAMES)
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
def test_quick_sweep_against_reference(benches, key, name):
    bench = benches(key)
    vm = bench.vmlinux
    summary = ks.sweep_kernel(vm, name, bench=bench)
    spec = ks.kernel_spec(vm, name)
    assert summary.cases == len(ks.plan_cases(spec, False, list(POLICIES))) > 0
    assert summary.ok, str(summary)
    # the guest page was in the way in some cases: not everything simply returned
    assert summary.outcomes.get("returned", 0) < summary.cases
    assert {"hyp-panic", "host-oops"} <= set(summary.outcomes)


# Each full plan in FULL_PARTS parts (Shard K/N of the plan; the parts tile it case for case,
# tests/test_shards.py) on the module's bench of that kernel, so pytest-xdist spreads a routine over
# workers (plans have 7,924-21,360 cases) without each item forking processes that boot their own.
FULL_PARTS = 3


@pytest.mark.sweep
@pytest.mark.kernel
@pytest.mark.parametrize("part", [sweep.Shard(k, FULL_PARTS) for k in range(1, FULL_PARTS + 1)], ids=lambda p: f"{p.index}of{p.count}")
@pytest.mark.parametrize("name", ROUTINE_NAMES)
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
def test_full_sweep_against_reference(benches, key, name, part):
    bench = benches(key)
    vm = bench.vmlinux
    summary = ks.sweep_kernel(vm, name, full=True, bench=bench, shard=part)
    print(f"\nLinux {vm.version.release} part {part}: {summary}")
    assert summary.planned > 5000
    assert summary.cases == len(summary.case_ids) > 0
    assert summary.ok, str(summary)


@pytest.mark.kernel
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
def test_fixups_are_the_kernels_own(benches, key):
    """Under inject, a fixed-up copy resumes through an entry of the vmlinux's __ex_table inside the routine."""
    bench = benches(key)
    vm = bench.vmlinux
    table = {(e.insn, e.fixup) for e in vm.extable}
    for name, side in (("__arch_copy_from_user", "src"), ("full_name_hash", "name"), ("copy_from_kernel_nofault", "src")):
        spec = ks.kernel_spec(vm, name)
        sym = vm.symbols.lookup(spec.symbol)
        got = run_case(bench, spec, Case(name, "inject", (24,), side, 20, 0, 7))
        assert not got.problems, got.problems
        fixups = [e.data["fixup"].entry for e in got.events if e.kind == "fixup"]
        assert len(fixups) == 1
        assert (fixups[0].insn, fixups[0].fixup) in table
        assert sym.addr <= fixups[0].insn < sym.addr + sym.size


# ------------------------------------------------------------------ the documented looseness, case by case
def _kernel_lab(benches, key: str, policy: str) -> Lab:
    return benches(key).lab(policy)


def _two_pages(lab: Lab, name: str, fill: int, *, user: bool = False):
    region = lab.alloc(f"{name}{len(lab.regions)}", 2, user=user)
    lab.write(region.va, bytes([fill]) * 2 * PAGE)
    return region


NOFAULT_CASES = [
    # (n, bytes before the guest page): the chunk that faults, per mm/maccess.c (8s, then 4, 2, 1)
    (16, 12, 8, 8),  # chunks [0,8) [8,16): the second straddles the boundary
    (13, 12, 12, 1),  # [0,8) [8,12) [12,13): the 1-byte chunk is on the guest page
    (8, 0, 0, 8),  # the first chunk faults: nothing copied
    (7, 5, 4, 2),  # [0,4) [4,6) [6,7): the 2-byte chunk straddles
]


@pytest.mark.kernel
@pytest.mark.parametrize("n,before,chunk_at,chunk", NOFAULT_CASES, ids=[f"n{c[0]}-before{c[1]}" for c in NOFAULT_CASES])
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
def test_nofault_faulting_chunk(benches, key, n, before, chunk_at, chunk):
    """6.1 stores the zeroed data register of the faulting chunk into dst; 7.2 leaves dst alone."""
    lab = _kernel_lab(benches, key, "inject")
    src, dst = _two_pages(lab, "src", 0x21), _two_pages(lab, "dst", 0x55)
    data = bytes(range(0x30, 0x30 + before))
    start = src.va + PAGE - before
    lab.write(start, data)
    lab.donate(src.pfns[1])
    result = lab.call("copy_from_kernel_nofault", dst.va + 64, start, n)
    assert (result.outcome.kind, result.x0) == ("returned", EFAULT)
    got = lab.read(dst.va + 64, n)
    filler = b"\x00" if lab.vmlinux.version.major < 7 else b"\x55"
    assert got[:chunk_at] == data[:chunk_at]
    assert got[chunk_at : chunk_at + chunk] == filler * chunk
    assert got[chunk_at + chunk :] == b"\x55" * (n - chunk_at - chunk)


STRSCPY_CASES = [(1, 0), (5, 4), (12, 11)]  # (count, bytes before the guest page): src[count - 1] is the guest's


@pytest.mark.kernel
@pytest.mark.parametrize("count,before", STRSCPY_CASES, ids=[f"count{c}" for c, _ in STRSCPY_CASES])
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
def test_strscpy_last_byte(benches, key, count, before):
    """The last byte before `count` is read with a plain ldrb: inject oopses there.

    7.2's sized_strscpy has already stored dst[count - 1] = NUL by then; 6.1's
    strscpy stores each byte after loading it. Bytes before are copied in both.
    """
    lab = _kernel_lab(benches, key, "inject")
    src, dst = _two_pages(lab, "src", 0x41), _two_pages(lab, "dst", 0x55)
    text = bytes(range(0x61, 0x61 + before))
    start = src.va + PAGE - before
    lab.write(start, text)
    lab.donate(src.pfns[1])
    symbol = ks.kernel_routine("strscpy").symbol_in(lab.vmlinux)
    result = lab.call(symbol, dst.va + 8, start, count)
    # 7.x: no fixup, the injected abort carries pKVM's marker, EL2 (inject) refuses the reclaim: die.
    # 6.1 knows no marker: AT S1E1R translates, so fault.c calls the fault spurious and retries forever.
    assert result.outcome.kind == ("host-oops" if lab.vmlinux.version.major >= 7 else "livelock")
    got = lab.read(dst.va + 8, count + 1)
    words = before // 8 * 8  # bytes a word load (zeropad) already stored
    assert got[:words] == text[:words]
    last = b"\x00" if lab.vmlinux.version.major >= 7 else b"\x55"
    assert got[count - 1 : count] == last
    assert got[count:] == b"\x55"


# ------------------------------------------------------------------ differential: ours vs the kernel's
# How far the reported progress of the kernel's copies may trail the bytes before the fault
# (measured over every boundary of lengths 0-64 and more on both kernels; the same values):
#  copy_from_user: copy_template.S's 64-byte loop loads the next block before it stores the
#    last one, so progress trails by whole 16-byte pairs (16, 32, 48); the 8/4/2/1-byte head
#    and tail pieces trail by < 8;
#  copy_to_user: user stores are 16-byte user_stp pairs (two sttr), dst advances after both: < 16;
#  clear_user: 8-byte sttr stores, a fault reports from the start of the faulting store: < 8.
KERNEL_SHORTFALL = {
    "__arch_copy_from_user": set(range(8)) | {16, 32, 48},
    "__arch_copy_to_user": set(range(16)),
    "__arch_clear_user": set(range(8)),
}
COPY_FIXUP_SIDE = {"__arch_copy_from_user": "src", "__arch_copy_to_user": "dst", "__arch_clear_user": "addr"}


def _differential_cases(name: str, lengths, policies, every_upto: int, thin: bool = False) -> list[Case]:
    """Every boundary while the reach is small, edges beyond; `thin`: every other size of a length."""
    spec = ROUTINES[name]
    routine = ks.kernel_routine(name)
    out = []
    for n in lengths:
        per_length = routine.lengths(n)
        for sizes in per_length[1::2] if thin and len(per_length) > 2 else per_length:
            for side in spec.sides:
                reach = max(spec.reach(sizes, side), 0)
                step = spec.buffer(side).align
                bounds = range(0, reach + 1, step) if reach <= every_upto else sorted({0, 1, reach // 3, reach - 8, reach - 1, reach} - {-1, -8})
                for b in bounds:
                    for policy in policies:
                        out.append(Case(name, policy, sizes, side, b, (n + b) % 16, 1000 * n + b))
    return out


def _differing(ko: sweep.CaseRun, kk: sweep.CaseRun) -> dict[str, list[int]]:
    """Window offsets where the two runs left different host bytes (the guest's page excluded)."""
    out = {}
    for window, w in ko.windows.items():
        b = kk.memory[window]
        assert len(ko.memory[window]) == len(b) == len(w.data) == len(kk.windows[window].data)
        bad = host_bytes_differing(ko, window, b)
        if bad:
            out[window] = bad
    return out


def _compare(vm, name: str, case: Case, ko: sweep.CaseRun, kk: sweep.CaseRun, gaps: Counter) -> list[str]:
    """What a contract can see, compared; a copy's progress difference is counted in `gaps`.

    Host bytes may differ only where one run stored a byte it did not report
    (a copy's unreported progress) or where a documented looseness writes
    (the kernel's byte is then 0 and ours is the byte from before the run).
    """
    assert not ko.problems, (case, ko.problems)
    assert not kk.problems, (case, kk.problems)
    if ko.outcome != kk.outcome:
        return [f"outcome: ours {ko.outcome}, kernel {kk.outcome}"]
    problems = []
    if ko.reclaimed != kk.reclaimed:
        problems.append(f"reclaimed: ours {sorted(ko.reclaimed)}, kernel {sorted(kk.reclaimed)}")
    differ = _differing(ko, kk)
    unreported = 0
    if ko.outcome != "returned" and name in KERNEL_SHORTFALL:
        # the run ended at the fault: what each stored before it is reported by neither
        unreported = min(case.boundary, case.sizes[0]) if case.side else 0
    elif name in KERNEL_SHORTFALL:
        n = case.sizes[0]
        k_ours, k_kernel = n - ko.regs["x0"], n - kk.regs["x0"]
        faulted = case.side == COPY_FIXUP_SIDE[name] and case.boundary < n and case.policy in ("inject", "inject-reclaim")
        off = case.boundary if faulted else n
        gaps[off - k_kernel] += 1
        if off - k_kernel not in KERNEL_SHORTFALL[name]:
            problems.append(f"kernel reports {k_kernel} of the {off} bytes before the fault")
        unreported = off - min(k_ours, k_kernel)
    elif ko.outcome == "returned" and ko.regs["x0"] != kk.regs["x0"]:
        problems.append(f"x0: ours {ko.regs['x0']:#x}, kernel {kk.regs['x0']:#x}")
    # 6.1 copy_from_kernel_nofault zeroes the faulting chunk, 7.x sized_strscpy writes dst[count-1]
    loose = bool(ks.looseness(vm, name)) and name in ("copy_from_kernel_nofault", "strscpy")
    for window, offsets in differ.items():
        before = ko.windows[window].data
        a, b = ko.memory[window], kk.memory[window]
        if unreported and len(offsets) <= unreported and all(before[i] in (a[i], b[i]) for i in offsets):
            continue
        if loose and len(offsets) <= 8 and all(b[i] == 0 and a[i] == before[i] for i in offsets):
            continue
        i = offsets[0]
        problems.append(f"{window}: {len(offsets)} host bytes differ, first at +{i}: ours {a[i]:#04x}, kernel {b[i]:#04x}, before {before[i]:#04x}")
    return problems


DIFF_POLICIES = ("inject", "panic")
DIFF_LENGTHS = (0, 5, 13, 33, 70)


@pytest.mark.kernel
@pytest.mark.parametrize("name", ROUTINE_NAMES)
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
def test_differential_ours_vs_kernel(benches, ours, key, name):
    _differential(benches(key), ours(key), name, _differential_cases(name, DIFF_LENGTHS, DIFF_POLICIES, every_upto=12, thin=True), full=False)


FULL_DIFF_POLICIES = ("inject", "inject-reclaim", "panic")
# The routines tests/test_real_vs_model_sweeps.py compares under `--host model` and `--host real`: their
# full real-vs-model sweep is these items' cases (the same list, test_real_vs_model_sweeps.py pins it),
# so it runs here, on the very kernel-model runs the ours-vs-kernel comparison judges, instead of
# running each of them a second time in an item of its own.
REAL_VS_MODEL = ("__arch_copy_from_user", "__arch_copy_to_user", "__arch_clear_user", "full_name_hash", "hashlen_string", "strscpy")


def full_differential_cases(name: str, policy: str | None = None) -> list[Case]:
    """The full differential's cases: every boundary of lengths 0-64 (0-32 for strscpy: six sizes a
    length) and some longer ones, under FULL_DIFF_POLICIES (or only `policy`)."""
    upto = 33 if name == "strscpy" else 65
    lengths = list(range(0, upto)) + [96, 127, 128, 255, 1000, 4096 + 23]
    todo = _differential_cases(name, lengths, FULL_DIFF_POLICIES, every_upto=64)
    return todo if policy is None else [case for case in todo if case.policy == policy]


@pytest.mark.sweep
@pytest.mark.kernel
@pytest.mark.parametrize("policy", FULL_DIFF_POLICIES)
@pytest.mark.parametrize("name", ROUTINE_NAMES)
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
def test_differential_full(benches, real_benches, ours, key, name, policy):
    """One item per policy (a routine under all three was one 35-77 s item); the cases are the full
    list's cases of that policy. The documented shortfall's worst case must be met under each policy
    whose fault is fixed up (inject, inject-reclaim); under panic a fault ends the run, no copy returns.
    For REAL_VS_MODEL routines each case also runs under the kernel's own fault path, which must agree
    with the model's run (faultlab/sweep/hosts.py `compare`) and meet the reference contract."""
    vm = open_kernel(key)
    todo = full_differential_cases(name, policy)
    real = real_benches(key) if name in REAL_VS_MODEL else None
    pair = PairSummary()
    gaps = _differential(benches(key), ours(key), name, todo, full=True, worst_case=policy != "panic", real=real, pair=pair)
    shortfall = f"; kernel progress short of the fault by (bytes, cases): {sorted(gaps.items())}" if gaps else ""
    print(f"\nLinux {vm.version.release} {name}: {len(todo)} cases agree{shortfall}")
    if real is not None:
        assert pair.cases == len(todo)
        assert not pair.disagreements, f"{len(pair.disagreements)} of {pair.cases} cases disagree (model vs real host):\n" + "\n".join(map(str, pair.disagreements[:8]))
        assert not pair.contract, "\n".join(pair.contract[:8])
        print(f"{key} {name}: model and real host agree; the kernel's do_mem_abort ran {pair.real_entries} times; real outcomes {pair.outcomes}")


def _differential(
    bench: ks.KernelBench, ours: sweep.Bench, name: str, todo: list[Case], *, full: bool, worst_case: bool = True,
    real: ks.KernelBench | None = None, pair: PairSummary | None = None,
) -> Counter:
    """Ours vs the kernel's routine (under the model host) on every case; with `real`, the kernel's run
    under the model host vs the same case under the kernel's own fault path too, summed in `pair`."""
    vm = bench.vmlinux
    spec_kernel, spec_ours = ks.kernel_spec(vm, name), ROUTINES[name]
    gaps: Counter = Counter()
    failures = []
    for case in todo:
        ours_run, kernel_run = run_case(ours, spec_ours, case), run_case(bench, spec_kernel, case)
        problems = _compare(vm, name, case, ours_run, kernel_run, gaps)
        if problems:
            failures.append(f"{case}: {'; '.join(problems)}")
        if real is not None:
            pair.add(case, kernel_run, run_case(real, spec_kernel, case))
    assert not failures, f"{len(failures)} of {len(todo)} cases disagree:\n" + "\n".join(failures[:8])
    if name in KERNEL_SHORTFALL and worst_case:
        # the documented looseness is real on these cases: the full run meets its worst case
        assert max(gaps) == max(KERNEL_SHORTFALL[name]) if full else max(gaps) > 0, sorted(gaps.items())
    return gaps


# ------------------------------------------------------------------ a lab around a vmlinux is a Lab
@pytest.mark.kernel
def test_kernel_lab_has_every_lab_attribute():
    """The oracle, runner and sweep read Lab's attributes: a lab around a vmlinux must carry all of them."""
    kernel_lab = Lab.with_vmlinux(open_kernel("6.1"), "inject")
    assert set(vars(Lab("inject"))) <= set(vars(kernel_lab))
    assert kernel_lab.kernel is kernel_lab.stack.host and kernel_lab.machine is kernel_lab.image.machine
    with pytest.raises(LabError, match="unknown symbol 'no_such_symbol_xyz'"):
        kernel_lab.symbol("no_such_symbol_xyz")


# ------------------------------------------------------------------ scenario files naming a vmlinux
SCENARIO_KINDS = {"a_zeropad_overread", "c_gup_kernel_alias", "d_copy_from_user", "d_copy_to_user"}


def test_kernel_scenarios_cover_both_kernels_and_the_seed_scenarios():
    files = sorted(KERNEL_SCENARIOS.glob("*.toml"))
    suites = Counter()
    kinds = Counter()
    overridden = set()
    for f in files:
        scenario = load(f)
        overridden |= {(f.stem, policy, kernel) for policy, kernel in scenario.expect_by_kernel}
        for sc in scenario.variants():  # one file per seed scenario, one run per kernel it names
            assert sc.routine.kind == "vmlinux"
            assert set(sc.policies) == set(POLICIES)
            suites[sc.routine.source] += 1
            kinds[f.stem] += 1
            builtin = load(REPO / "faultlab" / "builtin" / f"{f.stem}.toml")
            # the same verdicts as the built-in scenario it replays (the model's host is 7.x), policy by
            # policy, except where the file states a kernel's own expectation
            for policy in POLICIES:
                if sc.routine.source == "bookworm" and (f.stem, policy, "bookworm") in overridden:
                    continue
                ours, theirs = builtin.expectation(policy), sc.expectation(policy)
                assert (theirs.outcome, theirs.guest) == (ours.outcome, ours.guest), (f.name, policy)
    # 7.2 replays the seed verdicts exactly (its [expect.<policy>.sid] tables hold the values only 7.2
    # returns, checked above); 6.1 differs where its fault.c has neither pKVM's marker nor the
    # force-reclaim call and retries the injected abort forever: the GUP alias, and the uaccess
    # scenarios, which run in a user task (its do_page_fault finds the VMA and has nothing to do).
    pkvm_aware = ("inject", "inject-reclaim", "rme-gpc-realm-inject")
    assert {o for o in overridden if o[2] == "bookworm"} == {(f, p, "bookworm") for f in ("c_gup_kernel_alias", "d_copy_from_user", "d_copy_to_user") for p in pkvm_aware}
    assert {o for o in overridden if o[2] == "sid"} == {(f, p, "sid") for f in ("d_copy_from_user", "d_copy_to_user") for p in pkvm_aware}
    assert suites == {"bookworm": 4, "sid": 4}
    assert set(kinds) == SCENARIO_KINDS and set(kinds.values()) == {2}


def test_missing_vmlinux_is_a_clear_run_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FAULTLAB_KCACHE", str(tmp_path / "empty"))
    sc = load(KERNEL_SCENARIOS / "d_copy_from_user.toml").on_kernel("bookworm")
    with pytest.raises(RunError) as err:
        run(sc, "inject", kernels=VmlinuxShelf())
    assert str(err.value) == "vmlinux 'bookworm' not found: run `faultlab kernel fetch bookworm`"
    bad = parse('name = "x"\n[routine]\nvmlinux = "no/such/vmlinux"\nsymbol = "memcpy"\n', str(tmp_path / "x.toml"))
    with pytest.raises(RunError, match="vmlinux 'no/such/vmlinux' not found: no such file"):
        run(bad, "inject")


@pytest.mark.kernel
def test_scenario_with_a_vmlinux_path_and_el0_refused(tmp_path, kernel_shelf):
    vm = open_kernel("7.2")
    text = f"""
name = "path-hash"
policies = ["inject", "reclaim"]
[routine]
vmlinux = "{vm.path}"
symbol = "hashlen_string"
args = [7, "name + 4092"]
[[buffer]]
name = "name"
pages = 2
text = "abc"
at = 4092
protect = [1]
[expect.inject]
outcome = "fixed-up"
x0 = {(3 << 32) | full_name_hash_ref(7, b"abc"):#x}
guest = "intact"
[expect.reclaim]
outcome = "returned"
x0 = {(3 << 32) | full_name_hash_ref(7, b"abc"):#x}
guest = "reclaimed"
"""
    sc = parse(text, str(tmp_path / "s.toml"))
    shelf = kernel_shelf("model")
    for policy in sc.policies:
        record = run(sc, policy, kernels=shelf)
        assert record.passed, record.failures
    # the fixup that ran is the kernel's own entry in hashlen_string
    record = run(sc, "inject", kernels=shelf)
    sym = vm.symbols.lookup("hashlen_string")
    (fixup,) = record.verdict.fixups
    assert fixup.startswith("LOAD_UNALIGNED_ZEROPAD@") and sym.addr <= int(fixup.split("@")[1], 16) < sym.addr + sym.size
    el0 = parse(text.replace('symbol = "hashlen_string"', 'symbol = "hashlen_string"\nel = 0'), str(tmp_path / "s.toml"))
    with pytest.raises(RunError, match="a vmlinux routine runs at EL1"):
        run(el0, "inject", kernels=shelf)


def test_plugin_skips_kernel_scenarios_without_their_vmlinux(pytester, monkeypatch):
    """A fresh pytest session over the kernel scenarios with an empty kernel cache: every item skips, saying why.

    In process (pytester): the session's plugin and its shelf are new, only the interpreter is shared.
    """
    monkeypatch.setenv("FAULTLAB_KCACHE", str(pytester.path / "empty"))
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-rs", "-n", "0", str(KERNEL_SCENARIOS / "a_zeropad_overread.toml"))
    stdout = result.stdout.str()
    assert result.ret == 0, stdout + result.stderr.str()
    assert f"{2 * len(POLICIES)} skipped" in stdout  # bookworm and sid, each under every policy
    assert "vmlinux 'sid' not found: run `faultlab kernel fetch sid`" in stdout


# ------------------------------------------------------------------ `faultlab kernel sweep`
@pytest.mark.kernel
def test_cli_sweep_json(capsys):
    vm = open_kernel("7.2")
    argv = ["kernel", "sweep", str(vm.path), "strscpy", "--lengths", "3-5", "--policy", "inject", "--policy", "reclaim", "--json"]
    assert kernel_main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    rec = json.loads(out)
    # the shape of `faultlab sweep --json`, plus the kernel's keys
    assert set(rec) == {"schema_version", "routine", "cases", "passed", "unjudged", "failures", "outcomes", "seconds", "symbol", "vmlinux", "release", "policies", "looseness"}
    spec = ks.kernel_spec(vm, "strscpy", ks.lengths_plan(ks.kernel_routine("strscpy"), range(3, 6)))
    assert rec["cases"] == len(ks.plan_cases(spec, True, ["inject", "reclaim"]))
    assert (rec["routine"], rec["symbol"], rec["passed"], rec["failures"]) == ("strscpy", "sized_strscpy", True, [])
    assert rec["policies"] == ["inject", "reclaim"] and rec["release"] == vm.version.release
    assert sum(rec["outcomes"].values()) == rec["cases"]
    assert rec["looseness"] == [x.what for x in ks.looseness(vm, "strscpy")] != []


@pytest.mark.kernel
def test_cli_sweep_fails_when_the_kernel_breaks_the_contract(capsys, monkeypatch):
    """Without the documented 16-byte-block looseness, the real copy_to_user breaks our reference: exit 1."""
    vm = open_kernel("6.1")
    no_block_progress = dataclasses.replace(LINUX_6_1, looseness=LINUX_6_1.looseness - {Looseness.COPY_TO_USER_BLOCK_PROGRESS})
    monkeypatch.setattr(ks, "profile_for_version", lambda version: no_block_progress)
    argv = ["kernel", "sweep", str(vm.path), "__arch_copy_to_user", "--lengths", "20", "--policy", "inject", "--json"]
    assert kernel_main(argv) == 1
    rec = json.loads(capsys.readouterr().out)
    assert rec["passed"] is False and rec["failures"]
    assert all("bytes copied; at least" in f["problems"][0] for f in rec["failures"])
    # only cases with the guest page in the user destination, where the fixup reports progress
    assert all(" dst@+" in f["case"] and f["case"].startswith("__arch_copy_to_user[inject]") for f in rec["failures"])


@pytest.mark.kernel
def test_cli_sweep_text(capsys):
    vm = open_kernel("6.1")
    assert kernel_main(["kernel", "sweep", str(vm.path), "full_name_hash", "--policy", "inject", "--limit", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"full_name_hash on Linux {vm.version.release} [quick; inject]"
    assert out[1].startswith("full_name_hash: 10 cases, 0 failures")


@pytest.mark.parametrize(
    "extra,message",
    [
        (["strscpy", "--lengths", "9-3"], "the range is empty"),
        (["strscpy", "--lengths", "x"], "--lengths wants A-B or N"),
        (["strscpy", "--lengths", "0-99999"], "at most"),
        (["memcpy"], "no sweep for 'memcpy'"),
        (["strscpy", "--policy", "maybe"], "unknown policy 'maybe'"),
        (["strscpy", "--jobs", "0"], "at least 1"),
        (["strscpy", "--limit", "ten"], "not a case limit"),
    ],
    ids=["empty-range", "bad-lengths", "too-long", "unsupported-symbol", "bad-policy", "zero-jobs", "bad-limit"],
)
def test_cli_sweep_bad_input_is_one_line_exit_2(extra, message, capsys):
    # checked before any vmlinux is opened: a missing file must not mask the real mistake
    assert kernel_main(["kernel", "sweep", "/nonexistent/vmlinux", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------ 7.x UACCESS_CPY entries
@pytest.mark.kernel
def test_uaccess_cpy_entries_fix_up_only_the_user_side(benches):
    """7.2's FEAT_MOPS copies: each CPY* entry fixes up a fault on its user side only.

    The instructions cannot run here (Unicorn has no FEAT_MOPS, and the
    alternative that enables them is left unpatched: the routines branch over
    them), so the host's extable is driven directly with the kernel's entries;
    which side is the user's comes from the instruction encoding (Arm ARM
    C6.2 CPYFP*: op2 bits[15:12] = 0b0001 writes unprivileged (WT), 0b0010
    reads unprivileged (RT)).
    """
    vm = open_kernel("7.2")
    lab = benches("7.2").lab("inject")
    entries = [e for e in vm.extable if vm.numbering.kind(e.type) is ExType.UACCESS_CPY]
    assert len(entries) == 6
    for e in entries:
        word = int.from_bytes(vm.read(e.insn, 4), "little")
        op2 = (word >> 12) & 0xF
        assert op2 in (0b0001, 0b0010), f"{e.insn:#x}: {word:#010x}"
        user_writes = op2 == 0b0001
        owner = vm.symbols.function_at(e.insn)
        assert owner.name == ("__arch_copy_to_user" if user_writes else "__arch_copy_from_user")
        assert owner.addr <= e.fixup < owner.addr + owner.size
        for wnr in (False, True):
            regs = PtRegs(pc=e.insn)
            fixup = lab.kernel.extable.fixup_exception(regs, wnr, lambda va: 0)
            if wnr == user_writes:
                assert fixup is not None and fixup.kind is ExType.UACCESS_CPY and regs.pc == e.fixup
            else:
                assert fixup is None and regs.pc == e.insn
            assert regs.x == [0] * 31  # no register is written either way
    # why they never run: the routine's entry branches over the CPY block (alternative_if_not ARM64_HAS_MOPS)
    for name in ("__arch_copy_from_user", "__arch_copy_to_user"):
        sym = vm.symbols.lookup(name)
        cpys = sorted(e.insn for e in entries if sym.addr <= e.insn < sym.addr + sym.size)
        words = [int.from_bytes(vm.read(a, 4), "little") for a in range(sym.addr, cpys[0], 4)]
        branches = [(sym.addr + 4 * i, w) for i, w in enumerate(words) if w >> 26 == 0b000101]
        assert len(branches) == 1
        at, w = branches[0]
        assert at + 4 * (w & 0x3FFFFFF) > cpys[-1]  # b forward, past the last CPY
