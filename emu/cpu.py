"""Architectural register state of the emulated CPU, and exception entry.

Unicorn never takes an exception architecturally (it only reports an interrupt
number), and writing PSTATE alone neither rebuilds its cached EL state nor
switches the banked stack pointer. `Cpu` hides both facts: everything above
reads and writes registers by their architectural names, and `take_exception`
performs the entry the way the Arm ARM describes it (D1.10 "Exception entry").
"""
from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass

from unicorn import arm64_const as A
from unicorn.unicorn_py3.unicorn import uclib as _uclib

from abi.arch import MASK64
from emu.reg_batch import NARROW_IDS, CpReg, RegBatch

# PSTATE / SPSR bit positions (Arm ARM C5.2.19 SPSR_EL1, AArch64 state)
PSTATE_SP = 1 << 0  # M[0]: 1 = SP_ELx, 0 = SP_EL0
PSTATE_F = 1 << 6
PSTATE_I = 1 << 7
PSTATE_A = 1 << 8
PSTATE_D = 1 << 9
PSTATE_DAIF = PSTATE_D | PSTATE_A | PSTATE_I | PSTATE_F
PSTATE_SSBS = 1 << 12
PSTATE_PAN = 1 << 22
PSTATE_DIT = 1 << 24
PSTATE_NZCV = 0xF << 28

# SCTLR_EL1 bits (Arm ARM D17.2.118)
SCTLR_SPAN = 1 << 23  # 0: PAN is set on exception entry to EL1
SCTLR_DSSBS = 1 << 44

# (op0, op1, CRn, CRm, op2) for registers Unicorn has no constant for.
_CP = {
    "SPSR_EL1": (3, 0, 4, 0, 0),
    "SCTLR_EL1": (3, 0, 1, 0, 0),
    "TCR_EL1": (3, 0, 2, 0, 2),
    "SCR_EL3": (3, 6, 1, 1, 0),
    "DCZID_EL0": (3, 3, 0, 0, 7),
}
_REG = {
    "ESR_EL1": A.UC_ARM64_REG_ESR_EL1,
    "FAR_EL1": A.UC_ARM64_REG_FAR_EL1,
    "ELR_EL1": A.UC_ARM64_REG_ELR_EL1,
    "VBAR_EL1": A.UC_ARM64_REG_VBAR_EL1,
    "PAR_EL1": A.UC_ARM64_REG_PAR_EL1,
    "TPIDR_EL1": A.UC_ARM64_REG_TPIDR_EL1,
    "TPIDR_EL0": A.UC_ARM64_REG_TPIDR_EL0,
    "TTBR0_EL1": A.UC_ARM64_REG_TTBR0_EL1,
    "TTBR1_EL1": A.UC_ARM64_REG_TTBR1_EL1,
    "MAIR_EL1": A.UC_ARM64_REG_MAIR_EL1,
}
SYSREG_NAMES = tuple(sorted({*_CP, *_REG, "SP_EL0", "SP_EL1", "PAN", "CurrentEL"}))


_X = [getattr(A, f"UC_ARM64_REG_X{i}") for i in range(29)] + [A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30]
_Q = [getattr(A, f"UC_ARM64_REG_Q{i}") for i in range(32)]
MASK128 = (1 << 128) - 1
_SNAPSHOT_IDS = (*_X, A.UC_ARM64_REG_SP, A.UC_ARM64_REG_PC, A.UC_ARM64_REG_PSTATE)
_PLAIN_REGS = {**{f"x{i}": reg for i, reg in enumerate(_X)}, "sp": A.UC_ARM64_REG_SP, "pc": A.UC_ARM64_REG_PC}
_SNAPSHOT_NAMES = (*(f"x{i}" for i in range(31)), "sp", "pc", "pstate")


class VectorOffset(enum.IntEnum):
    """Offsets from VBAR_ELx of the four vector groups (Arm ARM D1.10.2); + 0x80 per kind."""

    CURRENT_SP0 = 0x000
    CURRENT_SPX = 0x200
    LOWER_A64 = 0x400
    LOWER_A32 = 0x600


class VectorKind(enum.IntEnum):
    SYNC = 0x000
    IRQ = 0x080
    FIQ = 0x100
    SERROR = 0x180


