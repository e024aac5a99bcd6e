"""Kernel-style AArch64 assembler: our front end, keystone for plain instructions.

Keystone 0.9.2 alone cannot take kernel assembly: it crashes on `.section`, rejects
numeric local labels, LSE/PAC/BTI mnemonics, and silently drops `.inst` and some
`dc` operations (measured; see SEMANTICS.md). So everything around the instructions
is ours, and keystone only ever sees one resolved instruction at a time:

* preprocessing: comments (`//`, `/* */`, and a line of `#` followed by a space and
  anything that is not a cpp directive, e.g. `# note`),
  `;` statement separators, a small C preprocessor (`#include`, object- and
  function-like `#define`, `#undef`, `#if/#ifdef/#ifndef/#elif/#else/#endif`,
  `#error`; `__ASSEMBLY__` is predefined). `#` inside a line is never a comment,
  so `mov x0, #1` works;
* pass 1 expands `.macro`/`.rept`/`.irp`/`.irpc`/`.if*`, `.req` aliases and `.equ`
  constants, and lays every statement out at a section offset (every instruction is
  4 bytes, so no address depends on encoding);
* pass 2 places the sections (.text, other code, .rodata, .data, .bss, then
  `__ex_table`), resolves labels, and encodes each instruction: PC-relative ones and
  what keystone lacks with emu/asm_encode.py, the rest with keystone, whose output is
  then checked with capstone (exactly one 4-byte instruction of the same kind and
  with the same registers), because keystone is known to drop or change things
  silently.

Expressions use C operator precedence (GNU as groups a few operators differently;
parenthesise when mixing `|`/`&` with `+`). Every error is an AsmError naming the
source file and line, including lines that came from macros, `.rept` and includes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import capstone
import keystone

from emu.asm_encode import (
    EncodeError,
    encode_own,
    encode_pc_relative,
    is_pc_relative,
    parse_gpr,
    split_operands,
)
from emu.extable_format import (
    ENTRY_SIZE,
    REG_NONE,
    ExtableEntry,
    ExType,
    NUMBERING_V7,
    TypeNumbering,
    UnknownExtableType,
    decode_extable,
    encode_extable,
    pack_err_zero,
    pack_zeropad,
)

NOP = 0xD503201F  # Arm ARM C6.2 NOP (HINT #0)
_MAX_NESTING = 200


# =========================================================================== public types


class AsmError(Exception):
    """An error in assembly source, located at a file and a 1-based line."""

    def __init__(self, file: str, line: int, message: str):
        super().__init__(file, line, message)
        self.file = file
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class UnknownSymbolError(LookupError):
    """Image.symbol() of a name the image does not define."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class SourceLoc:
    """Where a statement came from: file, 1-based line, and the statement's text."""

    file: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


@dataclass
class Image:
    """An assembled, loadable blob with the metadata the emulator and the host model need."""

    base: int
    data: bytes
    symbols: dict[str, int]
    sizes: dict[str, int]
    extable: list[ExtableEntry]
    extable_addr: int
    extable_size: int
    numbering: TypeNumbering
    lines: dict[int, SourceLoc]
    sections: dict[str, tuple[int, int]]
    local_symbols: dict[str, int] = field(default_factory=dict)  # `.L` labels, for tests and traces

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def symbol(self, name: str) -> int:
        if name in self.symbols:
            return self.symbols[name]
        if name in self.local_symbols:
            return self.local_symbols[name]
        known = sorted(self.symbols)
        listed = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
        raise UnknownSymbolError(f"unknown symbol '{name}' (known: {listed or 'none'})")


# =========================================================================== expressions

_EXPR_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>0[xX][0-9a-fA-F]+|0[bB][01]+(?![\w$])|\d+(?![\w$]))
    | (?P<ref>\d+[bfBF](?![\w$]))
    | (?P<chr>'(?:\\.|[^\\'])')
    | (?P<id>[A-Za-z_.$][\w.$]*)
    | (?P<op><<|>>|<=|>=|==|!=|<>|&&|\|\||[-+*/%&|^~!()<>])
    )""",
    re.VERBOSE,
)
_BINARY_PRECEDENCE = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6, "<>": 6,
    "<": 7, ">": 7, "<=": 7, ">=": 7, "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10,
}
# Expression nodes are tuples: ("num", v) ("sym", name) ("ref", n, "b"|"f") ("dot",)
# ("loc", section, offset) ("un", op, a) ("bin", op, a, b).
Node = tuple


class ExprSyntaxError(ValueError):
    pass


class _Unresolved(Exception):
    """A symbol the current context cannot give a value (unknown, or not a constant yet)."""

    def __init__(self, name: str, why: str = "unknown"):
        super().__init__(name)
        self.name = name
        self.why = why


def _int_literal(text: str) -> int:
    if len(text) > 1 and text[0] == "0" and text[1].isdigit():
        return int(text, 8)  # GNU as: a leading 0 means octal
    return int(text, 0)


def parse_expr(text: str) -> Node:
    """Parse an assembler expression (C precedence) into a node tree."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _EXPR_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprSyntaxError(f"cannot parse expression '{text}' at '{text[pos:].strip()}'")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    if not tokens:
        raise ExprSyntaxError("empty expression")
    index = 0

    def peek() -> tuple[str, str] | None:
        return tokens[index] if index < len(tokens) else None

    def primary() -> Node:
        nonlocal index
        tok = peek()
        if tok is None:
            raise ExprSyntaxError(f"expression '{text}' ends too early")
        index += 1
        kind, value = tok
        if kind == "num":
            try:
                return ("num", _int_literal(value))
            except ValueError:
                raise ExprSyntaxError(f"bad number '{value}'") from None
        if kind == "ref":
            return ("ref", int(value[:-1]), value[-1].lower())
        if kind == "chr":
            body = value[1:-1]
            return ("num", ord(_unescape(body)[0]))
        if kind == "id":
            return ("dot",) if value == "." else ("sym", value)
        if value == "(":
            inner = binary(0)
            if peek() != ("op", ")"):
                raise ExprSyntaxError(f"missing ')' in '{text}'")
            index += 1
            return inner
        if value in ("-", "+", "~", "!"):
            return ("un", value, primary())
        raise ExprSyntaxError(f"unexpected '{value}' in '{text}'")

    def binary(min_prec: int) -> Node:
        nonlocal index
        left = primary()
        while (tok := peek()) is not None and tok[0] == "op" and _BINARY_PRECEDENCE.get(tok[1], 0) > min_prec:
            index += 1
            left = ("bin", tok[1], left, binary(_BINARY_PRECEDENCE[tok[1]]))
        return left

    node = binary(0)
    if index != len(tokens):
        raise ExprSyntaxError(f"unexpected '{tokens[index][1]}' in expression '{text}'")
    return node


def _c_div(a: int, b: int, op: str) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero in expression")
    q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
    return q if op == "/" else a - q * b


_BIN_OPS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: _c_div(a, b, "/"), "%": lambda a, b: _c_div(a, b, "%"),
    "<<": lambda a, b: a << b, ">>": lambda a, b: a >> b,
    "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
    "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b), "<>": lambda a, b: int(a != b),
    "<": lambda a, b: int(a < b), ">": lambda a, b: int(a > b),
    "<=": lambda a, b: int(a <= b), ">=": lambda a, b: int(a >= b),
    "&&": lambda a, b: int(bool(a) and bool(b)), "||": lambda a, b: int(bool(a) or bool(b)),
}
_UN_OPS: dict[str, Callable[[int], int]] = {
    "-": lambda a: -a, "+": lambda a: a, "~": lambda a: ~a, "!": lambda a: int(not a),
}


@dataclass(frozen=True)
class _Env:
    """How names, numeric local labels, `.` and fixed locations get their values."""

    symbol: Callable[[str], int]
    numeric: Callable[[int, str], int]
    dot: Callable[[], int]
    location: Callable[[str, int], int]


