"""The registers gdb sees, their numbers, and the target description (target.xml) that names them.

gdb's AArch64 support wants a feature named `org.gnu.gdb.aarch64.core` with
x0-x30, sp, pc (64 bits) and cpsr (32 bits), in that order (the gdb manual,
"AArch64 Features"). Registers are numbered in the order the description lists
them; `g` sends them all in that order, each in target byte order. After the
core we describe the EL1 system registers a kernel engineer reads at a fault
(ESR_EL1, FAR_EL1, ELR_EL1, SPSR_EL1, ...) as a feature of our own, so that
`p/x $esr_el1` and `info registers far_el1` work in gdb.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from xml.sax.saxutils import quoteattr

from emu.cpu import Cpu


class RegKind(Enum):
    X = "x"
    SP = "sp"
    PC = "pc"
    CPSR = "cpsr"
    SYSREG = "sysreg"


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
        return cpu.read_sysreg(self.sysreg)

    def write(self, cpu: Cpu, value: int) -> None:
        if self.kind is RegKind.X:
            cpu.set_x(self.index, value)
        elif self.kind is RegKind.SP:
            cpu.sp = value
        elif self.kind is RegKind.PC:
            cpu.pc = value
        elif self.kind is RegKind.CPSR:
            cpu.set_pstate(value & 0xFFFF_FFFF)  # switches the EL's banked SP as the hardware would
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
    Register("cpsr", 4, RegKind.CPSR),
)
SYSREGS: tuple[Register, ...] = tuple(Register(name.lower(), 8, RegKind.SYSREG, sysreg=name) for name in EL1_SYSREGS)
REGISTERS: tuple[Register, ...] = CORE + SYSREGS
PC_NUMBER = 32


def _feature(name: str, regs: tuple[Register, ...], first: int) -> str:
    lines = [f"  <feature name={quoteattr(name)}>"]
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
            "</target>",
            "",
        )
    )
