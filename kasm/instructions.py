"""Instructions: recorded in pass 1 as 4-byte slots, encoded in pass 2 once labels have addresses.

Pass 2 resolves every operand expression to a number, then encodes PC-relative
instructions and what keystone lacks with kasm.encode, and hands the rest to the
checked keystone backend.
"""
from __future__ import annotations

import re

from kasm.branches import encode_pc_relative, is_pc_relative
from kasm.encode import encode_own
from kasm.operands import EncodeError, split_operands
from kasm.expr import ExprSyntaxError, parse_expr
from kasm.source import Line, error
from kasm.state import Insn
from kasm.symbols import Symbols
from kasm.text import IDENT, REGISTER, fmt_imm, replace_identifiers

_SHIFT = re.compile(r"^(lsl|lsr|asr|ror|msl|[us]xt[bhwx])\s+(.*)$", re.IGNORECASE)
_RELOC = re.compile(r"^:(lo12|lo12_nc|abs_g0|abs_g0_nc|abs_g1|abs_g1_nc|abs_g2|abs_g2_nc|abs_g3):(.*)$", re.IGNORECASE)
_FLOAT = re.compile(r"^[-+]?\d+\.\d*(?:[eE][-+]?\d+)?$")


class Instructions(Symbols):
    """One instruction statement, from source text to a 32-bit word."""

    # ------------------------------------------------------------------ pass 1

    def _instruction(self, line: Line, text: str) -> None:
        m = re.match(r"^(\S+)\s*(.*)$", text, re.S)
        mnemonic, operands = m.group(1).lower(), m.group(2).strip()
        if not re.fullmatch(r"[a-z][a-z0-9]*(\.[a-z]+)?", mnemonic):
            raise error(line, f"cannot parse '{text}' as an instruction")
        if self.section.size % 4:
            raise error(line, f"instruction at offset {self.section.size:#x} of {self.section.name} is not 4-byte aligned")
        consts = self._int_constants()

        def replace(word: str) -> str | None:
            if word in self.aliases:
                return self.aliases[word]
            if word in consts:
                return fmt_imm(consts[word])
            return None

        resolved = replace_identifiers(operands, replace)
        self.seq += 1
        shown = " ".join(text.split())  # tabs and runs of spaces collapse, for traces
        self.section.items.append(Insn(self.section.size, line, f"{mnemonic} {resolved}".strip(), shown, self.seq))
        self.section.size += 4

    # ------------------------------------------------------------------ pass 2

    def _encode(self, item: Insn, pc: int) -> int:
        mnemonic, _, operands = item.text.partition(" ")
        operands = operands.strip()
        line = item.line
        try:
            if is_pc_relative(mnemonic, operands):
                return encode_pc_relative(mnemonic, operands, pc, lambda expr: self._operand_value(expr, item, pc))
            resolved = self._resolve_operands(mnemonic, operands, item, pc)
            word = encode_own(mnemonic, resolved)
        except EncodeError as exc:
            raise error(line, f"{exc} in '{item.shown}'") from None
        if word is not None:
            return word
        return self.backend.assemble(f"{mnemonic} {resolved}".strip(), mnemonic, item.shown, line)

    def _operand_value(self, text: str, item: Insn, pc: int) -> int:
        text = text.strip()
        if text.startswith("#"):
            text = text[1:]
        return self._eval(self._parse(text, item.line), item.line, item.seq, pc)

    def _resolve_operands(self, mnemonic: str, operands: str, item: Insn, pc: int) -> str:
        ops = split_operands(operands)
        out = []
        for index, op in enumerate(ops):
            value = self._resolve_operand(op, item, pc)
            # `movz x0, #:abs_g1:sym` implies the shift (ELF for Arm64 R_AARCH64_MOVW_UABS_G1)
            reloc = re.match(r"^#?\s*:abs_g([0-3])(?:_nc|_s)?:", op, re.IGNORECASE)
            if reloc and mnemonic in ("movz", "movk", "movn") and index == len(ops) - 1 and reloc.group(1) != "0":
                value += f", lsl #{16 * int(reloc.group(1))}"
            out.append(value)
        return ", ".join(out)

    def _resolve_operand(self, op: str, item: Insn, pc: int) -> str:
        line = item.line
        if not op or op.startswith("{"):
            return op
        if op.startswith("="):
            raise error(line, f"'ldr ..., =value' literal pools are not supported in '{item.shown}'; use adr/adrp or mov/movk")
        if op.startswith("["):
            m = re.match(r"^\[(.*)\]\s*(!?)$", op, re.S)
            if not m:
                raise error(line, f"malformed memory operand '{op}'")
            inner = [self._resolve_operand(p, item, pc) for p in split_operands(m.group(1))]
            return "[" + ", ".join(inner) + "]" + m.group(2)
        if m := _SHIFT.match(op):
            return f"{m.group(1)} {self._resolve_operand(m.group(2).strip(), item, pc)}"
        if op.startswith("#") or op.startswith(":"):
            return "#" + self._immediate(op[1:].strip() if op.startswith("#") else op, item, pc)
        if REGISTER.match(op) or not self._looks_like_expression(op):
            return op
        return "#" + self._immediate(op, item, pc)

    def _looks_like_expression(self, op: str) -> bool:
        """A bare operand is an expression if it names a symbol or is built from operators."""
        if IDENT.fullmatch(op):
            return op in self.labels or op in self.constants
        try:
            node = parse_expr(op)
        except ExprSyntaxError:
            return False
        return node[0] != "num" or not re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", op)

    def _immediate(self, text: str, item: Insn, pc: int) -> str:
        if _FLOAT.match(text):
            return text
        mask, shift = None, 0
        if m := _RELOC.match(text):
            kind, text = m.group(1).lower(), m.group(2)
            if kind.startswith("lo12"):
                mask = 0xFFF
            else:
                shift, mask = 16 * int(kind[5]), 0xFFFF
        value = self._eval(self._parse(text, item.line), item.line, item.seq, pc)
        if mask is not None:
            value = (value >> shift) & mask
        return fmt_imm(value)