def evaluate(node: Node, env: _Env) -> int:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "sym":
        return env.symbol(node[1])
    if kind == "ref":
        return env.numeric(node[1], node[2])
    if kind == "dot":
        return env.dot()
    if kind == "loc":
        return env.location(node[1], node[2])
    if kind == "un":
        return _UN_OPS[node[1]](evaluate(node[2], env))
    return _BIN_OPS[node[1]](evaluate(node[2], env), evaluate(node[3], env))


def _bind(node: Node, constants: dict[str, int]) -> Node:
    """Replace names of already-known integer constants (positional `.set` semantics)."""
    kind = node[0]
    if kind == "sym" and isinstance(constants.get(node[1]), int):
        return ("num", constants[node[1]])
    if kind == "un":
        return ("un", node[1], _bind(node[2], constants))
    if kind == "bin":
        return ("bin", node[1], _bind(node[2], constants), _bind(node[3], constants))
    return node


# =========================================================================== text helpers

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", '"': '"', "'": "'", "a": "\a", "e": "\x1b"}


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\" or i + 1 == len(body):
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(chr(int(m.group(0), 8) & 0xFF))
            i += 1 + len(m.group(0))
        elif nxt in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            if not m:
                raise ExprSyntaxError("\\x without hex digits")
            out.append(chr(int(m.group(0), 16)))
            i += 2 + len(m.group(0))
        else:
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
    return "".join(out)


def _parse_strings(text: str) -> list[bytes]:
    """`"a", "b\\n"` -> [b"a", b"b\\n"]."""
    strings, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = re.compile(r'\s*"((?:\\.|[^"\\])*)"\s*(,|$)').match(text, pos)
        if not m:
            raise ExprSyntaxError(f"expected a quoted string at '{text[pos:]}'")
        strings.append(_unescape(m.group(1)).encode("latin-1"))
        pos = m.end()
    return strings


def _strip_comments(text: str) -> str:
    """Blank out `//` and `/* */` comments (not inside strings), keeping every newline."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"' or ch == "\n":
                in_string = False
            i += 1
        elif ch == '"':
            in_string = True
            out.append(ch)
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(c if c == "\n" else " " for c in text[i:j]))
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _split_statements(text: str) -> list[str]:
    """Split a line at `;` outside strings (the AArch64 GNU as statement separator)."""
    parts, cur, in_string, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if in_string and ch == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if ch == '"':
            in_string = not in_string
        if ch == ";" and not in_string:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _split_args(text: str) -> list[str]:
    """Split at top-level commas outside strings and brackets."""
    parts, cur, depth, in_string, i = [], [], 0, False, 0
    while i < len(text):
        ch = text[i]
        if in_string:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            cur.append(ch)
        elif ch in "([{":
            depth += 1
            cur.append(ch)
        elif ch in ")]}":
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    tail = "".join(cur).strip()
    if tail or parts:
        parts.append(tail)
    return parts


_IDENT = re.compile(r"[A-Za-z_.$][\w.$]*")
_WORDISH = re.compile(r"0[xX][0-9a-fA-F]+|\d[\w]*|[A-Za-z_.$][\w.$]*")


def _replace_identifiers(text: str, replace: Callable[[str], str | None]) -> str:
    """Apply `replace` to every identifier token (numbers are skipped whole)."""

    def sub(m: re.Match[str]) -> str:
        word = m.group(0)
        if word[0].isdigit():
            return word
        new = replace(word)
        return word if new is None else new

    return _WORDISH.sub(sub, text)


def _fmt_imm(value: int) -> str:
    return f"-{-value:#x}" if value < 0 else f"{value:#x}"


# =========================================================================== source lines


@dataclass(frozen=True)
class _Line:
    """One statement-bearing line: where it is, its text, and the macro chain it came through."""

    loc: SourceLoc
    text: str
    origin: tuple[str, ...] = ()


def _error(line: _Line, message: str) -> AsmError:
    if line.origin:
        message = f"{message} ({'; '.join(reversed(line.origin))})"
    return AsmError(line.loc.file, line.loc.line, message)


@dataclass
class _Define:
    params: list[str] | None  # None for an object-like macro
    body: str


_CPP_DIRECTIVES = {"if", "ifdef", "ifndef", "elif", "else", "endif", "define", "undef", "include",
                   "error", "warning", "line", "pragma", "ident"}
_DIRECTIVE = re.compile(r"^\s*#\s*([A-Za-z_]\w*)\s*(.*)$", re.S)
_DEFINE = re.compile(r"^([A-Za-z_]\w*)(\(([^)]*)\))?\s*(.*)$", re.S)


class _Preprocessor:
    """The small C preprocessor the kernel's .S files rely on (cpp runs before gas there too)."""

    def __init__(self, include_dirs: Sequence[Path]):
        self.include_dirs = list(include_dirs)
        self.defines: dict[str, _Define] = {
            "__ASSEMBLY__": _Define(None, "1"),
            "__ASSEMBLER__": _Define(None, "1"),
            "__aarch64__": _Define(None, "1"),
        }

    def read_file(self, path: Path, shown: str, at: _Line | None, depth: int = 0) -> list[_Line]:
        try:
            text = path.read_text()
        except OSError as exc:
            if at is None:
                raise AsmError(shown, 0, f"cannot read: {exc.strerror}") from None
            raise _error(at, f"cannot read '{path}': {exc.strerror}") from None
        return self.process(text, shown, path.parent, depth)

    def process(self, text: str, shown: str, directory: Path | None, depth: int = 0) -> list[_Line]:
        if depth > 50:
            raise AsmError(shown, 1, "#include nested too deeply")
        raw = _strip_comments(text).split("\n")
        originals = text.split("\n")
        out: list[_Line] = []
        conds: list[list[bool]] = []  # [active, taken, parent_active]
        i = 0
        while i < len(raw):
            number = i + 1
            logical = raw[i]
            while logical.rstrip().endswith("\\") and i + 1 < len(raw):  # cpp line continuation
                logical = logical.rstrip()[:-1] + " " + raw[i + 1]
                i += 1
            i += 1
            original = originals[number - 1].strip() if number - 1 < len(originals) else ""
            line = _Line(SourceLoc(shown, number, original), logical)
            active = all(c[0] for c in conds)
            stripped = logical.strip()
            if stripped.startswith("#"):
                out.extend(self._directive(line, stripped, conds, active, directory, depth))
                continue
            if active and stripped:
                out.append(_Line(line.loc, self.expand(stripped, line)))
        if conds:
            raise AsmError(shown, len(raw), "unterminated #if/#ifdef")
        return out

    def _directive(self, line: _Line, text: str, conds: list[list[bool]], active: bool,
                   directory: Path | None, depth: int) -> list[_Line]:
        m = _DIRECTIVE.match(text)
        if not m:
            return []  # `#` alone, or `# 1 "file"` line markers: a comment
        name, rest = m.group(1), m.group(2).strip()
        if name not in _CPP_DIRECTIVES:
            if re.match(r"^\s*#\s", text):
                return []  # `# some words`: a comment line, as GNU as reads it
            raise _error(line, f"unknown preprocessor directive '#{name}'")
        if name in ("if", "ifdef", "ifndef"):
            value = False
            if active:
                if name == "if":
                    value = bool(self._eval_if(rest, line))
                else:
                    defined = rest.split()[0] in self.defines if rest else False
                    value = defined if name == "ifdef" else not defined
            conds.append([value, value, active])
            return []
        if name in ("elif", "else", "endif"):
            if not conds:
                raise _error(line, f"#{name} without #if")
            cond = conds[-1]
            if name == "endif":
                conds.pop()
            elif name == "else":
                cond[0] = cond[2] and not cond[1]
                cond[1] = True
            else:
                cond[0] = cond[2] and not cond[1] and bool(self._eval_if(rest, line))
                cond[1] = cond[1] or cond[0]
            return []
        if not active:
            return []
        if name == "define":
            d = _DEFINE.match(rest)
            if not d:
                raise _error(line, f"malformed #define '{rest}'")
            params = None
            if d.group(2) is not None:
                params = [p.strip() for p in d.group(3).split(",") if p.strip()]
            self.defines[d.group(1)] = _Define(params, d.group(4).strip())
            return []
        if name == "undef":
            self.defines.pop(rest.split()[0] if rest else "", None)
            return []
        if name == "include":
            target = self._find_include(rest, directory, line)
            return self.read_file(target, str(target), line, depth + 1)
        if name in ("error", "warning"):
            if name == "error":
                raise _error(line, f"#error {rest}")
            return []
        return []  # line, pragma, ident

    def _find_include(self, rest: str, directory: Path | None, line: _Line) -> Path:
        m = re.match(r'^"([^"]+)"|^<([^>]+)>', rest)
        if not m:
            raise _error(line, f"malformed #include {rest}")
        name = m.group(1) or m.group(2)
        search = ([directory] if m.group(1) and directory is not None else []) + self.include_dirs
        for d in search:
            if (d / name).is_file():
                return d / name
        raise _error(line, f"#include file '{name}' not found (searched: {', '.join(map(str, search)) or 'nothing'})")

    def _eval_if(self, text: str, line: _Line) -> int:
        text = re.sub(r"\bdefined\s*\(\s*(\w+)\s*\)|\bdefined\s+(\w+)",
                      lambda m: "1" if (m.group(1) or m.group(2)) in self.defines else "0", text)
        text = self.expand(text, line)
        text = re.sub(r"\b[A-Za-z_]\w*\b", "0", text)  # cpp: remaining identifiers are 0
        text = re.sub(r"(\d+)[uUlL]+\b", r"\1", text)
        try:
            return evaluate(parse_expr(text), _CONST_ONLY)
        except (ExprSyntaxError, ZeroDivisionError) as exc:
            raise _error(line, f"bad #if expression: {exc}") from None

    def expand(self, text: str, line: _Line, active: frozenset[str] = frozenset()) -> str:
        """Replace #define'd names (not inside strings, not after `.`/`\\`)."""
        if not self.defines.keys() - active or not text:
            return text
        out: list[str] = []
        pos = 0
        pattern = re.compile(r'"(?:\\.|[^"\\])*"|(?<![\w.\\$])[A-Za-z_]\w*')
        while (m := pattern.search(text, pos)) is not None:
            out.append(text[pos:m.start()])
            word = m.group(0)
            pos = m.end()
            d = self.defines.get(word)
            if word.startswith('"') or d is None or word in active:
                out.append(word)
                continue
            if d.params is None:
                out.append(self.expand(d.body, line, active | {word}))
                continue
            call = re.compile(r"\s*\(").match(text, pos)
            if not call:
                out.append(word)
                continue
            args, end = self._call_args(text, call.end(), line)
            pos = end
            out.append(self.expand(self._substitute(word, d, args, line), line, active | {word}))
        out.append(text[pos:])
        return "".join(out)

    @staticmethod
    def _call_args(text: str, start: int, line: _Line) -> tuple[list[str], int]:
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        if depth:
            raise _error(line, "unterminated macro call (missing ')')")
        inner = text[start:i - 1]
        return (_split_args(inner) if inner.strip() else []), i

    @staticmethod
    def _substitute(name: str, d: _Define, args: list[str], line: _Line) -> str:
        params = list(d.params or [])
        values: dict[str, str] = {}
        variadic = params and params[-1].endswith("...")
        if variadic:
            last = params.pop()
            vname = last[:-3] or "__VA_ARGS__"
            values[vname] = ", ".join(args[len(params):])
        elif len(args) != len(params) and not (not params and args == [""]):
            raise _error(line, f"macro '{name}' takes {len(params)} argument(s), got {len(args)}")
        for p, a in zip(params, args):
            values[p] = a
        if not values:
            return d.body
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(values, key=len, reverse=True))) + r")\b")
        return pattern.sub(lambda m: values[m.group(1)], d.body)


