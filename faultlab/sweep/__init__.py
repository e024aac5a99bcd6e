"""Sweeps: move a guest-owned page across every routine's buffers and check the routine's contract.

For one routine the sweep enumerates cases - buffer sizes, which buffer
holds the guest page (or none), the offset at which that page starts inside
the buffer (the boundary), the alignment of the other buffers - and runs
each case under every policy in a `Lab`, then compares the run with the
routine's reference model (faultlab/reference/): outcome, return
registers, every byte of the memory around the buffers, whether the guest
lost its page, and that no guest byte reached host memory or registers.

This module runs sweeps (`run_sweep`, in worker processes with jobs > 1)
and is the one to import; the parts live apart, one job each:
    spec            RoutineSpec, Plan, Case, CaseRun, SweepSummary: what a sweep is made of
    routines        ROUTINES: the spec of every guest_asm routine
    plan            cases, full_product: which cases a plan runs
    bench           Bench: one Lab per policy and the buffers' regions
    case            run_case, traits_of: lay one case out, run it, judge it
    judge           judge, leaks: how a run can disagree with its model
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Sequence

from hyp.policies import known as known_policies

from faultlab import reference as ref
from faultlab.sweep.bench import GUEST_ASM, KERNEL_FILES, USER_FILES, Bench, BenchBuffer
from faultlab.sweep.case import POISON, run_case, traits_of
from faultlab.sweep.heap import setup_frozen
from faultlab.sweep.judge import judge, leaks
from faultlab.sweep.plan import cases, full_product
from faultlab.sweep.routines import ROUTINES
from faultlab.sweep.shard import Shard, ShardError, merge_records
from faultlab.sweep.spec import FILL_DST, FILL_SRC, MAX_SHOWN, BufferSpec, Case, CaseRun, Failure, Plan, RoutineSpec, SweepError, SweepSummary


__all__ = [
    "FILL_DST", "FILL_SRC", "GUEST_ASM", "KERNEL_FILES", "MAX_SHOWN", "POISON", "ROUTINES", "USER_FILES", "Bench",
    "BenchBuffer", "BufferSpec", "Case", "CaseRun", "Failure", "Plan", "ProgressFn", "RoutineSpec", "SweepError",
    "Shard", "ShardError", "SweepSummary", "cases", "merge_records", "shard_cases", "check_policies", "full_product", "judge", "leaks", "routine", "run_case", "run_parallel", "run_sweep", "traits_of", "with_shard",
]

ProgressFn = Callable[[int, int], None]


def run_sweep(
    name: str,
    policies: Iterable[str] | None = None,
    full: bool = False,
    progress: ProgressFn | None = None,
    *,
    bench: Bench | None = None,
    jobs: int = 1,
    limit: int | None = None,
    shard: Shard | None = None,
) -> SweepSummary:
    """Sweep one routine under the given policies (default: all) and summarise.

    `progress(done, total)` is called as cases finish. `jobs` > 1 splits the
    cases over worker processes (each with its own Bench). `limit` caps the
    number of cases (for quick looks from the CLI). `shard` K/N runs only
    the planned cases whose index mod N is K-1 (after `limit`: every shard
    plans the same list) and records their ids.
    """
    spec = routine(name)
    names = list(known_policies()) if policies is None else list(policies)
    check_policies(names)
    todo = list(cases(spec, full, names))
    if limit is not None:
        todo = todo[:limit]
    planned = len(todo)
    todo, ids = shard_cases(todo, shard)
    summary = SweepSummary(spec.name, full_product=full_product(spec, len(names)) if full else 0)
    started = time.monotonic()
    if jobs > 1 and len(todo) > 1:
        summary.merge(run_parallel(spec.name, todo, jobs, progress, _worker, (spec.name,)))
    else:
        summary.merge(run_cases(spec, todo, bench or Bench(), progress))
    summary.seconds = time.monotonic() - started
    return with_shard(summary, shard, ids, planned)


def shard_cases(planned: Sequence[Case], shard: Shard | None) -> tuple[list[Case], list[int]]:
    """The cases a shard runs out of the whole plan, and their plan indexes (all of them without a shard)."""
    if shard is None:
        return list(planned), list(range(len(planned)))
    ids = shard.ids(len(planned))
    return [planned[i] for i in ids], ids


def with_shard(summary: SweepSummary, shard: Shard | None, ids: list[int], planned: int) -> SweepSummary:
    """Stamp a shard's summary with its K/N, the whole plan's size and the case ids it ran."""
    if shard is not None:
        summary.shard, summary.case_ids, summary.planned = shard, ids, planned
    return summary


def check_policies(names: Sequence[str]) -> None:
    """Refuse unknown policy names (a known policy without reference traits runs as unjudged)."""
    for p in names:
        if p not in known_policies():
            raise SweepError(f"unknown policy {p!r} (known: {', '.join(known_policies())})")


def run_cases(spec: RoutineSpec, todo: Sequence[Case], bench: Bench, progress: ProgressFn | None = None, offset: int = 0, total: int | None = None) -> SweepSummary:
    """Run the cases in order; the summary counts outcomes and keeps the failures (shared with kernel sweeps).

    A case under a policy the reference models have no traits for cannot be
    judged: it is counted as unjudged (never as passed) and not run.
    """
    summary = SweepSummary(spec.name)
    total = len(todo) if total is None else total
    with setup_frozen():
        for i, case in enumerate(todo, 1):
            if ref.reference_traits(case.policy) is None:
                summary.cases += 1
                summary.unjudged += 1
                continue
            try:
                run = run_case(bench, spec, case)
                problems, kind = run.problems, run.outcome
            except ref.ModelError as exc:
                problems, kind = (f"model error: {exc}",), "model-error"
            summary.cases += 1
            summary.outcomes[kind] = summary.outcomes.get(kind, 0) + 1
            if problems:
                summary.failures.append(Failure(case, problems))
            if progress is not None and (i % 64 == 0 or i == len(todo)):
                progress(offset + i, total)
    return summary


def _worker(job: tuple[str, list[Case]]) -> SweepSummary:
    name, todo = job
    return run_cases(routine(name), todo, Bench(), None)


def run_parallel(
    name: str, todo: list[Case], jobs: int, progress: ProgressFn | None, worker: Callable[[tuple], SweepSummary], context: tuple = ()
) -> SweepSummary:
    """The one parallel runner (guest_asm and kernel sweeps): `worker((*context, chunk))` in `jobs` processes.

    Interleaved chunks keep the workers' loads alike (cases are ordered by
    size); each worker builds its own bench from `context` (picklable: names
    and paths, not labs).
    """
    import multiprocessing

    chunks = [todo[i::jobs] for i in range(jobs)]
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    summary = SweepSummary(name)
    with ctx.Pool(jobs) as pool:
        for part in pool.imap_unordered(worker, [(*context, c) for c in chunks if c]):
            summary.merge(part)
            if progress is not None:
                progress(summary.cases, len(todo))
    return summary


def routine(name: str) -> RoutineSpec:
    try:
        return ROUTINES[name]
    except KeyError:
        raise SweepError(f"unknown routine {name!r} (known: {', '.join(ROUTINES)})") from None
