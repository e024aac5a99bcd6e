"""The symbol files gdb loads: our ELF writer and DWARF line tables, read back by independent readers.

pyelftools (a reader we did not write) parses what kimage/elf_writer.py and
faultlab/gdb/dwarf_lines.py produce and must find the assembled image's
bytes, symbols and source lines; binutils' readelf and objdump, when
installed, must read it without a warning.
"""
from __future__ import annotations

import io
import posixpath
import shutil
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from faultlab.gdb.dwarf_lines import sleb128, uleb128
from faultlab.gdb.symbols import symbol_files, symbolizer, write_symbol_file
from faultlab.runner import setup
from faultlab.scenario import load
from kimage.elf_writer import EM_AARCH64, ElfSection, ElfSymbol, ElfWriteError, SectionKind, SymbolKind, build_elf

from gdb_client import ROOT

SCENARIOS = ["faultlab/builtin/a_zeropad_overread.toml", "faultlab/builtin/b_vmm_oob.toml", "scenarios/inline_zeropad.toml"]


def _lab(path: str):
    return setup(load(ROOT / path).variants()[0], "inject")


# DWARF 4 specification, 7.6 "Variable Length Data", figures 22 and 23.
@pytest.mark.parametrize("value, encoded", [(2, "02"), (127, "7f"), (128, "8001"), (129, "8101"), (130, "8201"), (12857, "b964")])
def test_uleb128_spec_examples(value, encoded):
    assert uleb128(value).hex() == encoded


@pytest.mark.parametrize(
    "value, encoded", [(2, "02"), (-2, "7e"), (127, "ff00"), (-127, "817f"), (128, "8001"), (-128, "807f"), (129, "8101"), (-129, "ff7e")]
)
def test_sleb128_spec_examples(value, encoded):
    assert sleb128(value).hex() == encoded


def test_elf_header_sections_segments_and_symbols():
    text = bytes(range(32))
    data = build_elf(
        [
            ElfSection(".text", SectionKind.CODE, text, 0xFFFF_8000_0800_0010),
            ElfSection("__ex_table", SectionKind.RODATA, b"\1\2\3\4", 0xFFFF_8000_0800_0030),
            ElfSection(".data", SectionKind.DATA, b"xy", 0xFFFF_8000_0900_0000),
        ],
        [
            ElfSymbol("f", 0xFFFF_8000_0800_0010, ".text", 16),
            ElfSymbol("g", 0xFFFF_8000_0800_0020, ".text", 16),
            ElfSymbol("table", 0xFFFF_8000_0800_0030, "__ex_table", 4, SymbolKind.OBJECT, local=True),
        ],
        entry=0xFFFF_8000_0800_0020,
    )
    elf = ELFFile(io.BytesIO(data))
    assert elf.elfclass == 64 and elf.little_endian
    assert elf["e_machine"] == "EM_AARCH64" and elf["e_type"] == "ET_EXEC" and elf["e_entry"] == 0xFFFF_8000_0800_0020
    assert elf.header["e_machine"] == "EM_AARCH64" and EM_AARCH64 == 183
    sections = {s.name: s for s in elf.iter_sections()}
    assert sections[".text"]["sh_addr"] == 0xFFFF_8000_0800_0010 and sections[".text"].data() == text
    assert sections[".text"]["sh_flags"] == 6  # SHF_ALLOC | SHF_EXECINSTR
    assert sections["__ex_table"].data() == b"\1\2\3\4" and sections["__ex_table"]["sh_flags"] == 2
    assert sections[".data"]["sh_flags"] == 3
    loads = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
    assert [seg["p_vaddr"] for seg in loads] == [0xFFFF_8000_0800_0010, 0xFFFF_8000_0800_0030, 0xFFFF_8000_0900_0000]
    for seg in loads:
        assert seg["p_offset"] % seg["p_align"] == seg["p_vaddr"] % seg["p_align"]  # gABI: loadable
    assert [seg["p_flags"] for seg in loads] == [5, 4, 6]  # r-x, r--, rw-
    symtab = elf.get_section_by_name(".symtab")
    symbols = {s.name: s for s in symtab.iter_symbols()}
    assert symbols["f"]["st_value"] == 0xFFFF_8000_0800_0010 and symbols["f"]["st_size"] == 16
    assert symbols["f"]["st_info"]["type"] == "STT_FUNC" and symbols["f"]["st_info"]["bind"] == "STB_GLOBAL"
    assert symbols["table"]["st_info"]["bind"] == "STB_LOCAL" and symbols["table"]["st_info"]["type"] == "STT_OBJECT"
    assert symbols["$x"]["st_value"] == 0xFFFF_8000_0800_0010  # AArch64 ELF: A64 code starts here
    # sh_info: one past the last local; all locals come first.
    binds = [s["st_info"]["bind"] for s in symtab.iter_symbols()]
    assert symtab["sh_info"] == binds.index("STB_GLOBAL") and "STB_LOCAL" not in binds[symtab["sh_info"] :]