def _no_symbols(name: str) -> int:
    raise _Unresolved(name, "not a constant")


def _no_numeric(n: int, d: str) -> int:
    raise _Unresolved(f"{n}{d}", "not a constant")


def _no_dot() -> int:
    raise _Unresolved(".", "not a constant")


def _no_location(section: str, offset: int) -> int:
    raise _Unresolved("<location>", "not a constant")


_CONST_ONLY = _Env(_no_symbols, _no_numeric, _no_dot, _no_location)


# =========================================================================== pass 1 state


@dataclass
class _Section:
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
class _Insn:
    offset: int
    line: _Line
    text: str  # aliases and constants substituted
    shown: str  # the statement as written (after macro arguments), for SourceLoc
    seq: int


@dataclass
class _Data:
    offset: int
    width: int
    nodes: list[Node]
    line: _Line
    seq: int


@dataclass
class _Bytes:
    offset: int
    blob: bytes


@dataclass
class _Deferred:
    """A `.equ`/`.set` value that needs label addresses: evaluated in pass 2."""

    node: Node
    line: _Line
    seq: int
    section: str
    offset: int


@dataclass
class _ExtableRequest:
    line: _Line
    seq: int
    kind: ExType
    insn: Node
    fixup: Node
    data: int


@dataclass
class _Macro:
    name: str
    params: list[tuple[str, str | None, str]]  # (name, default, qualifier "", "req", "vararg")
    body: list[_Line]
    line: _Line


@dataclass
class _Collector:
    """Lines being gathered for a `.macro` or a `.rept`/`.irp`/`.irpc` body."""

    kind: str  # "macro", "rept", "irp", "irpc"
    line: _Line
    header: str
    body: list[_Line] = field(default_factory=list)
    depth: int = 0


@dataclass
class _Cond:
    active: bool
    taken: bool
    parent_active: bool
    line: _Line
    seen_else: bool = False


@dataclass
class _Frame:
    lines: list[_Line]
    kind: str  # "file", "macro", "rept", "include"
    cond_depth: int
    pos: int = 0


