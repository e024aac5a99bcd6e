"""Scenario schema and judging: every outcome, signals by name, unjudged policies, several kernels per file."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from emu.outcome import OutcomeKind
from faultlab.cli.main import main
from faultlab.runner import run
from faultlab.scenario import OUTCOMES, ScenarioError, parse
from faultlab.sweep import run_sweep
from hyp.policies import POLICIES, Inject, registered

from samples import INLINE
from samples import MINIMAL_SCENARIO as BASE



@pytest.fixture
def extra_policy():
    """A policy added in a few lines, test-locally: inject under another name, which no scenario or model knows."""

    class Extra(Inject):
        name = "test-extra"
        summary = "inject, under a name nothing expects"

    with registered(Extra()):
        yield Extra.name


# ------------------------------------------------------------------ schema
@pytest.mark.parametrize("kind", [k for k in OutcomeKind if k is not OutcomeKind.NESTED_RETURN])
def test_every_outcome_a_run_can_produce_is_accepted(kind):
    sc = parse(BASE + f'[expect]\noutcome = "{kind}"\n', "s.toml")
    assert sc.expectation("inject").outcome is kind


def test_outcome_list_covers_event_limit_timeout_livelock():
    assert {"event-limit", "timeout", "unhandled-exception", "livelock", "fatal-call"} <= set(OUTCOMES)
    assert "nested-return" not in OUTCOMES


@pytest.mark.parametrize(
    "expect, line, field, words",
    [
        ('[expect.inject]\nsignal = "SIGSGEV"\n', 12, "expect.inject.signal", "unknown signal 'SIGSGEV'"),
        ('[expect]\nmemory = [{ at = "dst + 4", hex = "00" }]\n', 12, "expect.memory", "'dst', which is not a buffer"),
    ],
)
def test_expectation_errors_are_scenario_errors(tmp_path, capsys, expect, line, field, words):
    with pytest.raises(ScenarioError) as err:
        parse(BASE + expect, "s.toml")
    assert (err.value.line, err.value.field) == (line, field) and words in err.value.message
    path = tmp_path / "s.toml"
    path.write_text(BASE + expect)
    assert main(["matrix", str(path)]) == 2
    assert f"s.toml:{line}: {field}:" in capsys.readouterr().err


def test_signal_names_are_checked_by_number():
    sc = parse(BASE + '[expect.inject]\nsignal = "SIGBUS"\n', "s.toml")
    assert sc.expectation("inject").signal == "SIGBUS"


def test_an_unreadable_memory_expectation_is_the_scenarios_error(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(BASE + '[expect.panic]\noutcome = "hyp-panic"\nmemory = [{ at = "buf + 0x100000", hex = "00" }]\n')
    assert main(["run", str(path), "--policy", "panic"]) == 2
    assert "s.toml:13: memory:" in capsys.readouterr().err


# ------------------------------------------------------------------ unjudged
def test_a_policy_without_expectation_is_unjudged_in_the_matrix(extra_policy, capsys, tmp_path):
    assert main(["matrix", str(INLINE), "--policy", "inject", "--policy", extra_policy]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 1 as expected, 0 unexpected, 1 unjudged" in out
    assert f"UNJUDGED under {extra_policy} (no expectation stated): inline-zeropad" in out
    assert main(["matrix", str(INLINE), "--policy", "inject", "--policy", extra_policy, "--json", "--junit", str(tmp_path / "j.xml")]) == 0
    rows = {r["policy"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert (rows["inject"]["judged"], rows["inject"]["passed"]) == (True, True)
    assert (rows[extra_policy]["judged"], rows[extra_policy]["passed"]) == (False, False)
    assert rows[extra_policy]["outcome"] == "fixed-up"  # it ran and was reported, just not judged
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "0", "1")
    (skipped,) = suite.iter("skipped")
    assert extra_policy in skipped.get("message") and "no expectation" in skipped.get("message")


def test_common_expectation_keys_judge_every_policy(extra_policy):
    sc = parse(BASE + '[expect]\nguest = "intact"\n', "s.toml")
    assert sc.judged(extra_policy) and run(sc, extra_policy).passed
    bare = parse(BASE, "s.toml")
    record = run(bare, "inject")
    assert not record.judged and not record.passed and not record.unexpected


def test_the_pytest_plugin_skips_unjudged_items(pytester):
    """A pytest session over a scenario file (in process: the plugin's behaviour, not a new interpreter's)."""
    (pytester.path / "s.toml").write_text(BASE + '[expect.panic]\noutcome = "returned"\n')
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-rs", str(pytester.path / "s.toml"))
    stdout = result.stdout.str()
    assert result.ret == 0, stdout + result.stderr.str()
    assert f"1 passed, {len(POLICIES) - 1} skipped" in stdout
    assert "unjudged:" in stdout and "states no expectation for policy inject" in stdout


def test_a_sweep_under_a_policy_without_reference_traits_is_unjudged(extra_policy, capsys):
    summary = run_sweep("full_name_hash", ["inject", extra_policy], limit=20)
    assert summary.cases == 20 and 0 < summary.unjudged < 20 and summary.ok
    assert summary.as_json()["unjudged"] == summary.unjudged
    assert sum(summary.outcomes.values()) == summary.cases - summary.unjudged  # unjudged cases are not run
    assert main(["sweep", "full_name_hash", "--policy", extra_policy, "--limit", "5"]) == 0
    assert "5 cases, 0 failures, 5 unjudged" in capsys.readouterr().out


# ------------------------------------------------------------------ several kernels in one file
KERNELS = """\
name = "k"
policies = ["inject", "reclaim"]

[routine]
vmlinux = ["bookworm", "sid"]
symbol = "full_name_hash"

[expect.inject]
outcome = "fixed-up"
guest = "intact"

[expect.inject.sid]
outcome = "host-oops"

[expect.reclaim]
outcome = "returned"
"""


def test_a_scenario_runs_once_per_kernel_with_per_kernel_overrides():
    sc = parse(KERNELS, "k.toml")
    bookworm, sid = sc.variants()
    assert (bookworm.name, bookworm.routine.source, sid.name, sid.routine.source) == ("k@bookworm", "bookworm", "k@sid", "sid")
    assert (bookworm.expectation("inject").outcome, bookworm.expectation("inject").guest) == ("fixed-up", "intact")
    assert (sid.expectation("inject").outcome, sid.expectation("inject").guest) == ("host-oops", "intact")  # key by key
    assert sid.expectation("reclaim").outcome == "returned"


def test_a_per_kernel_override_must_name_one_of_the_scenarios_kernels():
    with pytest.raises(ScenarioError) as err:
        parse(KERNELS.replace("[expect.inject.sid]", "[expect.inject.trixie]"), "k.toml")
    assert (err.value.line, err.value.field) == (12, "expect.inject.trixie") and "not one of the scenario's kernels" in err.value.message
