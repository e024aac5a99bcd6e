"""GNU as macros, repetition and conditional assembly: `.macro`, `.rept`/`.irp`/`.irpc`, `.if*`.

Bodies are collected as Lines and pushed back as a new frame of input, so an error in
an expanded line names both the line written in the body and where it was invoked.
"""
from __future__ import annotations

import re

from kasm.extable import EXTABLE_BUILTINS, USER_CALLS
from kasm.layout import LINKAGE_CALLS
from kasm.source import Line, error
from kasm.state import Collector, Cond, Macro
from kasm.symbols import Symbols
from kasm.text import split_args

MACRO_OPENERS = {".macro"}
REPT_OPENERS = {".rept", ".irp", ".irpc"}
# Lines one `.rept` may expand to: kernel code repeats a few lines a few dozen times; a count of
# 100000 is a typo that would take minutes to assemble (and a budget-less run to refuse).
MAX_REPT_LINES = 1 << 16
# Lines all `.rept`/`.irp`/`.irpc` expansions of one source may add together: nested repetitions
# multiply (three nested `.rept 300` are 27 million lines, each under the per-`.rept` limit when it
# is expanded), so the sum is bounded too.
MAX_REPT_TOTAL_LINES = 1 << 16
MACRO_DIRECTIVES = MACRO_OPENERS | REPT_OPENERS | {".endm", ".endr", ".exitm", ".purgem"}


class Macros(Symbols):
    """Collecting and expanding macro and repetition bodies; the `.if` stack."""

    def _macro_directive(self, line: Line, name: str, rest: str) -> None:
        if name in MACRO_OPENERS:
            self.collector = Collector("macro", line, rest)
        elif name in REPT_OPENERS:
            self.collector = Collector(name[1:], line, rest)
        elif name in (".endm", ".endr"):
            raise error(line, f"'{name}' without a matching {'.macro' if name == '.endm' else '.rept/.irp'}")
        elif name == ".exitm":
            if not any(f.kind == "macro" for f in self.frames):
                raise error(line, ".exitm outside a macro")
            while self.frames[-1].kind != "macro":
                self.frames.pop()
            self.exit_macro = True
        elif name == ".purgem":
            if self.macros.pop(rest.strip(), None) is None:
                raise error(line, f".purgem of unknown macro '{rest.strip()}'")

    def _collect(self, line: Line, text: str, first: str) -> None:
        c = self.collector
        opener = MACRO_OPENERS if c.kind == "macro" else REPT_OPENERS
        closer = ".endm" if c.kind == "macro" else ".endr"
        if first in opener:
            c.depth += 1
        elif first == closer:
            if c.depth == 0:
                self.collector = None
                self._finish_collector(c)
                return
            c.depth -= 1
        c.body.append(Line(line.loc, text, line.origin))

    # ------------------------------------------------------------------ conditionals

    def _conditional(self, line: Line, name: str, arg: str) -> None:
        if name in (".else", ".elseif", ".endif"):
            if not self.conds:
                raise error(line, f"'{name}' without '.if'")
            cond = self.conds[-1]
            if name == ".endif":
                self.conds.pop()
                return
            if cond.seen_else:
                raise error(line, f"'{name}' after '.else'")
            if name == ".else":
                cond.seen_else = True
                cond.active = cond.parent_active and not cond.taken
            else:
                cond.active = cond.parent_active and not cond.taken and self._test(line, ".if", arg)
            cond.taken = cond.taken or cond.active
            return
        parent = self.active
        value = self._test(line, name, arg) if parent else False
        self.conds.append(Cond(value, value, parent, line))

    def _test(self, line: Line, name: str, arg: str) -> bool:
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
            parts = split_args(arg)
            if len(parts) == 1 and "," not in arg:
                parts.append("")
            a, b = (p.strip().strip('"') for p in (parts + ["", ""])[:2])
            return (a == b) == (name == ".ifc")
        raise error(line, f"unknown conditional '{name}'")

    # ------------------------------------------------------------------ macros and repetition

    def _finish_collector(self, c: Collector) -> None:
        if c.kind == "macro":
            self._define_macro(c)
            return
        header = c.header
        if c.kind == "rept":
            count = self._const(header, c.line, ".rept count")
            if count < 0:
                raise error(c.line, f".rept count {count} is negative")
            if count * len(c.body) > MAX_REPT_LINES:
                raise error(c.line, f".rept {count} of {len(c.body)} line(s) expands past {MAX_REPT_LINES} lines")
            body = c.body * count
        else:
            parts = split_args(header)
            if not parts or not re.fullmatch(r"[A-Za-z_]\w*", parts[0].strip()):
                raise error(c.line, f".{c.kind} needs a parameter name first")
            param = parts[0].strip()
            values = parts[1:] if c.kind == "irp" else list("".join(p.strip() for p in parts[1:]))
            body = []
            for value in values:
                pattern = re.compile(r"\\" + re.escape(param) + r"(?![\w])|\\\(\)")
                body.extend(Line(b.loc, pattern.sub(lambda m: "" if m.group(0) == "\\()" else value.strip(), b.text), b.origin) for b in c.body)
        self.rept_lines += len(body)
        if self.rept_lines > MAX_REPT_TOTAL_LINES:
            raise error(c.line, f".{c.kind} expansions (nested or repeated) add up past {MAX_REPT_TOTAL_LINES} lines")
        note = f"in .{c.kind} at {c.line.loc.file}:{c.line.loc.line}"
        self._push([Line(b.loc, b.text, b.origin + (note,)) for b in body], "rept", c.line)

    def _define_macro(self, c: Collector) -> None:
        header = c.header.strip()
        m = re.match(r"^([A-Za-z_.$][\w.$]*)\s*,?\s*(.*)$", header)
        if not m:
            raise error(c.line, "'.macro' needs a name")
        name = m.group(1)
        if name in EXTABLE_BUILTINS or name in LINKAGE_CALLS or name in USER_CALLS:
            raise error(c.line, f"'{name}' is built into this assembler and cannot be redefined")
        params = []
        for spec in re.finditer(r"([A-Za-z_]\w*)(?::(req|vararg))?(?:\s*=\s*(\"[^\"]*\"|[^,\s]*))?", m.group(2)):
            default = spec.group(3)
            if default is not None and default.startswith('"'):
                default = default[1:-1]
            params.append((spec.group(1), default, spec.group(2) or ""))
        self.macros[name] = Macro(name, params, c.body, c.line)

    def _expand_macro(self, line: Line, macro: Macro, rest: str) -> None:
        args = split_args(rest) if rest.strip() else []
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
                raise error(line, f"macro '{macro.name}': missing value for required parameter '{pname}'")
            else:
                values[pname] = default or ""
        if len(positional) > len(macro.params):
            raise error(line, f"macro '{macro.name}' takes {len(macro.params)} argument(s), got {len(positional)}")
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
        body = [Line(b.loc, pattern.sub(sub, b.text), line.origin + (note,)) for b in macro.body]
        self._push(body, "macro", line)
