"""Our own encodings for the AArch64 instructions keystone 0.9.2 cannot (or must not) assemble.

Keystone rejects the LSE atomics, the PAC/BTI hints, LDAPR and friends, `msr pan, #1`
and several newer system registers, and silently emits nothing for some `dc` operations.
It also encodes `adr` with a wrong offset. So the assembler front end (kasm) asks
this module first; `None` means "not ours, give it to keystone".

Every layout here is written from the Arm Architecture Reference Manual (DDI 0487,
section C6.2 "Alphabetical list of A64 base instructions"; field names as there).
Operand parsing is deliberately small: operands arrive with symbols already replaced
by numbers, and anything unexpected raises EncodeError, which the front end turns
into a file:line error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

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


# --------------------------------------------------------------------------- hints and barriers

# Arm ARM C6.2 HINT: 1101 0101 0000 0011 0010 CRm:op2 1 1111; the 7-bit CRm:op2 value names the hint.
HINT_BASE = 0xD503201F
HINTS: dict[str, int] = {
    "nop": 0, "yield": 1, "wfe": 2, "wfi": 3, "sev": 4, "sevl": 5, "dgh": 6,
    "xpaclri": 7, "pacia1716": 8, "pacib1716": 10, "autia1716": 12, "autib1716": 14,
    "esb": 16, "psb csync": 17, "tsb csync": 18, "csdb": 20,
    "paciaz": 24, "paciasp": 25, "pacibz": 26, "pacibsp": 27,
    "autiaz": 28, "autiasp": 29, "autibz": 30, "autibsp": 31,
    "bti": 32, "bti c": 34, "bti j": 36, "bti jc": 38,
}


def encode_hint(imm: int) -> int:
    if not 0 <= imm <= 127:
        raise EncodeError(f"hint number {imm} out of range 0..127")
    return HINT_BASE | (imm << 5)


# Arm ARM C6.2 DSB: 1101 0101 0000 0011 0011 CRm 1 00 11111; SSBB is DSB #0, PSSBB is DSB #4.
# SB: 1101 0101 0000 0011 0011 0000 1 11 11111.
FIXED: dict[str, int] = {
    "ssbb": 0xD503309F,
    "pssbb": 0xD503349F,
    "sb": 0xD50330FF,
    # Arm ARM C6.2 RETAA/RETAB: 1101 0110 0101 1111 0000 1 M 11111 11111
    "retaa": 0xD65F0BFF,
    "retab": 0xD65F0FFF,
}


# --------------------------------------------------------------------------- LSE atomics

# Arm ARM C6.2 LDADD etc.: size 111 0 00 A R 1 Rs o3 opc 00 Rn Rt
_LSE_OPS = {"add": 0, "clr": 1, "eor": 2, "set": 3, "smax": 4, "smin": 5, "umax": 6, "umin": 7}
_LD_ATOMIC = re.compile(r"^ld(add|clr|eor|set|smax|smin|umax|umin)(a|al|l|)(b|h|)$")
_ST_ATOMIC = re.compile(r"^st(add|clr|eor|set|smax|smin|umax|umin)(l|)(b|h|)$")
_SWP = re.compile(r"^swp(a|al|l|)(b|h|)$")
_CAS = re.compile(r"^cas(a|al|l|)(b|h|)$")
_CASP = re.compile(r"^casp(a|al|l|)$")
_ORDER = {"": (0, 0), "a": (1, 0), "l": (0, 1), "al": (1, 1)}  # (acquire, release)


def _sized_pair(ops: list[str], suffix: str) -> tuple[Gpr, Gpr, int]:
    """Rs and Rt of an atomic, with the size field implied by suffix or width."""
    rs, rt = parse_gpr(ops[0]), parse_gpr(ops[1])
    if suffix:
        if rs.is64 or rt.is64:
            raise EncodeError("byte/halfword atomics take W registers")
        return rs, rt, 0 if suffix == "b" else 1
    if rs.is64 != rt.is64:
        raise EncodeError("both registers must have the same width")
    return rs, rt, 3 if rs.is64 else 2


def encode_atomic_op(op: str, acquire: int, release: int, size: int, rs: int, rt: int, rn: int) -> int:
    """LD<op>/ST<op> (ST<op> is LD<op> with Rt = ZR and A = 0)."""
    return (size << 30) | 0x38200000 | (acquire << 23) | (release << 22) | (rs << 16) | (_LSE_OPS[op] << 12) | (rn << 5) | rt


def encode_swp(acquire: int, release: int, size: int, rs: int, rt: int, rn: int) -> int:
    """Arm ARM C6.2 SWP: as LD<op> with o3 = 1, opc = 000."""
    return (size << 30) | 0x38208000 | (acquire << 23) | (release << 22) | (rs << 16) | (rn << 5) | rt


def encode_cas(acquire: int, release: int, size: int, rs: int, rt: int, rn: int) -> int:
    """Arm ARM C6.2 CAS: size 001000 1 L 1 Rs o0 11111 Rn Rt (L = acquire, o0 = release)."""
    return (size << 30) | 0x08A07C00 | (acquire << 22) | (rs << 16) | (release << 15) | (rn << 5) | rt


def encode_casp(acquire: int, release: int, is64: bool, rs: int, rt: int, rn: int) -> int:
    """Arm ARM C6.2 CASP: 0 sz 001000 0 L 1 Rs o0 11111 Rn Rt."""
    return (int(is64) << 30) | 0x08207C00 | (acquire << 22) | (rs << 16) | (release << 15) | (rn << 5) | rt


def _rs_rt_xn(ops: list[str], suffix: str) -> tuple[int, int, int, int]:
    """The `Rs, Rt, [Xn]` form shared by LD<op>, SWP and CAS -> (size, rs, rt, rn)."""
    _expect(ops, 3, "Rs, Rt, [Xn]")
    rs, rt, size = _sized_pair(ops, suffix)
    return size, rs.num, rt.num, _base_only(ops[2])


def _encode_lse(mnemonic: str, ops: list[str]) -> int | None:
    if m := _LD_ATOMIC.match(mnemonic):
        acq, rel = _ORDER[m.group(2)]
        return encode_atomic_op(m.group(1), acq, rel, *_rs_rt_xn(ops, m.group(3)))
    if m := _ST_ATOMIC.match(mnemonic):
        _expect(ops, 2, "Rs, [Xn]")
        rs, _, size = _sized_pair([ops[0], ops[0]], m.group(3))
        rn = _base_only(ops[1])
        return encode_atomic_op(m.group(1), 0, int(m.group(2) == "l"), size, rs.num, 31, rn)
    if m := _SWP.match(mnemonic):
        acq, rel = _ORDER[m.group(1)]
        return encode_swp(acq, rel, *_rs_rt_xn(ops, m.group(2)))
    if m := _CASP.match(mnemonic):
        _expect(ops, 5, "Rs, Rs+1, Rt, Rt+1, [Xn]")
        regs = [parse_gpr(o) for o in ops[:4]]
        is64 = regs[0].is64
        if any(r.is64 != is64 for r in regs):
            raise EncodeError("casp registers must all have the same width")
        for first, second in (regs[0:2], regs[2:4]):
            # Arm ARM: Rs and Rt must be even-numbered, and the pair is <R>, <R+1>.
            if first.num % 2 or first.num == 31 or second.num != first.num + 1:
                raise EncodeError("casp needs consecutive register pairs starting at an even register")
        rn = _base_only(ops[4])
        acq, rel = _ORDER[m.group(1)]
        return encode_casp(acq, rel, is64, regs[0].num, regs[2].num, rn)
    if m := _CAS.match(mnemonic):
        acq, rel = _ORDER[m.group(1)]
        return encode_cas(acq, rel, *_rs_rt_xn(ops, m.group(2)))
    return None


def _base_only(text: str) -> int:
    """`[Xn]` (or `[Xn, #0]`) for instructions that take no offset -> n."""
    rn, off = parse_base(text)
    if off:
        raise EncodeError("this instruction takes no offset (only [Xn] or [Xn, #0])")
    return rn


# --------------------------------------------------------------------------- RCpc loads/stores

_LDAPR = re.compile(r"^ldapr(b|h|)$")
# Arm ARM C6.2 LDAPUR*/STLUR*: size 011001 opc 0 imm9 00 Rn Rt
_RCPC2 = {
    # mnemonic: (size or None = by register width, opc for a W/X target)
    "stlurb": (0, {False: 0}), "stlurh": (1, {False: 0}), "stlur": (None, {False: 0, True: 0}),
    "ldapurb": (0, {False: 1}), "ldapurh": (1, {False: 1}), "ldapur": (None, {False: 1, True: 1}),
    "ldapursb": (0, {True: 2, False: 3}), "ldapursh": (1, {True: 2, False: 3}), "ldapursw": (2, {True: 2}),
}


def encode_ldapr(size: int, rt: int, rn: int) -> int:
    """Arm ARM C6.2 LDAPR: size 111 0 00 1 0 1 11111 1 100 00 Rn Rt."""
    return (size << 30) | 0x38BFC000 | (rn << 5) | rt


def encode_rcpc2(size: int, opc: int, imm9: int, rt: int, rn: int) -> int:
    if not -256 <= imm9 <= 255:
        raise EncodeError(f"offset {imm9} out of range -256..255")
    return (size << 30) | 0x19000000 | (opc << 22) | ((imm9 & 0x1FF) << 12) | (rn << 5) | rt


def encode_lorder(load: bool, size: int, rt: int, rn: int) -> int:
    """Arm ARM C6.2 LDLAR/STLLR: size 001000 1 L 0 11111 0 11111 Rn Rt (L = load)."""
    return (size << 30) | 0x089F7C00 | (int(load) << 22) | (rn << 5) | rt


def _encode_rcpc(mnemonic: str, ops: list[str]) -> int | None:
    if m := _LDAPR.match(mnemonic):
        _expect(ops, 2, "Rt, [Xn]")
        rt = parse_gpr(ops[0])
        rn = _base_only(ops[1])
        if m.group(1):
            if rt.is64:
                raise EncodeError(f"{mnemonic} takes a W register")
            size = 0 if m.group(1) == "b" else 1
        else:
            size = 3 if rt.is64 else 2
        return encode_ldapr(size, rt.num, rn)
    if mnemonic in _RCPC2:
        _expect(ops, 2, "Rt, [Xn{, #simm}]")
        size, opcs = _RCPC2[mnemonic]
        rt = parse_gpr(ops[0])
        if rt.is64 not in opcs:
            raise EncodeError(f"{mnemonic} does not take a {'X' if rt.is64 else 'W'} register")
        if size is None:
            size = 3 if rt.is64 else 2
        rn, off = parse_base(ops[1])
        return encode_rcpc2(size, opcs[rt.is64], off, rt.num, rn)
    if mnemonic in ("ldlar", "stllr", "ldlarb", "stllrb", "ldlarh", "stllrh"):
        _expect(ops, 2, "Rt, [Xn]")
        rt = parse_gpr(ops[0])
        rn = _base_only(ops[1])
        suffix = mnemonic[5:]
        size = {"b": 0, "h": 1}.get(suffix, 3 if rt.is64 else 2)
        return encode_lorder(mnemonic.startswith("ld"), size, rt.num, rn)
    return None


# --------------------------------------------------------------------------- system instructions

# Arm ARM C5.1.3 (MSR immediate): 1101 0101 0000 0 op1 0100 CRm op2 11111; (op1, op2, max imm).
PSTATE_FIELDS: dict[str, tuple[int, int, int]] = {
    "spsel": (0, 5, 1),
    "daifset": (3, 6, 15),
    "daifclr": (3, 7, 15),
    "uao": (0, 3, 1),
    "pan": (0, 4, 1),
    "dit": (3, 2, 1),
    "ssbs": (3, 1, 1),
    "tco": (3, 4, 1),
}


def encode_msr_imm(op1: int, op2: int, imm: int) -> int:
    return 0xD500401F | (op1 << 16) | (imm << 8) | (op2 << 5)


# System registers keystone 0.9.2 does not know: (op0, op1, CRn, CRm, op2) from the
# register descriptions in Arm ARM D19/D23 (e.g. PAN: S3_0_C4_C2_3).
SYSREGS: dict[str, tuple[int, int, int, int, int]] = {
    "pan": (3, 0, 4, 2, 3),
    "uao": (3, 0, 4, 2, 4),
    "dit": (3, 3, 4, 2, 5),
    "ssbs": (3, 3, 4, 2, 6),
    "tco": (3, 3, 4, 2, 7),
    "tfsr_el1": (3, 0, 5, 6, 0),
    "tfsre0_el1": (3, 0, 5, 6, 1),
    "gcr_el1": (3, 0, 1, 0, 6),
    "rgsr_el1": (3, 0, 1, 0, 5),
    "rndr": (3, 3, 2, 4, 0),
    "rndrrs": (3, 3, 2, 4, 1),
    "apiakeylo_el1": (3, 0, 2, 1, 0),
    "apiakeyhi_el1": (3, 0, 2, 1, 1),
    "apibkeylo_el1": (3, 0, 2, 1, 2),
    "apibkeyhi_el1": (3, 0, 2, 1, 3),
}
_GENERIC_SYSREG = re.compile(r"^s([0-3])_([0-7])_c(\d{1,2})_c(\d{1,2})_([0-7])$", re.IGNORECASE)


def encode_sysreg_move(read: bool, sysreg: tuple[int, int, int, int, int], rt: int) -> int:
    """Arm ARM C6.2 MRS/MSR (register): 1101 0101 00 L 1 o0 op1 CRn CRm op2 Rt, op0 = 2 + o0."""
    op0, op1, crn, crm, op2 = sysreg
    if op0 < 2 or crn > 15 or crm > 15:
        raise EncodeError("system register encoding out of range")
    return 0xD5100000 | (int(read) << 21) | ((op0 - 2) << 19) | (op1 << 16) | (crn << 12) | (crm << 8) | (op2 << 5) | rt


def lookup_sysreg(name: str) -> tuple[int, int, int, int, int] | None:
    key = name.strip().lower()
    if key in SYSREGS:
        return SYSREGS[key]
    if m := _GENERIC_SYSREG.match(key):
        return tuple(int(g) for g in m.groups())  # type: ignore[return-value]
    return None


# Arm ARM C5.3 DC operations: SYS #op1, C7, Cm, #op2, Xt -> (op1, CRm, op2)
DC_OPS: dict[str, tuple[int, int, int]] = {
    "ivac": (0, 6, 1), "isw": (0, 6, 2), "csw": (0, 10, 2), "cisw": (0, 14, 2),
    "zva": (3, 4, 1), "cvac": (3, 10, 1), "cvau": (3, 11, 1), "civac": (3, 14, 1),
    "cvap": (3, 12, 1), "cvadp": (3, 13, 1), "gva": (3, 4, 3), "gzva": (3, 4, 4),
}


def encode_sys(op1: int, crn: int, crm: int, op2: int, rt: int) -> int:
    """Arm ARM C6.2 SYS: 1101 0101 0000 1 op1 CRn CRm op2 Rt."""
    return 0xD5080000 | (op1 << 16) | (crn << 12) | (crm << 8) | (op2 << 5) | rt


def _encode_system(mnemonic: str, ops: list[str], operand_text: str) -> int | None:
    if mnemonic == "hint":
        _expect(ops, 1, "#imm")
        return encode_hint(parse_int(ops[0]))
    if mnemonic in ("bti", "psb", "tsb") or (mnemonic in HINTS and not ops):
        key = f"{mnemonic} {operand_text.strip().lower()}".strip()
        if key not in HINTS:
            raise EncodeError(f"unknown operand for {mnemonic}: '{operand_text.strip()}'")
        return encode_hint(HINTS[key])
    if mnemonic in FIXED:
        if ops:
            raise EncodeError(f"{mnemonic} takes no operands")
        return FIXED[mnemonic]
    if mnemonic == "msr" and len(ops) == 2 and ops[0].lower() in PSTATE_FIELDS and ops[1].lstrip().startswith("#"):
        op1, op2, top = PSTATE_FIELDS[ops[0].lower()]
        imm = parse_int(ops[1])
        if not 0 <= imm <= top:
            raise EncodeError(f"msr {ops[0]}, #{imm}: immediate out of range 0..{top}")
        return encode_msr_imm(op1, op2, imm)
    if mnemonic == "mrs" and len(ops) == 2 and (reg := lookup_sysreg(ops[1])):
        return encode_sysreg_move(True, reg, _xreg(ops[0]))
    if mnemonic == "msr" and len(ops) == 2 and (reg := lookup_sysreg(ops[0])):
        return encode_sysreg_move(False, reg, _xreg(ops[1]))
    if mnemonic == "dc" and ops and ops[0].lower() in DC_OPS:
        _expect(ops, 2, "<op>, Xt")
        op1, crm, op2 = DC_OPS[ops[0].lower()]
        return encode_sys(op1, 7, crm, op2, _xreg(ops[1]))
    return None


def _xreg(text: str) -> int:
    reg = parse_gpr(text)
    if not reg.is64:
        raise EncodeError(f"expected an X register, got '{text.strip()}'")
    return reg.num


def encode_own(mnemonic: str, operand_text: str) -> int | None:
    """Encode a non-PC-relative instruction that keystone lacks; None if keystone should do it."""
    mnemonic = mnemonic.lower()
    ops = split_operands(operand_text)
    for encoder in (_encode_lse, _encode_rcpc):
        word = encoder(mnemonic, ops)
        if word is not None:
            return word
    return _encode_system(mnemonic, ops, operand_text)


# --------------------------------------------------------------------------- PC-relative

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