def test_elf_refuses_what_cannot_be_a_file():
    with pytest.raises(ElfWriteError, match="overlap"):
        build_elf([ElfSection("a", SectionKind.CODE, bytes(8), 0x1000), ElfSection("b", SectionKind.CODE, bytes(8), 0x1004)], [])
    with pytest.raises(ElfWriteError, match="no section"):
        build_elf([ElfSection(".text", SectionKind.CODE, bytes(8), 0x1000)], [ElfSymbol("f", 0x1000, ".nope")])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_our_images_as_elf_symbols_bytes_and_lines(scenario, tmp_path):
    lab = _lab(scenario)
    path = write_symbol_file(lab, tmp_path / "x.elf")
    elf = ELFFile(path.open("rb"))
    symbols = {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols()}
    for image in lab.images:
        for name, value in image.symbols.items():
            if any(a <= value < a + size for a, size in image.sections.values()):
                assert symbols[name]["st_value"] == value, name
                assert symbols[name]["st_size"] == image.sizes.get(name, 0), name
        # Every section's bytes are the image's bytes at that address.
        loaded = {s["sh_addr"]: s.data() for s in elf.iter_sections() if s["sh_flags"] & 2}
        for addr, size in image.sections.values():
            if size:
                assert loaded[addr] == image.data[addr - image.base : addr - image.base + size]
    # Lines: pyelftools' DWARF decoder gives back kasm's address -> (file, line) for every instruction.
    dwarf = elf.get_dwarf_info()
    rows = {}
    for cu in dwarf.iter_CUs():
        program = dwarf.line_program_for_CU(cu)
        dirs = [d.decode() for d in program["include_directory"]]
        comp_dir = cu.get_top_DIE().attributes["DW_AT_comp_dir"].value.decode()
        # A file's path: its directory's (or the unit's) joined with its name, as a DWARF consumer resolves it.
        files = [posixpath.join(comp_dir, dirs[e.dir_index - 1] if e.dir_index else "", e.name.decode()) for e in program["file_entry"]]
        for entry in program.get_entries():
            state = entry.state
            if state is not None and not state.end_sequence:
                rows[state.address] = (files[state.file - 1], state.line)
    want = {
        addr: (loc.file, loc.line)
        for image in lab.images
        for addr, loc in image.lines.items()
        if any(a <= addr < a + size for name, (a, size) in image.sections.items() if name.startswith(".text"))
    }
    assert want and rows == want


def test_symbol_files_and_symbolizer(tmp_path):
    lab = _lab("faultlab/builtin/a_zeropad_overread.toml")
    entry = lab.symbol("full_name_hash")
    files = symbol_files(lab, "a/b c", entry, tmp_path)
    assert files == [tmp_path / "a_b_c.elf"]
    assert ELFFile(files[0].open("rb"))["e_entry"] == entry
    name_of = symbolizer(lab)
    assert name_of(entry) == "full_name_hash" and name_of(entry + 0x10) == "full_name_hash+0x10"
    assert name_of(0x1000) == ""


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-readelf") is None, reason="binutils-aarch64-linux-gnu is not installed")
def test_binutils_reads_it_without_complaint(tmp_path):
    lab = _lab("faultlab/builtin/a_zeropad_overread.toml")
    path = write_symbol_file(lab, tmp_path / "x.elf")
    readelf = subprocess.run(["aarch64-linux-gnu-readelf", "-a", "--debug-dump=line", str(path)], capture_output=True, text=True, timeout=60)
    assert readelf.returncode == 0 and "warning" not in readelf.stderr.lower() and "error" not in readelf.stderr.lower(), readelf.stderr
    assert "word_at_a_time.S" in readelf.stdout
    objdump = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(path)], capture_output=True, text=True, timeout=60)
    assert "<full_name_hash>:" in objdump.stdout and "ldr\tx5, [x1]" in objdump.stdout


def test_the_testbeds_own_code_is_named_like_the_kernels(tmp_path):
    lab = _lab("faultlab/builtin/a_zeropad_overread.toml")
    elf = ELFFile(write_symbol_file(lab, tmp_path / "x.elf").open("rb"))
    symbols = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}
    vbar = lab.machine.cpu.read_sysreg("VBAR_EL1")
    # Arm ARM D1.10.2: current EL with SP_ELx at +0x200, lower EL AArch64 at +0x400, AArch32 at +0x600; 0x80 a kind.
    assert symbols["el1t_64_sync"] == vbar and symbols["el1h_64_sync"] == vbar + 0x200
    assert symbols["el0t_64_sync"] == vbar + 0x400 and symbols["el0t_32_error"] == vbar + 0x780
    assert symbols["faultlab_return"] == lab.machine.return_sentinel
    vectors = elf.get_section_by_name(".vectors")
    assert vectors.data()[:0x800] == lab.machine.read(vbar, 0x800)
    assert symbolizer(lab)(vbar + 0x204) == "el1h_64_sync+0x4"
