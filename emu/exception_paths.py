"""`ExceptionPaths`: what the machine does with an event that stopped the engine.

A stage-1 abort is taken to EL1 as the hardware does; a stage-2 abort goes to the
installed EL2 handler; hvc/smc/svc/brk/undefined instructions, Unicorn's own
alignment interrupt and an illegal exception return become the architectural
exception (syndromes from emu/exceptions.py, emu/sysreg_trap.py, emu/eret.py).
A mixin of `emu.machine.Machine`: it uses the machine's cpu, log, el2 handler,
alignment watch and abort builder, and lives apart so machine.py stays the run loop.
"""
from __future__ import annotations

from typing import Any

from emu.abort import MemoryAbort
from emu.cpu import VectorKind
from emu.el2_handler import NoAbortHandler, smc_not_supported
from emu.eret import INTNO_ILLEGAL_RETURN, take_illegal_return
from emu.exceptions import INTNO_BKPT, INTNO_DATA_ABORT, INTNO_HVC, INTNO_SMC, INTNO_SVC, INTNO_UDEF, exception_syndrome
from emu.outcome import Outcome, OutcomeKind
from emu.sysreg_trap import el0_sysreg_trap

# Event texts as (format, *values) recipes (emu/outcome.py Event): formatted only when read.
_ENTRY_TEXT = "EL{} -> EL1 vector {:#x} ESR={:#x}".format


class ExceptionPaths:
    def _on_abort(self, abort: MemoryAbort) -> Outcome | None:
        self.log("abort", abort.summary, pc=abort.pc, el=abort.el, abort=abort)
        if abort.stage == 1:
            return self.take_exception_el1(abort.esr.value, abort.far, abort.pc, cause=abort)
        if self.el2 is None:
            raise NoAbortHandler(f"stage-2 abort with no EL2 handler installed: {abort.summary()}")
        return self.el2.handle_abort(self, abort)

    def _on_interrupt(self, intno: int) -> Outcome | None:
        pc = self.cpu.pc
        from_el = self.cpu.el
        if intno == INTNO_ILLEGAL_RETURN:
            return take_illegal_return(self)
        if intno == INTNO_HVC:
            imm = (self._insn_word(pc - 4) >> 5) & 0xFFFF
            self.log("hvc", f"hvc #{imm} x0={self.cpu.x(0):#x}", imm=imm)
            if self.el2 is None:
                raise NoAbortHandler(f"hvc #{imm} at {pc - 4:#x} with no EL2 handler installed")
            return self.el2.handle_hvc(self, imm)
        if intno == INTNO_SMC:
            # Unicorn reports smc with PC already past it (QEMU: EXCP_SMC after the insn).
            smc_pc = pc - 4
            imm = (self._insn_word(smc_pc) >> 5) & 0xFFFF
            if self.el2 is not None:
                # HCR_EL2.TSC = 1 (pKVM): the SMC traps to EL2 before it executes, EC 0x17 with
                # ELR_EL2 = the smc (Arm ARM D1.10 / C6.2 SMC pseudocode, AArch64.CheckForSMCUndefOrTrap);
                # the handler answers and skips it (hyp-main.c handle_host_smc: kvm_skip_host_instr).
                self.log("smc", f"SMC (AArch64): smc #{imm} x0={self.cpu.x(0):#x} trapped to EL2", pc=smc_pc, imm=imm)
                handler = getattr(self.el2, "handle_smc", None)
                return smc_not_supported(self, imm) if handler is None else handler(self, imm)
            # No EL2 to trap it and no EL3: SMC is UNDEFINED at the smc itself (Arm ARM C6.2 SMC).
            insn_pc = return_pc = smc_pc
        elif intno == INTNO_SVC:
            insn_pc, return_pc = pc - 4, pc  # svc's preferred return address is the next instruction
        elif intno in (INTNO_BKPT, INTNO_UDEF):
            insn_pc = return_pc = pc
        elif intno == INTNO_DATA_ABORT and (pending := self.alignment.abort_for_intno4(pc)) is not None:
            return self._on_abort(self._abort_builder.build(pending))  # Unicorn's own alignment check
        else:
            return Outcome(OutcomeKind.EMULATOR_ERROR, f"unexpected unicorn interrupt {intno} at pc={pc:#x}")
        esr = exception_syndrome(intno, self._insn_word(insn_pc & ~3), from_el, pc=insn_pc)
        if intno == INTNO_UDEF and from_el == 0:  # SCTLR_EL1's EL0 traps are EC 0x18 (emu/sysreg_trap.py)
            esr = el0_sysreg_trap(self._insn_word(insn_pc & ~3), self.cpu.read_sysreg("SCTLR_EL1")) or esr
        self.log("exception", f"{esr.name} ESR={esr.value:#x}", esr=esr.value, ec_name=esr.class_name)
        # A PC alignment fault records the misaligned PC in FAR_EL1 (Arm ARM D1.3.5).
        far = insn_pc if esr.ec == 0x22 else None
        return self.take_exception_el1(esr.value, far, return_pc, cause=esr)

    def take_exception_el1(self, esr: int, far: int | None, return_pc: int, *, cause: Any = None) -> Outcome | None:
        """Exception entry to EL1; without vectors (VBAR_EL1 = 0) the run ends instead."""
        entry = self.cpu.take_exception(esr=esr, far=far, return_pc=return_pc, kind=VectorKind.SYNC, needs_vectors=True)
        if entry is None:  # VBAR_EL1 = 0 (read in the entry's own batch)
            return Outcome(
                OutcomeKind.UNHANDLED_EXCEPTION,
                f"exception to EL1 (ESR={esr:#x}) at pc={return_pc:#x} but VBAR_EL1 is not set",
                cause,
            )
        self.log("exception-entry", (_ENTRY_TEXT, entry.from_el, entry.vector, esr), pc=entry.vector, el=1, entry=entry)
        return None
