"""Render a kernel printk call (format string + AAPCS64 variadic arguments) as text.

The console is a boundary: `_printk`, `__warn_printk` and friends never run.
What they were asked to print is the kernel's own account of the fault (the
"Unable to handle kernel ... at virtual address ..." line, a WARN's reason),
so the stub renders it from the format string in the image and the argument
registers x1..x7, then the caller's stack (AAPCS64 passes variadic integer
arguments like named ones). Only the conversions the fault path uses are
rendered faithfully; `%p` extensions print the raw pointer, `%pS` a symbol.
"""
from __future__ import annotations

import re
from typing import Callable

MASK64 = (1 << 64) - 1
KERN_SOH = "\x01"
MAX_STRING = 512

_SPEC = re.compile(r"%([-+ #0]*)(\d+|\*)?(?:\.(\d+|\*))?(hh|h|ll|l|z|t|j)?([diouxXcsp%])")
# %p extensions (lib/vsprintf.c): the letters after 'p' belong to the conversion.
_PEXT = re.compile(r"[A-Za-z0-9]*")


def read_cstring(read: Callable[[int, int], bytes], va: int, limit: int = MAX_STRING) -> str:
    """A NUL-terminated string at `va` (bytes past a fault or `limit` are dropped)."""
    out = bytearray()
    while len(out) < limit:
        try:
            chunk = read(va + len(out), 64)
        except Exception:  # an unmapped argument: print what we have, as vsprintf would print "(efault)"
            return out.decode(errors="replace") + "(efault)"
        end = chunk.find(b"\0")
        if end >= 0:
            out += chunk[:end]
            break
        out += chunk
    return out.decode(errors="replace")


def strip_level(text: str) -> tuple[str | None, str]:
    """Split KERN_<LEVEL> ("\\x01" + digit/letter) off the front: (level, text)."""
    level = None
    while text.startswith(KERN_SOH) and len(text) >= 2:
        level, text = text[1], text[2:]
    return level, text


def vsprintf(fmt: str, args: Callable[[int], int], read: Callable[[int, int], bytes], symbolize: Callable[[int], str]) -> str:
    """Format `fmt` with the n-th variadic argument given by `args(n)` (a 64-bit register value)."""
    out: list[str] = []
    n = 0
    pos = 0
    while True:
        m = _SPEC.search(fmt, pos)
        if m is None:
            out.append(fmt[pos:])
            return "".join(out)
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, length, conv = m.groups()
        if conv == "%":
            out.append("%")
            continue
        if width == "*":
            width, n = str(args(n) & 0xFFFFFFFF), n + 1
        if prec == "*":
            prec, n = str(args(n) & 0xFFFFFFFF), n + 1
        value = args(n) & MASK64
        n += 1
        if conv == "s":
            text = read_cstring(read, value) if value else "(null)"
            if prec:
                text = text[: int(prec)]
        elif conv == "c":
            text = chr(value & 0xFF)
        elif conv == "p":
            ext = _PEXT.match(fmt, pos).group(0)
            pos += len(ext)
            text = symbolize(value) if ext[:1] in ("S", "s", "B") else f"{value:016x}"
        else:
            if length not in ("l", "ll", "z", "t", "j"):
                value &= 0xFFFFFFFF
                signed_value = value - (1 << 32) if value >> 31 else value
            else:
                signed_value = value - (1 << 64) if value >> 63 else value
            if conv in "di":
                text = str(signed_value)
            elif conv == "u":
                text = str(value)
            elif conv == "o":
                text = f"{value:o}"
            else:
                text = f"{value:x}" if conv == "x" else f"{value:X}"
                if "#" in flags and value:
                    text = "0x" + text
        if width:
            w = int(width)
            if "-" in flags:
                text = text.ljust(w)
            elif "0" in flags and conv not in "sc":
                text = text.rjust(w, "0")
            else:
                text = text.rjust(w)
        out.append(text)
