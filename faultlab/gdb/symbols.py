"""Symbols for gdb: our assembled images as an ELF file, a real kernel's vmlinux as it is.

A lab's routines are assembled in memory (kasm `Image`s); gdb needs a file.
Each image's sections go into one ELF (kimage/elf_writer.py) at the addresses
they were loaded at, with the image's global symbols as functions and the
source lines as DWARF (faultlab/gdb/dwarf_lines.py), so `break full_name_hash`,
`x/8i $pc` and `list` work. A vmlinux is already such a file, linked at the
addresses the lab loads it at (kimage/loaded.py), so it is served as is.
"""
from __future__ import annotations

import bisect
import os
import tempfile
from pathlib import Path
from typing import Callable

from kasm import Image
from kimage.elf_writer import ElfSection, ElfSymbol, SectionKind, SymbolKind, write_elf

from faultlab.gdb.dwarf_lines import line_sections
from faultlab.lab import Lab


def _section_kind(name: str) -> SectionKind:
    if name.startswith(".text") or name.endswith(".text"):
        return SectionKind.CODE
    if name.startswith((".data", ".bss")):
        return SectionKind.DATA
    return SectionKind.RODATA


def elf_contents(images: list[Image]) -> tuple[list[ElfSection], list[ElfSymbol]]:
    """Sections (renamed `.text.1`, ... after the first image) and global symbols of `images`."""
    sections: list[ElfSection] = []
    symbols: list[ElfSymbol] = []
    for number, image in enumerate(images):
        ranges = []
        for name, (addr, size) in sorted(image.sections.items(), key=lambda item: item[1][0]):
            if size <= 0:
                continue
            elf_name = name if number == 0 else f"{name}.{number}"
            data = image.data[addr - image.base : addr - image.base + size]
            sections.append(ElfSection(elf_name, _section_kind(name), data, addr))
            ranges.append((addr, addr + size, elf_name, _section_kind(name)))
        for name, value in image.symbols.items():
            home = next((r for r in ranges if r[0] <= value < r[1]), None)
            if home is None:
                continue  # an absolute symbol (`.set`) or one at a section's very end: nothing to name
            kind = SymbolKind.FUNC if home[3] is SectionKind.CODE else SymbolKind.OBJECT
            symbols.append(ElfSymbol(name, value, home[2], image.sizes.get(name, 0), kind))
    return sections, symbols


def write_symbol_file(lab: Lab, path: Path, *, entry: int = 0) -> Path | None:
    """The lab's assembled images as one ELF at `path` (None when the lab assembled nothing)."""
    if not lab.images:
        return None
    sections, symbols = elf_contents(lab.images)
    sections += line_sections(lab.images, [s for s in sections if s.kind is SectionKind.CODE])
    return write_elf(path, sections, symbols, entry=entry)


def symbols_dir() -> Path:
    """Where symbol files go: one directory per user under the temporary directory, kept after the run."""
    directory = Path(tempfile.gettempdir()) / f"faultlab-gdb-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def symbol_files(lab: Lab, name: str, entry: int, directory: Path | None = None) -> list[Path]:
    """What gdb should load for this lab: the vmlinux (if any), then our images' ELF (if any)."""
    files: list[Path] = []
    if lab.image is not None:
        files.append(Path(lab.image.vmlinux.path).resolve())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "faultlab"
    written = write_symbol_file(lab, (directory or symbols_dir()) / f"{safe}.elf", entry=entry)
    if written is not None:
        files.append(written)
    return files


def symbolizer(lab: Lab) -> Callable[[int], str]:
    """addr -> 'symbol+0x1c' from our images, then the vmlinux; '' when nothing names it."""
    table = sorted((value, name, image.sizes.get(name, 0)) for image in lab.images for name, value in image.symbols.items())
    values = [value for value, _, _ in table]

    def name_of(addr: int) -> str:
        i = bisect.bisect_right(values, addr) - 1
        if i >= 0:
            value, name, size = table[i]
            if addr < value + max(size, 1) or (size == 0 and addr - value < 0x1000):
                return name if addr == value else f"{name}+{addr - value:#x}"
        if lab.image is not None and lab.image.owns(addr):
            return lab.image.symbolize(addr)
        return ""

    return name_of
