"""`AT S1E1R` / `AT S1E1W` answered from our stage 1, so the kernel's spurious-fault check sees our page tables.

Unicorn runs with the MMU off (our software MMU sits in its TLB-fill hook), so
its own AT would report the VA itself as the PA. A UC_HOOK_INSN hook on SYS
instructions sees every AT (probed with unicorn 2.1.4: the callback gets the
Xt register id and the encoding fields, and returning 1 skips the
instruction); we walk `Machine.stage1` as the hardware walk would and write
PAR_EL1. Other SYS instructions (DC, IC, TLBI) run as before.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import arm64_const as A

from emu.memory import AccessType, WalkFault

if TYPE_CHECKING:
    from emu.machine import Machine

PAR_F = 1 << 0
# op2 of AT S1E1R/S1E1W/S1E0R/S1E0W (Arm ARM C5.5: SYS #0, C7, C8, #op2)
_AT_OPS = {0: (AccessType.READ, False), 1: (AccessType.WRITE, False), 2: (AccessType.READ, True), 3: (AccessType.WRITE, True)}
_FST_BASE = {"translation": 0x04, "access": 0x08, "permission": 0x0C}


def par_for(machine: "Machine", va: int, access: AccessType, el0: bool) -> int:
    """PAR_EL1 after a stage-1 AT: PA[47:12] on success, F=1 and FST[6:1] on a fault (PAN not applied)."""
    check = machine.stage1.check(va, access, el0=el0, pan=False)
    if isinstance(check, WalkFault):
        fst = _FST_BASE.get(check.kind, 0x04) + check.level
        return (fst << 1) | PAR_F
    return check.pfn << 12


def install_at_hook(machine: "Machine") -> None:
    """Hook every SYS instruction; AT S1E1{R,W}/S1E0{R,W} get PAR_EL1 from our stage 1 (and an `at` event)."""

    def on_sys(uc, reg: int, cp) -> bool:
        if not (cp.op0 == 1 and cp.op1 == 0 and cp.crn == 7 and cp.crm == 8 and cp.op2 in _AT_OPS):
            return False
        access, el0 = _AT_OPS[cp.op2]
        va = uc.reg_read(reg) if reg != A.UC_ARM64_REG_XZR else 0
        par = par_for(machine, va, access, el0)
        uc.reg_write(A.UC_ARM64_REG_PAR_EL1, par)
        name = _AT_NAMES[cp.op2]
        machine.log("at", (_at_text, name, va, par), va=va, par=par)
        return True

    machine.sys_insn.add(on_sys)  # the machine's one SYS hook: Unicorn calls only the first of several


_AT_NAMES = {0: "S1E1R", 1: "S1E1W", 2: "S1E0R", 3: "S1E0W"}


def _at_text(name: str, va: int, par: int) -> str:
    """The `at` event's text (a recipe, formatted when read: emu/outcome.py Event)."""
    return f"AT {name} {va:#x}: PAR_EL1={par:#x} ({_par_verdict(par)})"


def _par_verdict(par: int) -> str:
    return f"fault FST={(par >> 1) & 0x3F:#x}" if par & PAR_F else f"PA {par & ~0xFFF:#x}"
