"""`PtRegs`: the interrupted context as the kernel's entry code saves it (struct pt_regs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emu.cpu import Cpu

from abi.arch import MASK64


@dataclass
class PtRegs:
    x: list[int] = field(default_factory=lambda: [0] * 31)
    sp: int = 0
    pc: int = 0
    pstate: int = 0

    @property
    def user_mode(self) -> bool:
        """user_mode(regs): the exception came from EL0 (SPSR.M[3:2] == 0)."""
        return (self.pstate >> 2) & 3 == 0

    def set_reg(self, n: int, value: int) -> None:
        """pt_regs_write_reg(): register 31 is XZR here, so writes to it are dropped."""
        if n != 31:
            self.x[n] = value & MASK64

    def reg(self, n: int) -> int:
        return 0 if n == 31 else self.x[n]

    @classmethod
    def save(cls, cpu: "Cpu") -> "PtRegs":
        """kernel_entry: x0-x30, the interrupted SP, ELR_EL1 as pc and SPSR_EL1 as pstate."""
        x, sp, elr, spsr = cpu.entry_frame()
        return cls(x, sp, elr, spsr)

    @classmethod
    def save_with_syndrome(cls, cpu: "Cpu") -> "tuple[PtRegs, int, int]":
        """save() and ESR_EL1, FAR_EL1, which the handler reads next (one batched read for all)."""
        (x, sp, elr, spsr), esr, far = cpu.entry_frame_and_syndrome()
        return cls(x, sp, elr, spsr), esr, far

    def restore(self, cpu: "Cpu", *, resume_at: int | None = None) -> None:
        """kernel_exit up to (not including) the eret, which the CPU executes itself; PC = `resume_at`
        (the eret) in the same register batch when given."""
        cpu.exit_frame(self.x, self.sp, self.pc, self.pstate, resume_at=resume_at)

    def as_dict(self) -> dict[str, int]:
        regs = {f"x{i}": v for i, v in enumerate(self.x)}
        regs.update(sp=self.sp, pc=self.pc, pstate=self.pstate)
        return regs
