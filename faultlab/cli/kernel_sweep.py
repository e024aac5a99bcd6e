"""`faultlab kernel sweep`: a real kernel's routine against the reference contract (faultlab/sweep/kernel.py).

With `--plot FILE` the cases are kept and drawn as heatmaps (faultlab/plot.py).
"""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hyp.policies import known as known_policies
from kimage.elf import Vmlinux

from faultlab import report
from faultlab.cli.errors import EXIT_OK, EXIT_UNEXPECTED, UsageError
from faultlab.cli.kernel_args import HOST_HELP, open_vmlinux, parse_int, say
from faultlab.cli.sweep import check_plot_args, parse_lengths, parse_shard, print_summary, save_plot
from faultlab.kernel.lab import KernelUsageError
from faultlab.stack import HOSTS
from faultlab.sweep import SweepError
from faultlab.sweep.kernel import KERNEL_ROUTINES, kernel_routine, kernel_spec, lengths_plan, looseness, plan_cases, summary_record, sweep_kernel


def _lengths(text: str) -> range:
    """--lengths: 'A-B' (inclusive) or one length 'N' (the same rule as `faultlab sweep --lengths`)."""
    try:
        return parse_lengths(text)
    except UsageError as exc:
        raise KernelUsageError(str(exc)) from None


def cmd_sweep(args, console: Console) -> int:
    policies = args.policy or list(known_policies())
    for p in policies:
        if p not in known_policies():
            raise KernelUsageError(f"unknown policy {p!r} (known: {', '.join(known_policies())})")
    lengths = _lengths(args.lengths) if args.lengths else None
    shard = parse_shard(args.shard)
    if args.plot:
        check_plot_args(args)  # before the vmlinux is opened: a bad file name costs nothing
    jobs = parse_int(args.jobs, "number of jobs")
    limit = parse_int(args.limit, "case limit") if args.limit else None
    if jobs < 1 or (limit is not None and limit < 1):
        raise KernelUsageError("--jobs and --limit must be at least 1")
    try:
        routine = kernel_routine(args.symbol)
    except SweepError as exc:
        raise KernelUsageError(str(exc)) from None
    vm = open_vmlinux(args.vmlinux)
    plan = lengths_plan(routine, lengths) if lengths is not None else None
    spec = kernel_spec(vm, routine.name, plan)
    full = args.full or plan is not None
    total = len(plan_cases(spec, full, policies, limit))
    total = len(shard.ids(total)) if shard else total
    where = f"{spec.symbol} on Linux {vm.version.release}"
    if args.plot:
        return _plot_kernel_sweep(args, console, vm, spec, policies, full, limit, shard, where)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True, disable=args.json,
    ) as bar:
        task = bar.add_task(f"sweep {where}", total=total)
        summary = sweep_kernel(
            vm, routine.name, policies, full=args.full, plan=plan, limit=limit, jobs=jobs,
            progress=lambda done, _total: bar.update(task, completed=done), fault_path=args.host, shard=shard,
        )
    if args.json:
        report.dump(summary_record(summary, vm, spec, policies), sys.stdout)
        return EXIT_OK if summary.ok else EXIT_UNEXPECTED
    say(console, f"{where} [{'lengths ' + args.lengths if lengths is not None else 'full' if args.full else 'quick'}; {', '.join(policies)}{'; real host' if args.host == 'real' else ''}]")
    print_summary(summary, console)
    for item in looseness(vm, routine.name):
        say(console, f"  looser than the reference (allowed): {item.what}")
    return EXIT_OK if summary.ok else EXIT_UNEXPECTED


def _plot_kernel_sweep(args, console: Console, vm: Vmlinux, spec, policies, full: bool, limit, shard, where: str) -> int:
    """`kernel sweep ... --plot FILE`: the same cases, each kept for the heatmaps (faultlab/plot.py)."""
    from faultlab.plot import collect
    from faultlab.sweep import shard_cases, with_shard
    from faultlab.sweep.kernel import KernelBench

    planned = plan_cases(spec, full, policies, limit)
    todo, ids = shard_cases(planned, shard)
    summary, points = collect(spec, todo, KernelBench(vm, fault_path=args.host))
    summary = with_shard(summary, shard, ids, len(planned))
    save_plot(summary, points, args.plot, policies, console, f"faultlab kernel sweep {where}", args.json)
    if args.json:
        report.dump(summary_record(summary, vm, spec, policies), sys.stdout)
    else:
        print_summary(summary, console)
    return EXIT_OK if summary.ok else EXIT_UNEXPECTED


def add_sweep_parser(sub) -> None:
    """`kernel sweep` under the `kernel` command's subparsers."""
    w = sub.add_parser("sweep", help="move a guest page across a real routine's buffers under every policy; check the reference contract")
    w.add_argument("vmlinux", help="a vmlinux path or a suite name")
    w.add_argument("symbol", help=f"one of {', '.join(KERNEL_ROUTINES)} (or sized_strscpy)")
    w.add_argument("--policy", action="append", help="only these policies (repeatable; default all)")
    w.add_argument("--lengths", metavar="A-B", help="sweep these buffer lengths, every boundary up to 64 bytes of reach")
    w.add_argument("--full", action="store_true", help="the full plan (tens of thousands of cases)")
    w.add_argument("--limit", metavar="N", help="run at most N cases")
    w.add_argument("--jobs", default="1", metavar="N", help="worker processes")
    w.add_argument("--json", action="store_true", help="print the summary as one JSON object (docs/schema/sweep.schema.json)")
    w.add_argument("--host", choices=HOSTS, default="model", help=HOST_HELP)
    w.add_argument("--shard", metavar="K/N", help="run only shard K of N of the planned cases; merge with `faultlab sweep-merge`")
    w.add_argument("--plot", metavar="FILE", help="also draw the cases as heatmaps into FILE.svg or FILE.png (needs matplotlib; one process)")
    w.set_defaults(func=cmd_sweep)
