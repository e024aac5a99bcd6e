"""What a fault handler decides: resume the interrupted context, deliver a signal, or die.

Shared by the fault path (`host.fault`), the task model (`host.tasks`) and the
exception entry that acts on the result (`host.kernel`), so none of them
imports another for its vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.syndrome import Esr


@dataclass(frozen=True)
class Resume:
    """Return to the (possibly fixed-up) interrupted context."""

    why: str


@dataclass(frozen=True)
class Signal:
    signo: int
    code: int
    addr: int
    why: str


@dataclass(frozen=True)
class Die:
    """die(): the host kernel oopses. `message` is the kernel's first line."""

    message: str
    esr: int
    far: int | None
    regs: dict[str, int]
    bug: bool = False

    def report(self) -> str:
        """The oops as the kernel prints it: the line, mem_abort_decode() for aborts, then __show_regs()."""
        lines = [self.message]
        esr = Esr(self.esr)
        if esr.is_data_abort or esr.is_instruction_abort:
            lines += esr.oops_lines()
        else:
            lines.append(f"ESR = 0x{self.esr:016x}")
        lines.append(f"pc : {self.regs.get('pc', 0):016x}")
        lines.append(f"lr : {self.regs.get('x30', 0):016x}")
        lines.append(f"sp : {self.regs.get('sp', 0):016x}")
        for hi in range(29, 0, -2):
            lines.append(f"x{hi:<2}: {self.regs.get(f'x{hi}', 0):016x} x{hi - 1:<2}: {self.regs.get(f'x{hi - 1}', 0):016x}")
        return "\n".join(lines)


FaultResult = Resume | Signal | Die


LIVELOCK_AFTER = 8  # the same abort (pc, FAR) this many times in a row is a livelock


def livelock_message(pc: int, far: int, count: int) -> str:
    """One wording for the model and the real host, so their verdicts compare equal."""
    return f"the access at pc={pc:#x} faulted {count} times in a row on FAR={far:#x}: the host retries it forever"
