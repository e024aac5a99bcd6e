"""Reports of a set of runs: the rich matrix, JSON lines, JUnit XML, a readable single-run trace."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Iterable, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from host.tasks import signal_name

from faultlab.runner import RunRecord

_STYLE = {
    "returned": "green",
    "fixed-up": "green",
    "signal": "green",
    "task-killed": "yellow",
    "host-oops": "red",
    "host-bug": "red",
    "hyp-panic": "bold red",
    "budget-exceeded": "magenta",
}


def cell(record: RunRecord) -> Text:
    v = record.verdict
    text = Text()
    text.append(v.outcome, style=_STYLE.get(v.outcome, "white"))
    if v.signals:
        text.append(" " + signal_name(v.signals[-1][0]))
    guest = v.guest_integrity.split(":")[0]
    if guest != "n/a":
        text.append(f"\nguest {guest}", style="green" if guest == "intact" else "red")
    if v.leaked:
        text.append("\nLEAK", style="bold red")
    if v.architectural.startswith("no"):
        text.append("\nsyndrome not arch.", style="dim")
    if not record.passed:
        text.append("\nUNEXPECTED", style="bold reverse red")
    return text


def matrix_table(records: list[RunRecord], policies: list[str]) -> Table:
    table = Table(title="pkvm-faultlab: scenario x policy", show_lines=True)
    table.add_column("scenario", style="bold")
    for p in policies:
        table.add_column(p)
    by_scenario: dict[str, dict[str, RunRecord]] = {}
    for r in records:
        by_scenario.setdefault(r.scenario.name, {})[r.policy] = r
    for name, row in by_scenario.items():
        table.add_row(name, *[cell(row[p]) if p in row else Text("-", style="dim") for p in policies])
    return table


def print_matrix(records: list[RunRecord], policies: list[str], console: Console) -> None:
    console.print(matrix_table(records, policies))
    failed = [r for r in records if not r.passed]
    console.print(f"{len(records)} runs, {len(records) - len(failed)} as expected, {len(failed)} unexpected")
    for r in failed:
        console.print(f"UNEXPECTED {r.scenario.name} under {r.policy}: " + "; ".join(r.failures), style="red", markup=False, highlight=False)


def write_json(records: Iterable[RunRecord], out: TextIO) -> None:
    for r in records:
        out.write(json.dumps(r.as_dict(), sort_keys=True) + "\n")


def junit_xml(records: list[RunRecord]) -> str:
    suite = ET.Element("testsuite", name="faultlab", tests=str(len(records)), failures=str(sum(not r.passed for r in records)))
    for r in records:
        case = ET.SubElement(suite, "testcase", classname=f"faultlab.{r.scenario.name}", name=r.policy)
        out = ET.SubElement(case, "system-out")
        out.text = json.dumps(r.as_dict(), sort_keys=True)
        if not r.passed:
            fail = ET.SubElement(case, "failure", message="; ".join(r.failures))
            fail.text = "\n".join(str(e) for e in r.result.events[-20:])
    return ET.tostring(suite, encoding="unicode")


def _bookkeeping(events, i: int) -> bool:
    """A host stage-2 abort that EL2 answered with a lazy idmap is bookkeeping, not news."""
    e = events[i]
    return e.kind == "idmap" or (e.kind == "abort" and i + 1 < len(events) and events[i + 1].kind == "idmap")


def print_run(record: RunRecord, console: Console, *, trace: bool) -> None:
    """One scenario under one policy: the instruction trace (if asked), the events and the verdict."""
    res = record.result
    lines = {pc: loc for image in record.lab.images for pc, loc in image.lines.items()}
    console.print(f"[bold]{record.scenario.name}[/bold] under [bold]{record.policy}[/bold]", highlight=False)
    events = [e for i, e in enumerate(res.events) if not _bookkeeping(res.events, i)]
    if trace and res.trace is not None:
        # One stream: each event is printed after the instructions that ran before it.
        console.print("[dim]-- instructions and events --[/dim]")
        pending = list(events)
        for n, step in enumerate(res.trace):
            while pending and pending[0].data.get("trace_index", 0) <= n:
                console.print("      >> " + str(pending.pop(0)), markup=False, highlight=False)
            loc = lines.get(step.pc)
            where = f"    {loc.file.rsplit('/', 1)[-1]}:{loc.line}" if loc else ""
            console.print(f"{step}{where}", markup=False, highlight=False)
        for e in pending:
            console.print("      >> " + str(e), markup=False, highlight=False)
    else:
        console.print("[dim]-- events --[/dim]")
        for e in events:
            console.print(str(e), markup=False, highlight=False)
    v = record.verdict
    console.print("[dim]-- verdict --[/dim]")
    for key, value in (
        ("outcome", f"{v.outcome}: {v.detail}"),
        ("guest", v.guest_integrity),
        ("confidentiality", v.confidentiality),
        ("architectural", v.architectural),
    ):
        console.print(f"{key:16} {value}", markup=False, highlight=False)
    if record.failures:
        for f in record.failures:
            console.print("UNEXPECTED " + f, style="red", markup=False, highlight=False)
    else:
        console.print("[green]as expected[/green]")
