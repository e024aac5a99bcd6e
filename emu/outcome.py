"""How a run ends, and the events it records on the way.

The emulator defines only the endings it can see itself (returned, budget,
timeout, an exception with nowhere to go); the layers above stop a run with
their own kinds (a host oops, a hypervisor panic, a signal that killed the
task) by returning an `Outcome` from their handlers.
"""
from __future__ import annotations

import enum
import operator
from dataclasses import dataclass
from typing import Any, Callable  # noqa: F401 (Callable: the message recipes' type)


class OutcomeKind(enum.StrEnum):
    """Every way a run can end: one vocabulary for all layers, the scenario schema and the reports.

    The emulator produces the first group itself; the layers above end a run with
    theirs by returning an `Outcome` from their handlers (the hypervisor panics,
    the host oopses or kills the task). The oracle adds the two endings it reads
    off a returned run (a fixup ran, a signal was handled). Values are the names
    users write in scenario files and see in JSON.
    """

    # emu: what the machine sees itself
    RETURNED = "returned"
    BUDGET_EXCEEDED = "budget-exceeded"
    EVENT_LIMIT = "event-limit"
    TIMEOUT = "timeout"
    UNHANDLED_EXCEPTION = "unhandled-exception"
    EMULATOR_ERROR = "emulator-error"
    NESTED_RETURN = "nested-return"  # internal: a nested run reached its stop address
    # kimage: a real kernel called a function that means it has gone wrong
    FATAL_CALL = "fatal-call"
    # hyp: EL2 gives up
    HYP_PANIC = "hyp-panic"
    # hyp: the model's own ownership invariants failed after an EL2 event (a bug in the model or a
    # policy, not something the machine does); the message names the broken invariant
    INVARIANT_BROKEN = "invariant-broken"
    # host: the kernel's fault path ends the run
    HOST_OOPS = "host-oops"
    HOST_BUG = "host-bug"
    LIVELOCK = "livelock"  # the same fault again and again: the host keeps retrying an access that cannot succeed
    CANNOT_RUN = "cannot-run"  # the real kernel called a function that cannot work here (e.g. schedule)
    UNEXPECTED_VECTOR = "unexpected-vector"
    TASK_KILLED = "task-killed"
    TASK_EXIT = "task-exit"
    # oracle: a returned run, read more closely
    FIXED_UP = "fixed-up"
    SIGNAL = "signal"


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    message: str
    detail: Any = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


Text = "str | Callable[[], str] | tuple"  # a text, or its recipe: a function, or (function, *arguments)


class Event:
    """One thing that happened during a run: an abort, an exception entry, a hypercall, a fixup...

    The message may be given as a recipe of values captured when the event happened: a function
    of no arguments, or a tuple (function, *arguments). It is formatted on first read. Why: a run
    records several events per fault (eight for an injected abort), and most runs' messages are
    never printed (a sweep judges outcomes and bytes); formatting them all up front was a
    measurable part of a fault's cost (docs/performance.md). A tuple recipe with a module-level
    function allocates one object where a closure allocates a function, a tuple and a cell per
    captured name, which every collection then walks.

    Read-only fields in slots (no per-event dict): an event is made per logged event, in the
    fault path. Equality, hash and repr are over (seq, kind, pc, el, message), `data` left out.
    """

    __slots__ = ("_seq", "_kind", "_pc", "_el", "_message", "_data")

    def __init__(self, seq: int, kind: str, pc: int, el: int, message: Any, data: "dict[str, Any] | None" = None) -> None:
        self._seq, self._kind, self._pc, self._el, self._message = seq, kind, pc, el, message
        self._data = {} if data is None else data

    @classmethod
    def make(cls, seq: int, kind: str, pc: int, el: int, message: Any, data: "dict[str, Any]") -> "Event":
        """The constructor, by its earlier name (it was the fast path past a frozen dataclass's __init__)."""
        return cls(seq, kind, pc, el, message, data)

    def renumbered(self, seq: int) -> "Event":
        """The same event at another place in a run (emu/loop_replay.py copies repeated iterations):
        its message as given (a recipe stays one), a copy of its data."""
        return Event(seq, self._kind, self._pc, self._el, self._message, dict(self._data))

    seq: int = property(operator.attrgetter("_seq"))  # type: ignore[assignment]
    kind: str = property(operator.attrgetter("_kind"))  # type: ignore[assignment]
    pc: int = property(operator.attrgetter("_pc"))  # type: ignore[assignment]
    el: int = property(operator.attrgetter("_el"))  # type: ignore[assignment]
    data: "dict[str, Any]" = property(operator.attrgetter("_data"))  # type: ignore[assignment]

    @property
    def message(self) -> str:
        text = self._message
        if type(text) is not str:
            text = text[0](*text[1:]) if type(text) is tuple else text()
            self._message = text  # the formatted text replaces its recipe, once
        return text

    def _key(self) -> tuple:
        return (self._seq, self._kind, self._pc, self._el, self.message)

    def __reduce__(self) -> tuple:
        # Pickled and copied with its text formatted (a recipe may be a closure, which pickle refuses).
        return (_event, (self._seq, self._kind, self._pc, self._el, self.message, self._data))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Event(seq={self.seq!r}, kind={self.kind!r}, pc={self.pc!r}, el={self.el!r}, message={self.message!r}, data={self.data!r})"

    def __str__(self) -> str:
        return f"[{self.seq:4d}] EL{self.el} pc={self.pc:#018x} {self.kind}: {self.message}"


def _event(seq: int, kind: str, pc: int, el: int, message: str, data: dict[str, Any]) -> Event:
    return Event(seq, kind, pc, el, message, data)


@dataclass(frozen=True)
class TraceStep:
    """One executed instruction of an instruction trace."""

    pc: int
    el: int
    text: str

    def __str__(self) -> str:
        return f"EL{self.el} {self.pc:#018x}  {self.text}"


@dataclass
class RunResult:
    outcome: Outcome
    regs: dict[str, int]
    events: list[Event]
    trace: list[TraceStep] | None = None
    segments: int = 0
    trace_truncated: bool = False  # the trace stopped at max_trace steps (a `trace-truncated` event says where)
    entry_pan: bool | None = None  # Machine.call: PSTATE.PAN the callee started with (EL1 defaults to on); None for run()

    @property
    def returned(self) -> bool:
        return self.outcome.kind == OutcomeKind.RETURNED

    @property
    def x0(self) -> int:
        return self.regs["x0"]

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]
