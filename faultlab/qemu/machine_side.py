"""Run the differential's cases on our machine (emu.machine.Machine), in the same terms as QEMU.

One machine serves every case: its physical memory starts where QEMU virt's RAM does and its
data frames are allocated at the PAs the harness uses, the stubs sit at the same VAs, and each
case only changes the two data pages' stage-1 entries (map_page/unmap_page) and the stage-2
verdicts of their frames (the machine's stage-2 callback), as the harness writes its table
entries. No EL1 vectors are installed (VBAR_EL1 = 0), so an exception taken to EL1 ends the run
with the syndrome the machine built; a stage-2 abort ends it in the EL2 handler here.

The machine's stage 1 is real tables in frames (emu/stage1_tables.py): the data pages'
level-3 table is moved to the frame the harness uses (S1_DATA_L3_PA), so a case's stage-2
entry for it (`s2_walk`) and the resulting HPFAR are the harness's; an "old" stage-1 entry is
the page mapped with AF = 0 (Stage1.set_access_flag). Anything else the machine refuses
comes back as an ERROR observation naming it, not as a guess.
"""
from __future__ import annotations

from unicorn import arm64_const as A

from emu.abort import MemoryAbort
from emu.address_space import MachineError
from emu.el2_handler import NoAbortHandler
from emu.machine import Machine
from emu.memory import AccessType, WalkFault
from emu.outcome import Outcome, OutcomeKind
from emu.syndrome import Esr
from faultlab.qemu.cases import Case
from faultlab.qemu.harness import Harness
from faultlab.qemu.layout import (
    DATA_HI_PA, DATA_HI_VA, DATA_LO_PA, DATA_LO_VA, EL0_STUB_PA, EL0_STUB_VA, RAM_BASE, RAM_SIZE, S1, S1_DATA_L3_PA,
    S2, V_REGS, WINDOW_BYTES, WINDOW_PA, X_REGS, window_pattern,
)
from faultlab.qemu.observation import Observation, Taken, normalised

_PERMS = {S1.KERNEL_RW: "rw", S1.KERNEL_RO: "r", S1.USER_RW: "rwu", S1.USER_RO: "ru", S1.USER_RX: "rxu",
          S1.KERNEL_RW_OLD: "rw", S1.USER_RW_OLD: "rwu"}
_OLD = frozenset({S1.KERNEL_RW_OLD, S1.USER_RW_OLD})  # mapped with AF = 0
_STAGE2_ABORT = "qemu-diff-stage2-abort"
BUDGET = 64  # instructions: a stub is two, and nothing may run away
TIMEOUT = 5.0


class _Stage2:
    """The machine's stage-2 callback and EL2 handler: per-frame entries, an abort ends the run."""

    def __init__(self) -> None:
        self.entries: dict[int, S2] = {}

    def __call__(self, pfn: int, access: AccessType) -> bool | WalkFault:
        entry = self.entries.get(pfn, S2.RW)
        if entry is S2.INVALID:
            return WalkFault("translation", 3)
        if entry is S2.RO and access is AccessType.WRITE:
            return WalkFault("permission", 3)
        if entry is S2.OLD:
            return WalkFault("access-flag", 3)
        return True

    def handle_abort(self, machine: Machine, abort: MemoryAbort) -> Outcome:
        return Outcome(_STAGE2_ABORT, abort.summary(), abort)

    def handle_hvc(self, machine: Machine, imm: int) -> Outcome:
        return Outcome(OutcomeKind.EMULATOR_ERROR, f"unexpected hvc #{imm}")


