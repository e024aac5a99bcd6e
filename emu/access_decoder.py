"""`AccessDecoder`: the load/store instruction at a faulting PC, decoded into an `Access`.

When an access faults, the hardware reports a syndrome that depends on the instruction (size,
sign extension, register, acquire/release, whether it may carry an instruction syndrome at all)
and a fault address that depends on which byte faulted. Unicorn reports neither precisely, so
the fault path decodes the instruction itself: capstone gives the operands, this module turns
them into an `Access` (emu/access.py), and emu.syndrome turns an Access into an ESR.

Decoding is on the fault path, so `AccessDecoder` keeps one capstone handle and caches the
register-independent part of each instruction word; only the address is computed per fault.

Sources: Arm ARM (DDI 0487) C3.3 load/store encodings (Rt is always bits[4:0]), C4.1 literal
loads, D24.2.45 ESR ISS fields, D24.2.48 FAR_EL1 (DC/IC report the register operand).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs, CsInsn
from capstone import arm64 as cs64

from abi.arch import MASK64
from emu.access import Access, AccessKind, UnsupportedInstruction
from emu.access_mnemonics import (
    ATOMIC,
    CACHE_MAINT_BY_VA,
    DC_SET_WAY,
    ELEMENT_BYTES,
    PAIRS,
    PREFETCH,
    REGISTERS,
    Reg,
    RegKind,
    SIGNED_ROOTS,
    SINGLE,
    SINGLE_ROOTS,
    STRUCTURE,
    SUFFIX_BYTES,
    VECTOR_LIST,
)

ReadReg = Callable[[int], int]
"""read_reg(n): X[n] for n in 0..30; read_reg(31) must return SP.

