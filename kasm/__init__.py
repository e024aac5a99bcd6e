"""Kernel-style AArch64 assembler: our front end, keystone for plain instructions.

Keystone 0.9.2 alone cannot take kernel assembly: it crashes on `.section`, rejects
numeric local labels, LSE/PAC/BTI mnemonics, and silently drops `.inst` and some
`dc` operations (measured; see docs/facts.md). So everything around the instructions
is ours, and keystone only ever sees one resolved instruction at a time:

* preprocess.py: comments, `;` statement separators (text.py) and a small C
  preprocessor (`#include`, `#define`, `#if`...; `__ASSEMBLY__` is predefined);
* pass 1 (assembler.py) expands `.macro`/`.rept`/`.irp`/`.irpc`/`.if*` (macros.py),
  `.req` aliases and `.equ` constants (symbols.py), and lays every statement out at a
  section offset (layout.py; every instruction is 4 bytes, so no address depends on
  encoding), recording `_asm_extable_*`/USER() annotations (extable.py);
* pass 2 places the sections (.text, other code, .rodata, .data, .bss, then
  `__ex_table`), resolves labels, and encodes each instruction (instructions.py):
  PC-relative ones and what keystone lacks with encode.py, the rest with keystone,
  whose output is then checked with capstone (keystone_backend.py: exactly one 4-byte
  instruction of the same kind and with the same registers), because keystone is
  known to drop or change things silently.

Expressions (expr.py) use C operator precedence (GNU as groups a few operators
differently; parenthesise when mixing `|`/`&` with `+`). Every error is an AsmError
naming the source file and line, including lines that came from macros, `.rept` and
includes.

cache.py (AsmCache) memoises assembly per content (source, options and the
contents of every included file), for callers that assemble the same routine
once per run.
"""
from __future__ import annotations

# The keystone module itself stays reachable as kasm.keystone: tests replace
# keystone.Ks through it to prove the capstone fidelity check catches bad output.
import keystone  # noqa: F401

from kasm.assembler import assemble, assemble_file
from kasm.cache import AsmCache
from kasm.expr import ExprSyntaxError, Node, evaluate, parse_expr
from kasm.image import Image, UnknownSymbolError
from kasm.layout import NOP
from kasm.source import AsmError, SourceLoc

__all__ = [
    "AsmCache", "AsmError", "ExprSyntaxError", "Image", "NOP", "Node", "SourceLoc", "UnknownSymbolError",
    "assemble", "assemble_file", "evaluate", "parse_expr",
]
