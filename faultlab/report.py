"""Reports of a set of runs: the rich matrix, JSON lines, JUnit XML, a readable single-run trace."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Iterable, Iterator, Sequence, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from abi.linux import signal_name
from emu.outcome import Event, OutcomeKind, TraceStep

from faultlab.oracle import Architectural, GuestIntegrity
from faultlab.runner import RunRecord

# The version of every JSON document faultlab prints (docs/schema/*.schema.json). 1: the records
# before issue 11, whose verdicts were sentences (faultlab/report_compat.py reads them); 2: the
# structured verdict fields, and `schema_version` in every document.
SCHEMA_VERSION = 2


def versioned(doc: dict) -> dict:
    """A JSON document as faultlab prints it: `schema_version` first, then the document."""
    return {"schema_version": SCHEMA_VERSION, **doc}


def dump(doc: dict, out: TextIO) -> None:
    """One versioned JSON document as one line (the JSON-lines every --json output is)."""
    out.write(json.dumps(versioned(doc), sort_keys=True) + "\n")


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


def write_json(records: Iterable[RunRecord], out: TextIO, *, trace: bool = False, host: str | None = None) -> None:
    """One JSON object per run (docs/schema/run.schema.json); with `trace`, its instruction trace
    ("trace": [{pc, el, text}], one entry per executed instruction) and whether the trace stopped at
    the cap ("trace_truncated"). `host`: the host fault path the runs used (model or real)."""
    for r in records:
        record = {"schema_version": SCHEMA_VERSION, **r.as_dict()}
        if host is not None:
            record["host"] = host
        if trace:
            steps = executed(r.result.trace or [], r.result.events)
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


def housekeeping(events: Sequence[Event], i: int) -> bool:
    """A host stage-2 abort that EL2 answered with a lazy idmap is bookkeeping, not news (hyp/abort.py
    maps the host's own frames on first touch): shown only with --verbose."""
    e = events[i]
    return e.kind == "idmap" or (e.kind == "abort" and i + 1 < len(events) and events[i + 1].kind == "idmap")


def visible_events(events: Sequence[Event], verbose: bool = False) -> list[Event]:
    """The events a reader wants: everything with `verbose`, else all but the housekeeping."""
    return list(events) if verbose else [e for i, e in enumerate(events) if not housekeeping(events, i)]


def retried_steps(trace: Sequence[TraceStep], events: Sequence[Event]) -> set[int]:
    """Indexes of trace steps whose instruction aborted and was attempted again: not executed.

    Unicorn's code hook fires before an instruction runs; a stage-2 abort on
    its access stops it, EL2 answers (a lazy idmap, a reclaim) and the same
    instruction is attempted again, so the raw trace holds it twice. Step n
    is such an attempt when an abort at its pc was logged after it
    (trace_index n+1) and step n+1 is the same instruction. A loop that
    branches to itself (`b .`) has no abort between its steps and keeps
    every one.
    """
    aborted = {(e.data.get("trace_index"), e.pc) for e in events if e.kind == "abort"}
    return {
        n for n in range(len(trace) - 1)
        if (n + 1, trace[n].pc) in aborted and (trace[n + 1].pc, trace[n + 1].el) == (trace[n].pc, trace[n].el)
    }


def executed(trace: Sequence[TraceStep], events: Sequence[Event]) -> list[TraceStep]:
    """The trace with one step per executed instruction (aborted attempts folded into their retry)."""
    drop = retried_steps(trace, events)
    return [s for n, s in enumerate(trace) if n not in drop]


def trace_stream(trace: Sequence[TraceStep], events: Sequence[Event], *, verbose: bool = False) -> Iterator[TraceStep | Event]:
    """Instructions and events in one stream: each event after the instructions that ran before it,
    one step per executed instruction, housekeeping events only with `verbose`."""
    drop = retried_steps(trace, events)
    pending = visible_events(events, verbose)
    k = 0
    for n, step in enumerate(trace):
        while k < len(pending) and pending[k].data.get("trace_index", 0) <= n:
            yield pending[k]
            k += 1
        if n not in drop:
            yield step
    yield from pending[k:]


def print_run(record: RunRecord, console: Console, *, trace: bool, verbose: bool = False, header: str = "") -> None:
    """One scenario under one policy: the instruction trace (if asked), the events and the verdict.

    `header`: the run's settings (policy, host, kernel; which were defaults), printed under the title."""
    res = record.result
    lines = {pc: loc for image in record.lab.images for pc, loc in image.lines.items()}
    console.print(f"[bold]{record.scenario.name}[/bold] under [bold]{record.policy}[/bold]", highlight=False)
    if header:
        console.print(header, markup=False, highlight=False)
    if trace and res.trace is not None:
        console.print("[dim]-- instructions and events --[/dim]")
        for item in trace_stream(res.trace, res.events, verbose=verbose):
            if isinstance(item, Event):
                console.print("      >> " + str(item), markup=False, highlight=False)
                continue
            loc = lines.get(item.pc)
            where = f"    {loc.file.rsplit('/', 1)[-1]}:{loc.line}" if loc else ""
            console.print(f"{item}{where}", markup=False, highlight=False)
        if res.trace_truncated:
            console.print(f"trace truncated after {len(res.trace)} steps (--trace-limit N for more)", markup=False, highlight=False)
    else:
        console.print("[dim]-- events --[/dim]")
        for e in visible_events(res.events, verbose):
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
