"""PC-relative instructions, encoded by us because keystone gets `adr` offsets wrong.

b, bl, b.cond, cbz/cbnz, tbz/tbnz, adr/adrp and literal loads: the target is an
expression the assembler evaluates, checked for alignment and range (Arm ARM
C6.2, each instruction's imm field).
"""
from __future__ import annotations

import re
from typing import Callable

from kasm.operands import EncodeError, Gpr, _expect, parse_gpr, parse_int, split_operands

CONDITIONS: dict[str, int] = {
    "eq": 0, "ne": 1, "cs": 2, "hs": 2, "cc": 3, "lo": 3, "mi": 4, "pl": 5, "vs": 6, "vc": 7,
    "hi": 8, "ls": 9, "ge": 10, "lt": 11, "gt": 12, "le": 13, "al": 14, "nv": 15,
}
_BCOND = re.compile(r"^b\.?(" + "|".join(CONDITIONS) + r")$")


def _offset(pc: int, target: int, bits: int, scale: int, what: str) -> int:
    """Signed field value for target - pc, checked for alignment and range."""
    delta = target - pc
    if delta % scale:
        raise EncodeError(f"{what} target {target:#x} is not {scale}-byte aligned relative to pc {pc:#x}")
    field = delta // scale
    if not -(1 << (bits - 1)) <= field < (1 << (bits - 1)):
        limit = (1 << (bits - 1)) * scale
        raise EncodeError(f"{what} target {target:#x} is out of range (more than ±{limit:#x} bytes from {pc:#x})")
    return field & ((1 << bits) - 1)


def encode_b(pc: int, target: int, link: bool) -> int:
    """Arm ARM C6.2 B/BL: op 00101 imm26."""
    return (0x94000000 if link else 0x14000000) | _offset(pc, target, 26, 4, "branch")


def encode_b_cond(pc: int, target: int, cond: int) -> int:
    """Arm ARM C6.2 B.cond: 0101010 0 imm19 0 cond."""
    return 0x54000000 | (_offset(pc, target, 19, 4, "conditional branch") << 5) | cond


def encode_cbz(pc: int, target: int, rt: Gpr, nonzero: bool) -> int:
    """Arm ARM C6.2 CBZ/CBNZ: sf 011010 op imm19 Rt."""
    return (int(rt.is64) << 31) | 0x34000000 | (int(nonzero) << 24) | (_offset(pc, target, 19, 4, "cbz") << 5) | rt.num


def encode_tbz(pc: int, target: int, rt: Gpr, bit: int, nonzero: bool) -> int:
    """Arm ARM C6.2 TBZ/TBNZ: b5 011011 op b40 imm14 Rt."""
    if not 0 <= bit < (64 if rt.is64 else 32):
        raise EncodeError(f"bit number {bit} out of range for a {'64' if rt.is64 else '32'}-bit register")
    return ((bit >> 5) << 31) | 0x36000000 | (int(nonzero) << 24) | ((bit & 31) << 19) | (_offset(pc, target, 14, 4, "tbz") << 5) | rt.num


def encode_adr(pc: int, target: int, rd: int, page: bool) -> int:
    """Arm ARM C6.2 ADR/ADRP: op immlo 10000 immhi Rd (ADRP works in 4 KiB pages)."""
    if page:
        field = _offset(pc & ~0xFFF, target & ~0xFFF, 21, 4096, "adrp")
    else:
        field = _offset(pc, target, 21, 1, "adr")
    return (int(page) << 31) | ((field & 3) << 29) | 0x10000000 | ((field >> 2) << 5) | rd


# Arm ARM C6.2 LDR (literal): opc 011 V 00 imm19 Rt
_LITERAL = {  # mnemonic + register class -> (opc, V)
    ("ldr", "w"): (0, 0), ("ldr", "x"): (1, 0), ("ldrsw", "x"): (2, 0), ("prfm", "p"): (3, 0),
    ("ldr", "s"): (0, 1), ("ldr", "d"): (1, 1), ("ldr", "q"): (2, 1),
}
_FPREG = re.compile(r"^([sdq])(\d{1,2})$", re.IGNORECASE)
PRFM_OPS = {
    f"{kind}{level}{policy}": (k << 3) | ((level_n - 1) << 1) | p
    for k, kind in enumerate(("pld", "pli", "pst"))
    for level_n, level in ((1, "l1"), (2, "l2"), (3, "l3"))
    for p, policy in enumerate(("keep", "strm"))
}


