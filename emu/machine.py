"""`Machine`: one Unicorn engine wired as an AArch64 CPU (EL0/EL1) that runs until a handler ends the run.

Memory is `AddressSpace`'s job (emu/address_space.py: stage 1, the stage-2
hook, the TLB fill). When its fill hook refuses an access, the engine stops at
exactly the faulting instruction; the run loop here turns that into a
`MemoryAbort` and either takes it to EL1 (stage 1, as the hardware does) or
hands it to the EL2 handler (stage 2). Every other event (svc, hvc, brk, an
undefined instruction, reaching an exit address) also stops the engine and is
handled in Python (emu/exception_paths.py; traces: emu/trace_recorder.py), between two `emu_start` calls, so a handler may change
mappings or the EL freely: the TLB is flushed before the next instruction runs.
"""
from __future__ import annotations

import gc
import time
from typing import Any, Callable, Protocol

from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc, UcError
from unicorn import arm64_const as A
from unicorn.unicorn_const import UC_TLB_VIRTUAL

from emu.abort import AbortBuilder, MemoryAbort, PendingFault
from emu.address_space import UNTIL_VA, AddressSpace, MachineError
from emu.debug_hook import Debugger, paused_for
from emu.engine_counter import EngineCounter
from emu.exception_paths import ExceptionPaths
from emu.cpu import MASK64, PSTATE_DAIF, PSTATE_PAN, PSTATE_SP, Cpu
from emu.exceptions import INTNO_BKPT
from emu.memory import PAGE_MASK, PAGE_SIZE, AccessType, PhysicalMemory, KERNEL_RW, KERNEL_RX, USER_RW, USER_RX
from emu.eret import EretGuard
from emu.el2_handler import SMCCC_RET_NOT_SUPPORTED, NoAbortHandler  # noqa: F401 (importable from here)
from emu.outcome import Event, Outcome, OutcomeKind, RunResult, TraceStep
from emu.loop_replay import LoopParticipant, LoopReplay
from emu.sctlr import LINUX_SCTLR_EL1, follow_sctlr
from emu.trace_recorder import TraceRecorder
from emu.run_limits import (
    DEFAULT_BUDGET,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_TRACE,
    DEFAULT_TIMEOUT,
    STRETCH_CHUNK,
    TRACE_CHUNK,
    BadRunLimits,  # noqa: F401 (importable from here)
    RunLimits,
    check_run_limits,
)

# Where the machine puts its own pages (return sentinels, the EL0 entry stub, stacks, the task page).
MACHINE_TEXT_VA = 0xFFFF_FFFF_FFE0_0000
KERNEL_STACK_VA = 0xFFFF_FFFF_FFC0_0000
KERNEL_STACK_PAGES = 4
TASK_VA = 0xFFFF_FFFF_FFA0_0000
USER_SENTINEL_VA = 0x0000_7FFF_FFFF_0000
USER_STACK_VA = 0x0000_7FFF_FFF0_0000
USER_STACK_PAGES = 4

_EXIT_BRK = (0xD4200000 | (0xE817 << 5)).to_bytes(4, "little")  # brk #0xe817: an exit address

ExitHandler = Callable[["Machine"], "Outcome | None"]

def _is_brk(insn: bytes) -> bool:  # BRK #imm16 (Arm ARM C6.2.41)
    return int.from_bytes(insn, "little") & 0xFFE0001F == 0xD4200000


class El2Handler(Protocol):
    """What the hypervisor model installs to receive what traps to EL2."""

    def handle_abort(self, machine: "Machine", abort: MemoryAbort) -> Outcome | None: ...

    def resolves_by_idmap(self, pfn: int) -> bool:
        """Optional: would `handle_abort` for a host stage-2 fault on `pfn` only map the frame
        (logging events, checking its own state) and let the access retry? Then the machine may
        run `handle_abort` inside the TLB-fill hook and go on without stopping the engine."""
        ...

    def handle_hvc(self, machine: "Machine", imm: int) -> Outcome | None: ...

    def handle_smc(self, machine: "Machine", imm: int) -> Outcome | None:
        """An `smc` trapped to EL2 (HCR_EL2.TSC = 1, as pKVM sets it: arch/arm64/include/asm/kvm_arm.h
        HCR_HOST_NVHE_PROTECTED_FLAGS). Entered with PC past the smc. Handlers without
        this method get `smc_not_supported`.
        """
        ...


