"""Source lines for gdb: a minimal DWARF 4 line table for our assembled images.

kasm records, for every instruction it emits, the file and line it came from
(`Image.lines`). gdb finds line tables through compilation units, so each
image's code section becomes one unit in `.debug_info` (a DW_TAG_compile_unit
with DW_AT_stmt_list, low_pc and high_pc; its shape in `.debug_abbrev`) whose
line program in `.debug_line` sets the address once and then, row by row,
advances the line and the address with standard opcodes only (DWARF 4
specification, sections 6.2 "Line Number Information" and 7.5 "Format of
Debugging Information"). With it `break word_at_a_time.S:116`, `list` and
source-level `step` work on our routines.
"""
from __future__ import annotations

import os
import posixpath

from kasm import Image
from kimage.elf_writer import ElfSection, SectionKind

DW_TAG_compile_unit = 0x11
DW_AT_name, DW_AT_stmt_list, DW_AT_low_pc, DW_AT_high_pc, DW_AT_language, DW_AT_comp_dir, DW_AT_producer = 0x03, 0x10, 0x11, 0x12, 0x13, 0x1B, 0x25
DW_FORM_addr, DW_FORM_data2, DW_FORM_data8, DW_FORM_string, DW_FORM_sec_offset = 0x01, 0x05, 0x07, 0x08, 0x17
DW_LANG_Mips_Assembler = 0x8001  # the language code assemblers use for their units
DW_LNS_copy, DW_LNS_advance_pc, DW_LNS_advance_line, DW_LNS_set_file = 1, 2, 3, 4
DW_LNE_end_sequence, DW_LNE_set_address = 1, 2
_OPCODE_LENGTHS = bytes((0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1))  # operands of standard opcodes 1..12
INSN = 4


def uleb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sleb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)


def _abbrev() -> bytes:
    attrs = [
        (DW_AT_name, DW_FORM_string),
        (DW_AT_comp_dir, DW_FORM_string),
        (DW_AT_producer, DW_FORM_string),
        (DW_AT_language, DW_FORM_data2),
        (DW_AT_stmt_list, DW_FORM_sec_offset),
        (DW_AT_low_pc, DW_FORM_addr),
        (DW_AT_high_pc, DW_FORM_data8),  # DWARF 4: a constant high_pc is the length
    ]
    body = uleb128(1) + uleb128(DW_TAG_compile_unit) + b"\0"  # no children
    for at, form in attrs:
        body += uleb128(at) + uleb128(form)
    return body + b"\0\0" + b"\0"


def _unit(name: str, comp_dir: str, line_offset: int, low: int, size: int) -> bytes:
    die = uleb128(1) + name.encode() + b"\0" + comp_dir.encode() + b"\0" + b"pkvm-faultlab kasm\0"
    die += DW_LANG_Mips_Assembler.to_bytes(2, "little") + line_offset.to_bytes(4, "little")
    die += low.to_bytes(8, "little") + size.to_bytes(8, "little")
    rest = (4).to_bytes(2, "little") + (0).to_bytes(4, "little") + bytes((8,)) + die  # version, abbrev offset, address size
    return len(rest).to_bytes(4, "little") + rest


def _line_program(rows: list[tuple[int, str, int]], end: int) -> bytes:
    files = list(dict.fromkeys(f for _, f, _ in rows))
    # Each file as directory + name: gdb then shows `word_at_a_time.S:116` and finds the source in the directory.
    dirs = [d for d in dict.fromkeys(posixpath.dirname(f) for f in files) if d]
    header = bytes((INSN, 1, 1)) + (-5).to_bytes(1, "little", signed=True) + bytes((14, 13)) + _OPCODE_LENGTHS
    header += b"".join(d.encode() + b"\0" for d in dirs) + b"\0"
    for f in files:
        where = posixpath.dirname(f)
        header += posixpath.basename(f).encode() + b"\0" + uleb128(dirs.index(where) + 1 if where else 0) + uleb128(0) + uleb128(0)
    header += b"\0"
    program = bytearray(b"\0" + uleb128(9) + bytes((DW_LNE_set_address,)) + rows[0][0].to_bytes(8, "little"))
    addr, file_no, line = rows[0][0], 1, 1
    for at, f, ln in rows:
        if files.index(f) + 1 != file_no:
            file_no = files.index(f) + 1
            program += bytes((DW_LNS_set_file,)) + uleb128(file_no)
        if ln != line:
            program += bytes((DW_LNS_advance_line,)) + sleb128(ln - line)
            line = ln
        if at != addr:
            program += bytes((DW_LNS_advance_pc,)) + uleb128((at - addr) // INSN)
            addr = at
        program.append(DW_LNS_copy)
    if end > addr:
        program += bytes((DW_LNS_advance_pc,)) + uleb128((end - addr) // INSN)
    program += b"\0" + uleb128(1) + bytes((DW_LNE_end_sequence,))
    rest = (4).to_bytes(2, "little") + len(header).to_bytes(4, "little") + header + bytes(program)
    return len(rest).to_bytes(4, "little") + rest


def _relative(path: str, comp_dir: str) -> str:
    """A source path as a compiler records it: relative to the directory it ran in when under it."""
    if comp_dir and posixpath.isabs(path) and path.startswith(comp_dir.rstrip("/") + "/"):
        return path[len(comp_dir.rstrip("/")) + 1 :]
    return path


def line_sections(images: list[Image], code: list[ElfSection], comp_dir: str | None = None) -> list[ElfSection]:
    """.debug_abbrev, .debug_info and .debug_line for the code sections of `images` (none without lines).

    Paths under `comp_dir` (default: the current directory, as a compiler's DW_AT_comp_dir)
    are recorded relative to it, so gdb shows `guest_asm/word_at_a_time.S:116`.
    """
    comp_dir = os.getcwd() if comp_dir is None else comp_dir
    info, lines = bytearray(), bytearray()
    for section in code:
        end = section.addr + len(section.data)
        rows = sorted(
            (addr, _relative(loc.file, comp_dir), loc.line)
            for image in images
            for addr, loc in image.lines.items()
            if section.addr <= addr < end and addr % INSN == 0
        )
        if not rows:
            continue
        info += _unit(rows[0][1], comp_dir, len(lines), section.addr, len(section.data))
        lines += _line_program(rows, end)
    if not info:
        return []
    return [
        ElfSection(".debug_abbrev", SectionKind.DEBUG, _abbrev()),
        ElfSection(".debug_info", SectionKind.DEBUG, bytes(info)),
        ElfSection(".debug_line", SectionKind.DEBUG, bytes(lines)),
    ]
