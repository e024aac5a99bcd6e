"""A real arm64 vmlinux, parsed: segments, sections, symbols, `__ex_table`, version, struct layout.

`Vmlinux.open(path)` reads what the emulator needs from an ELF vmlinux (Debian's
debug kernels are 270-410 MB, mostly DWARF we never touch) and caches the
parsed result next to the file (or in a cache folder when that is not
writable), keyed by file size and mtime, so a second open takes a fraction of
a second. Loading the image into a machine is `kimage.loaded`.

Opening is memoised per process (`OpenedImages`, keyed by the file's identity,
size and mtime): a test run or a CLI command that opens one kernel from many
places parses, reads and relocates it once. What a boot derives from the image
alone - the BTF index, struct layouts, the alternatives plan, page permissions
- is memoised on the `Vmlinux` itself (`derived`), so every later boot of the
same image skips it.

This module finds the pieces in the ELF file and keeps them; what each piece
means is its own module: kimage/symbols.py (the symbol table),
kimage/relocations.py (.rela.dyn), kimage/extable_numbering.py (which
exception-table numbering the kernel uses), kimage/version.py (the banner).
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
import errno
import struct
from pathlib import Path
from typing import Any, Callable, Hashable

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from emu.memory import PAGE_MASK, PAGE_SIZE, Perms
from kimage.btf import Btf, BtfError
from kimage.cache import load_cached, store_cached
from kimage.extable_format import NUMBERING_V6_1, NUMBERING_V7, ExtableEntry, ExType, TypeNumbering, decode_extable
from kimage.extable_numbering import FIRST_TYPED_EXTABLE, choose_numbering
from kimage.relocations import RelocationSummary, apply_rela, summarise_rela
from kimage.symbols import SymbolTable, read_symbols
from kimage.version import KernelVersion, VmlinuxError

# Section flags (ELF64 gABI "Section Header").
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4

CACHE_FORMAT = 3


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
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, path: str | Path, *, cache_dir: Path | None = None, use_cache: bool = True) -> "Vmlinux":
        path = Path(path)
        try:
            st = path.stat()
        except OSError as exc:
            if len(path.parts) == 1 and not path.suffix:  # a bare word such as a suite name: say where suites open
                raise VmlinuxError(
                    f"cannot read {path}: {exc.strerror} (a suite name? faultlab.api.open_kernel({str(path)!r}) opens the cached kernel)"
                ) from None
            raise VmlinuxError(f"cannot read {path}: {exc.strerror}") from None
        if not path.is_file():
            raise VmlinuxError(f"{path} is not a file")
        key = (CACHE_FORMAT, st.st_size, st.st_mtime_ns)
        if not use_cache:
            return cls._from_record(path, _parse(path), from_cache=False)
        identity = (str(path.resolve()), st.st_dev, st.st_ino, *key, str(cache_dir))
        opened = _OPENED.get(identity)
        if opened is not None:
            return opened
        opened = cls._open_cached(path, key, cache_dir)
        _OPENED.put(identity, opened)
        return opened

    @classmethod
    def _open_cached(cls, path: Path, key: tuple, cache_dir: Path | None) -> "Vmlinux":
        cached = load_cached(path, key, cache_dir)
        if cached is not None:
            try:
                return cls._from_record(path, cached)
            except (KeyError, TypeError, ValueError):
                pass  # a cache from another loader version: parse again
        record = _parse(path)
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

    # ------------------------------------------------------------------ derived facts
    def derived(self, key: Hashable, compute: Callable[["Vmlinux"], Any]) -> Any:
        """`compute(self)`, once per image: for facts that are pure functions of the image's bytes.

        A boot re-derives the same facts (BTF index, struct layouts, the alternatives
        plan) every time; they cost a real-host boot ~0.3 s. Callers must treat the
        value as read-only (or hand out copies). A failure is not memoised.
        """
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = compute(self)
            return value

    def btf(self) -> Btf:
        """The image's `.BTF` section (SHF_ALLOC: loaded, so read from the relocated image), indexed once."""
        return self.derived("btf", _loaded_btf)

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
        Computed once per image (a fresh dict each call); the few distinct Perms are
        shared objects, so ~10k mapped pages per boot do not each add one for the
        cyclic garbage collector to walk.
        """
        return dict(self.derived("page-perms", _page_perms))

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
                apply_rela(f, self._rela, self._symtab, blobs)
            self._image = [(va, bytes(b)) for va, b in blobs]
        return self._image

    def read(self, addr: int, size: int) -> bytes:
        """Bytes of the (relocated) image at a link address."""
        for va, data in self.image():
            if va <= addr and addr + size <= va + len(data):
                return data[addr - va : addr - va + size]
        raise VmlinuxError(f"{addr:#x}+{size} is not inside one loaded segment")


def _page_perms(vm: Vmlinux) -> dict[int, Perms]:
    pages: dict[int, list[bool]] = {}
    for seg in vm.segments:
        for va in range(seg.vaddr & PAGE_MASK, seg.vaddr + seg.memsz, PAGE_SIZE):
            pages.setdefault(va, [False, False, False])
    for sec in vm.sections:
        for va in range(sec.addr & PAGE_MASK, sec.addr + sec.size, PAGE_SIZE):
            flags = pages.get(va)
            if flags is not None:
                flags[0] = True
                flags[1] |= sec.write
                flags[2] |= sec.exec
    # Pages no section covers (alignment padding) keep read-only: nothing should run there.
    shared = {(w, x): Perms(read=True, write=w, exec=x) for w in (False, True) for x in (False, True)}
    return {va: shared[w, x] for va, (_, w, x) in pages.items()}


def _loaded_btf(vm: Vmlinux) -> Btf:
    sec = next((s for s in vm.sections if s.name == ".BTF"), None)
    if sec is None:
        raise VmlinuxError(f"{vm.path} has no .BTF section")
    return Btf(vm.read(sec.addr, sec.size))


class OpenedImages:
    """Opened `Vmlinux` objects by file identity, least recently used dropped beyond `max_entries`.

    Why: one process opens the same kernel from many places (each CLI command run
    in a test session, each shelf, the API); a parsed-and-relocated image costs
    0.2-0.4 s to load and ~100 MB to hold. The key is the resolved path, device,
    inode, size and mtime (and the cache folder asked for), so a replaced or
    rebuilt file is opened afresh. A `Vmlinux` is read-only once opened.
    """

    def __init__(self, max_entries: int = 4) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, Vmlinux] = OrderedDict()

    def get(self, key: tuple) -> Vmlinux | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: tuple, vm: Vmlinux) -> None:
        self._entries[key] = vm
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


# The process's memo behind Vmlinux.open (use_cache=False bypasses it).
_OPENED = OpenedImages()


# ---------------------------------------------------------------------- parsing
def _parse(path: Path) -> dict:
    """Everything `Vmlinux` keeps, as plain builtins (so it can be cached).

    A truncated or corrupt file (a download cut short) is a VmlinuxError, the
    user's bad input: pyelftools reports it as ELFError, struct.error or an
    index/key error from wherever it first reads past the end.
    """
    try:
        return _parse_elf(path)
    except VmlinuxError:
        raise
    except (ELFError, struct.error, EOFError, IndexError, KeyError, ValueError, OverflowError, OSError) as exc:
        # OSError: only a seek the file's own offsets make invalid (EINVAL, a negative position);
        # a file that cannot be opened or read stays the OS's error.
        if isinstance(exc, OSError) and exc.errno != errno.EINVAL:
            raise
        size = path.stat().st_size
        raise VmlinuxError(f"{path}: truncated or corrupt ELF file ({size} bytes; {type(exc).__name__}: {exc})") from None


def _parse_elf(path: Path) -> dict:
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
        names, addrs, sizes, info = read_symbols(symtab.data(), strtab.data())
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
        relocs = summarise_rela(f, rela_loc, file_bytes)
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


