"""`faultlab sweep ROUTINE`: move the protected boundary across a routine's buffers, with progress.

JSON (`--json`, docs/schema/sweep.schema.json): one summary object per routine (`SweepSummary.as_json`):
{"schema_version", "routine", "cases", "passed", "unjudged", "failures": [{"case", "problems"}], "outcomes": {kind: count}, "seconds"}
`faultlab kernel sweep` emits the same shape for a real kernel's routine.
With `--shard K/N` the object adds "shard": "K/N", "planned" (cases in the
whole plan) and "case_ids" (the plan indexes this shard ran);
`faultlab sweep-merge FILE...` merges such shard outputs into one summary
per routine (same shape plus "shards": N), or refuses overlapping or
incomplete sets with exit 2.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from faultlab import report
from faultlab.cli.errors import EXIT_OK, EXIT_UNEXPECTED, UsageError
from faultlab.sweep import ROUTINES, Plan, Shard, ShardError, SweepError, SweepSummary, merge_records, run_sweep


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
    shard = parse_shard(args.shard)
    names = list(ROUTINES) if args.routine == "all" else [args.routine]
    if args.routine != "all" and args.routine not in ROUTINES:
        raise UsageError(f"unknown routine {args.routine!r} (known: all, {', '.join(ROUTINES)})")
    if not args.json:
        console.print(settings_line(args), markup=False, highlight=False)
    if args.plot or args.lengths:
        return sweep_in_process(args, console, shard)
    ok = True
    for name in names:
        try:
            if args.json:
                summary = run_sweep(name, args.policy, full=args.full, jobs=args.jobs, limit=args.limit, shard=shard)
            else:
                with Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as bar:
                    task = bar.add_task(name, total=None)
                    summary = run_sweep(
                        name,
                        args.policy,
                        full=args.full,
                        jobs=args.jobs,
                        limit=args.limit,
                        shard=shard,
                        progress=lambda done, total: bar.update(task, completed=done, total=total),
                    )
        except SweepError as exc:
            raise UsageError(str(exc)) from None
        ok = ok and summary.ok
        if args.json:
            report.dump(summary.as_json(), sys.stdout)
        else:
            print_summary(summary, console)
    return EXIT_OK if ok else EXIT_UNEXPECTED


def settings_line(args) -> str:
    """What this sweep runs, defaults marked (the header every run prints)."""
    from hyp.policies import known as known_policies

    plan = f"lengths {args.lengths}" if args.lengths else "full plan" if args.full else "quick plan (default; --full, --lengths A-B)"
    policies = ", ".join(args.policy) if args.policy else f"all {len(known_policies())} (default)"
    extra = "".join(f"; {flag} {value}" for flag, value in (("limit", args.limit), ("shard", args.shard)) if value is not None)
    return f"settings: {plan}; policies {policies}{extra}"


def check_plot_args(args) -> None:
    """--plot draws one routine from case runs kept in this process: refuse what it cannot do, before running."""
    from faultlab.plot import PlotError, check_target

    what = "--plot" if args.plot else "--lengths"
    if getattr(args, "routine", None) == "all":
        raise UsageError(f"{what} takes one routine: name it instead of all")
    try:
        jobs = int(args.jobs)
    except ValueError:
        raise UsageError(f"--jobs {args.jobs!r}: not an integer") from None
    if jobs > 1:
        raise UsageError(f"{what} runs every case in this process: leave out --jobs")
    if args.plot:
        try:
            check_target(args.plot)
        except PlotError as exc:
            raise UsageError(str(exc)) from None


def save_plot(summary: SweepSummary, points, path: str, policies, console, title: str, quiet: bool) -> None:
    from faultlab.plot import PlotError, heatmaps, save

    try:
        save(heatmaps(summary.routine, points, policies), path, title)
    except PlotError as exc:
        raise UsageError(str(exc)) from None
    if not quiet:
        console.print(f"plot: {path} ({len(points)} cases, {len(summary.failures)} marked as mismatches)", markup=False, highlight=False)


def sweep_in_process(args, console, shard: Shard | None) -> int:
    """`faultlab sweep ROUTINE --plot FILE` or `--lengths A-B`: the sweep's cases run here, each kept (for the heatmaps)."""
    from faultlab.plot import collect
    from faultlab.sweep import Bench, cases, check_policies, routine, shard_cases, with_shard
    from hyp.policies import known as known_policies

    check_plot_args(args)
    spec = routine(args.routine)
    policies = list(args.policy) if args.policy else list(known_policies())
    check_policies(policies)
    full, mode = args.full, "full" if args.full else "quick"
    if args.lengths:
        if any(len(s) != 1 for s in spec.quick.sizes):
            raise UsageError(f"--lengths: {spec.name} is sized by more than one number ({spec.quick.sizes[0]}); use the quick or --full plan")
        lengths = parse_lengths(args.lengths)
        # as `kernel sweep --lengths`: every boundary under every policy up to 64 bytes of reach, sampled above
        spec = dataclasses.replace(spec, full=Plan([(n,) for n in lengths], every_boundary_upto=64, sampled_boundaries=4, all_policies_upto=None))
        full, mode = True, f"lengths {args.lengths}"
    todo = list(cases(spec, full, policies))[: args.limit]
    planned = len(todo)
    todo, ids = shard_cases(todo, shard)
    summary, points = collect(spec, todo, Bench())
    summary = with_shard(summary, shard, ids, planned)
    if args.plot:
        save_plot(summary, points, args.plot, policies, console, f"faultlab sweep {spec.name} ({mode})", args.json)
    if args.json:
        report.dump(summary.as_json(), sys.stdout)
    else:
        print_summary(summary, console)
    return EXIT_OK if summary.ok else EXIT_UNEXPECTED


