"""A real arm64 vmlinux, parsed: segments, sections, symbols, `__ex_table`, version, struct layout.

`Vmlinux.open(path)` reads what the emulator needs from an ELF vmlinux (Debian's
debug kernels are 270-410 MB, mostly DWARF we never touch) and caches the
parsed result next to the file (or in a cache folder when that is not
writable), keyed by file size and mtime, so a second open takes a fraction of
a second. Loading the image into a machine is `kimage.loaded`.

Which exception-table numbering applies is decided from two independent
sources: the version in `linux_banner`, and the entries themselves (a type-4
entry on a FEAT_MOPS `CPY*` instruction can only be UACCESS_CPY; on a load it
can only be LOAD_UNALIGNED_ZEROPAD). When they disagree outside the version
window where the change landed, the loader refuses rather than guess.
"""
from __future__ import annotations

import bisect
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

from kimage.extable_format import (
    NUMBERING_V6_1,
    NUMBERING_V7,
    ExtableEntry,
    ExType,
    TypeNumbering,
    UnknownExtableType,
    decode_extable,
)
from emu.memory import PAGE_MASK, PAGE_SIZE, Perms
from kimage.btf import Btf, BtfError
from kimage.cache import load_cached, store_cached

# ELF constants (ELF64 gABI; AArch64 ELF ABI "Dynamic relocations")
EM_AARCH64 = 183
PF_X, PF_W, PF_R = 1, 2, 4
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
STB_LOCAL = 0
R_AARCH64_NONE = 0
R_AARCH64_ABS64 = 257
R_AARCH64_GLOB_DAT = 1025
R_AARCH64_RELATIVE = 1027
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")

# The extable gained type/data fields in v5.16 (arm64: extable: add `type` and `data` fields).
FIRST_TYPED_EXTABLE = (5, 16)
# EX_TYPE_UACCESS_CPY (FEAT_MOPS uaccess) was inserted as 4 around v6.16-v6.18 (unverified
# exactly); inside this window the entries decide, outside it the version must agree with them.
MOPS_UACCESS_WINDOW = ((6, 14), (6, 19))

CACHE_FORMAT = 3


class VmlinuxError(ValueError):
    """The file is not a vmlinux this loader can use; the message says why, in one line."""


