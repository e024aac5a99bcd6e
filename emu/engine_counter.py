"""How many instructions the current `emu_start` has begun: Unicorn's own count, read in place.

Why: a stage-2 fault resolved inside the TLB-fill hook (emu/machine.py, the lazy
idmap fast path) does not leave `emu_start`, but a run's budget is counted per
stretch between two events, and an idmap is an event. To restart the stretch's
count at the faulting instruction - as the engine's path does when it stops
there and starts again - the machine must know how many instructions the
engine had begun when the fill happened.

Unicorn counts them itself whenever `emu_start` is given a count (which the
machine always does): its count hook adds one per instruction, before the
instruction runs, to a 64-bit field of the engine's private state, and stops
the engine when the field passes the count. The binding does not expose it, so
it is read at the offset where libunicorn 2.1.4 (x86_64 build) keeps it. That
offset is checked once per process on a scratch engine - after runs of known
counts the two fields must hold those counts - and when the check fails (another
Unicorn build) there is no counter and the machine keeps to the engine's path.
"""
from __future__ import annotations

import ctypes
import functools

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc, UcError

# uc_struct.emu_counter / emu_count in libunicorn 2.1.4 (read off hook_count_cb, which
# increments the first and compares it with the second).
_COUNTER_OFFSET = 0x558
_COUNT_OFFSET = 0x560
_B_SELF = (0x14000000).to_bytes(4, "little")  # b . (an endless loop: only the count stops it)


def _fields(uc: Uc) -> tuple[int, int]:
    base = uc._uch.value
    return (ctypes.c_uint64.from_address(base + _COUNTER_OFFSET).value, ctypes.c_uint64.from_address(base + _COUNT_OFFSET).value)


@functools.cache
def offsets_verified() -> bool:
    """Does this libunicorn keep its instruction count where we read it? (Checked on a scratch engine.)"""
    try:
        uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        uc.mem_map(0x10000, 0x1000)
        uc.mem_write(0x10000, _B_SELF)
        for count in (37, 1013):
            uc.emu_start(0x10000, 0x20000, count=count)
            counter, saved = _fields(uc)
            # The hook stops the engine once the counter passes the count: count + 1 hook calls.
            if saved != count or counter != count + 1:
                return False
        return True
    except (UcError, ValueError, AttributeError, TypeError):
        return False


class EngineCounter:
    """Unicorn's instruction counter of one engine (None from `for_engine` when it cannot be read)."""

    def __init__(self, uc: Uc) -> None:
        self._field = ctypes.c_uint64.from_address(uc._uch.value + _COUNTER_OFFSET)

    @classmethod
    def for_engine(cls, uc: Uc) -> "EngineCounter | None":
        return cls(uc) if offsets_verified() else None

    @property
    def begun(self) -> int:
        """Instructions the current emu_start has begun, the one running now included."""
        return self._field.value
