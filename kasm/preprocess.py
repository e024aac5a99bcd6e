"""The small C preprocessor the kernel's .S files rely on (cpp runs before gas there too).

Comments (`//`, `/* */`, and a line of `#` followed by a space and anything that is
not a cpp directive, e.g. `# note`), `#include`, object- and function-like `#define`,
`#undef`, `#if/#ifdef/#ifndef/#elif/#else/#endif` and `#error`; `__ASSEMBLY__` is
predefined. `#` inside a line is never a comment, so `mov x0, #1` works. The output
is a list of Lines, each still knowing its file and line number.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from kasm.expr import CONST_ONLY, ExprSyntaxError, evaluate, parse_expr
from kasm.source import AsmError, Line, SourceLoc, error
from kasm.text import split_args, strip_comments


@dataclass
class _Define:
    params: list[str] | None  # None for an object-like macro
    body: str


_CPP_DIRECTIVES = {"if", "ifdef", "ifndef", "elif", "else", "endif", "define", "undef", "include",
                   "error", "warning", "line", "pragma", "ident"}
_DIRECTIVE = re.compile(r"^\s*#\s*([A-Za-z_]\w*)\s*(.*)$", re.S)
_DEFINE = re.compile(r"^([A-Za-z_]\w*)(\(([^)]*)\))?\s*(.*)$", re.S)


# (name, directories searched in order, the file found): one #include / .include lookup.
Lookup = tuple[str, tuple[str, ...], str]
# (path, content digest): one file the preprocessor read.
FileRead = tuple[str, str]


def content_digest(text: str) -> str:
    """The digest kasm.cache keys and validates on (blake2b: fast, and collisions are not a concern here)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()


def find_file(name: str, search: Iterable[Path]) -> Path | None:
    """The first `directory / name` that is a file (`#include` and `.include` search alike)."""
    for d in search:
        if (d / name).is_file():
            return d / name
    return None


class Preprocessor:
    """cpp state for one assemble() call: the #define table and the include path.

    It also records every input outside the source text that the output depends
    on - each include lookup (name, directories searched, file found) and each
    file read with a hash of its contents - so kasm.cache can tell whether a
    memoised Image is still what assembling again would produce.
    """

    def __init__(self, include_dirs: Sequence[Path]):
        self.include_dirs = list(include_dirs)
        self.lookups: list[Lookup] = []
        self.reads: list[FileRead] = []
        self.defines: dict[str, _Define] = {
            "__ASSEMBLY__": _Define(None, "1"),
            "__ASSEMBLER__": _Define(None, "1"),
            "__aarch64__": _Define(None, "1"),
        }

    def read_file(self, path: Path, shown: str, at: Line | None, depth: int = 0) -> list[Line]:
        try:
            text = path.read_text()
        except OSError as exc:
            if at is None:
                raise AsmError(shown, 0, f"cannot read: {exc.strerror}") from None
            raise error(at, f"cannot read '{path}': {exc.strerror}") from None
        self.reads.append((str(path), content_digest(text)))
        return self.process(text, shown, path.parent, depth)

    def process(self, text: str, shown: str, directory: Path | None, depth: int = 0) -> list[Line]:
        if depth > 50:
            raise AsmError(shown, 1, "#include nested too deeply")
        raw = strip_comments(text).split("\n")
        originals = text.split("\n")
        out: list[Line] = []
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
            line = Line(SourceLoc(shown, number, original), logical)
            active = all(c[0] for c in conds)
            stripped = logical.strip()
            if stripped.startswith("#"):
                out.extend(self._directive(line, stripped, conds, active, directory, depth))
                continue
            if active and stripped:
                out.append(Line(line.loc, self.expand(stripped, line)))
        if conds:
            raise AsmError(shown, len(raw), "unterminated #if/#ifdef")
        return out

    def _directive(self, line: Line, text: str, conds: list[list[bool]], active: bool,
                   directory: Path | None, depth: int) -> list[Line]:
        m = _DIRECTIVE.match(text)
        if not m:
            return []  # `#` alone, or `# 1 "file"` line markers: a comment
        name, rest = m.group(1), m.group(2).strip()
        if name not in _CPP_DIRECTIVES:
            if re.match(r"^\s*#\s", text):
                return []  # `# some words`: a comment line, as GNU as reads it
            raise error(line, f"unknown preprocessor directive '#{name}'")
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
                raise error(line, f"#{name} without #if")
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
                raise error(line, f"malformed #define '{rest}'")
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
                raise error(line, f"#error {rest}")
            return []
        return []  # line, pragma, ident

    def _find_include(self, rest: str, directory: Path | None, line: Line) -> Path:
        m = re.match(r'^"([^"]+)"|^<([^>]+)>', rest)
        if not m:
            raise error(line, f"malformed #include {rest}")
        name = m.group(1) or m.group(2)
        search = ([directory] if m.group(1) and directory is not None else []) + self.include_dirs
        found = self.find(name, search)
        if found is None:
            raise error(line, f"#include file '{name}' not found (searched: {', '.join(map(str, search)) or 'nothing'})")
        return found

    def find(self, name: str, search: Sequence[Path]) -> Path | None:
        """find_file(), recorded as an input of this assembly (only successful lookups: a miss is an error)."""
        found = find_file(name, search)
        if found is not None:
            self.lookups.append((name, tuple(str(d) for d in search), str(found)))
        return found

    def _eval_if(self, text: str, line: Line) -> int:
        text = re.sub(r"\bdefined\s*\(\s*(\w+)\s*\)|\bdefined\s+(\w+)",
                      lambda m: "1" if (m.group(1) or m.group(2)) in self.defines else "0", text)
        text = self.expand(text, line)
        text = re.sub(r"\b[A-Za-z_]\w*\b", "0", text)  # cpp: remaining identifiers are 0
        text = re.sub(r"(\d+)[uUlL]+\b", r"\1", text)
        try:
            return evaluate(parse_expr(text), CONST_ONLY)
        except (ExprSyntaxError, ZeroDivisionError) as exc:
            raise error(line, f"bad #if expression: {exc}") from None

    def expand(self, text: str, line: Line, active: frozenset[str] = frozenset()) -> str:
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
    def _call_args(text: str, start: int, line: Line) -> tuple[list[str], int]:
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        if depth:
            raise error(line, "unterminated macro call (missing ')')")
        inner = text[start:i - 1]
        return (split_args(inner) if inner.strip() else []), i

    @staticmethod
    def _substitute(name: str, d: _Define, args: list[str], line: Line) -> str:
        params = list(d.params or [])
        values: dict[str, str] = {}
        variadic = params and params[-1].endswith("...")
        if variadic:
            last = params.pop()
            vname = last[:-3] or "__VA_ARGS__"
            values[vname] = ", ".join(args[len(params):])
        elif len(args) != len(params) and not (not params and args == [""]):
            raise error(line, f"macro '{name}' takes {len(params)} argument(s), got {len(args)}")
        for p, a in zip(params, args):
            values[p] = a
        if not values:
            return d.body
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(values, key=len, reverse=True))) + r")\b")
        return pattern.sub(lambda m: values[m.group(1)], d.body)
