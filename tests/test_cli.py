"""The faultlab CLI and scenario files: validation errors, JSON and JUnit output, exit codes."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from faultlab.cli.main import main
from faultlab.scenario import ScenarioError, parse
from hyp.policies import POLICIES

from samples import INLINE
from samples import MINIMAL_SCENARIO as GOOD



@pytest.mark.parametrize(
    "edit, line, field, words",
    [
        (("pages = 2", "pages = 0"), 9, "buffer.pages", "between 1 and 256"),
        (("protect = [1]", "protect = [2]"), 10, "buffer.protect", "not in 0..1"),
        (('symbol = "f"', 'symbol = "f"\nel = 2'), 6, "routine.el", "EL must be 0 or 1"),
        (('symbol = "f"', 'symbol = "f"\nbogus = 1'), 6, "routine.bogus", "unknown field"),
        (('name = "t"', 'name = "t"\npolicies = ["nope"]'), 2, "policies", "unknown policy"),
        (('symbol = "f"\n', ""), 3, "routine", "missing required field 'symbol'"),
        (("pages = 2", 'pages = "two"'), 9, "buffer.pages", "expected an integer"),
        (('name = "buf"', 'name = "buf"\ntext = "x"\nfill = "00"'), 9, "buffer.text", "not both"),
        (("protect = [1]", "protect = [1]\n\n[expect.reclaim]\noutcome = \"exploded\""), 13, "expect.reclaim.outcome", "unknown outcome"),
        (("protect = [1]", "protect = [1]\n\n[expect]\nregs = { x99 = 1 }"), 13, "expect.regs", "x0..x30"),
        (('name = "t"', 'name = "t" oops'), 1, "syntax", ""),
    ],
)
def test_scenario_errors_name_file_line_and_field(edit, line, field, words):
    text = GOOD.replace(*edit)
    with pytest.raises(ScenarioError) as err:
        parse(text, "my.toml")
    assert err.value.file == "my.toml"
    assert err.value.line == line, str(err.value)
    assert err.value.field == field
    assert words in str(err.value)
    assert str(err.value).startswith(f"my.toml:{line}: {field}: ")


def test_good_scenario_parses_with_defaults():
    sc = parse(GOOD, "ok.toml")
    assert sc.policies == tuple(POLICIES)
    assert sc.routine.el == 1 and sc.routine.pan
    assert sc.buffers[0].protect == (1,)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("pages = 2", "pages = -1"))
    assert main(["matrix", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"faultlab: error: {bad}:9: buffer.pages:")
    assert main(["matrix", str(tmp_path / "missing.toml")]) == 2
    assert main(["matrix", str(INLINE), "--policy", "nope"]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "asm, words",
    [
        ("SYM_FUNC_START(f)\\n\\tfrobnicate x0\\n\\tret\\nSYM_FUNC_END(f)\\n", "frobnicate"),
        ("SYM_FUNC_START(f)\\n\\tb nowhere\\nSYM_FUNC_END(f)\\n", "nowhere"),
    ],
)
def test_cli_bad_assembly_names_the_line(tmp_path, capsys, asm, words):
    f = tmp_path / "asm.toml"
    f.write_text(GOOD.replace("SYM_FUNC_START(f)\\n\\tmov x0, #1\\n\\tret\\nSYM_FUNC_END(f)\\n", asm))
    assert main(["run", str(f), "--policy", "inject"]) == 2
    err = capsys.readouterr().err.strip()
    # The asm string sits on line 4 of the scenario; its second line is the bad one... all on line 4.
    assert err.count("\n") == 0 and f"{f}:4: routine.asm:" in err and words in err and "Traceback" not in err


def test_unknown_symbol_is_bad_input(tmp_path, capsys):
    f = tmp_path / "sym.toml"
    f.write_text(GOOD.replace('symbol = "f"', 'symbol = "g"'))
    assert main(["run", str(f), "--policy", "inject"]) == 2
    assert "unknown symbol 'g'" in capsys.readouterr().err


def test_runaway_code_is_a_recorded_outcome(tmp_path, capsys):
    f = tmp_path / "loop.toml"
    f.write_text(GOOD.replace("\\tmov x0, #1\\n\\tret", "1:\\tb 1b").replace('symbol = "f"', 'symbol = "f"\nbudget = 5000'))
    assert main(["matrix", str(f), "--json", "--policy", "inject"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["outcome"] == "budget-exceeded"


def test_matrix_json_has_one_object_per_run(capsys):
    assert main(["matrix", str(INLINE), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["policy"] for r in rows] == list(POLICIES)
    for r in rows:
        assert {"scenario", "policy", "outcome", "detail", "guest_integrity", "confidentiality", "leak_where", "architectural", "non_architectural", "expected", "judged", "passed"} <= set(r)
        assert r["passed"] is True and r["judged"] is True
    by = {r["policy"]: r for r in rows}
    assert by["inject-reclaim"]["outcome"] == "fixed-up" and by["inject-reclaim"]["guest_integrity"] == "intact"
    assert by["reclaim"]["guest_integrity"] == "reclaimed" and by["reclaim"]["guest_pages_lost"] == 1
    assert by["panic"]["outcome"] == "hyp-panic"
    assert by["inject"]["architectural"] == "no" and by["inject"]["non_architectural"] == ["S1PTW"]


def test_matrix_junit_and_failing_expectation(tmp_path, capsys):
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(INLINE.read_text().replace('[expect.reclaim]\noutcome = "returned"', '[expect.reclaim]\noutcome = "host-oops"'))
    junit = tmp_path / "out.xml"
    assert main(["matrix", str(wrong), "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "UNEXPECTED inline-zeropad under reclaim: outcome: expected host-oops, got returned" in out
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == str(len(POLICIES)) and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["reclaim"]
    assert json.loads(failed[0].find("system-out").text)["outcome"] == "returned"


def test_run_prints_trace_with_source_lines(capsys):
    assert main(["run", str(INLINE), "--policy", "inject-reclaim", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "ldr x1, [x0]    inline_zeropad.toml[routine.asm]:2" in out
    assert "fixup: LOAD_UNALIGNED_ZEROPAD" in out
    assert "outcome          fixed-up" in out
    # Events sit between the instructions: the injection after the faulting ldr, the fixup
    # before the eret, and the routine's next instruction after both.
    lines = out.splitlines()
    inject = next(i for i, ln in enumerate(lines) if ">> " in ln and "inject: inject into host EL1" in ln)
    fixup = next(i for i, ln in enumerate(lines) if ">> " in ln and "fixup: LOAD_UNALIGNED_ZEROPAD" in ln)
    eret = next(i for i, ln in enumerate(lines) if ln.endswith("eret"))
    resumed = next(i for i, ln in enumerate(lines) if "mov x0, x1" in ln)
    last_ldr = max(i for i, ln in enumerate(lines[:inject]) if "ldr x1, [x0]    inline" in ln)
    assert last_ldr < inject < fixup < eret < resumed


def test_explain_decodes_pkvm_injected_esr(capsys):
    assert main(["explain", "0x96000087", "--far", "0xffff00000000e000"]) == 0
    out = capsys.readouterr().out
    assert "EC    [31:26] = 0x25" in out
    assert "S1PTW [7]     = 1  <- set on an injected abort" in out
    assert "DFSC  [5:0]   = 0x07  level 3 translation fault" in out
    assert "architectural at EL1: no (S1PTW)" in out
    assert main(["explain", "0x93c18007", "--el", "2", "--hpfar", "0x4000df0", "--far", "0xffff00000000dffd"]) == 0
    out = capsys.readouterr().out
    assert "SRT   [20:16] = 1  register x1" in out and "faulting IPA = 0x4000dfffd" in out
    assert main(["explain", "zzz"]) == 2


def test_console_script_runs_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "faultlab.cli.main", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in POLICIES:
        assert name in proc.stdout


def test_sweep_json_summary_and_bad_routine(capsys):
    assert main(["sweep", "full_name_hash", "--policy", "inject-reclaim", "--limit", "12", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["routine"] == "full_name_hash" and row["passed"] is True
    assert row["cases"] == sum(row["outcomes"].values()) and 0 < row["cases"] <= 12
    assert row["failures"] == []
    assert main(["sweep", "no_such_routine"]) == 2
    assert "unknown routine 'no_such_routine'" in capsys.readouterr().err


# ------------------------------------------------------------------ the trace cap at the CLI
LOOP = '''name = "loop"
policies = ["inject"]
[routine]
asm = """
f:
1:  b 1b
"""
symbol = "f"
budget = 30000
'''


def test_run_trace_stops_at_the_cap_and_says_so(tmp_path, capsys):
    """A runaway loop under --trace prints the machine's default cap of steps, then one truncation line."""
    from emu.run_limits import DEFAULT_MAX_TRACE

    (tmp_path / "loop.toml").write_text(LOOP)
    assert main(["run", str(tmp_path / "loop.toml"), "--trace"]) == 0  # unjudged: not a failure
    out = capsys.readouterr().out.splitlines()
    steps = [line for line in out if line.startswith("EL1 0x")]
    assert len(steps) == DEFAULT_MAX_TRACE < 30000
    assert f"trace truncated after {DEFAULT_MAX_TRACE} steps (--trace-limit N for more)" in out


