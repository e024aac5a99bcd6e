"""Assembler expressions: parse to a small node tree, evaluate against a symbol context.

Expressions use C operator precedence (GNU as groups a few operators differently;
parenthesise when mixing `|`/`&` with `+`). Parsing and evaluation are separate
because pass 1 parses every expression once, and only pass 2 knows label addresses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

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


class Unresolved(Exception):
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
            return ("num", ord(unescape(body)[0]))
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
class Env:
    """How names, numeric local labels, `.` and fixed locations get their values."""

    symbol: Callable[[str], int]
    numeric: Callable[[int, str], int]
    dot: Callable[[], int]
    location: Callable[[str, int], int]


def evaluate(node: Node, env: Env) -> int:
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


def bind(node: Node, constants: dict[str, int]) -> Node:
    """Replace names of already-known integer constants (positional `.set` semantics)."""
    kind = node[0]
    if kind == "sym" and isinstance(constants.get(node[1]), int):
        return ("num", constants[node[1]])
    if kind == "un":
        return ("un", node[1], bind(node[2], constants))
    if kind == "bin":
        return ("bin", node[1], bind(node[2], constants), bind(node[3], constants))
    return node


def _not_constant(name: str) -> int:
    raise Unresolved(name, "not a constant")


# Where only constants are allowed (cpp #if, .rept counts, .if): every name is unresolved.
CONST_ONLY = Env(
    _not_constant,
    lambda n, d: _not_constant(f"{n}{d}"),
    lambda: _not_constant("."),
    lambda section, offset: _not_constant("<location>"),
)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", '"': '"', "'": "'", "a": "\a", "e": "\x1b"}


def unescape(body: str) -> str:
    """Resolve GNU as backslash escapes in a character or string literal's body."""
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