_LABEL = re.compile(r"^([A-Za-z_.$][\w.$]*|\d+)\s*:(?!:)")
_REQ = re.compile(r"^([A-Za-z_][\w]*)\s+\.req\s+(\S+)$", re.IGNORECASE)
_ASSIGN = re.compile(r"^([A-Za-z_.$][\w.$]*)\s*=\s*(.+)$")
_CALL = re.compile(r"^([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)
_REGISTER = re.compile(r"^(?:[xwbhsdqvXWBHSDQV]\d{1,2}|[xwXW]zr|w?sp|WSP|SP)$")
_MACRO_OPENERS = {".macro"}
_REPT_OPENERS = {".rept", ".irp", ".irpc"}
_IGNORED = {
    ".globl", ".global", ".local", ".weak", ".hidden", ".protected", ".type", ".arch",
    ".arch_extension", ".cpu", ".file", ".ident", ".loc", ".print", ".warning", ".end",
    ".nops_are_fine", ".altmacro_off", ".subsections_via_symbols",
}
_DATA_WIDTH = {
    ".byte": 1, ".hword": 2, ".short": 2, ".2byte": 2, ".word": 4, ".long": 4, ".int": 4,
    ".4byte": 4, ".quad": 8, ".xword": 8, ".dword": 8, ".8byte": 8,
}
_EXTABLE_BUILTINS = {
    "_asm_extable_uaccess", "_asm_extable_uaccess_err_zero", "_asm_extable_kaccess_err_zero",
    "_asm_extable_load_unaligned_zeropad", "_asm_extable_uaccess_cpy", "_asm_extable",
    "_cond_uaccess_extable",
}
_SYM_CALLS = {
    "SYM_FUNC_START", "SYM_FUNC_START_LOCAL", "SYM_FUNC_START_WEAK", "SYM_FUNC_START_NOALIGN",
    "SYM_FUNC_START_LOCAL_NOALIGN", "SYM_CODE_START", "SYM_CODE_START_LOCAL",
    "SYM_CODE_START_NOALIGN", "SYM_CODE_START_LOCAL_NOALIGN", "SYM_TYPED_FUNC_START",
    "SYM_DATA_START", "SYM_DATA_START_LOCAL", "ENTRY",
    "SYM_FUNC_END", "SYM_CODE_END", "SYM_DATA_END", "ENDPROC", "END",
    "SYM_FUNC_ALIAS", "SYM_FUNC_ALIAS_LOCAL", "SYM_FUNC_ALIAS_WEAK", "SYM_INNER_LABEL",
    "SYM_INNER_LABEL_ALIGN", "EXPORT_SYMBOL", "EXPORT_SYMBOL_GPL", "EXPORT_SYMBOL_NS",
    "EXPORT_SYMBOL_NS_GPL", "_ASM_NOKPROBE", "NOKPROBE_SYMBOL", "USER", "USER_CPY",
}
_DEFAULT_FLAGS = {".text": "ax", ".rodata": "a", ".data": "aw", ".bss": "aw"}


def _section_rank(name: str, flags: str) -> int:
    if name == ".bss" or name.startswith(".bss."):
        return 3
    if "x" in flags:
        return 0
    if "w" in flags:
        return 2
    return 1


# =========================================================================== the assembler


class _Assembler:
    """State of one assemble() call (nothing is shared between calls)."""

    def __init__(self, base: int, numbering: TypeNumbering, include_dirs: Sequence[Path], filename: str):
        self.base = base
        self.filename = filename
        self.numbering = numbering
        self.pre = _Preprocessor(include_dirs)
        self.sections: dict[str, _Section] = {}
        self.section = self._get_section(".text", None, None)
        self.previous = self.section
        self.section_stack: list[_Section] = []
        self.labels: dict[str, tuple[_Section, int, _Line]] = {}
        self.numeric: dict[int, list[tuple[int, _Section, int]]] = {}
        self.constants: dict[str, int | _Deferred] = {}
        self.constant_lines: dict[str, _Line] = {}
        self.aliases: dict[str, str] = {}
        self.macros: dict[str, _Macro] = {}
        self.macro_count = 0
        self.seq = 0
        self.extable: list[_ExtableRequest] = []
        self.func_starts: dict[str, tuple[_Section, int, _Line]] = {}
        self.sizes: dict[str, int] = {}
        self.size_directives: list[tuple[str, Node, _Line, int, _Section, int]] = []
        self.symbol_aliases: list[tuple[str, str, _Line]] = []
        self.frames: list[_Frame] = []
        self.conds: list[_Cond] = []
        self.collector: _Collector | None = None
        self.exit_macro = False
        self.ks = keystone.Ks(keystone.KS_ARCH_ARM64, keystone.KS_MODE_LITTLE_ENDIAN)
        self.cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
        self.ks_cache: dict[str, int] = {}
        self.insn_addrs: set[int] = set()
        self.resolving: set[str] = set()

    # ------------------------------------------------------------------ pass 1 driver

    def run(self, lines: list[_Line]) -> None:
        self.frames.append(_Frame(lines, "file", 0))
        while self.frames:
            frame = self.frames[-1]
            if frame.pos >= len(frame.lines) or self.exit_macro and frame.kind == "macro":
                self._end_frame(frame)
                continue
            line = frame.lines[frame.pos]
            frame.pos += 1
            for text in _split_statements(line.text):
                self._statement(line, text)
        if self.collector is not None:
            c = self.collector
            what = f".macro '{c.header.split()[0] if c.header.split() else ''}'" if c.kind == "macro" else f".{c.kind}"
            raise _error(c.line, f"unterminated {what} (missing {'.endm' if c.kind == 'macro' else '.endr'})")

    def _end_frame(self, frame: _Frame) -> None:
        self.frames.pop()
        if frame.kind == "macro" and self.exit_macro:
            self.exit_macro = False
            del self.conds[frame.cond_depth:]
        if len(self.conds) > frame.cond_depth:
            raise _error(self.conds[-1].line, "unterminated .if (missing .endif)")

    def _push(self, lines: list[_Line], kind: str, at: _Line) -> None:
        if len(self.frames) > _MAX_NESTING:
            raise _error(at, "macro/.rept/.include nested too deeply (recursive macro?)")
        self.frames.append(_Frame(lines, kind, len(self.conds)))

    @property
    def active(self) -> bool:
        return all(c.active for c in self.conds)

    # ------------------------------------------------------------------ statements

    def _statement(self, line: _Line, text: str) -> None:
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
        if (m := _CALL.match(text)) and m.group(1) in _SYM_CALLS:
            self._call(line, m.group(1), m.group(2))
            return
        if first in self.macros:
            self._expand_macro(line, self.macros[first], rest)
            return
        if first in _EXTABLE_BUILTINS:
            self._extable_builtin(line, first, rest)
            return
        self._instruction(line, text)

    def _collect(self, line: _Line, text: str, first: str) -> None:
        c = self.collector
        opener = _MACRO_OPENERS if c.kind == "macro" else _REPT_OPENERS
        closer = ".endm" if c.kind == "macro" else ".endr"
        if first in opener:
            c.depth += 1
        elif first == closer:
            if c.depth == 0:
                self.collector = None
                self._finish_collector(c)
                return
            c.depth -= 1
        c.body.append(_Line(line.loc, text, line.origin))

    def _define_label(self, name: str, line: _Line) -> None:
        self.seq += 1
        if name.isdigit():
            self.numeric.setdefault(int(name), []).append((self.seq, self.section, self.section.size))
            return
        if name in self.labels:
            first = self.labels[name][2].loc
            raise _error(line, f"duplicate label '{name}' (first defined at {first.file}:{first.line})")
        if name in self.constants:
            raise _error(line, f"label '{name}' is already defined as a constant")
        self.labels[name] = (self.section, self.section.size, line)

    def _alias_target(self, reg: str, line: _Line) -> str:
        reg = self.aliases.get(reg, reg)
        if not _REGISTER.match(reg):
            raise _error(line, f".req needs a register name, got '{reg}'")
        return reg.lower()

    # ------------------------------------------------------------------ constants

    def _set_constant(self, name: str, expr_text: str, line: _Line, redefine: bool) -> None:
        if name in self.labels:
            raise _error(line, f"'{name}' is already defined as a label")
        if not redefine and name in self.constants:
            raise _error(line, f"'{name}' is already defined (.equiv)")
        node = _bind(self._parse(expr_text, line), self._int_constants())
        self.seq += 1
        try:
            self.constants[name] = evaluate(node, _CONST_ONLY)
        except _Unresolved:
            self.constants[name] = _Deferred(node, line, self.seq, self.section.name, self.section.size)
        except ZeroDivisionError as exc:
            raise _error(line, str(exc)) from None
        self.constant_lines[name] = line

    def _int_constants(self) -> dict[str, int]:
        return {k: v for k, v in self.constants.items() if isinstance(v, int)}

    def _parse(self, text: str, line: _Line) -> Node:
        try:
            return parse_expr(text)
        except ExprSyntaxError as exc:
            raise _error(line, str(exc)) from None

    def _const(self, text: str, line: _Line, what: str) -> int:
        """An expression that must be known now (counts, sizes, conditions)."""
        try:
            node = _bind(parse_expr(text), self._int_constants())
        except ExprSyntaxError as exc:
            raise _error(line, f"{what}: {exc}") from None
        try:
            return evaluate(node, _CONST_ONLY)
        except _Unresolved as exc:
            raise _error(line, f"{what} must be a constant expression; '{exc.name}' is not known yet") from None
        except ZeroDivisionError as exc:
            raise _error(line, str(exc)) from None

    # ------------------------------------------------------------------ conditionals

    def _conditional(self, line: _Line, name: str, arg: str) -> None:
        if name in (".else", ".elseif", ".endif"):
            if not self.conds:
                raise _error(line, f"'{name}' without '.if'")
            cond = self.conds[-1]
            if name == ".endif":
                self.conds.pop()
                return
            if cond.seen_else:
                raise _error(line, f"'{name}' after '.else'")
            if name == ".else":
                cond.seen_else = True
                cond.active = cond.parent_active and not cond.taken
            else:
                cond.active = cond.parent_active and not cond.taken and self._test(line, ".if", arg)
            cond.taken = cond.taken or cond.active
            return
        parent = self.active
        value = self._test(line, name, arg) if parent else False
        self.conds.append(_Cond(value, value, parent, line))

    def _test(self, line: _Line, name: str, arg: str) -> bool:
        if name in (".if", ".ifne"):
            return self._const(arg, line, name) != 0
        if name == ".ifeq":
            return self._const(arg, line, name) == 0
        comparisons = {".ifgt": lambda v: v > 0, ".ifge": lambda v: v >= 0, ".iflt": lambda v: v < 0, ".ifle": lambda v: v <= 0}
        if name in comparisons:
            return comparisons[name](self._const(arg, line, name))
        if name in (".ifdef", ".ifndef"):
            known = arg in self.labels or arg in self.constants
            return known if name == ".ifdef" else not known
        if name in (".ifb", ".ifnb"):
            return (arg.strip() == "") == (name == ".ifb")
        if name in (".ifc", ".ifnc"):
            parts = _split_args(arg)
            if len(parts) == 1 and "," not in arg:
                parts.append("")
            a, b = (p.strip().strip('"') for p in (parts + ["", ""])[:2])
            return (a == b) == (name == ".ifc")
        raise _error(line, f"unknown conditional '{name}'")

    # ------------------------------------------------------------------ macros and repetition

    def _finish_collector(self, c: _Collector) -> None:
        if c.kind == "macro":
            self._define_macro(c)
            return
        header = c.header
        if c.kind == "rept":
            count = self._const(header, c.line, ".rept count")
            if count < 0:
                raise _error(c.line, f".rept count {count} is negative")
            body = c.body * count
        else:
            parts = _split_args(header)
            if not parts or not re.fullmatch(r"[A-Za-z_]\w*", parts[0].strip()):
                raise _error(c.line, f".{c.kind} needs a parameter name first")
            param = parts[0].strip()
            values = parts[1:] if c.kind == "irp" else list("".join(p.strip() for p in parts[1:]))
            body = []
            for value in values:
                pattern = re.compile(r"\\" + re.escape(param) + r"(?![\w])|\\\(\)")
                body.extend(_Line(b.loc, pattern.sub(lambda m: "" if m.group(0) == "\\()" else value.strip(), b.text), b.origin) for b in c.body)
        note = f"in .{c.kind} at {c.line.loc.file}:{c.line.loc.line}"
        self._push([_Line(b.loc, b.text, b.origin + (note,)) for b in body], "rept", c.line)

    def _define_macro(self, c: _Collector) -> None:
        header = c.header.strip()
        m = re.match(r"^([A-Za-z_.$][\w.$]*)\s*,?\s*(.*)$", header)
        if not m:
            raise _error(c.line, "'.macro' needs a name")
        name = m.group(1)
        if name in _EXTABLE_BUILTINS or name in _SYM_CALLS:
            raise _error(c.line, f"'{name}' is built into this assembler and cannot be redefined")
        params = []
        for spec in re.finditer(r"([A-Za-z_]\w*)(?::(req|vararg))?(?:\s*=\s*(\"[^\"]*\"|[^,\s]*))?", m.group(2)):
            default = spec.group(3)
            if default is not None and default.startswith('"'):
                default = default[1:-1]
            params.append((spec.group(1), default, spec.group(2) or ""))
        self.macros[name] = _Macro(name, params, c.body, c.line)

    def _expand_macro(self, line: _Line, macro: _Macro, rest: str) -> None:
        args = _split_args(rest) if rest.strip() else []
        values: dict[str, str] = {}
        positional: list[str] = []
        names = {p[0] for p in macro.params}
        for arg in args:
            kw = re.match(r"^([A-Za-z_]\w*)\s*=(?!=)\s*(.*)$", arg)
            if kw and kw.group(1) in names:
                values[kw.group(1)] = kw.group(2)
            else:
                positional.append(arg)
        for index, (pname, default, qual) in enumerate(macro.params):
            if pname in values:
                continue
            if qual == "vararg":
                values[pname] = ", ".join(positional[index:])
                positional = positional[:index]
                continue
            if index < len(positional) and positional[index] != "":
                values[pname] = positional[index]
            elif qual == "req":
                raise _error(line, f"macro '{macro.name}': missing value for required parameter '{pname}'")
            else:
                values[pname] = default or ""
        if len(positional) > len(macro.params):
            raise _error(line, f"macro '{macro.name}' takes {len(macro.params)} argument(s), got {len(positional)}")
        values = {k: (v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v) for k, v in values.items()}
        self.macro_count += 1
        counter = str(self.macro_count)
        alternatives = "|".join(re.escape(n) for n in sorted(values, key=len, reverse=True))
        pattern = re.compile(r"\\(?:(" + alternatives + r")(?![\w])|(@)|(\(\)))" if alternatives else r"\\(?:(@)|(\(\)))")

        def sub(m: re.Match[str]) -> str:
            groups = m.groups()
            if alternatives and groups[0] is not None:
                return values[groups[0]]
            if "@" in groups:
                return counter
            return ""

        note = f"in macro '{macro.name}' invoked at {line.loc.file}:{line.loc.line}"
        body = [_Line(b.loc, pattern.sub(sub, b.text), line.origin + (note,)) for b in macro.body]
        self._push(body, "macro", line)

    # ------------------------------------------------------------------ directives

    def _directive(self, line: _Line, name: str, rest: str) -> None:
        if name in _DATA_WIDTH:
            self._data(line, _DATA_WIDTH[name], rest)
        elif name in (".ascii", ".asciz", ".string"):
            try:
                strings = _parse_strings(rest)
            except ExprSyntaxError as exc:
                raise _error(line, str(exc)) from None
            tail = b"" if name == ".ascii" else b"\0"
            self._emit_bytes(b"".join(s + tail for s in strings))
        elif name in (".space", ".skip", ".zero", ".fill"):
            self._space(line, name, rest)
        elif name in (".align", ".p2align", ".balign"):
            self._align(line, name, rest)
        elif name in (".text", ".data", ".bss"):
            self._switch(line, name, None)
        elif name in (".section", ".pushsection"):
            parts = _split_args(rest)
            if not parts or not parts[0]:
                raise _error(line, f"{name} needs a section name")
            flags = parts[1].strip().strip('"') if len(parts) > 1 else None
            if name == ".pushsection":
                self.section_stack.append(self.section)
            self._switch(line, parts[0].strip().strip('"'), flags)
        elif name == ".popsection":
            if not self.section_stack:
                raise _error(line, ".popsection without .pushsection")
            self.previous, self.section = self.section, self.section_stack.pop()
        elif name == ".previous":
            self.section, self.previous = self.previous, self.section
        elif name in (".equ", ".set", ".equiv"):
            parts = _split_args(rest)
            if len(parts) != 2:
                raise _error(line, f"{name} needs 'name, value'")
            self._set_constant(parts[0].strip(), parts[1], line, redefine=name != ".equiv")
        elif name == ".unreq":
            self.aliases.pop(rest.strip(), None)
        elif name == ".size":
            parts = _split_args(rest)
            if len(parts) != 2:
                raise _error(line, ".size needs 'name, size'")
            node = _bind(self._parse(parts[1], line), self._int_constants())
            self.seq += 1
            self.size_directives.append((parts[0].strip(), node, line, self.seq, self.section, self.section.size))
        elif name in (".macro",):
            self.collector = _Collector("macro", line, rest)
        elif name in (".rept", ".irp", ".irpc"):
            self.collector = _Collector(name[1:], line, rest)
        elif name in (".endm", ".endr"):
            raise _error(line, f"'{name}' without a matching {'.macro' if name == '.endm' else '.rept/.irp'}")
        elif name == ".exitm":
            if not any(f.kind == "macro" for f in self.frames):
                raise _error(line, ".exitm outside a macro")
            while self.frames[-1].kind != "macro":
                self.frames.pop()
            self.exit_macro = True
        elif name == ".purgem":
            if self.macros.pop(rest.strip(), None) is None:
                raise _error(line, f".purgem of unknown macro '{rest.strip()}'")
        elif name == ".include":
            target = self._include_path(line, rest)
            lines = self.pre.read_file(target, str(target), line)
            self._push(lines, "include", line)
        elif name in (".error", ".err"):
            message = rest.strip().strip('"') if rest.strip() else "error directive"
            raise _error(line, message)
        elif name == ".inst":
            raise _error(line, "'.inst' is not supported: keystone silently emits nothing for it; write the "
                               "mnemonic (LSE/PAC/BTI/RCpc are encoded by emu/asm_encode.py) or use '.word' for data")
        elif name in (".ltorg", ".pool"):
            raise _error(line, f"'{name}': literal pools are not supported; use adr/adrp or mov/movk")
        elif name in _IGNORED or name.startswith(".cfi_"):
            return
        else:
            raise _error(line, f"unknown directive '{name}'")

    def _include_path(self, line: _Line, rest: str) -> Path:
        m = re.match(r'^\s*"([^"]+)"\s*$', rest)
        if not m:
            raise _error(line, '.include needs a quoted file name')
        here = Path(line.loc.file).parent
        for d in [here] + self.pre.include_dirs:
            if (d / m.group(1)).is_file():
                return d / m.group(1)
        raise _error(line, f".include file '{m.group(1)}' not found")

    def _get_section(self, name: str, flags: str | None, line: _Line | None) -> _Section:
        if name == "__ex_table":
            raise _error(line, "write exception-table entries with the _asm_extable_* annotations or USER(); "
                               "__ex_table is generated by the assembler")
        if name not in self.sections:
            if flags is None:
                flags = next((f for prefix, f in _DEFAULT_FLAGS.items() if name == prefix or name.startswith(prefix + ".")), "a")
            self.sections[name] = _Section(name, flags, _section_rank(name, flags), len(self.sections))
        return self.sections[name]

    def _switch(self, line: _Line, name: str, flags: str | None) -> None:
        new = self._get_section(name, flags, line)
        if new is not self.section:
            self.previous, self.section = self.section, new

    def _emit_bytes(self, blob: bytes) -> None:
        if blob:
            self.section.items.append(_Bytes(self.section.size, blob))
            self.section.size += len(blob)

    def _data(self, line: _Line, width: int, rest: str) -> None:
        nodes = [_bind(self._parse(p, line), self._int_constants()) for p in _split_args(rest)]
        if not nodes or any(p == "" for p in _split_args(rest)):
            raise _error(line, "data directive needs values")
        self.seq += 1
        self.section.items.append(_Data(self.section.size, width, nodes, line, self.seq))
        self.section.size += width * len(nodes)

    def _space(self, line: _Line, name: str, rest: str) -> None:
        parts = _split_args(rest)
        if name == ".fill":
            if not 1 <= len(parts) <= 3:
                raise _error(line, ".fill needs 'repeat[, size[, value]]'")
            repeat = self._const(parts[0], line, ".fill repeat")
            size = self._const(parts[1], line, ".fill size") if len(parts) > 1 else 1
            value = self._const(parts[2], line, ".fill value") if len(parts) > 2 else 0
            if repeat < 0 or not 0 <= size <= 8:
                raise _error(line, ".fill repeat must be >= 0 and size 0..8")
            self._emit_bytes((value & ((1 << (8 * size)) - 1)).to_bytes(size, "little") * repeat)
            return
        if not 1 <= len(parts) <= (1 if name == ".zero" else 2):
            raise _error(line, f"{name} needs 'size{'' if name == '.zero' else '[, fill]'}'")
        size = self._const(parts[0], line, f"{name} size")
        fill = self._const(parts[1], line, f"{name} fill") if len(parts) > 1 else 0
        if size < 0:
            raise _error(line, f"{name} size {size} is negative")
        self._emit_bytes(bytes([fill & 0xFF]) * size)

    def _align(self, line: _Line, name: str, rest: str) -> None:
        parts = _split_args(rest)
        if not parts or not parts[0]:
            raise _error(line, f"{name} needs an alignment")
        value = self._const(parts[0], line, f"{name} alignment")
        if name == ".balign":
            if value <= 0 or value & (value - 1):
                raise _error(line, f".balign {value} is not a power of two")
            align = value
        else:
            # GNU as for AArch64: .align takes a power of two, like .p2align
            if not 0 <= value <= 16:
                raise _error(line, f"{name} {value} out of range 0..16")
            align = 1 << value
        fill = self._const(parts[1], line, f"{name} fill") if len(parts) > 1 and parts[1] else None
        limit = self._const(parts[2], line, f"{name} max") if len(parts) > 2 else None
        self._align_to(align, fill, limit)

    def _align_to(self, align: int, fill: int | None = None, limit: int | None = None) -> None:
        sec = self.section
        pad = -sec.size % align
        if limit is not None and pad > limit:
            return  # GNU as: skip the alignment when it would need more than `max` bytes
        sec.align = max(sec.align, align)
        if not pad:
            return
        if fill is None and sec.executable and pad % 4 == 0 and sec.size % 4 == 0:
            blob = NOP.to_bytes(4, "little") * (pad // 4)  # code sections pad with NOPs, as GNU as does
        else:
            blob = bytes([(fill or 0) & 0xFF]) * pad
        self._emit_bytes(blob)

    # ------------------------------------------------------------------ kernel C-style macros

    def _call(self, line: _Line, name: str, args_text: str) -> None:
        if name in ("USER", "USER_CPY"):
            self._user(line, name, args_text)
            return
        args = _split_args(args_text)
        target = args[0].strip() if args else ""
        if name.startswith("EXPORT_SYMBOL") or name in ("_ASM_NOKPROBE", "NOKPROBE_SYMBOL"):
            return
        if not _IDENT.fullmatch(target):
            raise _error(line, f"{name} needs a symbol name")
        if name.startswith(("SYM_FUNC_START", "SYM_CODE_START", "SYM_TYPED_FUNC_START", "SYM_DATA_START")) or name == "ENTRY":
            if not name.endswith("NOALIGN") and not name.startswith("SYM_DATA"):
                self._align_to(4)  # arm64 linkage.h: functions are at least 4-byte aligned
            if target in self.func_starts:
                raise _error(line, f"{name}({target}) while '{target}' is already open")
            self._define_label(target, line)
            self.func_starts[target] = (self.section, self.section.size, line)
        elif name in ("SYM_FUNC_END", "SYM_CODE_END", "SYM_DATA_END", "ENDPROC", "END"):
            if target not in self.func_starts:
                raise _error(line, f"{name}({target}) without a matching start")
            section, offset, _ = self.func_starts.pop(target)
            if section is not self.section:
                raise _error(line, f"{name}({target}) in section {self.section.name}, but it started in {section.name}")
            self.sizes[target] = self.section.size - offset
        elif name.startswith("SYM_FUNC_ALIAS"):
            if len(args) != 2:
                raise _error(line, f"{name} needs (alias, name)")
            self.symbol_aliases.append((target, args[1].strip(), line))
        elif name.startswith("SYM_INNER_LABEL"):
            if name.endswith("ALIGN"):
                self._align_to(4)
            self._define_label(target, line)

    def _user(self, line: _Line, name: str, args_text: str) -> None:
        """USER(fixup, insn) / USER_CPY(fixup, is_write, insn): assembler.h / asm-uaccess.h."""
        args = _split_args(args_text)
        nfixed = 1 if name == "USER" else 2
        if len(args) <= nfixed:
            raise _error(line, f"{name} needs ({'fixup' if name == 'USER' else 'fixup, uaccess_is_write'}, instruction)")
        insn_text = ", ".join(args[nfixed:])
        section, offset = self.section, self.section.size
        before = len(section.items)
        self._statement(line, insn_text)
        new_items = section.items[before:]
        if self.section is not section or len(new_items) != 1 or not isinstance(new_items[0], _Insn):
            raise _error(line, f"{name}() must wrap exactly one instruction")
        location = ("loc", section.name, offset)
        if name == "USER":
            self._add_extable(line, ExType.UACCESS_ERR_ZERO, location, args[0], pack_err_zero(REG_NONE, REG_NONE))
        else:
            self._add_extable(line, ExType.UACCESS_CPY, location, args[0], self._uaccess_write(args[1], line))

    # ------------------------------------------------------------------ exception table

    def _extable_builtin(self, line: _Line, name: str, rest: str) -> None:
        args = _split_args(rest)
        counts = {
            "_asm_extable_uaccess": 2, "_asm_extable_uaccess_err_zero": 4, "_asm_extable_kaccess_err_zero": 4,
            "_asm_extable_load_unaligned_zeropad": 4, "_asm_extable_uaccess_cpy": 3, "_asm_extable": 2,
            "_cond_uaccess_extable": 2,
        }
        if name == "_cond_uaccess_extable" and len(args) == 1:
            args.append("")
        if len(args) != counts[name]:
            raise _error(line, f"{name} takes {counts[name]} arguments, got {len(args)}")
        if name == "_asm_extable":
            # v6.1 asm-extable.h has no _asm_extable and no EX_TYPE_FIXUP: every kernel
            # .S user was converted to the typed annotations.
            raise _error(line, "_asm_extable (EX_TYPE_FIXUP) does not exist in the modelled kernels; "
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

    def _uaccess_write(self, text: str, line: _Line) -> int:
        value = self._const(text, line, "uaccess_is_write")
        if value not in (0, 1):
            raise _error(line, f"uaccess_is_write must be 0 or 1, got {value}")
        return value

    def _extable_reg(self, text: str, line: _Line) -> int:
        name = text.strip()
        name = self.aliases.get(name, name)
        try:
            reg = parse_gpr(name, sp=False, zr=True)
        except EncodeError:
            raise _error(line, f"expected a register x0..x30, w0..w30, xzr or wzr, got '{text.strip()}'") from None
        return reg.num

    def _add_extable(self, line: _Line, kind: ExType, insn: Node | str, fixup_text: str, data: int) -> None:
        try:
            self.numbering.number(kind)
        except UnknownExtableType as exc:
            raise _error(line, str(exc)) from None
        if isinstance(insn, str):
            insn = self._parse(insn, line)
        fixup = self._parse(fixup_text, line)
        self.seq += 1
        consts = self._int_constants()
        self.extable.append(_ExtableRequest(line, self.seq, kind, _bind(insn, consts), _bind(fixup, consts), data))

    # ------------------------------------------------------------------ instructions (pass 1)

    def _instruction(self, line: _Line, text: str) -> None:
        m = re.match(r"^(\S+)\s*(.*)$", text, re.S)
        mnemonic, operands = m.group(1).lower(), m.group(2).strip()
        if not re.fullmatch(r"[a-z][a-z0-9]*(\.[a-z]+)?", mnemonic):
            raise _error(line, f"cannot parse '{text}' as an instruction")
        if self.section.size % 4:
            raise _error(line, f"instruction at offset {self.section.size:#x} of {self.section.name} is not 4-byte aligned")
        consts = self._int_constants()

        def replace(word: str) -> str | None:
            if word in self.aliases:
                return self.aliases[word]
            if word in consts:
                return _fmt_imm(consts[word])
            return None

        resolved = _replace_identifiers(operands, replace)
        self.seq += 1
        shown = " ".join(text.split())  # tabs and runs of spaces collapse, for traces
        self.section.items.append(_Insn(self.section.size, line, f"{mnemonic} {resolved}".strip(), shown, self.seq))
        self.section.size += 4

    # ------------------------------------------------------------------ pass 2

    def finish(self) -> Image:
        if self.func_starts:
            name, (_, _, line) = next(iter(self.func_starts.items()))
            raise _error(line, f"'{name}' has no SYM_*_END")
        self._place_sections()
        extable_addr = (self._cursor + 3) & ~3
        self._extable_addr = extable_addr
        symbols, local = {}, {}
        for name, (section, offset, _) in self.labels.items():
            (local if name.startswith(".L") else symbols)[name] = section.addr + offset
        for alias, target, line in self.symbol_aliases:
            if target not in self.labels:
                raise _error(line, f"unknown symbol '{target}'")
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
                if isinstance(item, _Insn):
                    lines[sec.addr + item.offset] = SourceLoc(item.line.loc.file, item.line.loc.line, item.shown)
        sections = {name: (sec.addr, sec.size) for name, sec in sorted(self.sections.items(), key=lambda kv: kv[1].addr)}
        sections["__ex_table"] = (extable_addr, len(table))
        return Image(
            base=self.base, data=bytes(out), symbols=symbols, sizes=dict(self.sizes),
            extable=list(decode_extable(table, extable_addr)), extable_addr=extable_addr,
            extable_size=len(table), numbering=self.numbering, lines=lines, sections=sections,
            local_symbols=local,
        )

    def _place_sections(self) -> None:
        ordered = sorted(self.sections.values(), key=lambda s: (s.rank, s.name != ".text", s.order))
        cursor = self.base
        for index, sec in enumerate(ordered):
            addr = (cursor + sec.align - 1) & ~(sec.align - 1)
            if index == 0 and addr != cursor:
                raise AsmError(self.filename, 1, f"base {self.base:#x} is not aligned to {sec.name}'s alignment {sec.align}")
            sec.addr = addr
            cursor = addr + sec.size
            for item in sec.items:
                if isinstance(item, _Insn):
                    self.insn_addrs.add(addr + item.offset)
        self._cursor = cursor

    def _env(self, line: _Line, seq: int, dot: int) -> _Env:
        def symbol(name: str) -> int:
            if name in self.constants:
                value = self.constants[name]
                if isinstance(value, int):
                    return value
                if name in self.resolving:
                    raise _error(line, f"'{name}' is defined in terms of itself")
                self.resolving.add(name)
                try:
                    sec = self.sections[value.section]
                    return self._eval(value.node, value.line, value.seq, sec.addr + value.offset)
                finally:
                    self.resolving.discard(name)
            if name in self.labels:
                section, offset, _ = self.labels[name]
                return section.addr + offset
            raise _Unresolved(name)

        def numeric(n: int, direction: str) -> int:
            defs = self.numeric.get(n, [])
            if direction == "b":
                found = [d for d in defs if d[0] < seq]
                pick = found[-1] if found else None
            else:
                found = [d for d in defs if d[0] > seq]
                pick = found[0] if found else None
            if pick is None:
                where = "before" if direction == "b" else "after"
                raise _error(line, f"no local label '{n}:' {where} this line (for '{n}{direction}')")
            return pick[1].addr + pick[2]

        def location(section: str, offset: int) -> int:
            return self.sections[section].addr + offset

        return _Env(symbol, numeric, lambda: dot, location)

    def _eval(self, node: Node, line: _Line, seq: int, dot: int) -> int:
        try:
            return evaluate(node, self._env(line, seq, dot))
        except _Unresolved as exc:
            raise _error(line, f"unknown symbol '{exc.name}'") from None
        except ZeroDivisionError as exc:
            raise _error(line, str(exc)) from None

    def _section_bytes(self, sec: _Section) -> bytes:
        out = bytearray(sec.size)
        for item in sec.items:
            if isinstance(item, _Bytes):
                out[item.offset:item.offset + len(item.blob)] = item.blob
            elif isinstance(item, _Data):
                for index, node in enumerate(item.nodes):
                    at = item.offset + index * item.width
                    value = self._eval(node, item.line, item.seq, sec.addr + at)
                    bits = 8 * item.width
                    if not -(1 << (bits - 1)) <= value < (1 << bits):
                        raise _error(item.line, f"value {value:#x} does not fit in {item.width} byte(s)")
                    out[at:at + item.width] = (value & ((1 << bits) - 1)).to_bytes(item.width, "little")
            else:
                word = self._encode(item, sec.addr + item.offset)
                out[item.offset:item.offset + 4] = word.to_bytes(4, "little")
        return bytes(out)

    def _extable_entries(self) -> list[ExtableEntry]:
        entries = []
        for req in self.extable:
            insn = self._eval(req.insn, req.line, req.seq, 0)
            fixup = self._eval(req.fixup, req.line, req.seq, 0)
            if insn not in self.insn_addrs:
                raise _error(req.line, f"exception-table entry: {insn:#x} is not the address of an instruction")
            entries.append(ExtableEntry(insn, fixup, self.numbering.number(req.kind), req.data))
        return entries

    # ------------------------------------------------------------------ encoding one instruction

    def _encode(self, item: _Insn, pc: int) -> int:
        mnemonic, _, operands = item.text.partition(" ")
        operands = operands.strip()
        line = item.line
        try:
            if is_pc_relative(mnemonic, operands):
                return encode_pc_relative(mnemonic, operands, pc, lambda expr: self._operand_value(expr, item, pc))
            resolved = self._resolve_operands(mnemonic, operands, item, pc)
            word = encode_own(mnemonic, resolved)
        except EncodeError as exc:
            raise _error(line, f"{exc} in '{item.shown}'") from None
        if word is not None:
            return word
        return self._keystone(f"{mnemonic} {resolved}".strip(), mnemonic, item)

    def _operand_value(self, text: str, item: _Insn, pc: int) -> int:
        text = text.strip()
        if text.startswith("#"):
            text = text[1:]
        return self._eval(self._parse(text, item.line), item.line, item.seq, pc)

    def _resolve_operands(self, mnemonic: str, operands: str, item: _Insn, pc: int) -> str:
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

    _SHIFT = re.compile(r"^(lsl|lsr|asr|ror|msl|[us]xt[bhwx])\s+(.*)$", re.IGNORECASE)
    _RELOC = re.compile(r"^:(lo12|lo12_nc|abs_g0|abs_g0_nc|abs_g1|abs_g1_nc|abs_g2|abs_g2_nc|abs_g3):(.*)$", re.IGNORECASE)
    _FLOAT = re.compile(r"^[-+]?\d+\.\d*(?:[eE][-+]?\d+)?$")

    def _resolve_operand(self, op: str, item: _Insn, pc: int) -> str:
        line = item.line
        if not op or op.startswith("{"):
            return op
        if op.startswith("="):
            raise _error(line, f"'ldr ..., =value' literal pools are not supported in '{item.shown}'; use adr/adrp or mov/movk")
        if op.startswith("["):
            m = re.match(r"^\[(.*)\]\s*(!?)$", op, re.S)
            if not m:
                raise _error(line, f"malformed memory operand '{op}'")
            inner = [self._resolve_operand(p, item, pc) for p in split_operands(m.group(1))]
            return "[" + ", ".join(inner) + "]" + m.group(2)
        if m := self._SHIFT.match(op):
            return f"{m.group(1)} {self._resolve_operand(m.group(2).strip(), item, pc)}"
        if op.startswith("#") or op.startswith(":"):
            return "#" + self._immediate(op[1:].strip() if op.startswith("#") else op, item, pc)
        if _REGISTER.match(op) or not self._looks_like_expression(op):
            return op
        return "#" + self._immediate(op, item, pc)

    def _looks_like_expression(self, op: str) -> bool:
        """A bare operand is an expression if it names a symbol or is built from operators."""
        if _IDENT.fullmatch(op):
            return op in self.labels or op in self.constants
        try:
            node = parse_expr(op)
        except ExprSyntaxError:
            return False
        return node[0] != "num" or not re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", op)

    def _immediate(self, text: str, item: _Insn, pc: int) -> str:
        if self._FLOAT.match(text):
            return text
        mask, shift = None, 0
        if m := self._RELOC.match(text):
            kind, text = m.group(1).lower(), m.group(2)
            if kind.startswith("lo12"):
                mask = 0xFFF
            else:
                shift, mask = 16 * int(kind[5]), 0xFFFF
        value = self._eval(self._parse(text, item.line), item.line, item.seq, pc)
        if mask is not None:
            value = (value >> shift) & mask
        return _fmt_imm(value)

    def _keystone(self, text: str, mnemonic: str, item: _Insn) -> int:
        line = item.line
        if text in self.ks_cache:
            return self.ks_cache[text]
        try:
            encoding, _ = self.ks.asm(text, 0)
        except keystone.KsError as exc:
            if exc.errno == keystone.KS_ERR_ASM_MNEMONICFAIL:
                raise _error(line, f"unknown mnemonic '{mnemonic}' in '{item.shown}'") from None
            raise _error(line, f"keystone could not assemble '{item.shown}' (as '{text}'): {exc}") from None
        blob = bytes(encoding or [])
        if len(blob) != 4:
            raise _error(line, f"keystone did not assemble '{item.shown}' (it emitted {len(blob)} bytes, not 4)")
        decoded = list(self.cs.disasm(blob, 0))
        if len(decoded) != 1:
            raise _error(line, f"keystone did not assemble '{item.shown}': capstone cannot decode {blob.hex()}")
        insn = decoded[0]
        if not _same_mnemonic(mnemonic, insn.mnemonic):
            raise _error(line, f"keystone did not assemble '{item.shown}': it produced '{insn.mnemonic} {insn.op_str}'")
        missing = _registers(text.partition(" ")[2]) - _registers(insn.op_str)
        if missing:
            raise _error(line, f"keystone did not assemble '{item.shown}': it produced '{insn.mnemonic} {insn.op_str}' "
                               f"(lost {', '.join(sorted(missing))})")
        word = int.from_bytes(blob, "little")
        self.ks_cache[text] = word
        return word


# =========================================================================== fidelity check helpers

# Mnemonics that capstone may print for what the source wrote (architectural aliases,
# Arm ARM C6.2 "preferred disassembly"); each group is one family.
_ALIAS_GROUPS: list[frozenset[str]] = [frozenset(g.split()) for g in (
    "mov movz movn orr add umov ins dup",
    "add sub adds subs cmp cmn neg negs mov",
    "ubfm lsl lsr ubfx ubfiz uxtb uxth",
    "sbfm asr sbfx sbfiz sxtb sxth sxtw",
    "bfm bfi bfxil bfc",
    "csinc cset cinc", "csinv csetm cinv", "csneg cneg",
    "orn mvn not", "ands tst and", "extr ror", "madd mul", "msub mneg",
    "smaddl smull", "umaddl umull", "smsubl smnegl", "umsubl umnegl",
    "sys dc ic at tlbi", "hint nop yield wfe wfi sev sevl",
    "dsb ssbb pssbb", "lslv lsl", "lsrv lsr", "asrv asr", "rorv ror",
    "sbc ngc", "sbcs ngcs", "sshll sxtl", "ushll uxtl",
    "cmhs cmls", "cmge cmle", "cmgt cmlt", "cmhi cmlo", "fcmge fcmle", "fcmgt fcmlt",
)]


def _same_mnemonic(source: str, decoded: str) -> bool:
    source, decoded = source.lower(), decoded.lower()
    if source == decoded:
        return True
    # unscaled-offset forms: `ldr x0, [x1, #-8]` is LDUR (Arm ARM C6.2 LDR (immediate) note)
    if source[:2] in ("ld", "st") and decoded == source[:2] + "u" + source[2:]:
        return True
    return any(source in g and decoded in g for g in _ALIAS_GROUPS)


_REG_TOKEN = re.compile(r"\b(?:[xwbhsdqv]\d{1,2}|[xw]zr|w?sp)\b")


def _registers(text: str) -> set[str]:
    return set(_REG_TOKEN.findall(text.lower()))


# =========================================================================== public API


def assemble(
    source: str,
    base: int,
    *,
    filename: str = "<string>",
    numbering: TypeNumbering = NUMBERING_V7,
    include_dirs: Iterable[str | Path] = (),
) -> Image:
    """Assemble kernel-style AArch64 source into an Image loaded at `base`."""
    dirs = [Path(d) for d in include_dirs]
    asm = _Assembler(base, numbering, dirs, filename)
    directory = Path(filename).parent if not filename.startswith("<") else None
    lines = asm.pre.process(source, filename, directory)
    asm.run(lines)
    return asm.finish()


def assemble_file(path: str | Path, base: int, **kw) -> Image:
    """Assemble a .S file; `#include "x"` and `.include` also search the file's own directory."""
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as exc:
        raise AsmError(str(path), 0, f"cannot read: {exc.strerror}") from None
    kw.setdefault("filename", str(path))
    return assemble(source, base, **kw)
