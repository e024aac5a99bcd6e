"""A minimal ELF64 writer: loadable sections at their virtual addresses, a symbol table, optional debug sections.

Why our own: pyelftools only reads ELF. gdb needs an executable it can
`file`/`symbol-file` to name our assembled routines (`break full_name_hash`,
`x/4i $pc` with `<full_name_hash+28>`); the bytes come from the target anyway.
The layout follows the System V gABI ("ELF Header", "Sections", "Symbol
Table", "Program Header") and its AArch64 supplement (EM_AARCH64 = 183, `$x`
mapping symbols marking A64 code): one PT_LOAD per allocated section, whose
file offset is congruent to its address modulo the page size, then the
non-allocated sections (.debug_*), .symtab, .strtab, .shstrtab and the section
header table.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from pathlib import Path

EM_AARCH64 = 183
ET_EXEC = 2
PT_LOAD = 1
PF_X, PF_W, PF_R = 1, 2, 4
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 1, 2, 3
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STB_LOCAL, STB_GLOBAL = 0, 1
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
PAGE = 0x1000

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")


class SectionKind(enum.Enum):
    CODE = "code"  # r-x
    RODATA = "rodata"  # r--
    DATA = "data"  # rw-
    DEBUG = "debug"  # not loaded


@dataclass(frozen=True)
class ElfSection:
    name: str
    kind: SectionKind
    data: bytes
    addr: int = 0


class SymbolKind(enum.Enum):
    FUNC = STT_FUNC
    OBJECT = STT_OBJECT
    LABEL = STT_NOTYPE


@dataclass(frozen=True)
class ElfSymbol:
    name: str
    value: int
    section: str  # the ElfSection it points into
    size: int = 0
    kind: SymbolKind = SymbolKind.FUNC
    local: bool = False


class ElfWriteError(ValueError):
    """Sections or symbols that cannot form an ELF file (a symbol naming no section, overlapping sections)."""


class _Strings:
    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self._at: dict[str, int] = {"": 0}

    def add(self, text: str) -> int:
        if text not in self._at:
            self._at[text] = len(self.data)
            self.data += text.encode() + b"\0"
        return self._at[text]


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def build_elf(sections: list[ElfSection], symbols: list[ElfSymbol], *, entry: int = 0) -> bytes:
    """The bytes of an ET_EXEC AArch64 ELF64 holding `sections` and `symbols` (plus `$x` at each code section)."""
    loaded = sorted((s for s in sections if s.kind is not SectionKind.DEBUG), key=lambda s: s.addr)
    for a, b in zip(loaded, loaded[1:]):
        if a.addr + len(a.data) > b.addr:
            raise ElfWriteError(f"sections {a.name} and {b.name} overlap")
    ordered = loaded + [s for s in sections if s.kind is SectionKind.DEBUG]
    index = {s.name: i + 1 for i, s in enumerate(ordered)}  # 0 is the null section
    if len(index) != len(ordered):
        raise ElfWriteError("two sections with one name")

    # Layout: header, program headers, section contents, symbols, strings, section headers.
    offset = _EHDR.size + _PHDR.size * len(loaded)
    placed: list[tuple[ElfSection, int]] = []
    for s in ordered:
        if s.kind is not SectionKind.DEBUG:
            offset += (s.addr - offset) % PAGE  # file offset == address (mod page): a loadable PT_LOAD
        placed.append((s, offset))
        offset += len(s.data)

    strtab, shstrtab = _Strings(), _Strings()
    code_marks = [ElfSymbol("$x", s.addr, s.name, kind=SymbolKind.LABEL, local=True) for s in loaded if s.kind is SectionKind.CODE]
    entries = sorted([*code_marks, *symbols], key=lambda sym: (not sym.local, sym.value))
    symtab = bytearray(_SYM.size)  # the null symbol
    first_global = 1 + sum(1 for sym in entries if sym.local)
    for sym in entries:
        if sym.section not in index:
            raise ElfWriteError(f"symbol {sym.name} is in no section ({sym.section!r})")
        info = ((STB_LOCAL if sym.local else STB_GLOBAL) << 4) | sym.kind.value
        symtab += _SYM.pack(strtab.add(sym.name), info, 0, index[sym.section], sym.value, sym.size)

    tables = [(".symtab", SHT_SYMTAB, bytes(symtab)), (".strtab", SHT_STRTAB, bytes(strtab.data))]
    names = [shstrtab.add(s.name) for s in ordered] + [shstrtab.add(name) for name, _, _ in tables]
    shstrtab_name = shstrtab.add(".shstrtab")
    tables.append((".shstrtab", SHT_STRTAB, bytes(shstrtab.data)))
    names.append(shstrtab_name)

    body = bytearray()
    phdrs = bytearray()
    shdrs = bytearray(_SHDR.size)  # the null section
    start = _EHDR.size + _PHDR.size * len(loaded)
    for (s, off), name in zip(placed, names):
        body += bytes(off - start - len(body)) + s.data
        flags = {SectionKind.CODE: SHF_ALLOC | SHF_EXECINSTR, SectionKind.RODATA: SHF_ALLOC, SectionKind.DATA: SHF_ALLOC | SHF_WRITE}.get(s.kind, 0)
        shdrs += _SHDR.pack(name, SHT_PROGBITS, flags, s.addr, off, len(s.data), 0, 0, 4 if s.kind is SectionKind.CODE else 1, 0)
        if s.kind is not SectionKind.DEBUG:
            pflags = PF_R | (PF_X if s.kind is SectionKind.CODE else 0) | (PF_W if s.kind is SectionKind.DATA else 0)
            phdrs += _PHDR.pack(PT_LOAD, pflags, off, s.addr, s.addr, len(s.data), len(s.data), PAGE)
    strtab_index = len(ordered) + 2
    for (name, kind, data), name_off in zip(tables, names[len(ordered) :]):
        off = start + _align(len(body), 8)
        body += bytes(off - start - len(body)) + data
        link, info, entsize, align = (strtab_index, first_global, _SYM.size, 8) if kind == SHT_SYMTAB else (0, 0, 0, 1)
        shdrs += _SHDR.pack(name_off, kind, 0, 0, off, len(data), link, info, align, entsize)
    shoff = start + _align(len(body), 8)
    body += bytes(shoff - start - len(body))
    ident = b"\x7fELF" + bytes((2, 1, 1, 0)) + bytes(8)  # ELFCLASS64, little-endian, EV_CURRENT, SysV ABI
    shnum = 1 + len(ordered) + len(tables)
    header = _EHDR.pack(ident, ET_EXEC, EM_AARCH64, 1, entry, _EHDR.size, shoff, 0, _EHDR.size, _PHDR.size, len(loaded), _SHDR.size, shnum, shnum - 1)
    return header + bytes(phdrs) + bytes(body) + bytes(shdrs)


def write_elf(path: Path, sections: list[ElfSection], symbols: list[ElfSymbol], *, entry: int = 0) -> Path:
    path = Path(path)
    path.write_bytes(build_elf(sections, symbols, entry=entry))
    return path