class MachineSide:
    def __init__(self, harness: Harness | None = None) -> None:
        self.harness = harness or Harness()
        m = self.machine = Machine(phys_base=RAM_BASE, phys_size=RAM_SIZE)
        self.lo, self.hi = self._frames_at(DATA_LO_PA), self._frames_at(DATA_HI_PA)
        el0_stub = self._frames_at(EL0_STUB_PA)
        m.map_page(EL0_STUB_VA, el0_stub, _PERMS[S1.USER_RX])
        m.write(EL0_STUB_VA, self._stubs(EL0_STUB_VA))
        for form in self.harness.forms:
            va = self.harness.stub_va(form, 1)
            m.load(va, self._stub(form.text, va), "rx")
        # The data pages' level-3 table where the harness has its own (the s1ptw family's target).
        self.data_l3 = self._frames_at(S1_DATA_L3_PA)
        m.map_page(DATA_LO_VA, self.lo, "rw")
        m.stage1.move_table(DATA_LO_VA, 3, self.data_l3)
        m.flush_tlb()
        self.stage2 = _Stage2()
        m.stage2 = self.stage2
        m.el2 = self.stage2

    def _frames_at(self, pa: int) -> int:
        """Allocate up to the frame at `pa` (the allocator hands out frames in order)."""
        target = pa >> 12
        pfn = self.machine.alloc_frame()
        if pfn < target:
            self.machine.alloc_frame(target - pfn - 1)
            pfn = self.machine.alloc_frame()
        if pfn != target:
            raise RuntimeError(f"frame {pa:#x} is already taken on the machine")
        return pfn

    @staticmethod
    def _stub(text: str, va: int) -> bytes:
        from kasm import assemble

        return assemble(f"{text}\nret", va, filename="<machine-stub>").data

    def _stubs(self, base: int) -> bytes:
        return b"".join(self._stub(f.text, base + 8 * i) for i, f in enumerate(self.harness.forms))

    def run(self, cases: list[Case]) -> list[Observation]:
        return [self.run_case(case) for case in cases]

    def run_case(self, case: Case) -> Observation:
        m = self.machine
        for va, pfn, entry in ((DATA_LO_VA, self.lo, case.s1[0]), (DATA_HI_VA, self.hi, case.s1[1])):
            if entry is S1.INVALID:
                m.unmap_page(va)
            elif entry in _PERMS:
                m.map_page(va, pfn, _PERMS[entry])
                if entry in _OLD:
                    m.stage1.set_access_flag(va, False)
            else:
                return Observation(Taken.ERROR, note=f"stage-1 entry {entry.value} is not expressible on the machine")
        self.stage2.entries = {self.lo: case.s2[0], self.hi: case.s2[1], self.data_l3: case.s2_walk}
        m.stage2_changed()
        m.phys.write(WINDOW_PA, window_pattern())
        for n, value in enumerate(V_REGS):
            m.uc.reg_write(A.UC_ARM64_REG_Q0 + n, value)
        sctlr = m.cpu.read_sysreg("SCTLR_EL1")
        if sctlr != case.sctlr:
            m.cpu.write_sysreg("SCTLR_EL1", case.sctlr)
        stub = self.harness.stub_va(case.form, case.el)
        try:
            result = m.call(stub, case.x0, *X_REGS[1:], el=case.el, pan=case.pan, budget=BUDGET, timeout=TIMEOUT)
        except (MachineError, NoAbortHandler) as exc:  # the machine refused: one case's error, not the run's
            return Observation(Taken.ERROR, note=f"{type(exc).__name__}: {exc}")
        regs = tuple(result.regs[f"x{i}"] for i in range(8))
        window = m.phys.read(WINDOW_PA, WINDOW_BYTES)
        outcome = result.outcome
        if outcome.kind == OutcomeKind.RETURNED:
            return Observation(Taken.COMPLETED, regs=regs, window=window)
        if isinstance(outcome.detail, MemoryAbort):
            abort = outcome.detail
            taken = Taken.EL2 if outcome.kind == _STAGE2_ABORT else Taken.EL1
            return normalised(taken, abort.esr.value, abort.far, abort.hpfar or 0, abort.pc - stub, regs, window)
        if outcome.kind == OutcomeKind.UNHANDLED_EXCEPTION and isinstance(outcome.detail, Esr):
            return normalised(Taken.EL1, outcome.detail.value, 0, 0, result.regs["pc"] - stub, regs, window)
        return Observation(Taken.ERROR, regs=regs, window=window, note=str(outcome))
