"""Where the machine stops for gdb: breakpoints, single steps, interrupts and the run's events.

Breakpoints are checks of PC in a Unicorn code hook, not `brk` words patched
into memory: the code stays byte for byte what the routine (or the vmlinux)
holds, so reads, checksums, alternatives and our exception tables see no
debugger, and a breakpoint works in any mapping, user or kernel. The hook is
installed only while gdb is attached (`attach`); it stops the engine *before*
the instruction (the CPU state is as it was after the previous one), and
counts what ran so the machine charges the budget honestly (emu/debug_hook.py).

Events are seen as the machine logs them. An abort the host takes (a stage-1
fault, or an access EL2 refuses: `protected-access`) stops at once, with PC
still at the faulting instruction and EL2 yet to act; the others (injection,
fixup, eret, a hypercall, a signal, an exception entry) stop before the next
instruction, when their effect is visible (after an injection PC is at the
vector, ESR_EL1/FAR_EL1 written). Events logged inside a Unicorn hook (an `at`)
are never served on the spot, only at the next stop.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

from unicorn import UC_HOOK_CODE

from emu.machine import Machine
from emu.outcome import Event

SIGINT, SIGTRAP, SIGABRT, SIGKILL, SIGSEGV, SIGTERM, SIGXCPU = 2, 5, 6, 9, 11, 15, 24  # gdb's numbering (= Linux's here)
INTERRUPT_POLL = 4096  # instructions between two looks for gdb's Ctrl-C while running


class StopOn(enum.StrEnum):
    """Event stops `monitor stop-on` selects (kernel words for what happened)."""

    ABORT = "abort"  # a host access refused at stage 1 or by EL2: at the faulting instruction
    INJECT = "inject"  # EL2 injected an abort into the host: at the EL1 vector
    FIXUP = "fixup"  # an exception-table fixup ran: where execution resumes
    ERET = "eret"  # the host's fault path returned (`resume`)
    RECLAIM = "reclaim"  # an hvc to EL2 (e.g. force-reclaim) or a reclaim by the policy
    SIGNAL = "signal"  # a signal for the EL0 task
    EXCEPTION = "exception"  # every exception entry to the EL1 vectors
    END = "end"  # the end of every run (a run that does not return stops at its end anyway)


DEFAULT_STOP_ON = frozenset({StopOn.ABORT})
_BY_EVENT: dict[str, StopOn] = {
    "protected-access": StopOn.ABORT,
    "inject": StopOn.INJECT,
    "fixup": StopOn.FIXUP,
    "resume": StopOn.ERET,
    "hvc": StopOn.RECLAIM,
    "reclaim": StopOn.RECLAIM,
    "signal": StopOn.SIGNAL,
    "exception": StopOn.EXCEPTION,
    "exception-entry": StopOn.EXCEPTION,
}


def stop_kind(event: Event) -> StopOn | None:
    """The stop-on kind an event belongs to; a stage-1 `abort` is an ABORT (stage 2 waits for EL2's word)."""
    if event.kind == "abort":
        abort = event.data.get("abort")
        return StopOn.ABORT if abort is not None and abort.stage == 1 else None
    return _BY_EVENT.get(event.kind)


class StopCause(enum.Enum):
    ENTRY = "entry"
    BREAKPOINT = "breakpoint"
    STEP = "step"
    INTERRUPT = "interrupt"
    EVENT = "event"
    END = "end"


@dataclass
class Stop:
    """Why the machine is stopped, as gdb will be told."""

    cause: StopCause
    signal: int
    events: list[Event] = field(default_factory=list)


class Resume(enum.Enum):
    CONTINUE = "continue"
    STEP = "step"


class Control:
    """The code hook and the stop decisions of one attached debugger."""

    def __init__(self, machine: Machine, entry: int | None, stop_on: frozenset[StopOn] = DEFAULT_STOP_ON) -> None:
        self.machine = machine
        self.entry = entry  # a one-shot stop where the routine starts
        self.breakpoints: set[int] = set()
        self.stop_on: set[StopOn] = set(stop_on)
        self.poll_interrupt: Callable[[], bool] = lambda: False
        self.stop: Stop | None = None  # set by the hook when it stopped the engine
        self._deferred: list[Event] = []
        self._stepping = False
        self._resume_pc: int | None = None
        self._count = 0
        self._poll = INTERRUPT_POLL
        self._hook: int | None = None

    # ----------------------------------------------------------- lifecycle
    def attach(self) -> None:
        if self._hook is None:
            self._hook = self.machine.uc.hook_add(UC_HOOK_CODE, self._on_insn)

    def detach(self) -> None:
        """Stop watching: the run goes on at full speed (no hook, no breakpoints)."""
        if self._hook is not None:
            self.machine.uc.hook_del(self._hook)
            self._hook = None
        self.breakpoints.clear()
        self._deferred.clear()

    @property
    def attached(self) -> bool:
        return self._hook is not None

    def resume(self, how: Resume) -> None:
        """Go on from the current PC: its instruction runs even when a breakpoint sits there."""
        self._stepping = how is Resume.STEP
        self._resume_pc = self.machine.cpu.pc
        self.stop = None

    # ------------------------------------------------------------- the hook
    def _on_insn(self, uc, address: int, _size: int, _user) -> None:
        stop = self._decide(address)
        if stop is None:
            self._count += 1
            return
        self.stop = stop
        self._stepping = False
        self._resume_pc = None
        uc.emu_stop()

    def _decide(self, address: int) -> Stop | None:
        if self._deferred:
            events, self._deferred = self._deferred, []
            return Stop(StopCause.EVENT, SIGTRAP, events)
        if self._resume_pc is not None:
            resuming, self._resume_pc = self._resume_pc == address, None
            if resuming:
                return None
        if self._stepping:
            return Stop(StopCause.STEP, SIGTRAP)
        if address == self.entry:
            self.entry = None
            return Stop(StopCause.ENTRY, SIGTRAP)
        if address in self.breakpoints:
            return Stop(StopCause.BREAKPOINT, SIGTRAP)
        self._poll -= 1
        if self._poll <= 0:
            self._poll = INTERRUPT_POLL
            if self.poll_interrupt():
                return Stop(StopCause.INTERRUPT, SIGINT)
        return None

    def engine_stop(self) -> int | None:
        """emu/debug_hook.py: instructions run since the last call, if the hook stopped the engine."""
        ran, self._count = self._count, 0
        return ran if self.stop is not None else None

    # ------------------------------------------------------------- events
    def on_event(self, event: Event) -> Stop | None:
        """A stop to serve now (an abort, at its instruction), or None (deferred or not asked for)."""
        kind = stop_kind(event)
        if kind is None or kind not in self.stop_on or not self.attached:
            return None
        if kind is StopOn.ABORT:
            self._stepping = False
            self._resume_pc = None
            return Stop(StopCause.EVENT, SIGSEGV, [event])
        self._deferred.append(event)
        return None

    def take_deferred(self) -> list[Event]:
        """Events waiting for the next instruction (the run ended first): for the final stop."""
        events, self._deferred = self._deferred, []
        return events
