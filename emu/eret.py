"""Illegal exception returns: an `eret` whose SPSR names a mode it may not return to.

Arm ARM (DDI 0487) D1.4.x "Illegal return events from AArch64 state": an ERET
is an illegal exception return when SPSR_ELx.M names a higher Exception level
than the current one (EL2h/EL2t/EL3h/EL3t from EL1), a reserved AArch64 mode
(M[1] = 1, or EL0 with SP_ELx: M[3:0] = 0b0001), or AArch32 state at an
Exception level that does not implement it (this machine's CPU, abi.cpu, models
AArch64 only). Then PC = ELR_ELx, PSTATE.{EL, SP, nRW} stay as they were,
PSTATE.IL = 1 and the other PSTATE fields come from SPSR; the next instruction
takes an Illegal Execution state exception (EC 0x0E, IL = 1, ISS 0) to the
current EL, with ELR = that instruction. The kernel's esr_class_str[] names it
"PSTATE.IL".

Unicorn 2.1.4 does neither: it returns to EL1 at ELR and runs on. Checking every
instruction for an eret would cap the machine near 0.85 M instructions/s, so the
check is armed only while it can matter: an MSR hook (rare instructions) sees
every `msr spsr_el1`, and only while SPSR_EL1 holds an illegal mode does a code
hook look for the eret; the hook stops the run before the eret executes, and the
machine's interrupt path (INTNO_ILLEGAL_RETURN) takes the exception here.
Measured: code without msr runs at full speed; each msr (register form) costs a
Python call of ~1.4 us, and a whole real-host `kernel sweep` of
__arch_copy_from_user executes 26 of them.
"""
from __future__ import annotations

from typing import Any, Protocol

from unicorn import UC_HOOK_CODE, UC_HOOK_INSN
from unicorn import arm64_const as A

from emu.outcome import Outcome
from emu.syndrome import EC, ec_kernel_name
from emu.syndrome.bits import EC_SHIFT, IL

from emu.cpu import Cpu


class GuardedMachine(Protocol):
    """What the guard uses of `emu.machine.Machine` (named here so this module need not import it)."""

    uc: Any
    cpu: Cpu

    def log(self, kind: str, message: str, *, pc: int | None = None, el: int | None = None, **data: Any) -> Any: ...

    def take_exception_el1(self, esr: int, far: int | None, return_pc: int, *, cause: Any = None) -> Outcome | None: ...

    def _insn_word(self, address: int) -> int: ...

    def _intr(self, uc: Any, intno: int, _user: Any) -> None: ...

ERET_WORD = 0xD69F03E0
INTNO_ILLEGAL_RETURN = 0x1_0000  # ours: no Unicorn interrupt number is this large
PSTATE_IL = 1 << 20
MODE_MASK = 0x1F  # M[4:0]: nRW and the mode
# msr spsr_el1: op0 3, op1 0, CRn 4, CRm 0, op2 0
_SPSR_EL1 = (3, 0, 4, 0, 0)


def illegal_return_reason(spsr: int, current_el: int) -> str | None:
    """Why an ERET at `current_el` with this SPSR is an illegal exception return; None when it is legal."""
    m = spsr & MODE_MASK
    if m & 0x10:
        return f"SPSR.M = {m:#07b}: AArch32 state, which this CPU does not implement"
    target = (m >> 2) & 3
    if target > current_el:
        return f"SPSR.M = {m:#06b} names EL{target}{'h' if m & 1 else 't'}, above the current EL{current_el}"
    if m & 0b10:
        return f"SPSR.M = {m:#06b} is a reserved mode (M[1] = 1)"
    if target == 0 and m & 1:
        return "SPSR.M = 0b0001: EL0 with SP_ELx is a reserved mode"
    return None


class EretGuard:
    """Watches for illegal exception returns from EL1 on one machine (see the module docstring)."""

    def __init__(self, machine: GuardedMachine) -> None:
        self.machine = machine
        self._code_hook = None
        self._msr_hook = machine.uc.hook_add(UC_HOOK_INSN, self._on_msr, None, 1, 0, A.UC_ARM64_INS_MSR)

    def rearm(self) -> None:
        """Look at SPSR_EL1 as it is now (before a run: Python may have written it)."""
        if self._msr_hook is not None:
            self._arm(illegal_return_reason(self.machine.cpu.read_sysreg("SPSR_EL1"), 1) is not None)

    def close(self) -> None:
        """Remove the guard's hooks: the machine then does what Unicorn alone does (tests that pin that)."""
        self._arm(False)
        if self._msr_hook is not None:
            self.machine.uc.hook_del(self._msr_hook)
            self._msr_hook = None

    def _on_msr(self, uc, reg, cp_reg, _user) -> bool:
        if (cp_reg.op0, cp_reg.op1, cp_reg.crn, cp_reg.crm, cp_reg.op2) == _SPSR_EL1:
            self._arm(illegal_return_reason(cp_reg.val, 1) is not None)
        return False  # the msr executes as usual

    def _arm(self, on: bool) -> None:
        if on and self._code_hook is None:
            self._code_hook = self.machine.uc.hook_add(UC_HOOK_CODE, self._on_insn)
        elif not on and self._code_hook is not None:
            self.machine.uc.hook_del(self._code_hook)
            self._code_hook = None

    def _on_insn(self, uc, address: int, size: int, _user) -> None:
        machine = self.machine
        if machine.cpu.el == 0 or machine._insn_word(address) != ERET_WORD:
            return
        if illegal_return_reason(machine.cpu.read_sysreg("SPSR_EL1"), machine.cpu.el) is None:
            return
        machine._intr(uc, INTNO_ILLEGAL_RETURN, None)  # stops the run before the eret executes


def take_illegal_return(machine: GuardedMachine) -> Outcome | None:
    """The eret at PC is an illegal exception return: the Illegal Execution state exception at ELR_EL1.

    The illegal return itself (PC = ELR, PSTATE.IL = 1, EL and SP unchanged, the rest
    from SPSR) and the exception its first instruction takes are done in one go: the
    exception's SPSR_EL1 is that post-return PSTATE and its ELR the return target.
    """
    cpu = machine.cpu
    pc, el = cpu.pc, cpu.el
    spsr, target = cpu.read_sysreg("SPSR_EL1"), cpu.read_sysreg("ELR_EL1")
    reason = illegal_return_reason(spsr, el)
    machine.log("illegal-return", f"eret at {pc:#x}: {reason}; PSTATE.IL set, PC = ELR_EL1 {target:#x}", spsr=spsr, elr=target)
    after = (spsr & ~MODE_MASK) | (cpu.pstate & MODE_MASK) | PSTATE_IL
    cpu.pc = target
    cpu.set_pstate(after)
    esr = (EC.ILL << EC_SHIFT) | IL
    name = ec_kernel_name(EC.ILL)
    machine.log("exception", f"{name}: illegal execution state ESR={esr:#x}", pc=target, esr=esr, ec_name=name)
    return machine.take_exception_el1(esr, None, target, cause=reason)
