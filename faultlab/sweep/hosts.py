"""Differential sweeps of real kernel routines: the same case under `--host model` and `--host real`.

The routine is the kernel's own in both runs; what differs is who handles
an injected abort: the Python model of fault.c (host/fault.py, following the
kernel's profile) or the image's own do_mem_abort (host/real). Each case is
laid out identically in two `KernelBench`es (same seed, same bytes, same
boundary, same policy) and the runs are compared on what the host decides:
the outcome, x0 when the routine returned, every host byte of the memory
windows (the guest's page only once reclaimed: its contents are the guest's,
per frame), which guest pages were reclaimed, and the fixups taken (entry
address and type). A disagreement is a fact about the model: it is fixed to
follow the kernel, never the other way round.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from kimage.elf import Vmlinux

from faultlab.sweep.case import run_case
from faultlab.sweep.heap import setup_frozen
from faultlab.sweep.kernel import KernelBench, kernel_routine, kernel_spec
from faultlab.sweep.routines import ROUTINES
from faultlab.sweep.spec import Case, CaseRun

RETURNED = ("returned", "fixed-up")
DIFF_POLICIES = ("inject", "inject-reclaim", "panic")


@dataclass(frozen=True)
class Disagreement:
    case: Case
    what: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.case}: " + "; ".join(self.what)


def boundary_cases(name: str, lengths: Iterable[int], policies: Sequence[str] = DIFF_POLICIES, every_upto: int = 64) -> list[Case]:
    """Every boundary position (at the buffer's alignment) while the reach is small, the edges beyond."""
    spec = ROUTINES[kernel_routine(name).name]
    routine = kernel_routine(name)
    out = []
    for n in lengths:
        for sizes in routine.lengths(n):
            for side in spec.sides:
                reach = max(spec.reach(sizes, side), 0)
                step = spec.buffer(side).align
                bounds = range(0, reach + 1, step) if reach <= every_upto else sorted({0, 1, reach // 3, reach - 8, reach - 1, reach} - {-1, -8})
                for b in bounds:
                    for policy in policies:
                        out.append(Case(spec.name, policy, sizes, side, b, (n + b) % 16, 1000 * n + b))
    return out


def sample(cases: Sequence[Case], count: int) -> list[Case]:
    """`count` cases spread evenly over `cases` (all of them when there are fewer)."""
    if len(cases) <= count:
        return list(cases)
    step = len(cases) / count
    return [cases[int(i * step)] for i in range(count)]


def fixups_of(run: CaseRun) -> list[tuple[str, int, int]]:
    """The exception-table fixups a run took: (type, faulting instruction, fixup address)."""
    out = []
    for e in run.events:
        fixup = e.data.get("fixup") if e.kind == "fixup" else None
        if fixup is not None:
            out.append((fixup.kind.value, fixup.entry.insn, fixup.entry.fixup))
    return out


def compare(model: CaseRun, real: CaseRun) -> list[str]:
    """How the real host's run differs from the model's (empty: they agree)."""
    what = []
    if model.outcome != real.outcome:
        what.append(f"outcome: model {model.outcome}, real {real.outcome}")
    elif model.outcome in RETURNED and model.regs.get("x0") != real.regs.get("x0"):
        what.append(f"x0: model {model.regs.get('x0'):#x}, real {real.regs.get('x0'):#x}")
    if model.reclaimed != real.reclaimed:
        what.append(f"reclaimed: model {sorted(model.reclaimed)}, real {sorted(real.reclaimed)}")
    if fixups_of(model) != fixups_of(real):
        what.append(f"fixups: model {fixups_of(model)}, real {fixups_of(real)}")
    for window, w in model.windows.items():
        a, b = model.memory[window], real.memory[window]
        if a == b:
            continue
        # the guest's page holds the guest's bytes (per frame, so per lab) until it is reclaimed
        bad = host_bytes_differing(model, window, b)
        if bad:
            i = bad[0]
            what.append(f"{window}: {len(bad)} host bytes differ, first at +{i}: model {a[i]:#04x}, real {b[i]:#04x}")
    return what


_SCAN = 64  # bytes compared per slice while looking for the differing ones


def host_bytes_differing(run: CaseRun, window: str, other: bytes) -> list[int]:
    """Offsets in `window` where `other` differs from `run`'s bytes, the guest's page left out
    until `run` reclaimed it (the guest's bytes are per frame, so per lab).

    Compared a slice at a time and only a differing slice byte by byte: a per-byte loop over
    every window of every case was a fifth of the full differential's time.
    """
    w, a = run.windows[window], run.memory[window]
    if a == other:
        return []
    if w.guest and window not in run.reclaimed:
        g0, g1 = max(w.guest[0] - w.va, 0), max(w.guest[1] - w.va, 0)
        spans = ((0, min(g0, len(a))), (max(g1, g0), len(a)))
    else:
        spans = ((0, len(a)),)
    bad = []
    for lo, hi in spans:
        if a[lo:hi] == other[lo:hi]:
            continue  # the usual case: only the guest's page (its bytes are per lab) differs
        for start in range(lo, hi, _SCAN):
            end = min(start + _SCAN, hi)
            if a[start:end] != other[start:end]:
                bad += [i for i in range(start, end) if a[i] != other[i]]
    return bad


@dataclass
class HostPair:
    """Two benches on one vmlinux: the model's fault path and the kernel's own (labs reused across cases)."""

    vmlinux: Vmlinux

    def __post_init__(self) -> None:
        self.model = KernelBench(self.vmlinux, fault_path="model")
        self.real = KernelBench(self.vmlinux, fault_path="real")

    def run(self, name: str, todo: Iterable[Case]) -> "PairSummary":
        spec = kernel_spec(self.vmlinux, name)
        summary = PairSummary()
        with setup_frozen():
            for case in todo:
                summary.add(case, run_case(self.model, spec, case), run_case(self.real, spec, case))
        return summary


@dataclass
class PairSummary:
    """What a differential run saw: its cases, how often the kernel's do_mem_abort ran, and every difference."""

    cases: int = 0
    real_entries: int = 0  # injected aborts handled by the image's own do_mem_abort
    outcomes: dict[str, int] = field(default_factory=dict)  # the real host's
    disagreements: list[Disagreement] = field(default_factory=list)
    contract: list[str] = field(default_factory=list)  # problems either run had against the reference contract

    def add(self, case: Case, model: CaseRun, real: CaseRun) -> None:
        """Judge one case's two runs (the same case on the model's and the kernel's fault path) and count it.

        Apart from `HostPair.run` so that a run the caller already has (the kernel-model run an
        ours-vs-kernel differential judges too) is not run again.
        """
        self.cases += 1
        self.real_entries += sum(1 for e in real.events if e.kind == "do_mem_abort")
        self.outcomes[real.outcome] = self.outcomes.get(real.outcome, 0) + 1
        what = compare(model, real)
        if what:
            self.disagreements.append(Disagreement(case, tuple(what)))
        self.contract += [f"{case} ({host}): {p}" for host, run in (("model", model), ("real", real)) for p in run.problems]


__all__ = ["DIFF_POLICIES", "Disagreement", "HostPair", "PairSummary", "boundary_cases", "compare", "fixups_of", "sample"]
