"""Exception-table annotations: the `_asm_extable_*` macros of asm-extable.h and USER()/USER_CPY().

Each annotation becomes a request in pass 1 (instruction and fixup as expressions,
type and data packed now) and an ExtableEntry in pass 2, once addresses are known;
the table itself is encoded by kimage.extable_format for the chosen kernel's numbering.
"""
from __future__ import annotations

from kasm.operands import EncodeError, parse_gpr
from kasm.expr import Node, bind
from kasm.source import Line, error
from kasm.state import ExtableRequest, Insn
from kasm.symbols import Symbols
from kasm.text import split_args
from kimage.extable_format import (
    REG_NONE,
    ExtableEntry,
    ExType,
    UnknownExtableType,
    pack_err_zero,
    pack_zeropad,
)

# asm-extable.h: each annotation and how many arguments it takes.
_ARG_COUNTS = {
    "_asm_extable_uaccess": 2, "_asm_extable_uaccess_err_zero": 4, "_asm_extable_kaccess_err_zero": 4,
    "_asm_extable_load_unaligned_zeropad": 4, "_asm_extable_uaccess_cpy": 3, "_asm_extable": 2,
    "_cond_uaccess_extable": 2,
}
EXTABLE_BUILTINS = frozenset(_ARG_COUNTS)
# assembler.h USER(fixup, insn) and asm-uaccess.h USER_CPY(fixup, is_write, insn).
USER_CALLS = {"USER", "USER_CPY"}


class Extable(Symbols):
    """Turning annotations into exception-table entries."""

    def _extable_builtin(self, line: Line, name: str, rest: str) -> None:
        args = split_args(rest)
        if name == "_cond_uaccess_extable" and len(args) == 1:
            args.append("")
        if len(args) != _ARG_COUNTS[name]:
            raise error(line, f"{name} takes {_ARG_COUNTS[name]} arguments, got {len(args)}")
        if name == "_asm_extable":
            # v6.1 asm-extable.h has no _asm_extable and no EX_TYPE_FIXUP: every kernel
            # .S user was converted to the typed annotations.
            raise error(line, "_asm_extable (EX_TYPE_FIXUP) does not exist in the modelled kernels; "
                              "use _asm_extable_uaccess or one of the *_err_zero annotations")
        insn = self._parse(args[0], line)
        if name == "_cond_uaccess_extable":
            if args[1].strip():  # asm-extable.h: no entry when the fixup argument is empty
                self._add_extable(line, ExType.UACCESS_ERR_ZERO, insn, args[1], pack_err_zero(REG_NONE, REG_NONE))
            return
        if name == "_asm_extable_uaccess":
            data = pack_err_zero(REG_NONE, REG_NONE)  # asm-extable.h: err and zero are wzr
            kind = ExType.UACCESS_ERR_ZERO
        elif name in ("_asm_extable_uaccess_err_zero", "_asm_extable_kaccess_err_zero"):
            data = pack_err_zero(self._extable_reg(args[2], line), self._extable_reg(args[3], line))
            kind = ExType.UACCESS_ERR_ZERO if "uaccess" in name else ExType.KACCESS_ERR_ZERO
        elif name == "_asm_extable_load_unaligned_zeropad":
            data = pack_zeropad(self._extable_reg(args[2], line), self._extable_reg(args[3], line))
            kind = ExType.LOAD_UNALIGNED_ZEROPAD
        else:
            data = self._uaccess_write(args[2], line)
            kind = ExType.UACCESS_CPY
        self._add_extable(line, kind, insn, args[1], data)

    def _user(self, line: Line, name: str, args_text: str) -> None:
        """USER(fixup, insn) / USER_CPY(fixup, is_write, insn): assembler.h / asm-uaccess.h."""
        args = split_args(args_text)
        nfixed = 1 if name == "USER" else 2
        if len(args) <= nfixed:
            raise error(line, f"{name} needs ({'fixup' if name == 'USER' else 'fixup, uaccess_is_write'}, instruction)")
        insn_text = ", ".join(args[nfixed:])
        section, offset = self.section, self.section.size
        before = len(section.items)
        self._statement(line, insn_text)
        new_items = section.items[before:]
        if self.section is not section or len(new_items) != 1 or not isinstance(new_items[0], Insn):
            raise error(line, f"{name}() must wrap exactly one instruction")
        location = ("loc", section.name, offset)
        if name == "USER":
            self._add_extable(line, ExType.UACCESS_ERR_ZERO, location, args[0], pack_err_zero(REG_NONE, REG_NONE))
        else:
            self._add_extable(line, ExType.UACCESS_CPY, location, args[0], self._uaccess_write(args[1], line))

    def _uaccess_write(self, text: str, line: Line) -> int:
        value = self._const(text, line, "uaccess_is_write")
        if value not in (0, 1):
            raise error(line, f"uaccess_is_write must be 0 or 1, got {value}")
        return value

    def _extable_reg(self, text: str, line: Line) -> int:
        name = text.strip()
        name = self.aliases.get(name, name)
        try:
            reg = parse_gpr(name, sp=False, zr=True)
        except EncodeError:
            raise error(line, f"expected a register x0..x30, w0..w30, xzr or wzr, got '{text.strip()}'") from None
        return reg.num

    def _add_extable(self, line: Line, kind: ExType, insn: Node | str, fixup_text: str, data: int) -> None:
        try:
            self.numbering.number(kind)
        except UnknownExtableType as exc:
            raise error(line, str(exc)) from None
        if isinstance(insn, str):
            insn = self._parse(insn, line)
        fixup = self._parse(fixup_text, line)
        self.seq += 1
        consts = self._int_constants()
        self.extable.append(ExtableRequest(line, self.seq, kind, bind(insn, consts), bind(fixup, consts), data))

    def _extable_entries(self) -> list[ExtableEntry]:
        """Pass 2: every request as an entry, checked to point at an instruction."""
        entries = []
        for req in self.extable:
            insn = self._eval(req.insn, req.line, req.seq, 0)
            fixup = self._eval(req.fixup, req.line, req.seq, 0)
            if insn not in self.insn_addrs:
                raise error(req.line, f"exception-table entry: {insn:#x} is not the address of an instruction")
            entries.append(ExtableEntry(insn, fixup, self.numbering.number(req.kind), req.data))
        return entries
