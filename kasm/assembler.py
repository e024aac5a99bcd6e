"""The two passes and the public entry points: assemble() and assemble_file().

Pass 1 (Assembler.run) reads preprocessed Lines statement by statement, expanding
macros and repetitions and laying every statement out at a section offset. Pass 2
(Assembler.finish) places the sections, resolves labels, encodes each instruction and
builds the exception table after the last section.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from kasm.extable import EXTABLE_BUILTINS, USER_CALLS, Extable
from kasm.image import Image
from kasm.instructions import Instructions
from kasm.layout import (
    ALIGN_DIRECTIVES,
    DATA_WIDTH,
    LINKAGE_CALLS,
    SECTION_DIRECTIVES,
    SPACE_DIRECTIVES,
    STRING_DIRECTIVES,
    Layout,
)
from kasm.macros import MACRO_DIRECTIVES, Macros
from kasm.preprocess import FileRead, Lookup
from kasm.source import AsmError, Line, SourceLoc, error
from kasm.state import Frame, Insn
from kasm.text import split_statements
from kimage.extable_format import ENTRY_SIZE, NUMBERING_V7, TypeNumbering, decode_extable, encode_extable

_LABEL = re.compile(r"^([A-Za-z_.$][\w.$]*|\d+)\s*:(?!:)")
_REQ = re.compile(r"^([A-Za-z_][\w]*)\s+\.req\s+(\S+)$", re.IGNORECASE)
_ASSIGN = re.compile(r"^([A-Za-z_.$][\w.$]*)\s*=\s*(.+)$")
_CALL = re.compile(r"^([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)
_KERNEL_CALLS = LINKAGE_CALLS | USER_CALLS
_IGNORED = {
    ".globl", ".global", ".local", ".weak", ".hidden", ".protected", ".type", ".arch",
    ".arch_extension", ".cpu", ".file", ".ident", ".loc", ".print", ".warning", ".end",
    ".nops_are_fine", ".altmacro_off", ".subsections_via_symbols",
}


@dataclass(frozen=True)
class Inputs:
    """What an assembly read besides its source text: include lookups and files with their digests."""

    lookups: tuple[Lookup, ...]
    reads: tuple[FileRead, ...]


class Assembler(Macros, Layout, Extable, Instructions):
    """State of one assemble() call (nothing is shared between calls)."""

    # ------------------------------------------------------------------ pass 1 driver

    def run(self, lines: list[Line]) -> None:
        self.frames.append(Frame(lines, "file", 0))
        while self.frames:
            frame = self.frames[-1]
            if frame.pos >= len(frame.lines) or self.exit_macro and frame.kind == "macro":
                self._end_frame(frame)
                continue
            line = frame.lines[frame.pos]
            frame.pos += 1
            for text in split_statements(line.text):
                self._statement(line, text)
        if self.collector is not None:
            c = self.collector
            what = f".macro '{c.header.split()[0] if c.header.split() else ''}'" if c.kind == "macro" else f".{c.kind}"
            raise error(c.line, f"unterminated {what} (missing {'.endm' if c.kind == 'macro' else '.endr'})")

    def _end_frame(self, frame: Frame) -> None:
        self.frames.pop()
        if frame.kind == "macro" and self.exit_macro:
            self.exit_macro = False
            del self.conds[frame.cond_depth:]
        if len(self.conds) > frame.cond_depth:
            raise error(self.conds[-1].line, "unterminated .if (missing .endif)")

    # ------------------------------------------------------------------ statements

    def _statement(self, line: Line, text: str) -> None:
        first = text.split(None, 1)[0].lower() if text else ""
        if self.collector is not None:
            self._collect(line, text, first)
            return
        if first.startswith(".if") or first in (".else", ".elseif", ".endif"):
            self._conditional(line, first, text[len(first):].strip())
            return
        if not self.active:
            return
        while m := _LABEL.match(text):
            self._define_label(m.group(1), line)
            text = text[m.end():].strip()
        if not text:
            return
        first = text.split(None, 1)[0]
        rest = text[len(first):].strip()
        if m := _REQ.match(text):
            self.aliases[m.group(1)] = self._alias_target(m.group(2), line)
            return
        if (m := _ASSIGN.match(text)) and not first.startswith("."):
            self._set_constant(m.group(1), m.group(2), line, redefine=True)
            return
        if first.startswith("."):
            self._directive(line, first.lower(), rest)
            return
        if (m := _CALL.match(text)) and m.group(1) in _KERNEL_CALLS:
            self._call(line, m.group(1), m.group(2))
            return
        if first in self.macros:
            self._expand_macro(line, self.macros[first], rest)
            return
        if first in EXTABLE_BUILTINS:
            self._extable_builtin(line, first, rest)
            return
        self._instruction(line, text)

    def _call(self, line: Line, name: str, args_text: str) -> None:
        """A kernel C-style macro call: USER()/USER_CPY() annotate, the rest mark symbols."""
        if name in USER_CALLS:
            self._user(line, name, args_text)
        else:
            self._linkage(line, name, args_text)

    def _directive(self, line: Line, name: str, rest: str) -> None:
        if name in DATA_WIDTH:
            self._data(line, DATA_WIDTH[name], rest)
        elif name in STRING_DIRECTIVES:
            self._strings(line, name, rest)
        elif name in SPACE_DIRECTIVES:
            self._space(line, name, rest)
        elif name in ALIGN_DIRECTIVES:
            self._align(line, name, rest)
        elif name in SECTION_DIRECTIVES:
            self._section_directive(line, name, rest)
        elif name in (".equ", ".set", ".equiv"):
            self._equ_directive(line, name, rest)
        elif name == ".unreq":
            self.aliases.pop(rest.strip(), None)
        elif name == ".size":
            self._size_directive(line, rest)
        elif name in MACRO_DIRECTIVES:
            self._macro_directive(line, name, rest)
        elif name == ".include":
            target = self._include_path(line, rest)
            lines = self.pre.read_file(target, str(target), line)
            self._push(lines, "include", line)
        elif name in (".error", ".err"):
            message = rest.strip().strip('"') if rest.strip() else "error directive"
            raise error(line, message)
        elif name == ".inst":
            raise error(line, "'.inst' is not supported: keystone silently emits nothing for it; write the "
                              "mnemonic (LSE/PAC/BTI/RCpc are encoded by kasm/encode.py) or use '.word' for data")
        elif name in (".ltorg", ".pool"):
            raise error(line, f"'{name}': literal pools are not supported; use adr/adrp or mov/movk")
        elif name in _IGNORED or name.startswith(".cfi_"):
            return
        else:
            raise error(line, f"unknown directive '{name}'")

    def _include_path(self, line: Line, rest: str) -> Path:
        m = re.match(r'^\s*"([^"]+)"\s*$', rest)
        if not m:
            raise error(line, '.include needs a quoted file name')
        found = self.pre.find(m.group(1), [Path(line.loc.file).parent] + self.pre.include_dirs)
        if found is None:
            raise error(line, f".include file '{m.group(1)}' not found")
        return found

    # ------------------------------------------------------------------ pass 2

    def finish(self) -> Image:
        if self.func_starts:
            name, (_, _, line) = next(iter(self.func_starts.items()))
            raise error(line, f"'{name}' has no SYM_*_END")
        extable_addr = (self._place_sections() + 3) & ~3
        symbols, local = {}, {}
        for name, (section, offset, _) in self.labels.items():
            (local if name.startswith(".L") else symbols)[name] = section.addr + offset
        for alias, target, line in self.symbol_aliases:
            if target not in self.labels:
                raise error(line, f"unknown symbol '{target}'")
            symbols[alias] = symbols.get(target, local.get(target))
            if target in self.sizes:
                self.sizes[alias] = self.sizes[target]
        for name, node, line, seq, section, offset in self.size_directives:
            self.sizes[name] = self._eval(node, line, seq, section.addr + offset)
        blobs = {name: self._section_bytes(sec) for name, sec in self.sections.items()}
        entries = self._extable_entries()
        image_end = extable_addr + ENTRY_SIZE * len(entries)
        out = bytearray(image_end - self.base)
        for name, sec in self.sections.items():
            out[sec.addr - self.base: sec.addr - self.base + sec.size] = blobs[name]
        table = encode_extable(entries, extable_addr)
        out[extable_addr - self.base: image_end - self.base] = table
        lines = {}
        for sec in self.sections.values():
            for item in sec.items:
                if isinstance(item, Insn):
                    lines[sec.addr + item.offset] = SourceLoc(item.line.loc.file, item.line.loc.line, item.shown)
        sections = {name: (sec.addr, sec.size) for name, sec in sorted(self.sections.items(), key=lambda kv: kv[1].addr)}
        sections["__ex_table"] = (extable_addr, len(table))
        return Image(
            base=self.base, data=bytes(out), symbols=symbols, sizes=dict(self.sizes),
            extable=list(decode_extable(table, extable_addr)), extable_addr=extable_addr,
            extable_size=len(table), numbering=self.numbering, lines=lines, sections=sections,
            local_symbols=local,
        )


def assemble(
    source: str,
    base: int,
    *,
    filename: str = "<string>",
    numbering: TypeNumbering = NUMBERING_V7,
    include_dirs: Iterable[str | Path] = (),
) -> Image:
    """Assemble kernel-style AArch64 source into an Image loaded at `base`."""
    return assemble_with_inputs(source, base, filename=filename, numbering=numbering, include_dirs=include_dirs)[0]


def assemble_with_inputs(
    source: str,
    base: int,
    *,
    filename: str = "<string>",
    numbering: TypeNumbering = NUMBERING_V7,
    include_dirs: Iterable[str | Path] = (),
) -> tuple[Image, Inputs]:
    """assemble(), plus the include lookups and file reads the output depends on (for kasm.cache)."""
    dirs = [Path(d) for d in include_dirs]
    asm = Assembler(base, numbering, dirs, filename)
    directory = Path(filename).parent if not filename.startswith("<") else None
    lines = asm.pre.process(source, filename, directory)
    asm.run(lines)
    return asm.finish(), Inputs(tuple(asm.pre.lookups), tuple(asm.pre.reads))


def read_source(path: str | Path) -> str:
    """The text of a .S file, or the AsmError assemble_file() reports when it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise AsmError(str(path), 0, f"cannot read: {exc.strerror}") from None


def assemble_file(path: str | Path, base: int, **kw) -> Image:
    """Assemble a .S file; `#include "x"` and `.include` also search the file's own directory."""
    source = read_source(path)
    kw.setdefault("filename", str(path))
    return assemble(source, base, **kw)
