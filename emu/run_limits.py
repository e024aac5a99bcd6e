"""How a run is bounded: an instruction budget, a wall-clock deadline, an event limit, a trace cap.

Apart from the machine because every caller that starts a run (Machine.call/run,
the CLI, scenarios) refuses bad limits the same way, before anything reaches
Unicorn, whose instruction count 0 means "no limit".
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.address_space import MachineError

DEFAULT_BUDGET = 2_000_000
DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_EVENTS = 10_000
DEFAULT_MAX_TRACE = 10_000
# Instructions per emu_start: the wall-clock deadline is checked between two of these, so
# no stretch runs unchecked for long (~10 ms fault-free; a Python code hook per instruction
# would cost far more). Tracing runs a Python hook per instruction: smaller chunks then.
STRETCH_CHUNK = 1_000_000
TRACE_CHUNK = 10_000


class BadRunLimits(MachineError, ValueError):
    """A run asked for with a budget, timeout or limit that cannot bound it (e.g. budget <= 0).

    Unicorn reads an instruction count of 0 as "unlimited", so a zero or negative budget
    must be refused before it reaches emu_start.
    """


@dataclass
class RunLimits:
    budget: int
    deadline: float
    max_events: int
    max_trace: int = DEFAULT_MAX_TRACE
    segments: int = 0


def check_run_limits(budget: int, timeout: float, max_events: int, max_trace: int) -> None:
    """Refuse limits that would not bound a run: Unicorn's count 0 means "no limit"."""
    for name, value in (("budget", budget), ("max_events", max_events), ("max_trace", max_trace)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRunLimits(f"{name} must be an integer, not {value!r}")
        if value <= 0:
            raise BadRunLimits(f"{name} must be positive (got {value})")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise BadRunLimits(f"timeout must be a positive number of seconds (got {timeout!r})")
