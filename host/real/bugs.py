"""The image's `__bug_table`: which `brk #0x800` is a WARN (execution continues) and which a BUG.

arm64 emits BUG()/WARN() as `brk #0x800` plus a `struct bug_entry` (12 bytes on
both Debian kernels: s32 bug_addr_disp, s32 file_disp, u16 line, u16 flags;
both displacements relative to their own field). `report_bug()` finds the
entry for the trapping PC; flag bit 0 (BUGFLAG_WARNING) makes it a warning,
after which the kernel skips the brk and carries on.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from kimage.loaded import LoadedKernel

from host.real.printk import read_cstring

BUG_BRK_IMM = 0x800
BUGFLAG_WARNING = 1 << 0
_ENTRY = struct.Struct("<iiHH")


@dataclass(frozen=True)
class BugSite:
    addr: int
    file: str
    line: int
    flags: int

    @property
    def warning(self) -> bool:
        return bool(self.flags & BUGFLAG_WARNING)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class BugTable:
    """Lookup of `__bug_table` by trapping PC (read once, lazily)."""

    def __init__(self, kernel: LoadedKernel, entry_size: int) -> None:
        self._kernel = kernel
        self._entry_size = entry_size
        self._by_addr: dict[int, tuple[int, int, int, int]] | None = None

    def _load(self) -> dict[int, tuple[int, int, int, int]]:
        k = self._kernel
        start, stop = k.resolve("__start___bug_table"), k.resolve("__stop___bug_table")
        data = k.machine.read(start, stop - start)
        table = {}
        for off in range(0, len(data) - self._entry_size + 1, self._entry_size):
            addr_disp, file_disp, line, flags = _ENTRY.unpack_from(data, off)
            entry = start + off
            table[(entry + addr_disp) & (2**64 - 1)] = (entry + 4 + file_disp, line, flags, entry)
        return table

    def sites(self) -> list[BugSite]:
        """Every BUG()/WARN() site of the image, in address order."""
        if self._by_addr is None:
            self._by_addr = self._load()
        return [s for s in map(self.find, sorted(self._by_addr)) if s is not None]

    def find(self, pc: int) -> BugSite | None:
        if self._by_addr is None:
            self._by_addr = self._load()
        found = self._by_addr.get(pc)
        if found is None:
            return None
        file_va, line, flags, _ = found
        file = read_cstring(self._kernel.machine.read, file_va, 200) if file_va else "?"
        return BugSite(pc, file, line, flags)
