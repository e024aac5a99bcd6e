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


# Characters that end a line for str.splitlines() or a terminal, or drive one (C0 controls but tab,
# DEL, NEL, the Unicode line and paragraph separators): shown escaped, as Python writes them.
_ESCAPES = str.maketrans({c: repr(c)[1:-1] for c in [*map(chr, range(32)), "\x7f", "\x85", "\u2028", "\u2029"] if c != "\t"})


def one_line(text: str) -> str:
    """`text` as one line of output. An error message may quote the user's input (an assembler
    expression, a TOML value), and a form feed or vertical tab in it would break the one-line
    error in two (found by the fuzz test: `.rept 300<FF>nop`)."""
    return text.translate(_ESCAPES)


def trace_limit(args) -> int:
    """The trace's step cap from `--trace`/`--trace-limit` (`run` and `kernel call` alike)."""
    if args.trace_limit is not None:
        if args.trace_limit < 1:
            raise UsageError(f"--trace-limit {args.trace_limit}: at least 1 step")
        if not args.trace:
            raise UsageError("--trace-limit needs --trace")
    return args.trace_limit or DEFAULT_MAX_TRACE
