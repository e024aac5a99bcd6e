"""A vmlinux's symbol table: FUNC/OBJECT/NOTYPE symbols, lookup by name and by address (%pS).

Kept as parallel lists rather than one object per symbol because a debug vmlinux has ~260k
symbols and the table is cached and reloaded on every open. Read from `.symtab` by
`read_symbols`; kimage/elf.py decides where that section is.

Source: ELF64 gABI "Symbol Table" (Elf64_Sym layout, STT_*/STB_* values).
"""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

from kimage.version import VmlinuxError

STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
STB_LOCAL = 0
SYM_ENTRY = struct.Struct("<IBBHQQ")  # Elf64_Sym: st_name, st_info, st_other, st_shndx, st_value, st_size


@dataclass(frozen=True)
class Symbol:
    name: str
    addr: int
    size: int
    kind: str  # "func" | "object" | "notype"
    local: bool


class SymbolTable:
    """All FUNC/OBJECT/NOTYPE symbols, kept as parallel lists (260k symbols load in ~0.1 s)."""

    _KINDS = {STT_NOTYPE: "notype", STT_OBJECT: "object", STT_FUNC: "func"}

    def __init__(self, names: list[str], addrs: list[int], sizes: list[int], info: bytes) -> None:
        self.names, self.addrs, self.sizes, self.info = names, addrs, sizes, info
        self._by_name: dict[str, int] = {}
        for i, name in enumerate(names):
            # Prefer a global definition; among locals of one name the first one wins.
            prev = self._by_name.get(name)
            if prev is None or (self._local(prev) and not self._local(i)):
                self._by_name[name] = i
        funcs = sorted((addrs[i], i) for i in range(len(names)) if info[i] & 0xF == STT_FUNC)
        self._func_addrs = [a for a, _ in funcs]
        self._func_index = [i for _, i in funcs]

    def _local(self, i: int) -> bool:
        return self.info[i] >> 4 == STB_LOCAL

    def _symbol(self, i: int) -> Symbol:
        return Symbol(self.names[i], self.addrs[i], self.sizes[i], self._KINDS[self.info[i] & 0xF], self._local(i))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Symbol | None:
        i = self._by_name.get(name)
        return None if i is None else self._symbol(i)

    def lookup(self, name: str) -> Symbol:
        sym = self.get(name)
        if sym is None:
            raise VmlinuxError(f"unknown symbol {name!r}")
        return sym

    def function_at(self, addr: int) -> Symbol | None:
        """The function whose [addr, addr + size) holds `addr` (aliases share a start address)."""
        pos = bisect.bisect_right(self._func_addrs, addr) - 1
        start = self._func_addrs[pos] if pos >= 0 else None
        while pos >= 0 and self._func_addrs[pos] == start:
            sym = self._symbol(self._func_index[pos])
            if addr < sym.addr + max(sym.size, 1):
                return sym
            pos -= 1
        return None

    def functions_in(self, start: int, end: int) -> list[Symbol]:
        """Function symbols starting in [start, end), by address."""
        lo = bisect.bisect_left(self._func_addrs, start)
        hi = bisect.bisect_left(self._func_addrs, end)
        return [self._symbol(i) for i in self._func_index[lo:hi]]

    def symbolize(self, addr: int) -> str:
        """'name+0xoff/0xsize' as the kernel's %pS prints it, or the bare address."""
        sym = self.function_at(addr)
        if sym is None:
            return f"{addr:#x}"
        return f"{sym.name}+{addr - sym.addr:#x}/{sym.size:#x}"


def read_symbols(data: bytes, strtab: bytes) -> tuple[list[str], list[int], list[int], bytearray]:
    """FUNC/OBJECT/NOTYPE symbols with an address, minus mapping symbols ($x, $d)."""
    names: list[str] = []
    addrs: list[int] = []
    sizes: list[int] = []
    info = bytearray()
    for name_off, st_info, _other, shndx, value, size in SYM_ENTRY.iter_unpack(data):
        if st_info & 0xF > STT_FUNC or not value or shndx == 0 or not name_off:
            continue
        end = strtab.index(b"\0", name_off)
        if strtab[name_off] == 0x24:  # '$': AArch64 mapping symbols
            continue
        names.append(strtab[name_off:end].decode("utf-8", "replace"))
        addrs.append(value)
        sizes.append(size)
        info.append(st_info)
    return names, addrs, sizes, info
