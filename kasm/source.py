"""Where assembly text came from, and the error that names that place.

Every statement carries its file, line and the macro/.rept chain it came through, so
any error found later (even in pass 2) can point at the line a human wrote.
"""
from __future__ import annotations

from dataclasses import dataclass


class AsmError(Exception):
    """An error in assembly source, located at a file and a 1-based line."""

    def __init__(self, file: str, line: int, message: str):
        super().__init__(file, line, message)
        self.file = file
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class SourceLoc:
    """Where a statement came from: file, 1-based line, and the statement's text."""

    file: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


@dataclass(frozen=True)
class Line:
    """One statement-bearing line: where it is, its text, and the macro chain it came through."""

    loc: SourceLoc
    text: str
    origin: tuple[str, ...] = ()


def error(line: Line, message: str) -> AsmError:
    """An AsmError at `line`, naming the macros/.rept bodies it was expanded from."""
    if line.origin:
        message = f"{message} ({'; '.join(reversed(line.origin))})"
    return AsmError(line.loc.file, line.loc.line, message)