@dataclass(frozen=True)
class KernelVersion:
    major: int
    minor: int
    patch: int
    release: str

    @classmethod
    def from_banner(cls, banner: str) -> "KernelVersion":
        # init/version.c: "Linux version <UTS_RELEASE> (<builder>) ..."
        m = re.match(r"Linux version (\S+)", banner)
        if not m:
            raise VmlinuxError(f"linux_banner does not start with 'Linux version': {banner[:60]!r}")
        release = m.group(1)
        nums = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
        if not nums:
            raise VmlinuxError(f"cannot read a version number from release {release!r}")
        return cls(int(nums.group(1)), int(nums.group(2)), int(nums.group(3) or 0), release)

    @property
    def tuple(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __str__(self) -> str:
        return self.release


@dataclass(frozen=True)
class Symbol:
    name: str
    addr: int
    size: int
    kind: str  # "func" | "object" | "notype"
    local: bool


@dataclass(frozen=True)
class LoadSegment:
    """A PT_LOAD program header."""

    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int


@dataclass(frozen=True)
class SectionSpan:
    """An SHF_ALLOC section: where it is and what the kernel maps it as."""

    name: str
    addr: int
    size: int
    write: bool
    exec: bool


@dataclass(frozen=True)
class TaskLayout:
    """What `current` (SP_EL0) code reads, from BTF: sizes and byte offsets."""

    task_struct_size: int
    thread_info_flags: int
    preempt_count: int | None
    stack_canary: int | None


@dataclass(frozen=True)
class RelocationSummary:
    relative: int  # R_AARCH64_RELATIVE entries of .rela.dyn
    already_in_place: int  # how many of them the file already holds (7.x links with them applied)
    symbolic: int  # ABS64 / GLOB_DAT against symbols
    relr: int  # size of .relr.dyn in words (implicit addends: already in place)


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


@dataclass
class Vmlinux:
    path: Path
    banner: str
    version: KernelVersion
    numbering: TypeNumbering
    numbering_reason: str
    segments: list[LoadSegment]
    sections: list[SectionSpan]
    symbols: SymbolTable
    extable: list[ExtableEntry]
    extable_addr: int
    task_layout: TaskLayout | None
    relocations: RelocationSummary
    from_cache: bool = False
    _rela: tuple[int, int] = (0, 0)  # file offset and size of .rela.dyn
    _symtab: tuple[int, int] = (0, 0)
    _image: list[tuple[int, bytes]] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, path: str | Path, *, cache_dir: Path | None = None, use_cache: bool = True) -> "Vmlinux":
        path = Path(path)
        try:
            st = path.stat()
        except OSError as exc:
            raise VmlinuxError(f"cannot read {path}: {exc.strerror}") from None
        if not path.is_file():
            raise VmlinuxError(f"{path} is not a file")
        key = (CACHE_FORMAT, st.st_size, st.st_mtime_ns)
        if use_cache:
            cached = load_cached(path, key, cache_dir)
            if cached is not None:
                try:
                    return cls._from_record(path, cached)
                except (KeyError, TypeError, ValueError):
                    pass  # a cache from another loader version: parse again
        record = _parse(path)
        if use_cache:
            store_cached(path, key, record, cache_dir)
        return cls._from_record(path, record, from_cache=False)

    @classmethod
    def _from_record(cls, path: Path, rec: dict, from_cache: bool = True) -> "Vmlinux":
        version = KernelVersion(*rec["version"])
        numbering = {"v6.1": NUMBERING_V6_1, "v7": NUMBERING_V7}[rec["numbering"]]
        extable_addr = rec["extable_addr"]
        entries = [ExtableEntry(*e) for e in rec["extable"]]
        layout = TaskLayout(*rec["task_layout"]) if rec["task_layout"] else None
        return cls(
            path=path,
            banner=rec["banner"],
            version=version,
            numbering=numbering,
            numbering_reason=rec["numbering_reason"],
            segments=[LoadSegment(*s) for s in rec["segments"]],
            sections=[SectionSpan(*s) for s in rec["sections"]],
            symbols=SymbolTable(rec["sym_names"], rec["sym_addrs"], rec["sym_sizes"], rec["sym_info"]),
            extable=entries,
            extable_addr=extable_addr,
            task_layout=layout,
            relocations=RelocationSummary(*rec["relocations"]),
            from_cache=from_cache,
            _rela=tuple(rec["rela"]),
            _symtab=tuple(rec["symtab"]),
        )

    # ------------------------------------------------------------------ queries
    def address(self, name: str) -> int:
        return self.symbols.lookup(name).addr

    def extable_counts(self) -> Counter:
        """Entries per type name (ExType), in this kernel's numbering."""
        return Counter(self.numbering.kind(e.type) for e in self.extable)

    def extable_owners(self) -> dict[ExType, Counter]:
        """For each type: which functions hold its entries, and how many each."""
        owners: dict[ExType, Counter] = {}
        for e in self.extable:
            sym = self.symbols.function_at(e.insn)
            owners.setdefault(self.numbering.kind(e.type), Counter())[sym.name if sym else f"{e.insn:#x}"] += 1
        return owners

    def page_perms(self) -> dict[int, Perms]:
        """Stage-1 permissions per image page: text rx, writable data rw, the rest read-only.

        From section flags rather than segment flags: the 6.1 image is one RWE segment,
        while the kernel maps text, rodata and data differently (mmu.c map_kernel).
        """
        pages: dict[int, list[bool]] = {}
        for seg in self.segments:
            for va in range(seg.vaddr & PAGE_MASK, seg.vaddr + seg.memsz, PAGE_SIZE):
                pages.setdefault(va, [False, False, False])
        for sec in self.sections:
            for va in range(sec.addr & PAGE_MASK, sec.addr + sec.size, PAGE_SIZE):
                flags = pages.get(va)
                if flags is not None:
                    flags[0] = True
                    flags[1] |= sec.write
                    flags[2] |= sec.exec
        # Pages no section covers (alignment padding) keep read-only: nothing should run there.
        return {va: Perms(read=True, write=w, exec=x) for va, (_, w, x) in pages.items()}

    def image(self) -> list[tuple[int, bytes]]:
        """(vaddr, bytes) per PT_LOAD segment, memsz long, with `.rela.dyn` applied (no KASLR offset)."""
        if self._image is None:
            with open(self.path, "rb") as f:
                blobs = []
                for seg in self.segments:
                    f.seek(seg.offset)
                    data = bytearray(f.read(seg.filesz))
                    data.extend(bytes(seg.memsz - seg.filesz))
                    blobs.append((seg.vaddr, data))
                _apply_rela(f, self._rela, self._symtab, blobs)
            self._image = [(va, bytes(b)) for va, b in blobs]
        return self._image

    def read(self, addr: int, size: int) -> bytes:
        """Bytes of the (relocated) image at a link address."""
        for va, data in self.image():
            if va <= addr and addr + size <= va + len(data):
                return data[addr - va : addr - va + size]
        raise VmlinuxError(f"{addr:#x}+{size} is not inside one loaded segment")


