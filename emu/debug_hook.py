"""`Debugger`: what `Machine` calls when a debugger (faultlab/gdb's stub) is attached.

A debugger stops the CPU before an instruction (a breakpoint, the end of a
single step, an interrupt from its client) by calling `uc.emu_stop()` from a
code hook it installs itself: Unicorn then returns from `emu_start` with that
instruction not executed and PC pointing at it. The machine, between two
`emu_start` calls, asks the debugger whether it stopped the engine and lets it
talk to its client there, outside Unicorn, where registers, PSTATE and memory
(code included) may be changed freely. Events reach it as they are logged.

`Machine.debugger` is None unless a debugger is attached: a run without one
installs no hook and pays one attribute test per `emu_start` and per event.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from emu.cpu import Cpu
    from emu.outcome import Event
    from emu.run_limits import RunLimits


class StoppedMachine(Protocol):
    """What the contract needs of `emu.machine.Machine` (named here so this module need not import it):
    a debugger's own implementation takes the whole Machine."""

    cpu: "Cpu"


class Debugger(Protocol):
    def engine_stop(self) -> int | None:
        """Called after every `emu_start`: if the debugger stopped the engine, the number of
        instructions executed since the previous call (the machine charges them to the budget),
        else None. Either way the debugger starts counting afresh."""
        ...

    def serve_stop(self, machine: StoppedMachine) -> None:
        """The engine is stopped where the debugger asked: serve the client until it resumes.

        Returns to let the run go on from `machine.cpu.pc`; raises to end the run. The
        machine does not count the time spent here against the run's wall-clock timeout.
        """
        ...

    def on_event(self, machine: StoppedMachine, event: "Event") -> None:
        """An event was logged. It may serve the client at once (outside `emu_start` only:
        events logged from inside a Unicorn hook must be answered later, at an engine stop)."""
        ...


def paused_for(limits: "RunLimits | None", serve: Callable[..., None], *args: object) -> None:
    """Run `serve(*args)` (a debugger talking to its client): the time it takes moves the run's deadline on."""
    start = time.monotonic()
    try:
        serve(*args)
    finally:
        if limits is not None:
            limits.deadline += time.monotonic() - start
