"""Architectural constants of the AArch64 machine this project models (4 KiB granule, 64-bit registers).

The project's one CPU feature set is documented in docs/architecture.md
("CPU features"); the values here do not depend on it.
"""
from __future__ import annotations

MASK64 = (1 << 64) - 1

# Arm ARM D8.2 (translation granule): the project uses the 4 KiB granule, as Debian's arm64 kernels do.
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)


def u64(value: int) -> int:
    """`value` as the 64-bit register pattern the hardware holds (negative ints wrap)."""
    return value & MASK64


def s64(value: int) -> int:
    """A 64-bit register pattern read as a signed value (errnos come back this way in x0/x1)."""
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value