# ---------------------------------------------------------------------- parsing
def _parse(path: Path) -> dict:
    """Everything `Vmlinux` keeps, as plain builtins (so it can be cached)."""
    with open(path, "rb") as f:
        try:
            elf = ELFFile(f)
        except Exception as exc:  # pyelftools raises its own ELFError and struct errors
            raise VmlinuxError(f"{path} is not an ELF file ({exc})") from None
        if elf["e_machine"] != "EM_AARCH64" or elf.elfclass != 64 or not elf.little_endian:
            raise VmlinuxError(f"{path} is not a little-endian 64-bit AArch64 ELF ({elf['e_machine']})")
        segments = [
            (s["p_vaddr"], s["p_offset"], s["p_filesz"], s["p_memsz"], s["p_flags"])
            for s in elf.iter_segments()
            if s["p_type"] == "PT_LOAD"
        ]
        if not segments:
            raise VmlinuxError(f"{path} has no PT_LOAD segments")
        sections = [
            (s.name, s["sh_addr"], s["sh_size"], bool(s["sh_flags"] & SHF_WRITE), bool(s["sh_flags"] & SHF_EXECINSTR))
            for s in elf.iter_sections()
            if s["sh_flags"] & SHF_ALLOC and s["sh_size"] and s["sh_addr"]
        ]
        symtab = elf.get_section_by_name(".symtab")
        strtab = elf.get_section_by_name(".strtab")
        if symtab is None or strtab is None:
            raise VmlinuxError(f"{path} has no symbol table (a stripped vmlinux: use the -dbg package)")
        names, addrs, sizes, info = _read_symbols(symtab.data(), strtab.data())
        table = SymbolTable(names, addrs, sizes, bytes(info))

        def file_bytes(addr: int, size: int) -> bytes:
            for vaddr, off, filesz, _memsz, _flags in segments:
                if vaddr <= addr and addr + size <= vaddr + filesz:
                    f.seek(off + addr - vaddr)
                    return f.read(size)
            raise VmlinuxError(f"{addr:#x} is not in the file image")

        banner_sym = table.get("linux_banner")
        if banner_sym is None:
            raise VmlinuxError(f"{path} has no linux_banner symbol: not a Linux vmlinux")
        raw = file_bytes(banner_sym.addr, max(banner_sym.size, 64))
        banner = raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        version = KernelVersion.from_banner(banner)
        if version.tuple < FIRST_TYPED_EXTABLE:
            raise VmlinuxError(f"Linux {version}: exception-table entries before v5.16 have no type field; not supported")

        ex = elf.get_section_by_name("__ex_table")
        if ex is None:
            raise VmlinuxError(f"{path} has no __ex_table section")
        extable = list(decode_extable(ex.data(), ex["sh_addr"]))
        numbering, reason = choose_numbering(version, extable, lambda a: int.from_bytes(file_bytes(a, 4), "little"))

        rela = elf.get_section_by_name(".rela.dyn")
        relr = elf.get_section_by_name(".relr.dyn")
        rela_loc = (rela["sh_offset"], rela["sh_size"]) if rela is not None else (0, 0)
        symtab_loc = (symtab["sh_offset"], symtab["sh_size"])
        relocs = _summarise_rela(f, rela_loc, file_bytes)
        relr_words = relr["sh_size"] // 8 if relr is not None else 0

        btf_section = elf.get_section_by_name(".BTF")
        layout = _task_layout(btf_section.data()) if btf_section is not None else None

    return {
        "banner": banner,
        "version": (version.major, version.minor, version.patch, version.release),
        "numbering": numbering.name,
        "numbering_reason": reason,
        "segments": segments,
        "sections": sections,
        "sym_names": names,
        "sym_addrs": addrs,
        "sym_sizes": sizes,
        "sym_info": bytes(info),
        "extable": [(e.insn, e.fixup, e.type, e.data) for e in extable],
        "extable_addr": ex["sh_addr"],
        "task_layout": layout,
        "relocations": (*relocs, relr_words),
        "rela": rela_loc,
        "symtab": symtab_loc,
    }


