"""`[routine] task`: the scenario says whether `current` is a user task (with an mm) or a kernel thread."""
from __future__ import annotations

from pathlib import Path

import pytest

from faultlab.runner import run
from faultlab.scenario import ScenarioError, TaskKind, load, parse

BUILTIN = Path(__file__).resolve().parent.parent / "faultlab" / "builtin"
HEAD = 'name = "t"\n[routine]\nfile = "uaccess.S"\nsymbol = "__arch_copy_from_user"\n'


def _parse(routine: str = "", buffers: str = "") -> object:
    return parse(HEAD + routine + buffers, "t.toml")


def test_default_follows_el_and_user_buffers():
    assert _parse().routine.task is TaskKind.KTHREAD
    assert _parse(buffers='[[buffer]]\nname = "b"\nuser = true\n').routine.task is TaskKind.USER
    assert _parse("el = 0\n").routine.task is TaskKind.USER
    assert _parse('task = "kthread"\n', '[[buffer]]\nname = "b"\nuser = true\n').routine.task is TaskKind.KTHREAD


@pytest.mark.parametrize(
    "routine,message",
    [('task = "process"\n', "unknown task 'process' (user or kthread)"), ('el = 0\ntask = "kthread"\n', "EL0 code always runs in a user task")],
)
def test_bad_task_is_a_located_error(routine, message):
    with pytest.raises(ScenarioError) as exc:
        _parse(routine)
    line = next(n for n, text in enumerate((HEAD + routine).splitlines(), 1) if text.startswith("task"))
    assert exc.value.field == "routine.task" and exc.value.message == message and exc.value.line == line


@pytest.mark.parametrize(
    "file,task",
    [("d_copy_from_user", "user"), ("d_copy_to_user", "user"), ("b_vmm_oob", "user"), ("a_zeropad_overread", "user"), ("c_gup_kernel_alias", "kthread")],
)
def test_builtin_scenarios_state_their_task(file, task):
    path = BUILTIN / f"{file}.toml"
    assert f'task = "{task}"' in path.read_text()
    assert load(path).routine.task == task


def test_the_model_host_runs_the_scenarios_task():
    """The runner sets Task.mm; a 7.x host checks pKVM's marker before any VMA lookup: fixed up either way."""
    user = load(BUILTIN / "d_copy_from_user.toml")
    record = run(user, "inject")
    assert record.lab.kernel.task.mm is True and record.passed and record.verdict.outcome == "fixed-up"
    assert run(load(BUILTIN / "c_gup_kernel_alias.toml"), "inject").lab.kernel.task.mm is False
