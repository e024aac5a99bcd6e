"""The registers gdb sees, their numbers, and the target description (target.xml) that names them.

gdb's AArch64 support wants a feature named `org.gnu.gdb.aarch64.core` with
x0-x30, sp, pc (64 bits) and cpsr (32 bits), in that order (the gdb manual,
"AArch64 Features"). Registers are numbered in the order the description lists
them; `g` sends them all in that order, each in target byte order. After the
core we describe the EL1 system registers a kernel engineer reads at a fault
(ESR_EL1, FAR_EL1, ELR_EL1, SPSR_EL1, ...) as a feature of our own, so that
`p/x $esr_el1` and `info registers far_el1` work in gdb; then the FP/SIMD
registers (`org.gnu.gdb.aarch64.fpu`: v0-v31 of 128 bits, fpsr, fpcr), whose
d/s/h/b views gdb derives itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from xml.sax.saxutils import quoteattr

from unicorn import arm64_const as A

from emu.cpu import Cpu


class RegKind(Enum):
    X = "x"
    SP = "sp"
    PC = "pc"
    CPSR = "cpsr"
    SYSREG = "sysreg"
    VECTOR = "vector"  # v<index>, 128 bits
    FP_STATUS = "fp"  # fpsr, fpcr


@dataclass(frozen=True)
class Register:
    name: str  # as gdb names it
    size: int  # bytes
    kind: RegKind
    index: int = 0  # x<index>
    sysreg: str = ""  # the Cpu's name for it
    gdb_type: str = "int"

    def read(self, cpu: Cpu) -> int:
        if self.kind is RegKind.X:
            return cpu.x(self.index)
        if self.kind is RegKind.SP:
            return cpu.sp
        if self.kind is RegKind.PC:
            return cpu.pc
        if self.kind is RegKind.CPSR:
            return cpu.pstate & 0xFFFF_FFFF
        if self.kind in (RegKind.VECTOR, RegKind.FP_STATUS):
            return cpu.uc.reg_read(self._uc_id())
        return cpu.read_sysreg(self.sysreg)

    def _uc_id(self) -> int:
        if self.kind is RegKind.VECTOR:
            return A.UC_ARM64_REG_V0 + self.index
        return {"fpsr": A.UC_ARM64_REG_FPSR, "fpcr": A.UC_ARM64_REG_FPCR}[self.name]

    def write(self, cpu: Cpu, value: int) -> None:
        if self.kind is RegKind.X:
            cpu.set_x(self.index, value)
        elif self.kind is RegKind.SP:
            cpu.sp = value
        elif self.kind is RegKind.PC:
            cpu.pc = value
        elif self.kind is RegKind.CPSR:
            cpu.set_pstate(value & 0xFFFF_FFFF)  # switches the EL's banked SP as the hardware would
        elif self.kind in (RegKind.VECTOR, RegKind.FP_STATUS):
            cpu.uc.reg_write(self._uc_id(), value & ((1 << (8 * self.size)) - 1))
        else:
            cpu.write_sysreg(self.sysreg, value)


CORE_FEATURE = "org.gnu.gdb.aarch64.core"
SYSREG_FEATURE = "org.faultlab.aarch64.el1"
# The EL1 registers an exception entry writes, and the ones that say where the host is running.
EL1_SYSREGS = ("ESR_EL1", "FAR_EL1", "ELR_EL1", "SPSR_EL1", "VBAR_EL1", "SP_EL0", "SP_EL1", "SCTLR_EL1", "TCR_EL1", "PAR_EL1", "TPIDR_EL1")

CORE: tuple[Register, ...] = (
    *(Register(f"x{i}", 8, RegKind.X, index=i) for i in range(31)),
    Register("sp", 8, RegKind.SP, gdb_type="data_ptr"),
    Register("pc", 8, RegKind.PC, gdb_type="code_ptr"),
    Register("cpsr", 4, RegKind.CPSR, gdb_type="cpsr_flags"),
)
# PSTATE as SPSR_ELx lays it out in AArch64 state (Arm ARM C5.2.19): gdb prints `[ EL=1 SP D A I F PAN ]`.
CPSR_FIELDS = (
    ("SP", 0, 0), ("EL", 2, 3), ("nRW", 4, 4), ("F", 6, 6), ("I", 7, 7), ("A", 8, 8), ("D", 9, 9),
    ("BTYPE", 10, 11), ("SSBS", 12, 12), ("IL", 20, 20), ("SS", 21, 21), ("PAN", 22, 22), ("UAO", 23, 23),
    ("DIT", 24, 24), ("TCO", 25, 25), ("V", 28, 28), ("C", 29, 29), ("Z", 30, 30), ("N", 31, 31),
)
PSTATE_FLAG_TYPES = ("cpsr_flags", "spsr_flags")  # one per feature: a gdb type belongs to the feature defining it
SYSREGS: tuple[Register, ...] = tuple(
    Register(name.lower(), 8, RegKind.SYSREG, sysreg=name, gdb_type="spsr_flags" if name == "SPSR_EL1" else "int") for name in EL1_SYSREGS
)
FPU_FEATURE = "org.gnu.gdb.aarch64.fpu"
FPU: tuple[Register, ...] = (
    *(Register(f"v{i}", 16, RegKind.VECTOR, index=i, gdb_type="vreg") for i in range(32)),
    Register("fpsr", 4, RegKind.FP_STATUS),
    Register("fpcr", 4, RegKind.FP_STATUS),
)
# A V register seen as lanes of 64, 32, 16 and 8 bits, or whole.
_VREG_TYPES = """\
    <vector id="v2d" type="uint64" count="2"/>
    <vector id="v4s" type="uint32" count="4"/>
    <vector id="v8h" type="uint16" count="8"/>
    <vector id="v16b" type="uint8" count="16"/>
    <union id="vreg">
      <field name="d" type="v2d"/>
      <field name="s" type="v4s"/>
      <field name="h" type="v8h"/>
      <field name="b" type="v16b"/>
      <field name="q" type="uint128"/>
    </union>"""
REGISTERS: tuple[Register, ...] = CORE + SYSREGS + FPU
PC_NUMBER = 32


def _feature(name: str, regs: tuple[Register, ...], first: int) -> str:
    lines = [f"  <feature name={quoteattr(name)}>"]
    for flags in sorted({reg.gdb_type for reg in regs if reg.gdb_type in PSTATE_FLAG_TYPES}):
        lines.append(f'    <flags id="{flags}" size="{8 if flags == "spsr_flags" else 4}">')
        lines += [f'      <field name="{n}" start="{lo}" end="{hi}"/>' for n, lo, hi in CPSR_FIELDS]
        lines.append("    </flags>")
    if any(reg.gdb_type == "vreg" for reg in regs):
        lines.append(_VREG_TYPES)
    for number, reg in enumerate(regs, first):
        lines.append(f'    <reg name={quoteattr(reg.name)} bitsize="{reg.size * 8}" type="{reg.gdb_type}" regnum="{number}"/>')
    lines.append("  </feature>")
    return "\n".join(lines)


def target_xml() -> str:
    """The whole target description, one document (no xi:include to resolve)."""
    return "\n".join(
        (
            '<?xml version="1.0"?>',
            '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
            "<target>",
            "  <architecture>aarch64</architecture>",
            _feature(CORE_FEATURE, CORE, 0),
            _feature(SYSREG_FEATURE, SYSREGS, len(CORE)),
            _feature(FPU_FEATURE, FPU, len(CORE) + len(SYSREGS)),
            "</target>",
            "",
        )
    )