def encode_ldr_literal(pc: int, target: int, reg_text: str, mnemonic: str) -> int:
    rt_text = reg_text.strip().lower()
    if mnemonic == "prfm":
        if rt_text not in PRFM_OPS:
            raise EncodeError(f"unknown prefetch operation '{reg_text.strip()}'")
        key, rt = ("prfm", "p"), PRFM_OPS[rt_text]
    elif m := _FPREG.match(rt_text):
        key, rt = (mnemonic, m.group(1)), int(m.group(2))
        if rt > 31:
            raise EncodeError(f"no register '{rt_text}'")
    else:
        reg = parse_gpr(rt_text, zr=True)
        key, rt = (mnemonic, "x" if reg.is64 else "w"), reg.num
    if key not in _LITERAL:
        raise EncodeError(f"{mnemonic} (literal) does not take '{reg_text.strip()}'")
    opc, v = _LITERAL[key]
    return (opc << 30) | 0x18000000 | (v << 26) | (_offset(pc, target, 19, 4, "literal load") << 5) | rt


PC_RELATIVE = frozenset({"b", "bl", "cbz", "cbnz", "tbz", "tbnz", "adr", "adrp", "ldr", "ldrsw", "prfm"})


def is_pc_relative(mnemonic: str, operand_text: str) -> bool:
    """Does this instruction take a PC-relative label operand (which we encode ourselves)?"""
    mnemonic = mnemonic.lower()
    if _BCOND.match(mnemonic):
        return True
    if mnemonic not in PC_RELATIVE:
        return False
    if mnemonic in ("ldr", "ldrsw", "prfm"):
        ops = split_operands(operand_text)
        return len(ops) == 2 and not ops[1].startswith(("[", "="))
    return True


def encode_pc_relative(mnemonic: str, operand_text: str, pc: int, evaluate: Callable[[str], int]) -> int:
    """Encode a branch/adr/literal load; `evaluate` turns the label expression into an address."""
    mnemonic = mnemonic.lower()
    ops = split_operands(operand_text)
    if m := _BCOND.match(mnemonic):
        _expect(ops, 1, "label")
        return encode_b_cond(pc, evaluate(ops[0]), CONDITIONS[m.group(1)])
    if mnemonic in ("b", "bl"):
        _expect(ops, 1, "label")
        return encode_b(pc, evaluate(ops[0]), mnemonic == "bl")
    if mnemonic in ("cbz", "cbnz"):
        _expect(ops, 2, "Rt, label")
        return encode_cbz(pc, evaluate(ops[1]), parse_gpr(ops[0]), mnemonic == "cbnz")
    if mnemonic in ("tbz", "tbnz"):
        _expect(ops, 3, "Rt, #bit, label")
        return encode_tbz(pc, evaluate(ops[2]), parse_gpr(ops[0]), parse_int(ops[1]), mnemonic == "tbnz")
    if mnemonic in ("adr", "adrp"):
        _expect(ops, 2, "Xd, label")
        rd = parse_gpr(ops[0], zr=True)
        if not rd.is64:
            raise EncodeError(f"{mnemonic} needs an X register")
        expr = ops[1]
        if mnemonic == "adrp" and expr.lower().startswith(":pg_hi21:"):
            expr = expr[len(":pg_hi21:"):]
        return encode_adr(pc, evaluate(expr), rd.num, mnemonic == "adrp")
    if mnemonic in ("ldr", "ldrsw", "prfm"):
        _expect(ops, 2, "Rt, label")
        return encode_ldr_literal(pc, evaluate(ops[1]), ops[0], mnemonic)
    raise EncodeError(f"'{mnemonic}' is not a PC-relative instruction")
