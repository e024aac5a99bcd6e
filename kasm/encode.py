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

from kasm.operands import EncodeError, Gpr, _expect, parse_base, parse_gpr, parse_int, split_operands

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
