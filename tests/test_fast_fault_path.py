"""The machine's fast fault path gives the runs the engine's path gives (issue 12, Build 2).

`Machine._exit_at_pc` hands a stretch that starts on an exit's brk straight to the
exit's handler instead of entering the engine. Each test runs the same thing twice -
once as shipped, once with that shortcut switched off so every stretch enters the
engine - and compares everything a run reports: outcome, events with their data,
registers, segment count.
"""
from __future__ import annotations

import pytest

from emu.machine import Machine
from emu.outcome import OutcomeKind
from faultlab.lab import Lab
from hyp.policies import POLICIES

TOUCH = """
.text
SYM_FUNC_START(touch_pages)     // x0 = first page, x1 = pages: one load per page
1:  ldr x3, [x0]
    add x0, x0, #4096
    subs x1, x1, #1
    b.ne 1b
    ret
SYM_FUNC_END(touch_pages)
SYM_FUNC_START(touch_again)     // x0 = a page, x1 = times: a load that the extable fixes up each time
1:  mov x3, #0
2:  ldr x3, [x0]
3:  subs x1, x1, #1
    b.ne 1b
    mov x0, x2
    ret
    _asm_extable_uaccess_err_zero 2b, 3b, x2, x3
SYM_FUNC_END(touch_again)
"""


def _engine_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Machine, "_exit_at_pc", lambda self, deadline: None)


def _record(result) -> tuple:
    events = [(e.seq, e.kind, e.pc, e.el, e.message, sorted(e.data)) for e in result.events]
    data = [repr(e.data) for e in result.events]
    return (result.outcome.kind, result.outcome.message, events, data, result.regs, result.segments)


def _lab_run(policy: str, routine: str, times: int, *, donate: bool, budget: int = 100_000, max_events: int = 1_000) -> tuple:
    lab = Lab(policy)
    lab.load_asm("touch.S", text=TOUCH)
    pages = lab.alloc("pages", 4)
    guest = lab.alloc("guest", 1)
    if donate:
        lab.donate(guest.pfns[0])
    va = guest.va if routine == "touch_again" else pages.va
    return _record(lab.call(routine, va, times, budget=budget, max_events=max_events))


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("routine, times, donate", [("touch_pages", 4, False), ("touch_again", 1, True), ("touch_again", 5, True)])
def test_lab_runs_match_the_engine_path(monkeypatch: pytest.MonkeyPatch, policy: str, routine: str, times: int, donate: bool) -> None:
    handed = []
    shortcut = Machine._exit_at_pc

    def counted(self, deadline):
        out = shortcut(self, deadline)
        handed.append(out is not None)
        return out

    monkeypatch.setattr(Machine, "_exit_at_pc", counted)
    fast = _lab_run(policy, routine, times, donate=donate)
    if any(event[1] == "inject" for event in fast[2]):
        assert any(handed)  # an injection enters the host's vector (an exit) through the shortcut
    _engine_only(monkeypatch)
    slow = _lab_run(policy, routine, times, donate=donate)
    assert fast == slow


@pytest.mark.parametrize("max_events", [3, 5, 8, 13])
def test_event_limit_counts_the_same(monkeypatch: pytest.MonkeyPatch, max_events: int) -> None:
    """Each handed-over stretch is still one segment: the event limit trips at the same place."""
    fast = _lab_run("inject", "touch_again", 20, donate=True, max_events=max_events)
    _engine_only(monkeypatch)
    slow = _lab_run("inject", "touch_again", 20, donate=True, max_events=max_events)
    assert fast == slow
    assert fast[0] is OutcomeKind.EVENT_LIMIT


def test_exit_the_regime_cannot_fetch_is_taken_by_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exit on a user page entered at EL1 (PXN): the fetch faults, so no hand-over."""

    def run() -> tuple:
        m = Machine()
        m.cpu.set_pstate((1 << 2) | 1)  # EL1h
        return _record(m.run(m.user_return_sentinel, budget=100))

    fast = run()
    _engine_only(monkeypatch)
    assert fast == run()
    assert fast[0] is OutcomeKind.UNHANDLED_EXCEPTION


def test_exit_reached_at_start_is_handed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that starts on the EL1 return sentinel returns at once, on both paths."""

    def run() -> tuple:
        m = Machine()
        m.cpu.set_pstate((1 << 2) | 1)
        return _record(m.run(m.return_sentinel, budget=100))

    fast = run()
    _engine_only(monkeypatch)
    assert fast == run()
    assert fast[0] is OutcomeKind.RETURNED
