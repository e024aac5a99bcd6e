"""What pass 1 records, and the state one assemble() call carries between its parts.

The assembler is one object per assemble() call (nothing is shared between calls),
built from mixins that each own one job (symbols, macros, layout, extable,
instructions). This base holds the state they share, so each mixin module can be
read on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from kasm.expr import Node
from kasm.keystone_backend import KeystoneBackend
from kasm.preprocess import Preprocessor
from kasm.source import Line, error
from kimage.extable_format import ExType, TypeNumbering

_MAX_NESTING = 200


@dataclass
class Section:
    name: str
    flags: str
    rank: int  # 0 code, 1 read-only, 2 writable, 3 bss
    order: int
    size: int = 0
    align: int = 4
    items: list = field(default_factory=list)
    addr: int = 0

    @property
    def executable(self) -> bool:
        return "x" in self.flags


@dataclass
class Insn:
    offset: int
    line: Line
    text: str  # aliases and constants substituted
    shown: str  # the statement as written (after macro arguments), for SourceLoc
    seq: int


@dataclass
class Data:
    offset: int
    width: int
    nodes: list[Node]
    line: Line
    seq: int


@dataclass
class Bytes:
    offset: int
    blob: bytes


@dataclass
class Deferred:
    """A `.equ`/`.set` value that needs label addresses: evaluated in pass 2."""

    node: Node
    line: Line
    seq: int
    section: str
    offset: int


@dataclass
class ExtableRequest:
    line: Line
    seq: int
    kind: ExType
    insn: Node
    fixup: Node
    data: int


@dataclass
class Macro:
    name: str
    params: list[tuple[str, str | None, str]]  # (name, default, qualifier "", "req", "vararg")
    body: list[Line]
    line: Line


@dataclass
class Collector:
    """Lines being gathered for a `.macro` or a `.rept`/`.irp`/`.irpc` body."""

    kind: str  # "macro", "rept", "irp", "irpc"
    line: Line
    header: str
    body: list[Line] = field(default_factory=list)
    depth: int = 0


@dataclass
class Cond:
    active: bool
    taken: bool
    parent_active: bool
    line: Line
    seen_else: bool = False


@dataclass
class Frame:
    lines: list[Line]
    kind: str  # "file", "macro", "rept", "include"
    cond_depth: int
    pos: int = 0


class AssemblerState:
    """The state of one assemble() call; the mixins read and extend it."""

    def __init__(self, base: int, numbering: TypeNumbering, include_dirs: Sequence[Path], filename: str):
        self.base = base
        self.filename = filename
        self.numbering = numbering
        self.pre = Preprocessor(include_dirs)
        self.sections: dict[str, Section] = {}
        self.section = self._get_section(".text", None, None)
        self.previous = self.section
        self.section_stack: list[Section] = []
        self.labels: dict[str, tuple[Section, int, Line]] = {}
        self.numeric: dict[int, list[tuple[int, Section, int]]] = {}
        self.constants: dict[str, int | Deferred] = {}
        self.constant_lines: dict[str, Line] = {}
        self.aliases: dict[str, str] = {}
        self.macros: dict[str, Macro] = {}
        self.macro_count = 0
        self.seq = 0
        self.extable: list[ExtableRequest] = []
        self.func_starts: dict[str, tuple[Section, int, Line]] = {}
        self.sizes: dict[str, int] = {}
        self.size_directives: list[tuple[str, Node, Line, int, Section, int]] = []
        self.symbol_aliases: list[tuple[str, str, Line]] = []
        self.frames: list[Frame] = []
        self.conds: list[Cond] = []
        self.collector: Collector | None = None
        self.rept_lines = 0  # lines added by every .rept/.irp/.irpc expansion so far (macros.MAX_REPT_TOTAL_LINES)
        self.exit_macro = False
        self.backend = KeystoneBackend()
        self.insn_addrs: set[int] = set()
        self.resolving: set[str] = set()

    @property
    def active(self) -> bool:
        return all(c.active for c in self.conds)

    def _push(self, lines: list[Line], kind: str, at: Line) -> None:
        if len(self.frames) > _MAX_NESTING:
            raise error(at, "macro/.rept/.include nested too deeply (recursive macro?)")
        self.frames.append(Frame(lines, kind, len(self.conds)))

    # Provided by the mixins; declared here so each mixin may call the others.

    def _statement(self, line: Line, text: str) -> None:
        raise NotImplementedError

    def _get_section(self, name: str, flags: str | None, line: Line | None) -> Section:
        raise NotImplementedError

    def _encode(self, item: Insn, pc: int) -> int:
        raise NotImplementedError
