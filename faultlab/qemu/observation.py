"""`Observation`: what one side (QEMU or our machine) saw when it ran one case.

Both sides are reduced to the same terms: where the exception went (EL1, EL2, or nowhere
because the instruction completed), the syndrome registers of that EL, the faulting PC as an
offset from the stub (0 = the instruction under test), x0-x7 afterwards (writeback, loaded
values, an exclusive's status) and the 128 bytes around the page boundary.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

ABORT_ECS = frozenset({0x20, 0x21, 0x24, 0x25})  # instruction/data aborts: FAR is valid


class Taken(enum.StrEnum):
    EL1 = "el1"  # an exception taken to EL1 (ESR/FAR_EL1)
    EL2 = "el2"  # an exception taken to EL2 (ESR/FAR/HPFAR_EL2)
    COMPLETED = "completed"  # the instruction ran to the end
    ERROR = "error"  # the side could not run the case (note says why)


@dataclass(frozen=True)
class Observation:
    taken: Taken
    esr: int | None = None
    far: int | None = None
    hpfar: int | None = None
    elr_offset: int | None = None
    regs: tuple[int, ...] = ()
    window: bytes = b""
    note: str = ""

    @property
    def ec(self) -> int | None:
        return None if self.esr is None else (self.esr >> 26) & 0x3F

    @property
    def dfsc(self) -> int | None:
        return None if self.esr is None else self.esr & 0x3F

    def brief(self) -> str:
        if self.taken is Taken.COMPLETED:
            return "completed"
        if self.taken is Taken.ERROR:
            return f"error: {self.note}"
        far = "" if self.far is None else f" FAR={self.far:#x}"
        hpfar = "" if self.hpfar is None else f" HPFAR={self.hpfar:#x}"
        return f"{self.taken.value} ESR={self.esr:#x}{far}{hpfar} ELR=stub+{self.elr_offset}"


def normalised(taken: Taken, esr: int, far: int, hpfar: int, elr_offset: int, regs: tuple[int, ...],
               window: bytes) -> Observation:
    """Keep FAR only where the architecture defines it (aborts) and HPFAR only for stage-2 aborts."""
    ec = (esr >> 26) & 0x3F
    return Observation(
        taken, esr,
        far if ec in ABORT_ECS else None,
        hpfar if taken is Taken.EL2 and ec in ABORT_ECS else None,
        elr_offset, regs, window,
    )
