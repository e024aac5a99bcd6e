"""The `faultlab` command line; exit codes in faultlab/cli/errors.py."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console

from hyp.policies import UnknownPolicy, known as known_policies

from emu.run_limits import DEFAULT_MAX_TRACE
from kimage.elf import VmlinuxError

from faultlab import report
from faultlab.cli.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, EXIT_UNEXPECTED, UsageError, one_line, trace_limit
from faultlab.cli.kernel import add_kernel_commands
from faultlab.cli.sweep import add_sweep_command
from faultlab.kernel.fetch import KernelFetchError
from faultlab.kernel.lab import KernelUsageError, VmlinuxShelf
from faultlab.sweep import SweepError
from faultlab.runner import RunError, run
from faultlab.scenario import Scenario, ScenarioError, load

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin"


def builtin_scenarios() -> list[Path]:
    return sorted(BUILTIN_DIR.glob("*.toml"))


def _scenario_files(paths: list[str]) -> list[Path]:
    if not paths:
        return builtin_scenarios()
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.glob("*.toml"))
        elif p.exists():  # a file, or a device such as /dev/zero: load() refuses what is not a scenario
            files.append(p)
        else:
            raise UsageError(f"{p}: no such file or directory")
    if not files:
        raise UsageError(f"no scenario files (*.toml) in {' '.join(paths)}")
    return files


def _policies(asked: list[str] | None, scenario: Scenario | None = None) -> list[str]:
    for p in asked or []:
        if p not in known_policies():
            raise UsageError(f"unknown policy {p!r} (known: {', '.join(known_policies())})")
    if asked:
        return list(asked)
    return list(scenario.policies) if scenario else list(known_policies())


def cmd_matrix(args, console: Console) -> int:
    args.host_given = args.host is not None
    args.host = args.host or "model"
    scenarios = [v for f in _scenario_files(args.paths) for v in load(f).variants()]
    policies = _policies(args.policy)
    kernels = VmlinuxShelf(args.host)  # each vmlinux is parsed once for the whole matrix
    records = []
    for sc in scenarios:
        for p in policies:
            if p in sc.policies:
                records.append(run(sc, p, kernels=kernels))
    if args.json:
        report.write_json(records, sys.stdout, host=args.host)
    else:
        if any(r.lab.vmlinux is not None for r in records):  # only a vmlinux's runs depend on the host
            note = "" if args.host_given else " (default; --host real for the image's own fault path)"
            console.print(f"settings: host {args.host}{note}; policies {'as given' if args.policy else 'all (default)'}", markup=False, highlight=False)
        report.print_matrix(records, policies, console)
    if args.junit:
        Path(args.junit).write_text(report.junit_xml(records))
    # Unjudged runs are shown and counted but do not fail the command: only unexpected ones do.
    return EXIT_UNEXPECTED if any(r.unexpected for r in records) else EXIT_OK


def cmd_run(args, console: Console) -> int:
    args.host_given = args.host is not None
    args.host = args.host or "model"
    max_trace = trace_limit(args)
    scenario = load(args.file)
    status = EXIT_OK
    kernels = VmlinuxShelf(args.host)
    runs = [(v, p) for v in scenario.variants() for p in _policies(args.policy, v)]
    gdb = None
    if args.gdb:  # faultlab/gdb imports this package's errors: imported here, not at the top
        from faultlab.gdb.attach import attach_one

        gdb = attach_one(args.gdb, scenario.name, [sc.name for sc, _ in runs])
    for sc, p in runs:
        record = run(sc, p, trace=args.trace, max_trace=max_trace, kernels=kernels, before_call=gdb and gdb.attach)
        if gdb:
            gdb.finish(record.result)
        if args.json:
            report.write_json([record], sys.stdout, trace=args.trace, host=args.host)
        else:
            header = run_header(record, policy_given=bool(args.policy), host=args.host, host_given=args.host_given)
            report.print_run(record, console, trace=args.trace, verbose=args.verbose, header=header)
        status = EXIT_UNEXPECTED if record.unexpected else status
    return status


def run_header(record, *, policy_given: bool, host: str, host_given: bool) -> str:
    """The settings of one run, defaults marked, so nobody reads a verdict without knowing what produced it."""
    vm = record.lab.vmlinux
    kernel = f"Linux {vm.version.release} ({vm.path})" if vm is not None else "none (guest_asm routines on the Python host model)"
    policy = f"policy {record.policy}" + ("" if policy_given else " (default: every policy the scenario names; --policy to choose)")
    host_text = f"host {host}" + ("" if host_given else " (default; --host real for the image's own fault path)") if vm is not None else "host model"
    return f"settings: {policy}; {host_text}; task {record.scenario.routine.task}; kernel {kernel}"


def list_record() -> dict:
    """`faultlab list --json` (docs/schema/list.schema.json): policies, built-in scenarios, routines."""
    from faultlab.sweep import ROUTINES

    return {
        "policies": [{"name": p.name, "summary": p.summary} for p in known_policies().values()],
        "scenarios": [{"name": sc.name, "description": sc.description, "file": f.name} for f in builtin_scenarios() for sc in [load(f)]],
        "routines": [{"name": name, "file": spec.file, "symbol": spec.symbol} for name, spec in ROUTINES.items()],
    }


def cmd_list(args, console: Console) -> int:
    if args.json:
        report.dump(list_record(), sys.stdout)
        return EXIT_OK
    console.print("[bold]policies[/bold]")
    for p in known_policies().values():
        console.print(f"  {p.name:20} {p.summary}", highlight=False)
    console.print("[bold]built-in scenarios[/bold]")
    for f in builtin_scenarios():
        sc = load(f)
        console.print(f"  {sc.name:28} {sc.description}", highlight=False)
    from faultlab.sweep import ROUTINES

    console.print("[bold]routines[/bold] (faultlab sweep NAME)")
    for name, spec in ROUTINES.items():
        console.print(f"  {name:28} {spec.file}:{spec.symbol}", highlight=False, markup=False)
    return EXIT_OK


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"not an integer: {text!r}") from None


def _register(text: str | None, what: str, bits: int = 64) -> int | None:
    """A system-register value from the command line: an integer in [0, 2**bits), or a UsageError naming it."""
    if text is None:
        return None
    value = _int(text)
    if not 0 <= value < (1 << bits):
        raise UsageError(f"{what} {text}: not a {bits}-bit register value (0 .. {(1 << bits) - 1:#x})")
    return value


def cmd_explain(args, console: Console) -> int:
    from faultlab.cli.explain import explain

    # ESR_ELx is 64 bits with [63:56] RES0 (Arm ARM D24.2.40): a value above bit 55 is no ESR.
    esr = _int(args.esr)
    if not 0 <= esr < (1 << 56):
        raise UsageError(f"ESR {args.esr}: does not fit in ESR_ELx[55:0] (0 .. {(1 << 56) - 1:#x})")
    far = _register(args.far, "--far")
    hpfar = _register(args.hpfar, "--hpfar")
    if hpfar is not None and args.el != 2:
        raise UsageError("--hpfar needs --el 2: HPFAR_EL2 is reported only for faults taken to EL2")
    if args.json:
        from faultlab.cli.explain import explain_record

        report.dump(explain_record(esr, el=args.el, far=far, hpfar=hpfar), sys.stdout)
        return EXIT_OK
    console.print(explain(esr, el=args.el, far=far, hpfar=hpfar), highlight=False, markup=False)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faultlab", description="Run host-kernel code under pKVM fault policies and compare the outcomes.")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("matrix", help="scenario x policy verdicts (built-in scenarios when no paths are given)")
    m.add_argument("paths", nargs="*", help="scenario files or directories")
    m.add_argument("--policy", action="append", help="only these policies (repeatable)")
    m.add_argument("--json", action="store_true", help="one JSON object per run on stdout (docs/schema/run.schema.json)")
    m.add_argument("--junit", metavar="FILE", help="also write JUnit XML to FILE")
    m.add_argument("--host", choices=("model", "real"), default=None, help="vmlinux scenarios: the host fault path is the Python model of fault.c (model, the default) or the image's own do_mem_abort (real)")
    m.set_defaults(func=cmd_matrix)
    r = sub.add_parser("run", help="one scenario with events (and an instruction trace)")
    r.add_argument("file")
    r.add_argument("--policy", action="append")
    r.add_argument("--trace", action="store_true", help=f"print the executed instructions (at most {DEFAULT_MAX_TRACE}; with --json, as a list)")
    r.add_argument("--trace-limit", type=int, metavar="N", help=f"trace at most N instructions (default {DEFAULT_MAX_TRACE})")
    r.add_argument("--host", choices=("model", "real"), default=None, help="vmlinux scenarios: the host fault path is the Python model of fault.c (model, the default) or the image's own do_mem_abort (real)")
    r.add_argument("--json", action="store_true", help="one JSON object per run on stdout (docs/schema/run.schema.json)")
    r.add_argument("--verbose", action="store_true", help="also show housekeeping events (lazy stage-2 idmap aborts)")
    r.add_argument("--gdb", metavar="[HOST:]PORT", help="serve gdb's remote protocol (127.0.0.1 unless HOST), stopped at the routine's entry (docs/gdb.md)")
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("list", help="built-in policies, scenarios and routines")
    ls.add_argument("--json", action="store_true", help="one JSON object on stdout (docs/schema/list.schema.json)")
    ls.set_defaults(func=cmd_list)
    e = sub.add_parser("explain", help="decode an ESR value field by field")
    e.add_argument("esr")
    e.add_argument("--el", type=int, choices=(1, 2), default=1)
    e.add_argument("--far")
    e.add_argument("--hpfar")
    e.add_argument("--json", action="store_true", help="the fields as one JSON object (docs/schema/explain.schema.json)")
    e.set_defaults(func=cmd_explain)
    add_sweep_command(sub)
    add_kernel_commands(sub)
    return parser


class _Console(Console):
    """rich's Console ends the process with exit 1 when stdout's reader goes away; we end quietly with 0."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def _quiet_stdout() -> None:
    """`faultlab matrix | head -1`: the reader left. Point stdout at /dev/null so the interpreter's
    final flush does not fail again (the Python docs' advice for SIGPIPE, library/signal.html)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    console = _Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = _Console(highlight=False, width=200)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args, console)
    except (UsageError, ScenarioError, RunError, UnknownPolicy, KernelUsageError, VmlinuxError, KernelFetchError, SweepError) as exc:
        print(f"faultlab: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("faultlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except Exception as exc:  # a bug in faultlab, not bad input: one line, and how to see more
        print(f"faultlab: internal error: {type(exc).__name__}: {one_line(str(exc))} (set FAULTLAB_DEBUG=1 for a traceback)", file=sys.stderr)
        if os.environ.get("FAULTLAB_DEBUG"):
            raise
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
