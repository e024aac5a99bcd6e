"""Reports of a set of runs: the rich matrix, JSON lines, JUnit XML, a readable single-run trace."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Iterable, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from abi.linux import signal_name
from emu.outcome import OutcomeKind

from faultlab.oracle import Architectural, GuestIntegrity
from faultlab.runner import RunRecord

_STYLE = {
    OutcomeKind.RETURNED: "green",
    OutcomeKind.FIXED_UP: "green",
    OutcomeKind.SIGNAL: "green",
    OutcomeKind.TASK_KILLED: "yellow",
    OutcomeKind.HOST_OOPS: "red",
    OutcomeKind.HOST_BUG: "red",
    OutcomeKind.HYP_PANIC: "bold red",
}  # anything else (budget, timeout, livelock...): magenta


def cell(record: RunRecord) -> Text:
    v = record.verdict
    text = Text()
    text.append(str(v.outcome), style=_STYLE.get(v.outcome, "magenta"))
    if v.signals:
        text.append(" " + signal_name(v.signals[-1][0]))
    if v.guest is not GuestIntegrity.NOT_APPLICABLE:
        text.append(f"\nguest {v.guest}", style="green" if v.guest is GuestIntegrity.INTACT else "red")
    if v.leaked:
        text.append("\nLEAK", style="bold red")
    if v.architectural is Architectural.NO:
        text.append("\nsyndrome not arch.", style="dim")
    if record.unexpected:
        text.append("\nUNEXPECTED", style="bold reverse red")
    elif not record.judged:
        text.append("\nUNJUDGED", style="bold yellow")
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


def summary_line(records: list[RunRecord]) -> str:
    """`N runs, A as expected, B unexpected, C unjudged` (a run without an expectation is never counted as passed)."""
    passed = sum(r.passed for r in records)
    unexpected = sum(r.unexpected for r in records)
    unjudged = sum(not r.judged and not r.unexpected for r in records)
    return f"{len(records)} runs, {passed} as expected, {unexpected} unexpected, {unjudged} unjudged"


def print_matrix(records: list[RunRecord], policies: list[str], console: Console) -> None:
    console.print(matrix_table(records, policies))
    console.print(summary_line(records), markup=False, highlight=False)
    for r in records:
        if r.unexpected:
            console.print(f"UNEXPECTED {r.scenario.name} under {r.policy}: " + "; ".join(r.failures), style="red", markup=False, highlight=False)
    unjudged = sorted({r.policy for r in records if not r.judged})
    for policy in unjudged:
        names = ", ".join(r.scenario.name for r in records if r.policy == policy and not r.judged)
        console.print(f"UNJUDGED under {policy} (no expectation stated): {names}", style="yellow", markup=False, highlight=False)


def write_json(records: Iterable[RunRecord], out: TextIO, *, trace: bool = False) -> None:
    """One JSON object per run; with `trace`, its instruction trace ("trace": [{pc, el, text}]) and
    whether the trace stopped at the cap ("trace_truncated")."""
    for r in records:
        record = r.as_dict()
        if trace:
            steps = r.result.trace or []
            record["trace"] = [{"pc": s.pc, "el": s.el, "text": s.text} for s in steps]
            record["trace_truncated"] = r.result.trace_truncated
        out.write(json.dumps(record, sort_keys=True) + "\n")


def junit_xml(records: list[RunRecord]) -> str:
    unjudged = [r for r in records if not r.judged and not r.unexpected]
    suite = ET.Element(
        "testsuite", name="faultlab", tests=str(len(records)), failures=str(sum(r.unexpected for r in records)), skipped=str(len(unjudged))
    )
    for r in records:
        case = ET.SubElement(suite, "testcase", classname=f"faultlab.{r.scenario.name}", name=r.policy)
        out = ET.SubElement(case, "system-out")
        out.text = json.dumps(r.as_dict(), sort_keys=True)
        if not r.judged:
            ET.SubElement(case, "skipped", message=f"unjudged: {r.scenario.path} states no expectation for policy {r.policy}")
        elif r.unexpected:
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
        if res.trace_truncated:
            console.print(f"trace truncated after {len(res.trace)} steps (--trace-limit N for more)", markup=False, highlight=False)
    else:
        console.print("[dim]-- events --[/dim]")
        for e in events:
            console.print(str(e), markup=False, highlight=False)
    v = record.verdict
    console.print("[dim]-- verdict --[/dim]")
    for key, value in (
        ("outcome", f"{v.outcome}: {v.detail}"),
        ("guest", v.guest_text()),
        ("confidentiality", v.confidentiality_text()),
        ("architectural", v.architectural_text()),
    ):
        console.print(f"{key:16} {value}", markup=False, highlight=False)
    if record.failures:
        for f in record.failures:
            console.print("UNEXPECTED " + f, style="red", markup=False, highlight=False)
    elif not record.judged:
        console.print(f"[yellow]unjudged[/yellow]: the scenario states no expectation for {record.policy}")
    else:
        console.print("[green]as expected[/green]")
