"""`TraceRecorder`: the optional per-instruction trace of a run (`trace=True`).

A code hook records (pc, EL) per executed instruction up to the run's
`max_trace`; past it one `trace-truncated` event marks the first step not
recorded and the hook is removed at the next chunk, so a capped trace stops
costing. Exit addresses (hand-over points) are left out: they do not execute.
A mixin of `emu.machine.Machine` (it uses the machine's engine, exits, limits and log).
"""
from __future__ import annotations

from unicorn import UC_HOOK_CODE
from unicorn import arm64_const as A

from emu.outcome import TraceStep


class TraceRecorder:
    def _start_trace(self, on: bool) -> None:
        self._trace = [] if on else None
        self._trace_truncated = False
        if on and self._trace_hook is None:
            self._trace_hook = self.uc.hook_add(UC_HOOK_CODE, self._trace_step)

    def _trace_step(self, uc, address: int, size: int, _user) -> None:
        if self._trace is None or address in self._exits or self._trace_truncated:
            return
        el = (uc.reg_read(A.UC_ARM64_REG_PSTATE) >> 2) & 3
        if len(self._trace) >= self._limits.max_trace:
            # The marker: an event at the first step not recorded; the hook goes at the next chunk.
            self._trace_truncated = True
            self.log("trace-truncated", f"trace truncated after {len(self._trace)} steps", pc=address, el=el)
            return
        self._trace.append((address, el))

    def _drop_truncated_trace_hook(self) -> None:
        """Once the trace is full, stop paying for the per-instruction hook (outside emu_start)."""
        if self._trace_truncated and self._trace_hook is not None:
            self._stop_trace()

    def _stop_trace(self) -> None:
        if self._trace_hook is not None:
            self.uc.hook_del(self._trace_hook)
            self._trace_hook = None

    def _finish_trace(self) -> list[TraceStep] | None:
        if self._trace is None:
            return None
        from emu.disasm import Disassembler

        dis = Disassembler()
        # Exit addresses (hand-over points) were left out when recorded: they do not execute.
        steps = [TraceStep(pc, el, dis.text(self._insn_word(pc), pc)) for pc, el in self._trace]
        self._trace = None
        return steps
