"""`.rela.dyn` of a vmlinux: counted when parsed (`summarise_rela`) and applied when the image is read (`apply_rela`).

The emulator loads the kernel at its link address (no KASLR), so applying relocations is what
the kernel's own relocate_kernel() does with a zero offset. Kept out of kimage/elf.py because
it is one job (reading and writing relocation records) with its own ELF vocabulary.

Source: AArch64 ELF ABI "Dynamic relocations" (R_AARCH64_*).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from kimage.symbols import SYM_ENTRY
from kimage.version import VmlinuxError

R_AARCH64_NONE = 0
R_AARCH64_ABS64 = 257
R_AARCH64_GLOB_DAT = 1025
R_AARCH64_RELATIVE = 1027
_RELA = struct.Struct("<QQq")


@dataclass(frozen=True)
class RelocationSummary:
    relative: int  # R_AARCH64_RELATIVE entries of .rela.dyn
    already_in_place: int  # how many of them the file already holds (7.x links with them applied)
    symbolic: int  # ABS64 / GLOB_DAT against symbols
    relr: int  # size of .relr.dyn in words (implicit addends: already in place)


def summarise_rela(f, rela: tuple[int, int], file_bytes) -> tuple[int, int, int]:
    offset, size = rela
    if not size:
        return (0, 0, 0)
    f.seek(offset)
    relative = in_place = symbolic = 0
    for r_offset, r_info, addend in _RELA.iter_unpack(f.read(size)):
        typ = r_info & 0xFFFFFFFF
        if typ == R_AARCH64_RELATIVE:
            relative += 1
            try:
                in_place += int.from_bytes(file_bytes(r_offset, 8), "little") == addend & (2**64 - 1)
            except VmlinuxError:
                pass
        elif typ in (R_AARCH64_ABS64, R_AARCH64_GLOB_DAT):
            symbolic += 1
        elif typ != R_AARCH64_NONE:
            raise VmlinuxError(f"unsupported dynamic relocation type {typ} in .rela.dyn")
    return (relative, in_place, symbolic)


def apply_rela(f, rela: tuple[int, int], symtab: tuple[int, int], blobs: list[tuple[int, bytearray]]) -> None:
    """Apply .rela.dyn as the kernel's relocate_kernel() does with a zero KASLR offset.

    RELATIVE: *where = addend (6.1 links them unapplied; 7.x mostly applies them in
    place, and writing the addend again changes nothing). ABS64 / GLOB_DAT: *where =
    S + A with S from .symtab. `.relr.dyn` (7.x) keeps its addends in place: with no
    displacement there is nothing to add.
    """
    offset, size = rela
    if not size:
        return
    f.seek(offset)
    entries = _RELA.iter_unpack(f.read(size))
    sym_off, sym_size = symtab
    spans = [(va, va + len(b), b) for va, b in blobs]

    def put(where: int, value: int) -> None:
        for start, end, blob in spans:
            if start <= where and where + 8 <= end:
                struct.pack_into("<Q", blob, where - start, value & (2**64 - 1))
                return
        raise VmlinuxError(f"relocation target {where:#x} is outside the loaded segments")

    for r_offset, r_info, addend in entries:
        typ = r_info & 0xFFFFFFFF
        if typ == R_AARCH64_RELATIVE:
            put(r_offset, addend)
        elif typ in (R_AARCH64_ABS64, R_AARCH64_GLOB_DAT):
            index = r_info >> 32
            if (index + 1) * SYM_ENTRY.size > sym_size:
                raise VmlinuxError(f"relocation at {r_offset:#x} names symbol {index} beyond .symtab")
            f.seek(sym_off + index * SYM_ENTRY.size)
            value = SYM_ENTRY.unpack(f.read(SYM_ENTRY.size))[4]
            put(r_offset, value + addend)
