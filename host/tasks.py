"""The EL0 task: a few syscalls and synchronous signal delivery.

No full signal frame: a handler registered by EL0 code is entered with
x0 = signo, x1 = si_addr, x2 = si_code, x3 = the faulting PC and x30 = a
restorer that issues rt_sigreturn. At rt_sigreturn the interrupted context is
restored; a non-zero x0 is the PC to resume at (so a handler can skip the
faulting access), zero retries the faulting instruction.

Syscalls (svc #0, number in x8, as arm64 Linux): exit (93), rt_sigaction (134:
x0 = signo, x1 = handler or 0), rt_sigreturn (139).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from abi.linux import NR_EXIT, NR_RT_SIGACTION, NR_RT_SIGRETURN, Errno, signal_name
from emu.outcome import Outcome, OutcomeKind

from host.ptregs import PtRegs
from host.results import Resume, Signal

ENOSYS = -Errno.ENOSYS
EINVAL = -Errno.EINVAL


@dataclass(frozen=True)
class DeliveredSignal:
    signo: int
    code: int
    addr: int
    pc: int


@dataclass
class Task:
    """`current`: a kernel thread by default; `mm = True` makes it a user task with an address space.

    Whether `current->mm` exists decides fault.c's do_page_fault (a kernel thread takes no
    user fault and goes to the exception table at once); EL0 code always runs in a task with an mm.
    """

    mm: bool = False
    handlers: dict[int, int] = field(default_factory=dict)
    delivered: list[DeliveredSignal] = field(default_factory=list)
    _saved: list[PtRegs] = field(default_factory=list)

    def loop_state(self) -> tuple:
        """Its state, as far as a retried abort could change it (emu/loop_replay.py)."""
        return (self.mm, len(self.handlers), len(self.delivered), len(self._saved))

    def syscall(self, regs: PtRegs) -> Outcome | Resume:
        nr = regs.x[8]
        if nr == NR_EXIT:
            return Outcome(OutcomeKind.TASK_EXIT, f"task exited with status {regs.x[0]}", regs.x[0])
        if nr == NR_RT_SIGACTION:
            signo, handler = regs.x[0], regs.x[1]
            if signo in (0, 9) or signo > 64:
                regs.set_reg(0, -EINVAL)
            else:
                self.handlers[signo] = handler
                regs.set_reg(0, 0)
            return Resume(f"rt_sigaction({signo}, {handler:#x})")
        if nr == NR_RT_SIGRETURN:
            if not self._saved:
                return Outcome(OutcomeKind.TASK_KILLED, "rt_sigreturn with no signal frame: SIGSEGV", 11)
            resume_at = regs.x[0]
            saved = self._saved.pop()
            regs.x[:] = saved.x
            regs.sp, regs.pstate = saved.sp, saved.pstate
            regs.pc = resume_at or saved.pc
            return Resume(f"rt_sigreturn to {regs.pc:#x}")
        regs.set_reg(0, -ENOSYS)
        return Resume(f"unknown syscall {nr}: -ENOSYS")

    def deliver(self, regs: PtRegs, sig: Signal, restorer: int) -> Outcome | None:
        """force_sig_fault(): run the handler at EL0 (returning to `restorer`), or kill the task. Edits `regs`."""
        if not regs.user_mode:
            return Outcome(OutcomeKind.HOST_OOPS, f"signal {sig.signo} for a kernel context at {regs.pc:#x}")
        handler = self.handlers.get(sig.signo)
        self.delivered.append(DeliveredSignal(sig.signo, sig.code, sig.addr, regs.pc))
        if sig.signo == 9 or not handler:
            return Outcome(
                OutcomeKind.TASK_KILLED,
                f"task killed by {signal_name(sig.signo)} (code {sig.code}) at {sig.addr:#x}",
                DeliveredSignal(sig.signo, sig.code, sig.addr, regs.pc),
            )
        self._saved.append(PtRegs(list(regs.x), regs.sp, regs.pc, regs.pstate))
        regs.set_reg(0, sig.signo)
        regs.set_reg(1, sig.addr)
        regs.set_reg(2, sig.code)
        regs.set_reg(3, regs.pc)
        regs.set_reg(30, restorer)
        regs.pc = handler
        return None