def test_trace_limit_raises_the_cap_and_json_carries_the_trace(tmp_path, capsys):
    (tmp_path / "loop.toml").write_text(LOOP)
    assert main(["run", str(tmp_path / "loop.toml"), "--trace", "--trace-limit", "12000"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len([line for line in out if line.startswith("EL1 0x")]) == 12000
    assert "trace truncated after 12000 steps (--trace-limit N for more)" in out
    assert main(["run", str(tmp_path / "loop.toml"), "--trace", "--trace-limit", "25", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["trace_truncated"] is True and len(record["trace"]) == 25
    assert {s["text"] for s in record["trace"]} == {"b #0xffff800008000000"} and record["trace"][0]["el"] == 1
    assert main(["run", str(tmp_path / "loop.toml"), "--json"]) == 0
    assert "trace" not in json.loads(capsys.readouterr().out)  # asked for only with --trace


@pytest.mark.parametrize("argv, words", [
    (["--trace", "--trace-limit", "0"], "--trace-limit 0: at least 1 step"),
    (["--trace-limit", "5"], "--trace-limit needs --trace"),
])
def test_bad_trace_limits_are_refused(tmp_path, capsys, argv, words):
    (tmp_path / "loop.toml").write_text(LOOP)
    assert main(["run", str(tmp_path / "loop.toml"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("faultlab: error: ") and words in err and len(err.splitlines()) == 1
