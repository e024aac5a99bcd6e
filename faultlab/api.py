"""The Python API: what a script needs in a few calls, over the same classes the command line uses.

    from faultlab import api
    records = api.run_scenario(api.builtin("a-zeropad-overread"), policies=["inject", "reclaim"])
    vm = api.open_kernel("sid")                      # a suite name (cached kernel) or a path
    rig = api.kernel_lab("sid", policy="inject")     # a booted kernel under a policy

Nothing here holds state between calls: each lab is fresh, and a vmlinux is
parsed once per `Shelf` (pass one to share it between calls; the parse is
also cached on disk, kimage/cache.py). docs/api.md shows each call; a test
runs its examples. The pytest fixtures (faultlab_lab, faultlab_kernel,
faultlab_kernel_lab) are in faultlab/pytest_plugin.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from emu.outcome import RunResult
from hyp.policies import known as known_policies
from kimage.elf import Vmlinux

from faultlab.kernel.fetch import SUITES, KernelFetchError, fetch, find_cached
from faultlab.kernel.lab import KernelRig, VmlinuxShelf
from faultlab.lab import Lab
from faultlab.oracle import Verdict, judge, snapshot
from faultlab.runner import RunRecord, run
from faultlab.scenario import Scenario, ScenarioError, load, parse
from faultlab.sweep import KERNEL_FILES, GUEST_ASM, SweepSummary, run_sweep

__all__ = [
    "Call", "KernelRig", "Lab", "RunRecord", "Scenario", "Shelf", "SweepSummary", "Verdict", "Vmlinux",
    "builtin", "builtin_scenarios", "call", "kernel_lab", "kernel_sweep", "lab", "open_kernel", "policies",
    "run_scenario", "scenario", "suites", "sweep",
]

Shelf = VmlinuxShelf
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


def policies() -> list[str]:
    """The EL2 policies, by name (hyp/policies.py)."""
    return list(known_policies())


def suites() -> dict[str, str]:
    """The Debian suites `open_kernel` knows, with their Linux versions ({"bookworm": "6.1", "sid": "7.2"})."""
    return dict(SUITES)


# ---------------------------------------------------------------- kernels
def open_kernel(spec: str | Path, *, download: bool = False, shelf: VmlinuxShelf | None = None) -> Vmlinux:
    """A vmlinux by suite name ("bookworm", "sid": the cached Debian debug kernel) or by path.

    A suite that is not cached raises KernelFetchError saying how to get it,
    unless `download` (apt, ~150 MB; `faultlab kernel fetch SUITE` does the
    same). With a `shelf`, each file is parsed once for all its callers.
    """
    if str(spec) in SUITES and download and find_cached(str(spec)) is None:
        fetch(str(spec))
    if shelf is not None:
        return shelf.open(spec)
    return Vmlinux.open(VmlinuxShelf.locate(str(spec)))


def kernel_lab(kernel: str | Path | Vmlinux, policy: str = "inject-reclaim", *, host: str = "model", user_task: bool = False) -> KernelRig:
    """A booted real kernel under `policy`: `rig.lab.alloc(...)` buffers, `rig.protect(va)` gives the page
    to a guest, `rig.call(symbol, *args)` runs a kernel function (as `faultlab kernel call`)."""
    vm = kernel if isinstance(kernel, Vmlinux) else open_kernel(kernel)
    return KernelRig.boot(vm, policy, host=host, user_mm=user_task)


# ---------------------------------------------------------------- our routines
def lab(policy: str = "inject-reclaim", *, files: Iterable[str] = KERNEL_FILES) -> Lab:
    """A fresh lab under `policy` with guest_asm's kernel-side routines assembled (copy_from_user,
    full_name_hash, ...): `lab.alloc`, `lab.donate`, `lab.call(symbol, *args)`."""
    out = Lab(policy)
    for name in files:
        out.load_asm(GUEST_ASM / name)
    return out


@dataclass(frozen=True)
class Call:
    """One call judged by the oracle: the raw run and the verdict (outcome, guest, confidentiality, syndromes)."""

    result: RunResult
    verdict: Verdict


def call(target: Lab | KernelRig, symbol: str, *args: int, **kw) -> Call:
    """Run `symbol(*args)` in a lab (or a kernel rig) and judge it as a scenario run is judged."""
    the_lab = target.lab if isinstance(target, KernelRig) else target
    before = snapshot(the_lab)
    result = the_lab.call(symbol, *args, **kw)
    return Call(result, judge(the_lab, result, before))


# ---------------------------------------------------------------- scenarios
def builtin_scenarios() -> list[Path]:
    """The seed discussion's scenarios (what `faultlab matrix` runs without arguments)."""
    return sorted(BUILTIN_DIR.glob("*.toml"))


def builtin(name: str) -> Path:
    """A built-in scenario file by its name ("a-zeropad-overread") or file stem ("a_zeropad_overread")."""
    for path in builtin_scenarios():
        if name in (path.stem, path.stem.replace("_", "-")) or load(path).name == name:
            return path
    raise ScenarioError("<builtin>", 0, "name", f"no built-in scenario {name!r} (known: {', '.join(p.stem for p in builtin_scenarios())})")


def scenario(source: str | Path) -> Scenario:
    """A scenario from a file, or from TOML text (a string holding a newline)."""
    if isinstance(source, str) and "\n" in source:
        return parse(source, "<text>")
    return load(source)


def run_scenario(
    source: str | Path | Scenario, policies: Sequence[str] | None = None, *, host: str = "model", trace: bool = False, shelf: VmlinuxShelf | None = None
) -> list[RunRecord]:
    """Run a scenario under each policy (default: those it names), every kernel variant; a record per run
    (`record.verdict`, `record.passed`, `record.failures`, `record.as_dict()`: the JSON of `faultlab run --json`)."""
    sc = source if isinstance(source, Scenario) else scenario(source)
    kernels = shelf or VmlinuxShelf(host)
    return [run(v, p, trace=trace, kernels=kernels) for v in sc.variants() for p in (policies or v.policies) if p in v.policies]


# ---------------------------------------------------------------- sweeps
def sweep(routine: str, policies: Sequence[str] | None = None, *, full: bool = False, limit: int | None = None, jobs: int = 1) -> SweepSummary:
    """`faultlab sweep ROUTINE`: the routine against its reference contract (summary.ok, .failures, .outcomes)."""
    return run_sweep(routine, policies, full=full, limit=limit, jobs=jobs)


def kernel_sweep(
    kernel: str | Path | Vmlinux, routine: str, policies: Sequence[str] | None = None, *,
    lengths: Iterable[int] | None = None, limit: int | None = None, host: str = "model",
) -> SweepSummary:
    """`faultlab kernel sweep KERNEL ROUTINE`: a real kernel's routine against the same contract."""
    from faultlab.sweep.kernel import kernel_routine, lengths_plan, sweep_kernel

    vm = kernel if isinstance(kernel, Vmlinux) else open_kernel(kernel)
    plan = lengths_plan(kernel_routine(routine), lengths) if lengths is not None else None
    return sweep_kernel(vm, routine, policies, plan=plan, limit=limit, fault_path=host)


__all__ += ["KernelFetchError", "ScenarioError"]
