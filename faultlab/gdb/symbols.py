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


# arch/arm64/kernel/entry.S names its 16 vector entries el{1t,1h,0t}_{64,32}_{sync,irq,fiq,error} (kernel_ventry).
VECTOR_NAMES = [f"{group}_{kind}" for group in ("el1t_64", "el1h_64", "el0t_64", "el0t_32") for kind in ("sync", "irq", "fiq", "error")]


def machine_contents(lab: Lab) -> tuple[list[ElfSection], list[ElfSymbol]]:
    """The code the testbed itself puts in memory, named: the host model's vectors and stubs, the return sentinels.

    Not for a real host (`--host real`), whose vectors are the vmlinux's own.
    """
    machine = lab.machine
    sections: list[ElfSection] = []
    symbols: list[ElfSymbol] = []
    stubs = getattr(lab.kernel, "stubs", None)
    vbar = machine.cpu.read_sysreg("VBAR_EL1")
    if stubs is not None and vbar and not (lab.image is not None and lab.image.in_image(vbar)):
        size = stubs.reread + 8 - vbar  # the 16 entries, then eret, hvc, the fixup's re-read
        sections.append(ElfSection(".vectors", SectionKind.CODE, machine.read(vbar, size), vbar))
        symbols += [ElfSymbol(name, vbar + 0x80 * i, ".vectors", 0x80) for i, name in enumerate(VECTOR_NAMES)]
        symbols += [
            ElfSymbol("host_model_eret", stubs.eret, ".vectors", 4),
            ElfSymbol("host_model_hvc", stubs.hvc, ".vectors", 8),
            ElfSymbol("host_model_fixup_reread", stubs.reread, ".vectors", 8),
        ]
    for name, addr, size in (("faultlab_return", machine.return_sentinel, 8), ("faultlab_user_return", machine.user_return_sentinel, 4)):
        sections.append(ElfSection(f".{name}", SectionKind.CODE, machine.read(addr, size), addr))
        symbols.append(ElfSymbol(name, addr, f".{name}", 4))
    symbols.append(ElfSymbol("faultlab_eret_to_el0", machine.eret_stub, ".faultlab_return", 4))
    return sections, symbols


def write_symbol_file(lab: Lab, path: Path, *, entry: int = 0) -> Path:
    """The lab's assembled images and the testbed's own code pages as one ELF at `path`."""
    sections, symbols = elf_contents(lab.images)
    sections += line_sections(lab.images, [s for s in sections if s.kind is SectionKind.CODE])
    extra_sections, extra_symbols = machine_contents(lab)
    return write_elf(path, sections + extra_sections, symbols + extra_symbols, entry=entry)


def symbols_dir() -> Path:
    """Where symbol files go: one directory per user under the temporary directory, kept after the run."""
    directory = Path(tempfile.gettempdir()) / f"faultlab-gdb-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def symbol_files(lab: Lab, name: str, entry: int, directory: Path | None = None) -> list[Path]:
    """What gdb should load for this lab: the vmlinux (if any), then our ELF (images, vectors, sentinels)."""
    files: list[Path] = []
    if lab.image is not None:
        files.append(Path(lab.image.vmlinux.path).resolve())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "faultlab"
    files.append(write_symbol_file(lab, (directory or symbols_dir()) / f"{safe}.elf", entry=entry))
    return files


def symbolizer(lab: Lab) -> Callable[[int], str]:
    """addr -> 'symbol+0x1c' from our images, then the vmlinux; '' when nothing names it."""
    table = sorted((value, name, image.sizes.get(name, 0)) for image in lab.images for name, value in image.symbols.items())
    table += [(sym.value, sym.name, sym.size) for sym in machine_contents(lab)[1]]
    table.sort()
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