class Machine(AddressSpace, ExceptionPaths, TraceRecorder):
    """An AArch64 CPU (EL0/EL1) on an `AddressSpace`, with exit points and an EL2 handler slot."""

    def __init__(self, *, phys_base: int = 0x4000_0000, phys_size: int = 256 << 20) -> None:
        uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        # The default A72 model treats LSE atomics as UNDEFINED; MAX executes them (PAC keys stay off).
        uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        super().__init__(uc, Cpu(uc), PhysicalMemory(uc, phys_base, phys_size))
        self.el2: El2Handler | None = None
        self._exits: dict[int, ExitHandler] = {}
        self._exit_saved: dict[int, bytes] = {}
        self._intno: int | None = None  # set by the interrupt hook
        self._events: list[Event] = []
        self._trace: list[TraceStep] | None = None
        self._trace_hook = None
        self._trace_truncated = False
        self._limits: RunLimits | None = None
        self._abort_builder = AbortBuilder(self.cpu, self._insn_word)
        self.debugger: Debugger | None = None  # emu/debug_hook.py: set only while a debugger is attached
        self.nested_runs = 0  # run_nested calls so far: a handler that saw PC somewhere knows whether it moved
        self._checkpoint: Any = None  # the latest emu.checkpoint.Checkpoint taken of this machine (take/rewind)
        # The fast fault path (docs/performance.md): lazy idmaps resolved inside the fill hook,
        # wherever that is provably the engine's result. False: every fault stops the engine
        # (tests compare the two).
        self.fast_fault_path = True
        self._loop_participants: list[LoopParticipant] = []  # besides the EL2 handler (emu/loop_replay.py)
        self._loop_replay = LoopReplay(self)
        self._counter = EngineCounter.for_engine(uc)  # None: no fill-hook idmaps (the budget could not be kept)
        self._fill_outcome: Outcome | None = None  # a run decided inside the fill hook
        self._restarted: int | None = None  # instructions of this emu_start before the last in-hook idmap
        # hvc is UNDEFINED unless SCR_EL3.HCE is set (measured); EL2 itself stays modelled in Python.
        self.cpu.write_sysreg("SCR_EL3", self.cpu.read_sysreg("SCR_EL3") | (1 << 8))
        uc.hook_add(UC_HOOK_INTR, self._intr)
        self.eret_guard = EretGuard(self)  # illegal exception returns, which Unicorn does not model (emu/eret.py)
        follow_sctlr(self)
        self.set_sctlr(LINUX_SCTLR_EL1)
        self._setup_machine_pages()

    def set_sctlr(self, value: int) -> None:
        """SCTLR_EL1 = value; M = 0 is the MMU-off mode, A = 1 strict alignment (emu/sctlr.py)."""
        self.cpu.write_sysreg("SCTLR_EL1", value)

    def _intr(self, uc, intno: int, _user) -> None:
        self._intno = intno
        uc.emu_stop()

    # ----------------------------------------------------------------- events
    def log(self, kind: str, message: "str | Callable[[], str] | tuple", *, pc: int | None = None, el: int | None = None, **data: Any) -> Event:
        """Record an event of the current run (upper layers log theirs here too).

        `message` may be a recipe of values captured now (not of live machine state): a function, or
        a tuple (function, *arguments); it is formatted when first read (Event.message). Hot paths
        pass a tuple (one object, where a closure makes several); a plain string is fine elsewhere.
        """
        if pc is None:
            pc = self.cpu.pc
        if el is None:
            el = self.cpu.el
        if self._trace is not None:
            data["trace_index"] = len(self._trace)  # the instructions executed before it: traces interleave events
        events = self._events
        event = Event(len(events), kind, pc, el, message, data)
        events.append(event)
        if self.debugger is not None:
            paused_for(self._limits, self.debugger.on_event, self, event)
        return event

    @property
    def events(self) -> list[Event]:
        return self._events

    # ------------------------------------------------------------------ exits
    def add_exit(self, addr: int, handler: ExitHandler) -> None:
        """Plant a hand-over point: a `brk` at `addr` that calls `handler(machine)` instead of trapping.

        The handler must move PC (or end the run by returning an `Outcome`). Unicorn's own
        exit list is not used: at every stop it fetches through the byte before each exit in
        the current regime, which faults whenever that page is not executable there.
        """
        addr &= MASK64
        if addr not in self._exits:
            self._exit_saved[addr] = self.read(addr, 4)
        if not _is_brk(self._exit_saved[addr]):  # any brk at an exit hands over: one already there stays (no code write)
            self.write(addr, _EXIT_BRK)
        self._exits[addr] = handler

    def remove_exit(self, addr: int) -> None:
        """Undo add_exit, putting back the instruction the brk replaced."""
        addr &= MASK64
        if self._exits.pop(addr, None) is not None:
            if not _is_brk(saved := self._exit_saved.pop(addr)):
                self.write(addr, saved)

    # ------------------------------------------------------- machine's pages
    def _setup_machine_pages(self) -> None:
        # Return sentinels are exit addresses (brk hand-over points); the EL0 entry stub is a real eret.
        eret = (0xD69F03E0).to_bytes(4, "little")
        self.load(MACHINE_TEXT_VA, bytes(4) + eret, KERNEL_RX)
        self.return_sentinel = MACHINE_TEXT_VA
        self.eret_stub = MACHINE_TEXT_VA + 4
        self.load(USER_SENTINEL_VA, bytes(4), USER_RX)
        self.user_return_sentinel = USER_SENTINEL_VA
        self.map_new(KERNEL_STACK_VA, KERNEL_STACK_PAGES, KERNEL_RW)
        self.kernel_stack_top = KERNEL_STACK_VA + KERNEL_STACK_PAGES * PAGE_SIZE
        self.map_new(TASK_VA, 1, KERNEL_RW)
        self.task = TASK_VA
        self.map_new(USER_STACK_VA, USER_STACK_PAGES, USER_RW)
        self.user_stack_top = USER_STACK_VA + USER_STACK_PAGES * PAGE_SIZE
        self.add_exit(self.return_sentinel, self._returned_at(1))
        self.add_exit(self.user_return_sentinel, self._returned_at(0))

    @staticmethod
    def _returned_at(el: int) -> ExitHandler:
        def returned(machine: "Machine") -> Outcome:
            if machine.cpu.el != el:
                return Outcome(OutcomeKind.EMULATOR_ERROR, f"reached the EL{el} return sentinel at EL{machine.cpu.el}")
            return Outcome(OutcomeKind.RETURNED, f"returned x0={machine.cpu.x(0):#x}")

        return returned

    # ------------------------------------------------------------------- calls
    def call(
        self,
        target: int,
        *args: int,
        el: int = 1,
        pan: bool = True,
        budget: int = DEFAULT_BUDGET,
        timeout: float = DEFAULT_TIMEOUT,
        max_events: int = DEFAULT_MAX_EVENTS,
        trace: bool = False,
        max_trace: int = DEFAULT_MAX_TRACE,
    ) -> RunResult:
        """Call `target` with x0..x7 = args at EL1 (kernel) or EL0 (user) and run until it returns.

        EL1: SP = a kernel stack, SP_EL0 = the task page (arm64's `current`), x30 = the
        return sentinel, PSTATE = EL1h with DAIF masked and PAN as asked (on by default, as
        Linux runs with FEAT_PAN; `RunResult.entry_pan` says which).
        EL0: entered by a real `eret` from EL1 (SPSR_EL1 = EL0t), SP = a user stack,
        x30 = the user return sentinel.
        """
        check_run_limits(budget, timeout, max_events, max_trace)
        if len(args) > 8:
            raise MachineError("at most 8 register arguments (x0-x7)")
        if el not in (0, 1):
            raise MachineError(f"cannot call at EL{el}: the host runs at EL0 or EL1")
        pstate = (1 << 2) | PSTATE_SP | PSTATE_DAIF | (PSTATE_PAN if pan else 0)
        if el == 1:
            self.cpu.enter_el1h(pstate, self.kernel_stack_top, self.task, [*args, *(0,) * (30 - len(args)), self.return_sentinel])
            start = target
        else:
            self.cpu.set_pstate(pstate)
            self.cpu.sp = self.kernel_stack_top
            self.cpu.set_all_x([*args, *(0,) * (31 - len(args))])
            self.cpu.sp_el0 = self.user_stack_top
            self.cpu.set_x(30, self.user_return_sentinel)
            self.cpu.write_sysreg("ELR_EL1", target)
            self.cpu.write_sysreg("SPSR_EL1", 0)  # EL0t, interrupts unmasked
            start = self.eret_stub
        result = self.run(start, budget=budget, timeout=timeout, max_events=max_events, trace=trace, max_trace=max_trace)
        result.entry_pan = pan and el == 1  # said in the result: EL1 calls run with PAN on unless asked
        return result

    def run(
        self,
        pc: int,
        *,
        budget: int = DEFAULT_BUDGET,
        timeout: float = DEFAULT_TIMEOUT,
        max_events: int = DEFAULT_MAX_EVENTS,
        trace: bool = False,
        max_trace: int = DEFAULT_MAX_TRACE,
    ) -> RunResult:
        """Run from `pc` in the current state until an exit handler or EL2 handler ends the run.

        Budget: every stretch of execution between two events may run at most `budget`
        instructions, and a run may have at most `max_events` events (aborts, exceptions,
        hypercalls, exits); wall-clock `timeout` seconds bound the whole run, checked
        at least every `STRETCH_CHUNK` instructions whatever the budget. A trace keeps
        at most `max_trace` steps; past that `trace_truncated` is set and a
        `trace-truncated` event marks where recording stopped.
        Limits that cannot bound a run (budget <= 0, ...) raise `BadRunLimits`.
        """
        check_run_limits(budget, timeout, max_events, max_trace)
        self.eret_guard.rearm()
        self._events = []
        self._start_trace(trace)
        self._limits = RunLimits(budget, time.monotonic() + timeout, max_events, max_trace)
        # Automatic collection waits for the end of the run. An aborting run allocates a few dozen
        # small objects per event (the event, its data, the abort's records), all reachable from the
        # event list until the run ends, so a collection during the run frees none of them - but
        # they push the collector past its thresholds, and an old-generation pass walks the whole
        # heap (a parsed vmlinux included): 147 vs 87 us per protected abort over 1,000 aborts
        # (docs/performance.md). The caller's setting is put back however the run ends.
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            outcome = self._loop(pc)
            truncated = self._trace_truncated
            return RunResult(
                outcome, self.cpu.snapshot(), list(self._events), self._finish_trace(), self._limits.segments, truncated
            )
        finally:
            self._stop_trace()
            self._limits = None
            if collecting:
                gc.enable()

    def run_nested(self, pc: int, stop_at: int) -> Outcome | None:
        """From inside a handler: run code at `pc` until it reaches `stop_at` (returns None) or the run ends.

        This is how the modelled kernel executes real instructions in the middle of its
        fault handling (an `hvc` to the hypervisor, a fixup's re-read): whatever those
        instructions do - trap to EL2, fault, take a nested exception - goes through the
        same paths as the code that was interrupted, under the same budget.
        """
        if self._limits is None:
            raise MachineError("run_nested is only for handlers of a running machine")
        if stop_at in self._exits:
            raise MachineError(f"{stop_at:#x} is already an exit address")
        self.nested_runs += 1  # PC leaves where a handler stood (HostKernel.log reads it again)
        reached = Outcome(OutcomeKind.NESTED_RETURN, "")
        self.add_exit(stop_at, lambda machine: reached)
        try:
            outcome = self._loop(pc)
        finally:
            self.remove_exit(stop_at)
        return None if outcome is reached else outcome

    def _loop(self, pc: int) -> Outcome:
        limits = self._limits
        self.cpu.pc = pc
        while True:
            outcome = self._run_segment(limits.budget, limits.deadline)
            limits.segments += 1
            if outcome is None and limits.segments >= limits.max_events:
                outcome = Outcome(OutcomeKind.EVENT_LIMIT, f"more than {limits.max_events} events: runaway exceptions or faults")
            if outcome is not None:
                return outcome

    def _run_segment(self, budget: int, deadline: float) -> Outcome | None:
        """One stretch between two events: at most `budget` instructions, in chunks.

        No Unicorn timeout: it costs a timer thread (~170 us) per emu_start. Instead each
        emu_start runs at most a chunk of instructions; when a chunk ends with no event
        (count exhausted), the deadline is checked and the stretch goes on from that PC.
        """
        left_insns = budget
        if (handler := self._exits.get(pc := self.cpu.pc)) is not None and self.debugger is None and self.fast_fault_path:
            # The code stands on an exit address (an exception entry set PC to a modelled vector): when
            # the fill hook has granted a fetch from that page at this EL since the last TLB flush, the
            # engine would fetch the brk there and stop on it at once; hand over without starting it
            # (the same handler, events and segment count; fast_fault_path = False starts the engine).
            if (pc & PAGE_MASK, self.cpu.el) in self.fetchable and time.monotonic() < deadline:
                return self._hand_over(handler, pc)
        start: int | None = pc  # PC as read above; each later chunk starts where the engine stopped
        while True:
            if time.monotonic() >= deadline:
                return Outcome(OutcomeKind.TIMEOUT, f"wall-clock timeout at pc={self.cpu.pc:#x}")
            self._drop_truncated_trace_hook()
            chunk = min(left_insns, TRACE_CHUNK if self._trace_hook is not None else STRETCH_CHUNK)
            self.fill_fault = self._intno = self._fill_outcome = self._restarted = None
            error: UcError | None = None
            try:
                self.uc.emu_start(self.cpu.pc if start is None else start, UNTIL_VA, count=chunk)
            except UcError as exc:
                # Without its traceback: kept in this frame, which the traceback holds, it would make a
                # cycle holding every caller's frame (a sweep case's windows included) until a collection.
                error = exc.with_traceback(None)
            start = None
            if self.debugger is not None and (ran := self.debugger.engine_stop()) is not None:
                left_insns -= ran  # it stopped the engine before an instruction (emu/debug_hook.py)
                paused_for(self._limits, self.debugger.serve_stop, self)
                deadline = self._limits.deadline
                if left_insns <= 0:
                    break
                continue
            if self.fill_fault is not None or self._intno is not None or error is not None or self._fill_outcome is not None:
                break
            if self._restarted is None:
                left_insns -= chunk
            else:
                # An idmap in the fill hook ended the stretch at its faulting instruction, as an
                # engine stop there would: the new stretch has run the rest of this chunk.
                left_insns = budget - (chunk - self._restarted)
            if left_insns <= 0:
                break
        if self._fill_outcome is not None:
            return self._fill_outcome
        if self.fill_fault is not None:
            abort = self._abort_builder.build(self.fill_fault)
            if abort.stage == 2 and self.fast_fault_path and self.debugger is None and self._trace is None:
                self._loop_replay.before(abort)  # copies the iterations that would repeat the last one
            return self._on_abort(abort)
        if self._intno is not None:
            pc = self.cpu.pc
            if self._intno == INTNO_BKPT and pc in self._exits:
                return self._hand_over(self._exits[pc], pc)
            return self._on_interrupt(self._intno)
        if error is not None:
            return Outcome(OutcomeKind.EMULATOR_ERROR, f"unicorn: {error} at pc={self.cpu.pc:#x}")
        pc = self.cpu.pc
        return Outcome(OutcomeKind.BUDGET_EXCEEDED, f"instruction budget of {budget} exhausted at pc={pc:#x}", pc)

    def add_loop_participant(self, participant: "LoopParticipant") -> None:
        """A party (a modelled host) whose state a repeated abort's handling reads (emu/loop_replay.py)."""
        self._loop_participants.append(participant)

    def loop_participants(self) -> "list[LoopParticipant] | None":
        """The EL2 handler and the registered parties; None when the EL2 handler does not take part."""
        el2 = self.el2
        return [el2, *self._loop_participants] if hasattr(el2, "loop_state") else None

    def _hand_over(self, handler: ExitHandler, pc: int) -> Outcome | None:
        """Run the exit handler at `pc`: it must move PC or end the run (else the run would spin there)."""
        outcome = handler(self)
        if outcome is None and self.cpu.pc == pc:
            raise MachineError(f"exit handler at {pc:#x} neither moved PC nor ended the run")
        return outcome

    def _resolve_in_fill(self, pending: PendingFault) -> bool | None:
        """The lazy-idmap fast path: a host data access to a frame the EL2 handler would just map.

        The engine's path stops at the faulting instruction, builds the abort, runs the EL2
        handler (which maps the frame and logs `abort` then `idmap`), counts a segment and
        starts a new stretch at the same instruction. Here the same handler runs on the same
        abort from inside the fill hook - the CPU stands at that instruction with the same
        registers (Unicorn has begun it but written nothing back) - and the fill goes on, so
        the events, their order and fields, ownership and stage 2 come out as before. The
        budget: the stretch restarts at the faulting instruction, noted from Unicorn's own
        count (emu/engine_counter.py) and charged in `_run_segment`. Left to the engine's path:
        instruction fetches (a fetch may fill while a block is translated, PC not yet
        synchronised), S1PTW, a handler without `resolves_by_idmap`, a trace (the engine's
        path records the faulting instruction twice), an attached debugger, the event limit
        about to trip, and no readable counter.
        """
        limits = self._limits
        if (
            not self.fast_fault_path
            or limits is None
            or self._counter is None
            or self.debugger is not None
            or self._trace is not None
            or pending.access_type is AccessType.EXEC
            or pending.s1ptw
            or limits.segments + 1 >= limits.max_events
        ):
            return False
        resolves = getattr(self.el2, "resolves_by_idmap", None)
        if resolves is None or not resolves(pending.pfn):
            return False
        begun = self._counter.begun
        outcome = self._on_abort(self._abort_builder.build(pending))
        if outcome is not None:
            # The handler ended the run (an invariant check): refuse, the engine stops at the access.
            self._fill_outcome = outcome
            self.uc.emu_stop()
            return None
        limits.segments += 1
        self._restarted = begun - 1
        return True