@dataclass(frozen=True)
class ExceptionEntry:
    """What `take_exception` did, for event logs."""

    from_el: int
    vector: int
    esr: int
    far: int | None
    elr: int
    spsr: int


def _vreg(n: int) -> int:
    if not 0 <= n <= 31:
        raise ValueError(f"there is no SIMD&FP register v{n} (v0-v31)")
    return n


class Cpu:
    """Registers of one Unicorn engine, by architectural name."""

    def __init__(self, uc) -> None:
        self.uc = uc
        # Fault handling reads a dozen registers per abort; the binding's generic reg_read
        # costs ~4 us each (register-class lookup), a direct uc_reg_read of a u64 ~0.5 us.
        # Both are unicorn 2.1.x internals (the version is pinned); tests compare the two paths.
        self.on_sctlr_write = None  # set by the machine: its modes follow SCTLR_EL1.{M,A}
        self._handle = uc._uch
        self._u64 = ctypes.c_uint64()
        self._u64_ref = ctypes.byref(self._u64)
        # Batches of x0..x30, sp, pc, pstate: one uc_reg_{read,write}_batch instead of 34 calls
        # (a call at the start and the end of every run; tests compare with the one-by-one path).
        self._cp_reg = CpReg()
        self._cp_ref = ctypes.byref(self._cp_reg)
        self._batch_ids = (ctypes.c_int32 * len(_SNAPSHOT_IDS))(*_SNAPSHOT_IDS)
        self._batch_vals = (ctypes.c_uint64 * len(_SNAPSHOT_IDS))()
        self._batch_ptrs = (ctypes.c_void_p * len(_SNAPSHOT_IDS))(
            *[ctypes.addressof(self._batch_vals) + 8 * i for i in range(len(_SNAPSHOT_IDS))]
        )
        # Exception entry, PSTATE writes, kernel_entry/exit move their registers in batches too, the
        # system registers among them (each register alone is a ctypes call of ~0.6-0.8 us).
        R, sctlr, spsr = A, _CP["SCTLR_EL1"], _CP["SPSR_EL1"]
        self._banks_read = RegBatch((R.UC_ARM64_REG_PSTATE, R.UC_ARM64_REG_SP, R.UC_ARM64_REG_SP_EL0, R.UC_ARM64_REG_SP_EL1, sctlr))
        self._entry_read = RegBatch((R.UC_ARM64_REG_PSTATE, R.UC_ARM64_REG_SP, R.UC_ARM64_REG_SP_EL0, R.UC_ARM64_REG_SP_EL1,
                                   R.UC_ARM64_REG_VBAR_EL1, sctlr))
        self._switch_writes: dict[tuple, RegBatch] = {}
        self._named_writes: dict[tuple[str, ...], RegBatch] = {}
        self._named_reads: dict[tuple[int, ...], RegBatch] = {}
        frame = (*_X, R.UC_ARM64_REG_PSTATE, R.UC_ARM64_REG_SP, R.UC_ARM64_REG_SP_EL0, R.UC_ARM64_REG_ELR_EL1, spsr)
        self._frame_read = RegBatch(frame)
        self._frame_read_syndrome = RegBatch((*frame, R.UC_ARM64_REG_ESR_EL1, R.UC_ARM64_REG_FAR_EL1))
        # kernel_exit's writes by the SP they return to (the current one, SP_EL0, or both when SP_EL0
        # is the live SP), each with or without PC last (where the handler resumes: its eret).
        exit_sps = {"sp": (R.UC_ARM64_REG_SP,), "sp0": (R.UC_ARM64_REG_SP_EL0,), "both": (R.UC_ARM64_REG_SP_EL0, R.UC_ARM64_REG_SP)}
        self._exit_writes = {
            (kind, with_pc): RegBatch((spsr, *_X, R.UC_ARM64_REG_ELR_EL1, *sps, *((R.UC_ARM64_REG_PC,) if with_pc else ())))
            for kind, sps in exit_sps.items() for with_pc in (False, True)
        }
        self._enter_el1h = RegBatch((R.UC_ARM64_REG_PSTATE, R.UC_ARM64_REG_SP_EL0, R.UC_ARM64_REG_SP_EL1, R.UC_ARM64_REG_SP, *_X, sctlr))

    def read64(self, reg_id: int) -> int:
        """A register by Unicorn id, through the fast path.

        The buffer is cleared first for a narrow register (PSTATE, NZCV, Wn, Sn, ...): Unicorn
        writes only its low bytes, and stale upper bits of an earlier read must not show through.
        """
        if reg_id in NARROW_IDS:
            self._u64.value = 0
        if _uclib.uc_reg_read(self._handle, reg_id, self._u64_ref):
            return self.uc.reg_read(reg_id)  # let the binding raise its own error
        return self._u64.value

    def _cp(self, op0: int, op1: int, crn: int, crm: int, op2: int):
        cp = self._cp_reg
        cp.crn, cp.crm, cp.op0, cp.op1, cp.op2 = crn, crm, op0, op1, op2
        return cp

    def _cp_read(self, op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
        """A system register by encoding, through the fast path (the binding's cpr_read builds a tuple class each time)."""
        cp = self._cp(op0, op1, crn, crm, op2)
        cp.val = 0
        if _uclib.uc_reg_read(self._handle, A.UC_ARM64_REG_CP_REG, self._cp_ref):
            return self.uc.cpr_read(op0, op1, crn, crm, op2)
        return cp.val

    def _cp_write(self, op0: int, op1: int, crn: int, crm: int, op2: int, value: int) -> None:
        cp = self._cp(op0, op1, crn, crm, op2)
        cp.val = value & MASK64
        if _uclib.uc_reg_write(self._handle, A.UC_ARM64_REG_CP_REG, self._cp_ref):
            self.uc.cpr_write(op0, op1, crn, crm, op2, value & MASK64)

    # general registers -------------------------------------------------
    def write64(self, reg_id: int, value: int) -> None:
        """A 64-bit register by Unicorn id, through the fast path (see read64)."""
        self._u64.value = value & MASK64
        if _uclib.uc_reg_write(self._handle, reg_id, self._u64_ref):
            self.uc.reg_write(reg_id, value & MASK64)

    def x(self, n: int) -> int:
        """X[n]; n = 31 reads as zero (XZR), as in a data-register field."""
        if n == 31:
            return 0
        return self.read64(_X[n])

    def set_x(self, n: int, value: int) -> None:
        if n != 31:
            self.write64(_X[n], value)

    # SIMD&FP registers (V0-V31), by their Q/D/S/H/B views -------------------
    def q(self, n: int) -> int:
        """Qn / Vn: all 128 bits, as an unsigned int (element 0 in the low bits)."""
        return self.uc.reg_read(_Q[_vreg(n)]) & MASK128

    def set_q(self, n: int, value: int) -> None:
        self.uc.reg_write(_Q[_vreg(n)], value & MASK128)

    def d(self, n: int) -> int:
        """Dn: the low 64 bits of Vn."""
        return self.q(n) & MASK64

    def set_d(self, n: int, value: int) -> None:
        """Write Dn as an instruction does (FMOV Dn, Xm; LDR Dn): bits[127:64] of Vn become 0."""
        self.set_q(n, value & MASK64)

    def s(self, n: int) -> int:
        """Sn: the low 32 bits of Vn."""
        return self.q(n) & 0xFFFF_FFFF

    def set_s(self, n: int, value: int) -> None:
        """Write Sn as an instruction does: bits[127:32] of Vn become 0."""
        self.set_q(n, value & 0xFFFF_FFFF)

    def base_reg(self, n: int) -> int:
        """Register n as an address base: 31 is SP here."""
        return self.sp if n == 31 else self.x(n)

    @property
    def pc(self) -> int:
        return self.read64(A.UC_ARM64_REG_PC)

    @pc.setter
    def pc(self, value: int) -> None:
        self.write64(A.UC_ARM64_REG_PC, value)

    @property
    def sp(self) -> int:
        """The stack pointer currently selected by PSTATE (SP_EL0 at EL0 or EL1t)."""
        return self.read64(A.UC_ARM64_REG_SP)

    @sp.setter
    def sp(self, value: int) -> None:
        self.write64(A.UC_ARM64_REG_SP, value)

    @property
    def pstate(self) -> int:
        return self.read64(A.UC_ARM64_REG_PSTATE)

    @property
    def el(self) -> int:
        return (self.pstate >> 2) & 3

    @property
    def pan(self) -> bool:
        return bool(self.pstate & PSTATE_PAN)

    def _uses_sp_el0(self, pstate: int) -> bool:
        return ((pstate >> 2) & 3) == 0 or not (pstate & PSTATE_SP)

    # banked stack pointers: the live SP is in xregs[31]; the bank holds the others
    @property
    def sp_el0(self) -> int:
        if self._uses_sp_el0(self.pstate):
            return self.sp
        return self.read64(A.UC_ARM64_REG_SP_EL0)

    @sp_el0.setter
    def sp_el0(self, value: int) -> None:
        self.write64(A.UC_ARM64_REG_SP_EL0, value)
        if self._uses_sp_el0(self.pstate):
            self.sp = value

    @property
    def sp_el1(self) -> int:
        pstate = self.pstate
        if ((pstate >> 2) & 3) == 1 and pstate & PSTATE_SP:
            return self.sp
        return self.read64(A.UC_ARM64_REG_SP_EL1)

    @sp_el1.setter
    def sp_el1(self, value: int) -> None:
        self.write64(A.UC_ARM64_REG_SP_EL1, value)
        pstate = self.pstate
        if ((pstate >> 2) & 3) == 1 and pstate & PSTATE_SP:
            self.sp = value

    def set_pstate(self, value: int) -> None:
        """Write PSTATE, switching the banked SP and making Unicorn rebuild its EL state."""
        old, sp, sp0, sp1, sctlr = self._banks_read.read(self)
        if old == value:
            return
        self._switch_pstate(old, sp, sp0, sp1, value, sctlr, ())

    def _switch_pstate(
        self, old: int, sp: int, sp0: int, sp1: int, value: int, sctlr: int,
        also: "tuple[tuple[object, int], ...]", before: "tuple[tuple[object, int], ...]" = (),
    ) -> None:
        """PSTATE old -> value given the live SP and the banked SP_EL0/SP_EL1 as read, and SCTLR_EL1's
        value; `before`/`also`: more (register, value) writes for the same batch, before and after
        the PSTATE switch (a register is a Unicorn id or a system register's encoding).

        Unicorn keeps the selected stack pointer live in SP and does not swap banks on a PSTATE
        write: the live SP goes to its bank, the new selection's bank becomes the live SP.
        Then SCTLR_EL1 is rewritten (last in the batch): Unicorn caches the EL in its translation
        flags and rebuilds them only on such a write.
        """
        if self._uses_sp_el0(old):
            sp0 = sp
        elif ((old >> 2) & 3) == 1:
            sp1 = sp
        live = sp0 if self._uses_sp_el0(value) else sp1
        regs = (*(r for r, _ in before), A.UC_ARM64_REG_PSTATE, A.UC_ARM64_REG_SP_EL0, A.UC_ARM64_REG_SP_EL1, A.UC_ARM64_REG_SP,
                *(r for r, _ in also), _CP["SCTLR_EL1"])
        batch = self._switch_writes.get(regs)
        if batch is None:
            batch = self._switch_writes[regs] = RegBatch(regs)
        # The same SCTLR_EL1 value back: the machine's modes (on_sctlr_write) follow its value, which this does not change.
        batch.write(self, [*(v for _, v in before), value, sp0, sp1, live, *(v for _, v in also), sctlr])

    # system registers ---------------------------------------------------
    def read_sysreg(self, name: str) -> int:
        if name in _REG:
            return self.read64(_REG[name])
        if name in _CP:
            return self._cp_read(*_CP[name])
        if name == "SP_EL0":
            return self.sp_el0
        if name == "SP_EL1":
            return self.sp_el1
        if name == "PAN":
            return int(self.pan)
        if name == "CurrentEL":
            return self.el << 2
        raise KeyError(f"unknown system register {name!r} (known: {', '.join(SYSREG_NAMES)})")

    def write_sysreg(self, name: str, value: int) -> None:
        value &= MASK64
        if name in _REG:
            self.write64(_REG[name], value)
        elif name in _CP:
            self._cp_write(*_CP[name], value)
            if name == "SCTLR_EL1" and self.on_sctlr_write is not None:
                self.on_sctlr_write(value)  # the machine's MMU-off / alignment modes (emu/sctlr.py)
        elif name == "SP_EL0":
            self.sp_el0 = value
        elif name == "SP_EL1":
            self.sp_el1 = value
        elif name == "PAN":
            pstate = self.pstate
            self.set_pstate(pstate | PSTATE_PAN if value else pstate & ~PSTATE_PAN)
        else:
            raise KeyError(f"unknown or read-only system register {name!r} (known: {', '.join(SYSREG_NAMES)})")

    def snapshot(self) -> dict[str, int]:
        """x0..x30, sp, pc, pstate: what a `pt_regs` holds (one batched read)."""
        vals = self._batch_vals
        ctypes.memset(vals, 0, ctypes.sizeof(vals))  # PSTATE is written as 32 bits: no stale upper half
        if _uclib.uc_reg_read_batch(self._handle, self._batch_ids, self._batch_ptrs, len(_SNAPSHOT_IDS)):
            regs = {f"x{i}": self.x(i) for i in range(31)}
            regs.update(sp=self.sp, pc=self.pc, pstate=self.pstate)
            return regs
        return dict(zip(_SNAPSHOT_NAMES, vals[:]))

    def all_x(self) -> list[int]:
        """x0..x30 in one batched read (what kernel_entry saves)."""
        if _uclib.uc_reg_read_batch(self._handle, self._batch_ids, self._batch_ptrs, 31):
            return [self.x(i) for i in range(31)]
        return self._batch_vals[:31]  # 64-bit registers: every value written whole

    def read_batch(self, regs: "tuple[int, ...]") -> tuple[int, ...]:
        """Registers by Unicorn id, in one batched read (the batch is made once per tuple)."""
        batch = self._named_reads.get(regs)
        if batch is None:
            batch = self._named_reads[regs] = RegBatch(regs)
        return tuple(batch.read(self))

    def write_regs(self, writes: "tuple[tuple[str, int], ...]") -> None:
        """(name, value) writes of plain registers - "x0".."x30", "sp" (the live one), "pc" - in one
        batch, in order (PSTATE and the banked SPs have setters of their own: their writes have
        side effects here)."""
        names = tuple(n for n, _ in writes)
        batch = self._named_writes.get(names)
        if batch is None:
            unknown = [n for n in names if n not in _PLAIN_REGS]
            if unknown:
                raise KeyError(f"write_regs writes x0-x30, sp and pc, not {', '.join(unknown)}")
            batch = self._named_writes[names] = RegBatch(tuple(_PLAIN_REGS[n] for n in names))
        batch.write(self, [v for _, v in writes])

    def enter_el1h(self, pstate: int, sp: int, sp_el0: int, x: "list[int] | tuple[int, ...]") -> None:
        """PSTATE = `pstate` (an EL1h state), SP_EL1 and the live SP = `sp`, SP_EL0 = `sp_el0`, x0..x30 = `x`.

        What set_pstate, the sp and sp_el0 setters and set_all_x do one after the other, in one
        batch (a kernel call starts with it: seven engine calls were ~5 us of every call), SCTLR_EL1
        rewritten last as every PSTATE switch here does (Unicorn rebuilds its cached EL flags then).
        """
        if (pstate >> 2) & 3 != 1 or not pstate & PSTATE_SP:
            raise ValueError(f"enter_el1h takes an EL1h PSTATE, not {pstate:#x}")
        if len(x) != 31:
            raise ValueError(f"enter_el1h takes 31 values (x0-x30), not {len(x)}")
        sctlr = self._cp_read(*_CP["SCTLR_EL1"])
        self._enter_el1h.write(self, [pstate, sp_el0, sp, sp, *x, sctlr])

    def set_all_x(self, values: "list[int] | tuple[int, ...]") -> None:
        """x0..x30 = values (31 of them), in one batched write."""
        if len(values) != 31:
            raise ValueError(f"set_all_x takes 31 values (x0-x30), not {len(values)}")
        self._batch_vals[:31] = [value & MASK64 for value in values]
        if _uclib.uc_reg_write_batch(self._handle, self._batch_ids, self._batch_ptrs, 31):
            for i, value in enumerate(values):
                self.set_x(i, value)

    def entry_frame(self) -> tuple[list[int], int, int, int]:
        """What kernel_entry saves, in one batched read: (x0..x30, the interrupted SP, ELR_EL1, SPSR_EL1).

        The interrupted SP is SP_EL0 when SPSR_EL1 says the exception came from EL0, else the SP the
        handler runs on (the entry keeps EL1's stack).
        """
        return self._entry_frame(self._frame_read.read(self))

    def entry_frame_and_syndrome(self) -> tuple[tuple[list[int], int, int, int], int, int]:
        """entry_frame() and ESR_EL1, FAR_EL1 (what an exception handler reads next), in the same batch."""
        vals = self._frame_read_syndrome.read(self)
        return self._entry_frame(vals), vals[36], vals[37]

    def _entry_frame(self, vals: list[int]) -> tuple[list[int], int, int, int]:
        pstate, sp, sp0, elr, spsr = vals[31:36]
        if (spsr >> 2) & 3 == 0:
            sp = sp if self._uses_sp_el0(pstate) else sp0
        return vals[:31], sp, elr, spsr

    def exit_frame(self, x: "list[int]", sp: int, elr: int, spsr: int, *, resume_at: int | None = None) -> None:
        """kernel_exit up to (not including) the eret: SPSR_EL1, x0..x30, ELR_EL1 and the SP to return
        to (SP_EL0 for a return to EL0, else the current SP) in one batched write; with `resume_at`,
        PC too (last), where the handler goes on (its eret)."""
        if len(x) != 31:
            raise ValueError(f"exit_frame takes 31 values (x0-x30), not {len(x)}")
        pc = () if resume_at is None else (resume_at,)
        if (spsr >> 2) & 3 == 0:
            if self._uses_sp_el0(self.pstate):  # SP_EL0 is the live SP too (as the sp_el0 setter does)
                self._exit_writes["both", bool(pc)].write(self, [spsr, *x, elr, sp, sp, *pc])
            else:
                self._exit_writes["sp0", bool(pc)].write(self, [spsr, *x, elr, sp, *pc])
        else:
            self._exit_writes["sp", bool(pc)].write(self, [spsr, *x, elr, sp, *pc])

    # exception entry ------------------------------------------------------
    def take_exception(
        self, *, esr: int, far: int | None, return_pc: int, kind: VectorKind = VectorKind.SYNC, needs_vectors: bool = False
    ) -> ExceptionEntry | None:
        """Take an exception to EL1 (AArch64) from EL0 or EL1, as the Arm ARM's entry pseudocode does.

        ELR_EL1 = return_pc, SPSR_EL1 = the interrupted PSTATE, ESR_EL1/FAR_EL1 as given
        (FAR is left UNKNOWN - unchanged - when `far` is None), PSTATE = EL1h with DAIF
        masked; NZCV and DIT are kept, UAO is cleared; PAN is set when SCTLR_EL1.SPAN is 0; SSBS is
        set from SCTLR_EL1.DSSBS; PC = VBAR_EL1 + group + kind.
        """
        old, sp, sp0, sp1, vbar, sctlr = self._entry_read.read(self)
        if needs_vectors and vbar == 0:
            return None  # the caller's choice: no exception without vectors (nothing written)
        from_el = (old >> 2) & 3
        if from_el == 0:
            group = VectorOffset.LOWER_A64
        elif old & PSTATE_SP:
            group = VectorOffset.CURRENT_SPX
        else:
            group = VectorOffset.CURRENT_SP0
        # Arm ARM AArch64.TakeException: UAO <- 0, PAN kept unless SPAN == 0
        new = (old & (PSTATE_NZCV | PSTATE_DIT | PSTATE_PAN)) | PSTATE_DAIF | (1 << 2) | PSTATE_SP
        if not sctlr & SCTLR_SPAN:
            new |= PSTATE_PAN
        if sctlr & SCTLR_DSSBS:
            new |= PSTATE_SSBS
        vector = (vbar + group + kind) & MASK64
        writes = ((A.UC_ARM64_REG_ELR_EL1, return_pc), (A.UC_ARM64_REG_ESR_EL1, esr))
        if far is not None:
            writes += ((A.UC_ARM64_REG_FAR_EL1, far),)
        # SPSR_EL1, PSTATE and the SP banks, ELR/ESR/FAR, PC and the flags rebuild (SCTLR_EL1): one batch
        self._switch_pstate(old, sp, sp0, sp1, new, sctlr, (*writes, (A.UC_ARM64_REG_PC, vector)), before=((_CP["SPSR_EL1"], old),))
        return ExceptionEntry(from_el, vector, esr, far, return_pc, old)
