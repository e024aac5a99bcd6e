"""Labels, numeric local labels, `.req` aliases and `.equ`/`.set` constants, and their values.

Pass 1 only records where each name is (a section and an offset, since every
instruction is 4 bytes and no address depends on encoding); pass 2 turns those into
addresses once sections are placed. `seq` orders every definition and use, which is
what `1b`/`1f` need.
"""
from __future__ import annotations

from kasm.expr import CONST_ONLY, Env, ExprSyntaxError, Node, Unresolved, bind, evaluate, parse_expr
from kasm.source import Line, error
from kasm.state import AssemblerState, Deferred
from kasm.text import REGISTER, split_args


class Symbols(AssemblerState):
    """Defining names in pass 1 and evaluating expressions over them in either pass."""

    # ------------------------------------------------------------------ labels and aliases

    def _define_label(self, name: str, line: Line) -> None:
        self.seq += 1
        if name.isdigit():
            self.numeric.setdefault(int(name), []).append((self.seq, self.section, self.section.size))
            return
        if name in self.labels:
            first = self.labels[name][2].loc
            raise error(line, f"duplicate label '{name}' (first defined at {first.file}:{first.line})")
        if name in self.constants:
            raise error(line, f"label '{name}' is already defined as a constant")
        self.labels[name] = (self.section, self.section.size, line)

    def _alias_target(self, reg: str, line: Line) -> str:
        reg = self.aliases.get(reg, reg)
        if not REGISTER.match(reg):
            raise error(line, f".req needs a register name, got '{reg}'")
        return reg.lower()

    # ------------------------------------------------------------------ constants

    def _equ_directive(self, line: Line, name: str, rest: str) -> None:
        """`.equ`/`.set` (redefinable) and `.equiv` (once only): `name, value`."""
        parts = split_args(rest)
        if len(parts) != 2:
            raise error(line, f"{name} needs 'name, value'")
        self._set_constant(parts[0].strip(), parts[1], line, redefine=name != ".equiv")

    def _set_constant(self, name: str, expr_text: str, line: Line, redefine: bool) -> None:
        if name in self.labels:
            raise error(line, f"'{name}' is already defined as a label")
        if not redefine and name in self.constants:
            raise error(line, f"'{name}' is already defined (.equiv)")
        node = bind(self._parse(expr_text, line), self._int_constants())
        self.seq += 1
        try:
            self.constants[name] = evaluate(node, CONST_ONLY)
        except Unresolved:
            self.constants[name] = Deferred(node, line, self.seq, self.section.name, self.section.size)
        except ZeroDivisionError as exc:
            raise error(line, str(exc)) from None
        self.constant_lines[name] = line

    def _int_constants(self) -> dict[str, int]:
        return {k: v for k, v in self.constants.items() if isinstance(v, int)}

    def _parse(self, text: str, line: Line) -> Node:
        try:
            return parse_expr(text)
        except ExprSyntaxError as exc:
            raise error(line, str(exc)) from None

    def _const(self, text: str, line: Line, what: str) -> int:
        """An expression that must be known now (counts, sizes, conditions)."""
        try:
            node = bind(parse_expr(text), self._int_constants())
        except ExprSyntaxError as exc:
            raise error(line, f"{what}: {exc}") from None
        try:
            return evaluate(node, CONST_ONLY)
        except Unresolved as exc:
            raise error(line, f"{what} must be a constant expression; '{exc.name}' is not known yet") from None
        except ZeroDivisionError as exc:
            raise error(line, str(exc)) from None

    # ------------------------------------------------------------------ pass 2 values

    def _env(self, line: Line, seq: int, dot: int) -> Env:
        def symbol(name: str) -> int:
            if name in self.constants:
                value = self.constants[name]
                if isinstance(value, int):
                    return value
                if name in self.resolving:
                    raise error(line, f"'{name}' is defined in terms of itself")
                self.resolving.add(name)
                try:
                    sec = self.sections[value.section]
                    return self._eval(value.node, value.line, value.seq, sec.addr + value.offset)
                finally:
                    self.resolving.discard(name)
            if name in self.labels:
                section, offset, _ = self.labels[name]
                return section.addr + offset
            raise Unresolved(name)

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
                raise error(line, f"no local label '{n}:' {where} this line (for '{n}{direction}')")
            return pick[1].addr + pick[2]

        def location(section: str, offset: int) -> int:
            return self.sections[section].addr + offset

        return Env(symbol, numeric, lambda: dot, location)

    def _eval(self, node: Node, line: Line, seq: int, dot: int) -> int:
        try:
            return evaluate(node, self._env(line, seq, dot))
        except Unresolved as exc:
            raise error(line, f"unknown symbol '{exc.name}'") from None
        except ZeroDivisionError as exc:
            raise error(line, str(exc)) from None
