"""Small scenario texts the CLI and scenario tests share (one copy, so both test the same input)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INLINE = ROOT / "scenarios" / "inline_zeropad.toml"

# The smallest valid scenario: an inline routine returning 1, a two-page buffer whose second page the guest owns.
MINIMAL_SCENARIO = """\
name = "t"

[routine]
asm = "SYM_FUNC_START(f)\\n\\tmov x0, #1\\n\\tret\\nSYM_FUNC_END(f)\\n"
symbol = "f"

[[buffer]]
name = "buf"
pages = 2
protect = [1]
"""