Register 31 means SP only as a base register. Where it means XZR (an index register, the
operand of DC/IC) the decoder uses 0 and never calls read_reg(31).
"""


@dataclass(frozen=True)
class _AddressRecipe:
    """How to compute the effective address from registers (and the PC for literals)."""

    base: int | None = None  # register number; None: PC-relative literal
    base_is_zr: bool = False  # DC/IC operand: register 31 is XZR, not SP
    disp: int = 0  # immediate offset, or literal offset from the PC
    index: int | None = None
    index_bits: int = 64
    extend: int = cs64.ARM64_EXT_INVALID
    shift: int = 0
    post_index: bool = False
    align: int = 0  # DC ZVA / DC by VA: operate on the aligned block or line
    operand_is_far: bool = False


@dataclass(frozen=True)
class _Template:
    """The register-independent part of a decoded word: an Access at address 0, and a recipe."""

    prototype: Access
    recipe: _AddressRecipe


def _signed64(value: int) -> int:
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


def _extend_index(value: int, bits: int, extend: int) -> int:
    if bits == 32:
        value &= 0xFFFFFFFF
    if extend == cs64.ARM64_EXT_SXTW:
        value = value - (1 << 32) if value & (1 << 31) else value
    elif extend == cs64.ARM64_EXT_SXTX:
        value = _signed64(value)
    return value


class AccessDecoder:
    """Decodes load/store instructions; one capstone handle and a per-word cache.

    dczva_block_size: DC ZVA block in bytes (DCZID_EL0.BS); dcache_line_size: the line size
    (CTR_EL0.DminLine) DC/IC by VA operate on.
    """

    def __init__(self, *, dczva_block_size: int = 64, dcache_line_size: int = 64) -> None:
        for name, value in (("dczva_block_size", dczva_block_size),
                            ("dcache_line_size", dcache_line_size)):
            if value <= 0 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two")
        self._dczva_block_size = dczva_block_size
        self._dcache_line_size = dcache_line_size
        self._cs = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
        self._cs.detail = True
        self._cache: dict[bytes, _Template | None] = {}

    def decode(self, code: bytes, pc: int, read_reg: ReadReg) -> Access | None:
        """The access made by the instruction in `code` (its first 4 bytes) at `pc`.

        None for instructions that do not access memory by address (including AT, DC by
        set/way, IC IALLU). Raises UnsupportedInstruction for memory instructions outside the
        modelled set.
        """
        word = bytes(code[:4])
        if len(word) != 4:
            raise ValueError("an A64 instruction is 4 bytes")
        try:
            template = self._cache[word]
        except KeyError:
            template = self._analyse(word)
            self._cache[word] = template
        if template is None:
            return None
        return self._materialise(template, pc, read_reg)

    def inputs(self, code: bytes) -> tuple[int, ...]:
        """The registers `decode` reads (through `read_reg`) for this word, in order: its address is a
        function of the word, the PC and these registers' values alone (the abort builder's memo keys on them)."""
        word = bytes(code[:4])
        template = self._cache.get(word)
        if template is None:
            if word in self._cache:
                return ()
            template = self._cache[word] = self._analyse(word)
            if template is None:
                return ()
        r = template.recipe
        regs: tuple[int, ...] = ()
        if r.base is not None and not (r.base == 31 and r.base_is_zr):
            regs += (r.base,)
            if r.index is not None and r.index != 31:
                regs += (r.index,)
        return regs

    # --- per fault -----------------------------------------------------------------------------
    @staticmethod
    def _materialise(template: _Template, pc: int, read_reg: ReadReg) -> Access:
        r = template.recipe
        if r.base is None:
            address = pc + r.disp
        else:
            address = 0 if (r.base == 31 and r.base_is_zr) else read_reg(r.base)
            if not r.post_index:
                address += r.disp
            if r.index is not None:
                index = 0 if r.index == 31 else read_reg(r.index)
                address += _extend_index(index, r.index_bits, r.extend) << r.shift
        address &= MASK64
        operand = address if r.operand_is_far else None
        if r.align:
            address &= ~(r.align - 1) & MASK64
        # copy + two attribute writes: dataclasses.replace re-runs __init__ over every field,
        # which costs ~10 us on the fault path.
        access = copy.copy(template.prototype)
        object.__setattr__(access, "address", address)
        object.__setattr__(access, "operand_address", operand)
        return access

    # --- per instruction word ------------------------------------------------------------------
    def _analyse(self, word: bytes) -> _Template | None:
        insns = list(self._cs.disasm(word, 0))
        if not insns:
            raise UnsupportedInstruction(f"capstone cannot decode {word.hex()}")
        insn = insns[0]
        raw = int.from_bytes(word, "little")
        mnemonic = insn.mnemonic
        if mnemonic in ("dc", "ic"):
            return self._cache_op(insn, raw)
        mem = [op for op in insn.operands if op.type == cs64.ARM64_OP_MEM]
        regs = [op for op in insn.operands if op.type == cs64.ARM64_OP_REG]
        if mem:
            recipe = self._mem_recipe(insn, mem[0])
        else:
            literal = [op for op in insn.operands if op.type == cs64.ARM64_OP_IMM]
            if not (mnemonic in ("ldr", "ldrsw", "prfm") and literal and self._is_literal(raw)):
                return None
            # Disassembled at address 0, so capstone's target is the offset from the PC.
            recipe = _AddressRecipe(base=None, disp=_signed64(literal[-1].imm))
        return _Template(self._prototype(insn, raw, regs), recipe)

    @staticmethod
    def _is_literal(raw: int) -> bool:
        # C4.1 "Load register (literal)": opc:2 011 V 00 imm19 Rt (PRFM literal is opc = 11).
        return (raw >> 27) & 0b111 == 0b011 and (raw >> 24) & 0b11 == 0

    @staticmethod
    def _mem_recipe(insn: CsInsn, op) -> _AddressRecipe:
        base = REGISTERS[insn.reg_name(op.mem.base)]
        index = None
        index_bits = 64
        if op.mem.index:
            ireg = REGISTERS[insn.reg_name(op.mem.index)]
            index, index_bits = ireg.number, ireg.bits
        shift = op.shift.value if op.shift.type == cs64.ARM64_SFT_LSL else 0
        return _AddressRecipe(
            base=base.number,
            disp=op.mem.disp,
            index=index,
            index_bits=index_bits,
            extend=op.ext,
            shift=shift,
            post_index=bool(insn.post_index),
        )

    def _cache_op(self, insn: CsInsn, raw: int) -> _Template | None:
        op = insn.op_str.split(",")[0].strip().lower()
        rt = raw & 0x1F
        if insn.mnemonic == "dc" and op == "zva":
            kind, size = AccessKind.DC_ZVA, self._dczva_block_size
        elif (insn.mnemonic, op) in CACHE_MAINT_BY_VA:
            kind, size = AccessKind.CACHE_MAINT, self._dcache_line_size
        elif insn.mnemonic == "dc" and op not in DC_SET_WAY:
            raise UnsupportedInstruction(f"dc {op} (MTE tag maintenance) is not modelled")
        else:
            return None  # set/way maintenance and IC IALLU* name no address
        prototype = Access(mnemonic=f"{insn.mnemonic} {op}", kind=kind, size=size,
                           element_size=size, address=0, srt=rt)
        recipe = _AddressRecipe(base=rt, base_is_zr=True, align=size, operand_is_far=True)
        return _Template(prototype, recipe)

    def _prototype(self, insn: CsInsn, raw: int, regs: list) -> Access:
        mnemonic = insn.mnemonic
        rt = raw & 0x1F  # Rt is bits[4:0] in every load/store encoding (C4.1)
        writeback = bool(insn.writeback)

        if mnemonic in PREFETCH:
            return Access(mnemonic, AccessKind.PREFETCH, 0, 0, 0, writeback=writeback, srt=rt)

        single = SINGLE.match(mnemonic)
        if single:
            return self._single_shape(insn, single, regs, rt, writeback)
        if mnemonic in PAIRS:
            return self._pair_shape(insn, regs, rt, writeback)
        atomic = ATOMIC.match(mnemonic)
        if atomic:
            return self._atomic_shape(insn, atomic, regs, rt)
        structure = STRUCTURE.match(mnemonic)
        if structure:
            return self._structure_shape(insn, structure, rt, writeback)
        raise UnsupportedInstruction(f"memory instruction {mnemonic!r} is not modelled")

    @staticmethod
    def _transfer_reg(insn: CsInsn, regs: list, skip_status: bool) -> Reg:
        ops = regs[1:] if skip_status else regs
        if not ops:
            raise UnsupportedInstruction(f"{insn.mnemonic}: no transfer register")
        return REGISTERS[insn.reg_name(ops[0].reg)]

    def _single_shape(self, insn, match, regs, rt, writeback) -> Access:
        root, signed, suffix = match.groups()
        is_load, unprivileged, acq_rel, exclusive = SINGLE_ROOTS[root]
        if signed and (root not in SIGNED_ROOTS or not suffix):
            raise UnsupportedInstruction(f"{insn.mnemonic} is not a load/store")
        if suffix == "w" and not signed:
            raise UnsupportedInstruction(f"{insn.mnemonic} is not a load/store")
        status = exclusive and not is_load  # stxr ws, xt, [xn]
        reg = self._transfer_reg(insn, regs, skip_status=status)
        simd = reg.kind in (RegKind.FP, RegKind.VEC)
        size = SUFFIX_BYTES[suffix] if suffix else reg.bits // 8
        kind = AccessKind.READ if is_load else AccessKind.WRITE
        eligible = not (simd or writeback or exclusive)
        return Access(
            mnemonic=insn.mnemonic,
            kind=kind,
            size=size,
            element_size=size,
            address=0,
            writeback=writeback,
            exclusive=exclusive,
            acquire_release=acq_rel,
            unprivileged=unprivileged,
            simd=simd,
            srt=rt,
            sse=bool(signed),
            sf=not simd and reg.bits == 64,
            ar=acq_rel,
            isv_eligible=eligible,
        )

    def _pair_shape(self, insn, regs, rt, writeback) -> Access:
        is_load, exclusive, acq_rel, sign_words = PAIRS[insn.mnemonic]
        reg = self._transfer_reg(insn, regs, skip_status=exclusive and not is_load)
        simd = reg.kind in (RegKind.FP, RegKind.VEC)
        element = 4 if sign_words else reg.bits // 8
        return Access(
            mnemonic=insn.mnemonic,
            kind=AccessKind.READ if is_load else AccessKind.WRITE,
            size=2 * element,
            element_size=element,
            address=0,
            writeback=writeback,
            pair=True,
            exclusive=exclusive,
            acquire_release=acq_rel,
            simd=simd,
            srt=rt,
            sse=sign_words,
            sf=not simd and reg.bits == 64,
            ar=acq_rel,
        )

    def _atomic_shape(self, insn, match, regs, rt) -> Access:
        op, ordering, suffix = match.groups()
        reg = self._transfer_reg(insn, regs, skip_status=False)
        element = SUFFIX_BYTES[suffix] if suffix else reg.bits // 8
        pair = op == "casp"
        return Access(
            mnemonic=insn.mnemonic,
            kind=AccessKind.RMW,
            size=2 * element if pair else element,
            element_size=element,
            address=0,
            pair=pair,
            atomic=True,
            acquire_release=ordering is not None,
            srt=rt,
            sf=reg.bits == 64,
            ar=ordering is not None,
        )

    @staticmethod
    def _structure_shape(insn, match, rt, writeback) -> Access:
        direction, _count, replicate = match.groups()
        lists = VECTOR_LIST.search(insn.op_str)
        if not lists:
            raise UnsupportedInstruction(f"{insn.mnemonic} {insn.op_str}: no register list")
        names = [n.strip() for n in lists.group(1).split(",")]
        arrangement = names[0].split(".")[1]
        lane = lists.group(2) is not None
        if lane or replicate:
            element = ELEMENT_BYTES[arrangement[-1]]
        else:
            lanes = int(arrangement[:-1])
            element = lanes * ELEMENT_BYTES[arrangement[-1]]  # one whole register, 8 or 16
        return Access(
            mnemonic=insn.mnemonic,
            kind=AccessKind.READ if direction == "ld" else AccessKind.WRITE,
            size=element * len(names),
            element_size=element,
            address=0,
            writeback=writeback,
            simd=True,
            srt=rt,
            esize=ELEMENT_BYTES[arrangement[-1]],
        )


def decode_access(
    code: bytes, pc: int, read_reg: ReadReg, *, decoder: AccessDecoder | None = None
) -> Access | None:
    """Decode one instruction; pass a long-lived `decoder` on the fault path.

    Without one, a fresh AccessDecoder (and capstone handle) is made for this call only.
    """
    return (decoder or AccessDecoder()).decode(code, pc, read_reg)
