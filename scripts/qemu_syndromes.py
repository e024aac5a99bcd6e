#!/usr/bin/env python3
"""The QEMU differential: every load/store class, straddling a page boundary at every offset, at EL0
and EL1, faulting at stage 1 or stage 2, on qemu-system-aarch64 (a bare-metal EL2 harness assembled
with kasm) and on our machine; prints a table and a one-line summary.

Exit status: 0 when every difference is a known QEMU departure (faultlab/qemu/departures.py) or a
named gap of the machine (a family marked so in faultlab/qemu/cases.py), 1 on any unexplained
difference, 2 on bad arguments or when QEMU is missing or fails. docs/qemu.md says more.

    scripts/qemu_syndromes.py                       # every family
    scripts/qemu_syndromes.py --family straddle --form 'ldp*' --show-departures
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faultlab.qemu.cases import FAMILY_BY_NAME  # noqa: E402
from faultlab.qemu.compare import Report, Verdict  # noqa: E402
from faultlab.qemu.departures import BY_ID, measured_versions  # noqa: E402
from faultlab.qemu.differential import SelectionError, run_differential, select  # noqa: E402
from faultlab.qemu.qemu_side import QemuError  # noqa: E402


def table(title: str, groups: dict) -> str:
    cols = [Verdict.AGREE, Verdict.DEPARTURE, Verdict.GAP, Verdict.UNEXPLAINED]
    rows = [(title, *[v.value for v in cols], "total")]
    for name, counts in groups.items():
        rows.append((name, *[str(counts[v]) for v in cols], str(sum(counts.values()))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def departures_text(report: Report) -> str:
    out = []
    for dep_id, n in sorted(report.departures_seen().items()):
        d = BY_ID[dep_id]
        out.append(f"  {dep_id} ({n} cases): {d.title}\n    QEMU: {d.qemu}\n    Arm ARM: {d.arm}\n    our machine: {d.machine}\n    spec: {d.spec}")
    return "\n".join(out)


def case_line(r) -> str:
    why = r.departure.id if r.departure else ",".join(r.fields)
    return f"  {r.case.id:44} [{why}]\n    qemu:    {r.qemu.brief()}\n    machine: {r.machine.brief()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", action="append", default=[], help=f"one of {', '.join(FAMILY_BY_NAME)} (repeatable; default all)")
    parser.add_argument("--form", action="append", default=[], help="form name glob, e.g. 'ldp*' (repeatable)")
    parser.add_argument("--qemu", default=None, help="the qemu-system-aarch64 binary (default: $FAULTLAB_QEMU or PATH)")
    parser.add_argument("--show", type=int, default=40, metavar="N", help="list at most N unexplained cases (default 40)")
    parser.add_argument("--show-departures", action="store_true", help="list every case a known departure explains")
    parser.add_argument("--show-gaps", action="store_true", help="list every machine-gap case")
    args = parser.parse_args(argv)
    if args.show < 0:
        print("qemu_syndromes: --show must be >= 0", file=sys.stderr)
        return 2
    try:
        cases = select(args.family, args.form)
        start = time.monotonic()
        report = run_differential(cases, args.qemu)
    except (SelectionError, QemuError) as exc:
        print(f"qemu_syndromes: {exc}", file=sys.stderr)
        return 2
    print(table("family", report.by_family()))
    print()
    print(table("class", report.by_class()))
    print()
    if report.version not in measured_versions():
        print(f"note: QEMU {report.version} has no measured departure list (measured: {', '.join(sorted(measured_versions()))});"
              " every difference counts as unexplained")
    if report.departures_seen():
        print("known QEMU departures from the Arm ARM:")
        print(departures_text(report))
    complete = not args.family and not args.form  # a subset need not show every departure
    for d in report.stale_departures() if complete else ():
        print(f"note: departure {d.id} is listed for QEMU {report.version} but no case showed it")
    for name in report.closed_gaps():
        print(f"note: family {name} is marked as a machine gap but no case differs any more: drop the mark")
    listed = [r for r in report.results if (r.verdict is Verdict.DEPARTURE and args.show_departures)
              or (r.verdict is Verdict.GAP and args.show_gaps)]
    for r in listed:
        print(case_line(r))
    unexplained = report.unexplained
    if unexplained:
        print(f"unexplained differences ({len(unexplained)}, first {min(args.show, len(unexplained))}):")
        for r in unexplained[: args.show]:
            print(case_line(r))
    print(f"{report.summary()} ({time.monotonic() - start:.1f} s)")
    return 1 if unexplained else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # a reader that left early (| head): end quietly, as the faultlab CLI does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
