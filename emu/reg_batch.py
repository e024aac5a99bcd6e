"""Batched register access through Unicorn's C API: what `emu.cpu.Cpu` moves many registers with.

One `uc_reg_read_batch`/`uc_reg_write_batch` call replaces one binding call per register
(~0.5-4 us each); system registers named by encoding go through the same call with a
`uc_arm64_cp_reg` struct each. Unicorn 2.1.x internals (`uclib`, the struct layout): the
version is pinned, and tests compare every batch with the one-register-at-a-time path.
"""
from __future__ import annotations

import ctypes
from typing import Any, Protocol

from unicorn import arm64_const as A
from unicorn.unicorn_py3.unicorn import uclib as _uclib

from abi.arch import MASK64


class Engine(Protocol):
    """What a batch needs of `emu.cpu.Cpu`: the engine's handle, and the one-at-a-time paths that
    raise the binding's own error when a batch call fails."""

    uc: Any
    _handle: Any

    def _cp_read(self, op0: int, op1: int, crn: int, crm: int, op2: int) -> int: ...

    def _cp_write(self, op0: int, op1: int, crn: int, crm: int, op2: int, value: int) -> None: ...


class CpReg(ctypes.Structure):
    """Unicorn's uc_arm64_cp_reg (include/unicorn/arm64.h): a system register named by its encoding."""

    _fields_ = (("crn", ctypes.c_uint32), ("crm", ctypes.c_uint32), ("op0", ctypes.c_uint32),
                ("op1", ctypes.c_uint32), ("op2", ctypes.c_uint32), ("val", ctypes.c_uint64))


# Registers Unicorn 2.1 reads narrower than 64 bits: it stores only the low 4, 2 or 1 bytes of the
# caller's u64 (qemu/target/arm/unicorn_aarch64.c reg_read: W0-W30, WSP, WZR, NZCV, PSTATE,
# CPACR_EL1, FPCR, FPSR; the S, H and B views of the SIMD&FP registers).
NARROW_IDS = frozenset({
    *range(A.UC_ARM64_REG_W0, A.UC_ARM64_REG_W30 + 1), A.UC_ARM64_REG_WSP, A.UC_ARM64_REG_WZR, A.UC_ARM64_REG_NZCV,
    A.UC_ARM64_REG_PSTATE, A.UC_ARM64_REG_CPACR_EL1, A.UC_ARM64_REG_FPCR, A.UC_ARM64_REG_FPSR,
    *range(A.UC_ARM64_REG_S0, A.UC_ARM64_REG_S31 + 1), *range(A.UC_ARM64_REG_H0, A.UC_ARM64_REG_H31 + 1),
    *range(A.UC_ARM64_REG_B0, A.UC_ARM64_REG_B31 + 1),
})


class RegBatch:
    """One uc_reg_{read,write}_batch over a fixed list of registers: Unicorn ids, and system registers
    by encoding (op0, op1, crn, crm, op2), which go through UC_ARM64_REG_CP_REG with a struct of
    their own. A batch is applied in order (a write of SCTLR_EL1 after PSTATE's rebuilds the flags
    for the new PSTATE); a system register alone costs a ctypes call of ~0.8 us."""

    def __init__(self, regs: "tuple[int | tuple[int, int, int, int, int], ...]") -> None:
        n = len(regs)
        self.regs = regs
        self.ids = (ctypes.c_int32 * n)(*[A.UC_ARM64_REG_CP_REG if isinstance(r, tuple) else r for r in regs])
        self.vals = (ctypes.c_uint64 * n)()
        self.cps: list[tuple[int, CpReg]] = []
        ptrs = []
        for i, r in enumerate(regs):
            if isinstance(r, tuple):
                cp = CpReg()
                cp.op0, cp.op1, cp.crn, cp.crm, cp.op2 = r
                self.cps.append((i, cp))
                ptrs.append(ctypes.addressof(cp))
            else:
                ptrs.append(ctypes.addressof(self.vals) + 8 * i)
        self.ptrs = (ctypes.c_void_p * n)(*ptrs)
        self.n = n
        self.narrow = tuple(i for i, r in enumerate(regs) if r in NARROW_IDS)

    def read(self, cpu: Engine) -> list[int]:
        vals = self.vals
        for i in self.narrow:
            vals[i] = 0  # a narrow register is written in part: no stale upper bytes from an earlier read
        for _, cp in self.cps:
            cp.val = 0
        if _uclib.uc_reg_read_batch(cpu._handle, self.ids, self.ptrs, self.n):
            return [cpu._cp_read(*r) if isinstance(r, tuple) else cpu.uc.reg_read(r) for r in self.regs]  # the binding raises
        values = self.vals[:]
        for i, cp in self.cps:
            values[i] = cp.val
        return values

    def write(self, cpu: Engine, values: "list[int]") -> None:
        self.vals[:] = values  # a c_uint64 store keeps the low 64 bits of any int, as `& MASK64` would
        for i, cp in self.cps:
            cp.val = values[i]
        if _uclib.uc_reg_write_batch(cpu._handle, self.ids, self.ptrs, self.n):
            for r, value in zip(self.regs, values):
                if isinstance(r, tuple):
                    cpu._cp_write(*r, value)
                else:
                    cpu.uc.reg_write(r, value & MASK64)  # the binding raises
