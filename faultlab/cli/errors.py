"""Exit codes and the usage error of every `faultlab` command (one definition for main, sweep and kernel).

0 success; 1 an expectation or a sweep case failed; 2 bad input (unreadable
or invalid scenario, bad arguments, unknown routine, symbol or kernel);
3 internal error (a bug in faultlab).
"""
from __future__ import annotations

from emu.run_limits import DEFAULT_MAX_TRACE

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


def trace_limit(args) -> int:
    """The trace's step cap from `--trace`/`--trace-limit` (`run` and `kernel call` alike)."""
    if args.trace_limit is not None:
        if args.trace_limit < 1:
            raise UsageError(f"--trace-limit {args.trace_limit}: at least 1 step")
        if not args.trace:
            raise UsageError("--trace-limit needs --trace")
    return args.trace_limit or DEFAULT_MAX_TRACE