def _read_symbols(data: bytes, strtab: bytes) -> tuple[list[str], list[int], list[int], bytearray]:
    """FUNC/OBJECT/NOTYPE symbols with an address, minus mapping symbols ($x, $d)."""
    names: list[str] = []
    addrs: list[int] = []
    sizes: list[int] = []
    info = bytearray()
    for name_off, st_info, _other, shndx, value, size in _SYM.iter_unpack(data):
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


def _task_layout(btf_data: bytes) -> tuple | None:
    try:
        btf = Btf(btf_data)
        size = btf.sizeof("task_struct")
        flags = btf.offsetof("task_struct", "thread_info.flags")
    except BtfError:
        return None

    def optional(path: str) -> int | None:
        try:
            return btf.offsetof("task_struct", path)
        except BtfError:
            return None

    return (size, flags, optional("thread_info.preempt_count"), optional("stack_canary"))


# ------------------------------------------------------------ extable numbering
def _is_mops_cpy(word: int) -> bool:
    """FEAT_MOPS CPY*/CPYF*/SET* (Arm ARM C4.1 'Memory Copy and Memory Set'): size=00 011 x 01 xx 0 ... 01."""
    return word & 0x3B200C00 == 0x19000400


def _is_load(word: int) -> bool:
    """A general-register load of the 'load/store register' classes (op0 x1x0, bit 22 = load)."""
    return word & 0x0A000000 == 0x08000000 and bool(word & (1 << 22))


def choose_numbering(version: KernelVersion, entries: list[ExtableEntry], insn_at) -> tuple[TypeNumbering, str]:
    """The type numbering of this kernel, with the reason; raises VmlinuxError when the evidence conflicts."""
    types = Counter(e.type for e in entries)
    evidence: TypeNumbering | None = None
    why = ""
    if types.get(5):
        evidence, why = NUMBERING_V7, f"{types[5]} entries of type 5"
    elif types.get(4):
        words = [insn_at(e.insn) for e in entries if e.type == 4]
        if all(_is_mops_cpy(w) for w in words):
            evidence, why = NUMBERING_V7, "type-4 entries sit on MOPS CPY instructions"
        elif all(_is_load(w) for w in words):
            evidence, why = NUMBERING_V6_1, "type-4 entries sit on loads"
        else:
            raise VmlinuxError("type-4 extable entries sit on neither loads nor MOPS CPY instructions: unknown numbering")
    low, high = MOPS_UACCESS_WINDOW
    by_version = NUMBERING_V7 if version.tuple >= high else NUMBERING_V6_1 if version.tuple < low else None
    if evidence is None and by_version is None:
        raise VmlinuxError(f"Linux {version}: no entry tells which extable numbering applies and the version is ambiguous")
    if evidence is not None and by_version is not None and evidence is not by_version:
        raise VmlinuxError(f"Linux {version} implies the {by_version.name} extable numbering but {why} ({evidence.name})")
    chosen = evidence or by_version
    reason = f"Linux {version.major}.{version.minor}" + (f"; {why}" if why else "")
    for number in types:
        try:
            chosen.kind(number)
        except UnknownExtableType as exc:
            raise VmlinuxError(f"{exc} ({types[number]} entries): refusing to guess") from None
    return chosen, reason


# ---------------------------------------------------------------- relocations
def _summarise_rela(f, rela: tuple[int, int], file_bytes) -> tuple[int, int, int]:
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


def _apply_rela(f, rela: tuple[int, int], symtab: tuple[int, int], blobs: list[tuple[int, bytearray]]) -> None:
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
            if (index + 1) * _SYM.size > sym_size:
                raise VmlinuxError(f"relocation at {r_offset:#x} names symbol {index} beyond .symtab")
            f.seek(sym_off + index * _SYM.size)
            value = _SYM.unpack(f.read(_SYM.size))[4]
            put(r_offset, value + addend)
