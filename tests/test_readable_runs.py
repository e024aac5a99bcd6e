"""Readable runs: one trace line per executed instruction, housekeeping hidden unless --verbose, settings in the header."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from emu.outcome import Event, TraceStep
from faultlab import report
from faultlab.cli.main import main
from faultlab.runner import run
from faultlab.scenario import load

from cached_kernels import vmlinux

BUILTIN = sorted((Path(__file__).resolve().parent.parent / "faultlab" / "builtin").glob("*.toml"))
ZEROPAD = next(p for p in BUILTIN if p.name == "a_zeropad_overread.toml")
POLICIES = ["panic", "inject", "inject-reclaim", "reclaim", "rme-gpc-el3-inject"]
# Instructions after which the next one need not be at pc + 4.
IN_PLACE = ("abort", "idmap", "protected-access", "decision", "reclaim")
BRANCHES = re.compile(r"^(b|bl|br|blr|ret|eret|cbz|cbnz|tbz|tbnz|b\.\w+|hvc|smc|svc|brk)\b")


def _ev(seq: int, kind: str, pc: int, index: int) -> Event:
    return Event(seq, kind, pc, 1, kind, {"trace_index": index})


def test_an_aborted_attempt_folds_into_its_retry_but_a_self_loop_does_not():
    ldr, nxt = TraceStep(0x100, 1, "ldr x5, [x1]"), TraceStep(0x104, 1, "cmp x2, #8")
    trace = [TraceStep(0xFC, 1, "mov x3, #0"), ldr, ldr, nxt]
    events = [_ev(0, "abort", 0x100, 2), _ev(1, "idmap", 0x100, 2)]
    assert report.executed(trace, events) == [trace[0], ldr, nxt]
    stream = list(report.trace_stream(trace, events))
    assert stream == [trace[0], ldr, nxt]  # the idmap and its abort are housekeeping
    assert list(report.trace_stream(trace, events, verbose=True)) == [trace[0], *events, ldr, nxt]
    loop = [TraceStep(0x200, 1, "b #0x200")] * 3
    assert report.executed(loop, []) == loop  # `b .` really runs three times
    # an abort at another pc between two identical steps is not a retry of the first
    assert report.executed(loop, [_ev(0, "abort", 0x300, 1)]) == loop


@pytest.mark.parametrize("path", BUILTIN, ids=lambda p: p.stem)
def test_traces_step_through_the_code_once(path):
    """In the folded trace, each instruction is followed by the next one in memory unless it branches
    or an event (an exception, a fixup's eret) intervened: a repeated line would break the chain."""
    sc = load(path).variants()[0]
    for policy in [p for p in POLICIES if p in sc.policies]:
        rec = run(sc, policy, trace=True)
        raw, events = rec.result.trace, rec.result.events
        folded = report.executed(raw, events)
        assert len(raw) - len(folded) == len(report.retried_steps(raw, events))
        steps = [(n, s) for n, s in enumerate(raw) if n not in report.retried_steps(raw, events)]
        # events that move the pc elsewhere (an exception entry, a fixup's resume...); an abort that EL2
        # answers in place (idmap, reclaim) is followed by the same instruction again, folded above
        redirect = {e.data.get("trace_index") for e in events if e.kind not in IN_PLACE}
        for (n, a), (m, b) in zip(steps, steps[1:]):
            if BRANCHES.match(a.text) or any(n < i <= m for i in redirect if i is not None):
                continue
            assert b.pc == a.pc + 4, f"{path.stem}/{policy}: {a} then {b}"


def test_run_prints_the_faulting_load_once_and_idmap_only_verbose(capsys):
    assert main(["run", str(ZEROPAD), "--policy", "inject-reclaim", "--trace"]) == 0
    out = capsys.readouterr().out
    assert sum(1 for line in out.splitlines() if "ldr x5, [x1]" in line and line.startswith("EL1")) == 1
    assert "idmap" not in out
    assert main(["run", str(ZEROPAD), "--policy", "inject-reclaim", "--verbose"]) == 0
    assert "idmap: host stage-2 idmap" in capsys.readouterr().out


def test_run_header_names_the_settings_and_marks_defaults(capsys):
    assert main(["run", str(ZEROPAD), "--policy", "inject"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("settings: policy inject; host model; task user; kernel none")
    assert main(["run", str(ZEROPAD)]) == 0
    headers = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("settings:")]
    assert len(headers) == len(load(ZEROPAD).policies) and all("(default: every policy the scenario names" in h for h in headers)


@pytest.mark.kernel
def test_kernel_call_header_events_and_trace(capsys):
    vmlinux("7.2")
    argv = ["kernel", "call", "sid", "full_name_hash", "0", "buf+4091", "5", "--buffer", "8192", "--write", "buf+4091=hello", "--protect", "buf+4096"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert header.startswith("settings: policy inject-reclaim (default; --policy to choose); host model (default")
    assert "task kthread (default" in header and "kernel Linux 7.2" in header
    assert "idmap" not in out and "fixup: LOAD_UNALIGNED_ZEROPAD" in out
    assert main([*argv, "--verbose", "--policy", "inject", "--host", "model"]) == 0
    out = capsys.readouterr().out
    assert "idmap: host stage-2 idmap" in out and out.splitlines()[0].startswith("settings: policy inject; host model; task kthread (default")
    assert main([*argv, "--trace"]) == 0
    out = capsys.readouterr().out.splitlines()
    loads = [ln for ln in out if "ldr x3, [x1] <full_name_hash" in ln and ln.lstrip().startswith("EL1")]
    assert len(loads) == 1, loads
    i = out.index(loads[0])
    assert "abort: stage-2" in out[i + 1] and out[i + 1].lstrip().startswith(">>")


def test_sweep_header_names_plan_and_policies(capsys):
    from hyp.policies import known

    assert main(["sweep", "full_name_hash", "--limit", "3"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"settings: quick plan (default; --full, --lengths A-B); policies all {len(known())} (default); limit 3"
    assert main(["sweep", "full_name_hash", "--lengths", "2", "--policy", "inject", "--limit", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "settings: lengths 2; policies inject; limit 2"
    assert main(["sweep", "full_name_hash", "--limit", "3", "--json"]) == 0
    assert not capsys.readouterr().out.startswith("settings")  # JSON lines only
