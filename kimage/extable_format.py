"""The arm64 exception-table entry format, shared by our assembler and the vmlinux loader.

An entry is 12 bytes (arch/arm64/include/asm/asm-extable.h): s32 insn, s32 fixup,
s16 type, s16 data, where both offsets are relative to the address of the field
itself. The numbering of `type` differs between kernel versions, so the symbolic
kind (`ExType`) and the number written in the binary are kept apart: a
`TypeNumbering` maps one to the other for one kernel generation.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Iterator, Mapping

ENTRY_SIZE = 12
_ENTRY = struct.Struct("<iihh")


class ExType(enum.Enum):
    """What an exception-table entry asks the fault handler to do."""

    NONE = "NONE"
    BPF = "BPF"
    UACCESS_ERR_ZERO = "UACCESS_ERR_ZERO"
    KACCESS_ERR_ZERO = "KACCESS_ERR_ZERO"
    UACCESS_CPY = "UACCESS_CPY"
    LOAD_UNALIGNED_ZEROPAD = "LOAD_UNALIGNED_ZEROPAD"


class UnknownExtableType(ValueError):
    """An entry's type number is not in the kernel's numbering: the kernel BUG()s on it."""


@dataclass(frozen=True)
class TypeNumbering:
    """One kernel generation's type numbers (asm-extable.h of that version)."""

    name: str
    numbers: Mapping[ExType, int]

    def number(self, kind: ExType) -> int:
        try:
            return self.numbers[kind]
        except KeyError:
            raise UnknownExtableType(f"{kind.value} does not exist in the {self.name} numbering") from None

    def kind(self, number: int) -> ExType:
        for kind, value in self.numbers.items():
            if value == number:
                return kind
        raise UnknownExtableType(f"extable type {number} is unknown to the {self.name} numbering")


# v6.1 .. v6.16-ish asm-extable.h
NUMBERING_V6_1 = TypeNumbering(
    "v6.1",
    {
        ExType.NONE: 0,
        ExType.BPF: 1,
        ExType.UACCESS_ERR_ZERO: 2,
        ExType.KACCESS_ERR_ZERO: 3,
        ExType.LOAD_UNALIGNED_ZEROPAD: 4,
    },
)

# Kernels with FEAT_MOPS uaccess routines (checked on Debian sid's 7.2 vmlinux:
# 6 entries of type 4 in the copy routines, 9 of type 5 in zeropad users).
NUMBERING_V7 = TypeNumbering(
    "v7",
    {
        ExType.NONE: 0,
        ExType.BPF: 1,
        ExType.UACCESS_ERR_ZERO: 2,
        ExType.KACCESS_ERR_ZERO: 3,
        ExType.UACCESS_CPY: 4,
        ExType.LOAD_UNALIGNED_ZEROPAD: 5,
    },
)

NUMBERINGS = {n.name: n for n in (NUMBERING_V6_1, NUMBERING_V7)}

# data field layouts (asm-extable.h)
REG_NONE = 31  # "no register" in the ERR_ZERO data fields


def pack_err_zero(err_reg: int, zero_reg: int) -> int:
    """ERR_ZERO data: bits[4:0] get -EFAULT, bits[9:5] get 0."""
    return (err_reg & 0x1F) | ((zero_reg & 0x1F) << 5)


def pack_zeropad(data_reg: int, addr_reg: int) -> int:
    """LOAD_UNALIGNED_ZEROPAD data: bits[4:0] data register, bits[9:5] address register."""
    return (data_reg & 0x1F) | ((addr_reg & 0x1F) << 5)


@dataclass(frozen=True)
class ExtableEntry:
    """One decoded entry with absolute addresses; `type` is the raw number."""

    insn: int
    fixup: int
    type: int
    data: int

    @property
    def reg_err(self) -> int:
        return self.data & 0x1F

    @property
    def reg_zero(self) -> int:
        return (self.data >> 5) & 0x1F

    @property
    def reg_data(self) -> int:
        return self.data & 0x1F

    @property
    def reg_addr(self) -> int:
        return (self.data >> 5) & 0x1F

    @property
    def uaccess_is_write(self) -> bool:
        return bool(self.data & 1)

    def encode(self, entry_addr: int) -> bytes:
        """The 12 bytes of this entry when it is stored at `entry_addr`."""
        insn_off = self.insn - entry_addr
        fixup_off = self.fixup - (entry_addr + 4)
        for off in (insn_off, fixup_off):
            if not -(1 << 31) <= off < (1 << 31):
                raise ValueError(f"extable offset {off:#x} does not fit in s32")
        return _ENTRY.pack(insn_off, fixup_off, self.type, _s16(self.data))


def _s16(value: int) -> int:
    value &= 0xFFFF
    return value - 0x10000 if value & 0x8000 else value


def decode_extable(blob: bytes, base: int) -> Iterator[ExtableEntry]:
    """Decode a raw `__ex_table` stored at address `base`."""
    if len(blob) % ENTRY_SIZE:
        raise ValueError(f"__ex_table size {len(blob)} is not a multiple of {ENTRY_SIZE}")
    mask = (1 << 64) - 1
    for off in range(0, len(blob), ENTRY_SIZE):
        insn, fixup, typ, data = _ENTRY.unpack_from(blob, off)
        addr = base + off
        yield ExtableEntry((addr + insn) & mask, (addr + 4 + fixup) & mask, typ & 0xFFFF, data & 0xFFFF)


def encode_extable(entries: list[ExtableEntry], base: int) -> bytes:
    """Encode entries (sorted by insn, as the kernel's sort_extable leaves them) at `base`."""
    ordered = sorted(entries, key=lambda e: e.insn)
    return b"".join(e.encode(base + i * ENTRY_SIZE) for i, e in enumerate(ordered))
