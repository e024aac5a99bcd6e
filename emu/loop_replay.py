"""`LoopReplay`: a run that takes the same stage-2 abort again and again from the same state, copied.

A host that retries an access the hypervisor keeps refusing (Linux 6.1 calls an
injected abort on a page stage 1 maps "spurious", WARNs and retries) loops until
the host model calls it a livelock. Every iteration between two takings of the
abort is then the same: the same events, the same registers at its end, the same
handler decisions. Running each of them through the engine and the models costs
what the first one cost; copying the events of one costs a fraction.

The proof is by state, not by looking alike. At a stage-2 abort the run loop hands
`before(abort)` the abort it is about to handle. If it is the very abort object
taken last (the abort builder gives one object per faulting instruction, address
and register values), the registers are those seen at that last taking, no
mapping changed since (no TLB flush), and every participant (the EL2 handler, a
modelled host) reports the same `loop_state()` as then, the iteration in between
started and ended in the same state: each later one would repeat it exactly,
for as long as every participant says its own behaviour stays the same
(`steady_iterations()`: a host model counting retries towards its livelock
threshold stops being steady before the threshold). The loop copies that many
iterations: their events with new sequence numbers, their segments against the
event limit, and each participant's own record of them (`replay_iterations`).
The abort in hand is then handled as usual, so the run's end - the livelock, its
registers - is computed, not copied.

Nothing is copied with a debugger attached or a trace being recorded (both see
every step), within two iterations of the event limit, or with `fast_fault_path`
off (tests compare the two paths run for run).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Hashable, Protocol

from unicorn import arm64_const as A

from emu.outcome import Event

if TYPE_CHECKING:
    from emu.abort import MemoryAbort
    from emu.cpu import Cpu
    from emu.run_limits import RunLimits


class LoopParticipant(Protocol):
    """A party whose state a repeated iteration depends on (the EL2 handler, a modelled host)."""

    def loop_state(self) -> Hashable | None:
        """Every value of its own that the next iteration's handling reads (None: do not copy now)."""

    def steady_iterations(self) -> int:
        """How many more iterations it would handle exactly as the last one (0: none)."""

    def replay_iterations(self, n: int) -> None:
        """Record n more iterations handled exactly as the last one (its own logs and counters)."""


class _RunningMachine(Protocol):
    """What the copies need of `emu.machine.Machine` (which owns a LoopReplay)."""

    cpu: "Cpu"
    events: list[Event]
    tlb_flushes: int
    _limits: "RunLimits"

    def loop_participants(self) -> "list[LoopParticipant] | None": ...


# Every register an iteration's handling reads or leaves behind: x0-x30, the stack pointers, PC,
# PSTATE, and the EL1 exception registers the entry writes.
_FINGERPRINT = (
    *range(A.UC_ARM64_REG_X0, A.UC_ARM64_REG_X28 + 1), A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30,
    A.UC_ARM64_REG_SP, A.UC_ARM64_REG_SP_EL0, A.UC_ARM64_REG_SP_EL1, A.UC_ARM64_REG_PC, A.UC_ARM64_REG_PSTATE,
    A.UC_ARM64_REG_ELR_EL1, A.UC_ARM64_REG_ESR_EL1, A.UC_ARM64_REG_FAR_EL1,
)


@dataclass
class _Taking:
    """One taking of a stage-2 abort: where the run stood."""

    events: list[Event]  # the run's event list (a new run has a new one)
    abort: "MemoryAbort"
    index: int  # events logged before it
    segments: int
    flushes: int
    registers: tuple[int, ...] | None
    states: tuple[Hashable | None, ...] | None


class LoopReplay:
    def __init__(self, machine: _RunningMachine) -> None:
        self._machine = machine
        self._last: _Taking | None = None
        self.copied = 0  # iterations copied (for tests and benchmarks)

    def before(self, abort: "MemoryAbort") -> None:
        """The run loop is about to handle stage-2 `abort`: copy the iterations that would repeat the last one."""
        m = self._machine
        limits = m._limits  # noqa: SLF001 - the machine's own run state
        last = self._last
        taking = self._last = _Taking(m.events, abort, len(m.events), limits.segments, m.tlb_flushes, None, None)
        if last is None or last.events is not m.events or last.abort is not abort or last.flushes != m.tlb_flushes:
            return  # not a repeat (or a mapping changed since): where it was taken is all there is to keep
        participants = m.loop_participants()
        if participants is None:
            return
        n = min(p.steady_iterations() for p in participants)
        if n <= 0:
            return  # nobody vouches (a fixed-up access in a loop, say): no fingerprint, the costly part
        taking.states = tuple(p.loop_state() for p in participants)
        taking.registers = m.cpu.read_batch(_FINGERPRINT)
        if last.registers != taking.registers or last.states != taking.states or None in taking.states:
            return
        period = limits.segments - last.segments
        events = m.events[last.index :]
        if period <= 0 or not events:
            return
        n = min(n, (limits.max_events - limits.segments) // period - 2)  # the limit trips in iterations run, not copied
        if n <= 0:
            return
        log = m.events
        for _ in range(n):
            for e in events:
                log.append(e.renumbered(len(log)))
        for p in participants:
            p.replay_iterations(n)
        limits.segments += n * period
        self.copied += n
        taking.index, taking.segments = len(log), limits.segments  # the next iteration starts after the copies
