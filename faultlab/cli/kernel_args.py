"""Argument helpers shared by `faultlab kernel call` and `faultlab kernel sweep` (one definition each)."""
from __future__ import annotations

from rich.console import Console

from kimage.elf import Vmlinux

from faultlab.kernel.fetch import resolve
from faultlab.kernel.lab import KernelUsageError

HOST_HELP = "the host fault path: the Python model of fault.c (model) or the image's own do_mem_abort (real)"


def say(console: Console, text: str) -> None:
    """Plain text: disassembly like `ldr x4, [x1]` must not be read as rich markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def parse_int(text: str, what: str = "integer") -> int:
    try:
        return int(text, 0)
    except ValueError:
        article = "an" if what[0] in "aeiou" else "a"
        raise KernelUsageError(f"not {article} {what}: {text!r}") from None


def open_vmlinux(spec: str | None) -> Vmlinux:
    return Vmlinux.open(resolve(spec))
