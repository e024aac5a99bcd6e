"""Operand parsing shared by our own encoders: registers, integers, base addresses.

Deliberately small: operands arrive with symbols already replaced by numbers,
and anything unexpected raises EncodeError, which the front end turns into a
file:line error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from kasm.text import split_top_level


class EncodeError(ValueError):
    """The instruction is ours to encode, but its operands are wrong."""


# --------------------------------------------------------------------------- operands


@dataclass(frozen=True)
class Gpr:
    """A general-purpose register operand: number 0..31 and width."""

    num: int
    is64: bool
    is_sp: bool = False  # number 31 meaning SP/WSP rather than XZR/WZR


_GPR = re.compile(r"^(?P<w>[xw])(?P<n>\d{1,2})$|^(?P<zr>[xw]zr)$|^(?P<sp>w?sp)$", re.IGNORECASE)


def parse_gpr(text: str, *, sp: bool = False, zr: bool = True) -> Gpr:
    """Parse x0..x30/w0..w30/xzr/wzr (and sp/wsp when `sp`)."""
    m = _GPR.match(text.strip())
    if not m:
        raise EncodeError(f"expected a general-purpose register, got '{text.strip()}'")
    if m.group("w"):
        num = int(m.group("n"))
        if num > 30:
            raise EncodeError(f"no register '{text.strip()}'")
        return Gpr(num, m.group("w").lower() == "x")
    if m.group("zr"):
        if not zr:
            raise EncodeError(f"'{text.strip()}' is not allowed here")
        return Gpr(31, m.group("zr").lower() == "xzr")
    if not sp:
        raise EncodeError(f"'{text.strip()}' is not allowed here")
    return Gpr(31, m.group("sp").lower() == "sp", is_sp=True)


def split_operands(text: str) -> list[str]:
    """Split at commas that are not inside [] or {} (or parentheses); quotes are not special."""
    return split_top_level(text, strings=False)


_INT = re.compile(r"^#?\s*(-?)\s*(0x[0-9a-f]+|0b[01]+|\d+)$", re.IGNORECASE)


def parse_int(text: str) -> int:
    """An immediate that the front end has already reduced to a literal."""
    m = _INT.match(text.strip())
    if not m:
        raise EncodeError(f"expected an immediate, got '{text.strip()}'")
    value = int(m.group(2), 0)
    return -value if m.group(1) else value


def parse_base(text: str) -> tuple[int, int]:
    """`[Xn|SP]` or `[Xn|SP, #imm]` (no writeback) -> (n, imm)."""
    t = text.strip()
    if not (t.startswith("[") and t.endswith("]")):
        raise EncodeError(f"expected a memory operand [Xn{{, #imm}}], got '{t}'")
    inner = split_operands(t[1:-1])
    base = parse_gpr(inner[0], sp=True, zr=False)
    if not base.is64:
        raise EncodeError(f"base register must be a 64-bit register, got '{inner[0]}'")
    if len(inner) == 1:
        return base.num, 0
    if len(inner) == 2:
        return base.num, parse_int(inner[1])
    raise EncodeError(f"unexpected memory operand '{t}'")


def _expect(ops: list[str], count: int, form: str) -> None:
    if len(ops) != count:
        raise EncodeError(f"expected operands '{form}', got {len(ops)} operand(s)")
