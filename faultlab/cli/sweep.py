"""`faultlab sweep ROUTINE`: move the protected boundary across a routine's buffers, with progress.

JSON (`--json`): one summary object per routine (`SweepSummary.as_json`):
{"routine", "cases", "passed", "unjudged", "failures": [{"case", "problems"}], "outcomes": {kind: count}, "seconds"}
`faultlab kernel sweep` emits the same shape for a real kernel's routine.
"""
from __future__ import annotations

import json
import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from faultlab.cli.errors import EXIT_OK, EXIT_UNEXPECTED, UsageError
from faultlab.sweep import ROUTINES, SweepError, SweepSummary, run_sweep


def print_summary(summary: SweepSummary, console) -> None:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(summary.outcomes.items()))
    style = "green" if summary.ok else "red"
    console.print(
        f"{summary.routine}: {summary.cases} cases, {len(summary.failures)} failures"
        f"{f', {summary.unjudged} unjudged' if summary.unjudged else ''} "
        f"in {summary.seconds:.1f} s ({summary.rate:.0f} cases/s) [{kinds}]",
        style=style,
        markup=False,
        highlight=False,
    )
    for f in summary.failures[:10]:
        console.print("  " + str(f).replace("\n", "\n  "), markup=False, highlight=False)
    if len(summary.failures) > 10:
        console.print(f"  ... and {len(summary.failures) - 10} more", markup=False)


def cmd_sweep(args, console) -> int:
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: at least 1 worker process")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: at least 1 case (leave it out for all)")
    names = list(ROUTINES) if args.routine == "all" else [args.routine]
    if args.routine != "all" and args.routine not in ROUTINES:
        raise UsageError(f"unknown routine {args.routine!r} (known: all, {', '.join(ROUTINES)})")
    ok = True
    for name in names:
        try:
            if args.json:
                summary = run_sweep(name, args.policy, full=args.full, jobs=args.jobs, limit=args.limit)
            else:
                with Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as bar:
                    task = bar.add_task(name, total=None)
                    summary = run_sweep(
                        name,
                        args.policy,
                        full=args.full,
                        jobs=args.jobs,
                        limit=args.limit,
                        progress=lambda done, total: bar.update(task, completed=done, total=total),
                    )
        except SweepError as exc:
            raise UsageError(str(exc)) from None
        ok = ok and summary.ok
        if args.json:
            sys.stdout.write(json.dumps(summary.as_json(), sort_keys=True) + "\n")
        else:
            print_summary(summary, console)
    return EXIT_OK if ok else EXIT_UNEXPECTED


def add_sweep_command(sub) -> None:
    s = sub.add_parser("sweep", help="sweep a routine's protected boundary over lengths, offsets and policies")
    s.add_argument("routine", help="a routine from `faultlab list`, or all")
    s.add_argument("--policy", action="append", help="only these policies (repeatable; default: all)")
    s.add_argument("--full", action="store_true", help="the full cross product (slow) instead of the quick subset")
    s.add_argument("--jobs", type=int, default=1, help="worker processes")
    s.add_argument("--limit", type=int, help="stop after this many cases")
    s.add_argument("--json", action="store_true", help="one JSON summary per routine on stdout")
    s.set_defaults(func=cmd_sweep)