MAX_LENGTH = 4 * 4096


def parse_lengths(text: str) -> range:
    """--lengths: 'A-B' (inclusive) or one length 'N', at most MAX_LENGTH bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise UsageError(f"--lengths wants A-B or N (bytes), not {text!r}")
    lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
    if hi < lo:
        raise UsageError(f"--lengths {text}: the range is empty ({hi} < {lo})")
    if hi > MAX_LENGTH:
        raise UsageError(f"--lengths {text}: at most {MAX_LENGTH} bytes")
    return range(lo, hi + 1)


def parse_shard(text: str | None) -> Shard | None:
    """`--shard K/N` (shared with `faultlab kernel sweep`): a UsageError (exit 2) for a bad one."""
    if text is None:
        return None
    try:
        return Shard.parse(text)
    except ShardError as exc:
        raise UsageError(str(exc)) from None


def cmd_sweep_merge(args, console) -> int:
    """Merge shards' `--json` outputs (JSON lines, any order, any files) into one summary per routine."""
    records = []
    for path in args.files:
        try:
            with open(path, encoding="utf-8") as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror or exc}") from None
        for n, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{n}: not a sweep JSON line ({exc.msg})") from None
            if not isinstance(rec, dict) or "routine" not in rec:
                raise UsageError(f"{path}:{n}: not a sweep summary object")
            if rec.get("schema_version", report.SCHEMA_VERSION) != report.SCHEMA_VERSION:
                raise UsageError(f"{path}:{n}: schema_version {rec['schema_version']!r}; this faultlab reads {report.SCHEMA_VERSION}")
            records.append(rec)
    if not records:
        raise UsageError(f"no sweep summaries in {' '.join(args.files)}")
    try:
        merged = merge_records(records)
    except (ShardError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot merge: {exc}") from None
    ok = all(m["passed"] for m in merged)
    for m in merged:
        if args.json:
            report.dump(m, sys.stdout)
        else:
            kinds = ", ".join(f"{k} {v}" for k, v in m["outcomes"].items())
            unjudged = f", {m['unjudged']} unjudged" if m["unjudged"] else ""
            console.print(
                f"{m['routine']}: {m['cases']} cases from {m['shards']} shards, {len(m['failures'])} failures{unjudged} [{kinds}]",
                style="green" if m["passed"] else "red", markup=False, highlight=False,
            )
            for f in m["failures"][:10]:
                console.print(f"  {f['case']}:\n    " + "\n    ".join(f["problems"]), markup=False, highlight=False)
    return EXIT_OK if ok else EXIT_UNEXPECTED


def add_sweep_command(sub) -> None:
    s = sub.add_parser("sweep", help="sweep a routine's protected boundary over lengths, offsets and policies")
    s.add_argument("routine", help="a routine from `faultlab list`, or all")
    s.add_argument("--policy", action="append", help="only these policies (repeatable; default: all)")
    s.add_argument("--full", action="store_true", help="the full cross product (slow) instead of the quick subset")
    s.add_argument("--jobs", type=int, default=1, help="worker processes")
    s.add_argument("--limit", type=int, help="stop after this many cases")
    s.add_argument("--json", action="store_true", help="one JSON summary per routine on stdout (docs/schema/sweep.schema.json)")
    s.add_argument("--shard", metavar="K/N", help="run only shard K of N (planned case index mod N == K-1); merge with sweep-merge")
    s.add_argument("--lengths", metavar="A-B", help="instead of the quick/full plan: these lengths, every boundary up to 64 bytes of reach under every policy (routines sized by one length)")
    s.add_argument("--plot", metavar="FILE", help="also draw the cases as heatmaps (length x boundary offset, one panel per policy) into FILE.svg or FILE.png (needs matplotlib)")
    s.set_defaults(func=cmd_sweep)
    m = sub.add_parser("sweep-merge", help="merge the --json outputs of `sweep --shard K/N` runs into one summary per routine")
    m.add_argument("files", nargs="+", metavar="FILE", help="files of JSON lines from sharded sweeps (faultlab sweep or kernel sweep)")
    m.add_argument("--json", action="store_true", help="one merged JSON summary per routine on stdout (docs/schema/sweep.schema.json)")
    m.set_defaults(func=cmd_sweep_merge)
