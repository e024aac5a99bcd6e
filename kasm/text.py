"""Lexical helpers over assembly text: comments, statement and argument splitting, identifiers.

They know about string literals and brackets but nothing about what a statement means,
so the C preprocessor, the directives and the instruction encoders all share them.
"""
from __future__ import annotations

import re
from typing import Callable

from kasm.expr import ExprSyntaxError, unescape

IDENT = re.compile(r"[A-Za-z_.$][\w.$]*")
REGISTER = re.compile(r"^(?:[xwbhsdqvXWBHSDQV]\d{1,2}|[xwXW]zr|w?sp|WSP|SP)$")
_WORDISH = re.compile(r"0[xX][0-9a-fA-F]+|\d[\w]*|[A-Za-z_.$][\w.$]*")
_STRING = re.compile(r'\s*"((?:\\.|[^"\\])*)"\s*(,|$)')


def strip_comments(text: str) -> str:
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


def split_statements(text: str) -> list[str]:
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


def split_top_level(text: str, *, strings: bool) -> list[str]:
    """Split at commas outside brackets (and, when `strings`, outside "..." literals)."""
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
        elif ch == '"' and strings:
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


def split_args(text: str) -> list[str]:
    """Directive and macro arguments: top-level commas outside strings and brackets."""
    return split_top_level(text, strings=True)


def parse_strings(text: str) -> list[bytes]:
    """`"a", "b\\n"` -> [b"a", b"b\\n"]."""
    strings, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _STRING.match(text, pos)
        if not m:
            raise ExprSyntaxError(f"expected a quoted string at '{text[pos:]}'")
        strings.append(unescape(m.group(1)).encode("latin-1"))
        pos = m.end()
    return strings


def replace_identifiers(text: str, replace: Callable[[str], str | None]) -> str:
    """Apply `replace` to every identifier token (numbers are skipped whole)."""

    def sub(m: re.Match[str]) -> str:
        word = m.group(0)
        if word[0].isdigit():
            return word
        new = replace(word)
        return word if new is None else new

    return _WORDISH.sub(sub, text)


def fmt_imm(value: int) -> str:
    return f"-{-value:#x}" if value < 0 else f"{value:#x}"
