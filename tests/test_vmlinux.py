"""Real Debian arm64 kernels (Linux 6.1 from bookworm, 7.x from sid) loaded and run in the machine.

Kernel tests are marked `kernel` and skip, saying why, when no vmlinux is
found: set FAULTLAB_VMLINUX_61 / FAULTLAB_VMLINUX_72, or run
scripts/fetch_kernels.py (FAULTLAB_FETCH_KERNELS=1 lets the tests fetch).
References here are written from the kernel's documented contracts and
algorithms (include/linux/uaccess.h, fs/namei.c, fault.c's table), never by
calling the code under test.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from kimage.elf import Vmlinux
from kimage.extable_numbering import choose_numbering
from kimage.version import KernelVersion, VmlinuxError
from kimage.extable_format import NUMBERING_V6_1, NUMBERING_V7, ExtableEntry, ExType
from emu.memory import PAGE_SIZE
from kimage.cache import load_cached, store_cached
from faultlab.kernel import fetch as kernels
from faultlab.cli.kernel import KernelRig
from faultlab.cli.main import main as kernel_main
from hyp.ownership import PageState

MASK64 = (1 << 64) - 1


# ------------------------------------------------------------------ finding kernels
@dataclass(frozen=True)
class KernelSpec:
    key: str
    suite: str
    env: str
    major: int
    minor: int
    numbering: str
    by_type: dict


KERNELS = {
    # Counts checked with the Debian images (docs/facts.md "Real kernels").
    "6.1": KernelSpec(
        "6.1", "bookworm", "FAULTLAB_VMLINUX_61", 6, 1, "v6.1",
        {ExType.UACCESS_ERR_ZERO: 760, ExType.KACCESS_ERR_ZERO: 9, ExType.LOAD_UNALIGNED_ZEROPAD: 9},
    ),
    "7.2": KernelSpec(
        "7.2", "sid", "FAULTLAB_VMLINUX_72", 7, 2, "v7",
        {ExType.UACCESS_ERR_ZERO: 911, ExType.KACCESS_ERR_ZERO: 21, ExType.UACCESS_CPY: 6, ExType.LOAD_UNALIGNED_ZEROPAD: 9},
    ),
}
KERNEL_IDS = [f"linux-{k}" for k in KERNELS]

_opened: dict[str, Vmlinux | str] = {}


def _find_vmlinux(spec: KernelSpec) -> Path | str:
    """A path, or the reason there is none."""
    env = os.environ.get(spec.env)
    if env:
        return Path(env) if Path(env).is_file() else f"{spec.env}={env} is not a file"
    try:
        cached = kernels.find_cached(spec.suite)
        if cached:
            return cached
        if os.environ.get("FAULTLAB_FETCH_KERNELS") == "1":
            return kernels.fetch(spec.suite)
    except kernels.KernelFetchError as exc:
        return f"cannot fetch the {spec.suite} kernel: {exc}"
    return (
        f"no Linux {spec.key} vmlinux: set {spec.env}, run scripts/fetch_kernels.py, "
        f"or set FAULTLAB_FETCH_KERNELS=1 (cache: {kernels.cache_root()})"
    )


def open_kernel(key: str) -> Vmlinux:
    if key not in _opened:
        found = _find_vmlinux(KERNELS[key])
        if isinstance(found, str):
            _opened[key] = found
        else:
            spec = KERNELS[key]
            try:
                vm = Vmlinux.open(found)
            except VmlinuxError as exc:
                _opened[key] = f"{found}: {exc}"
            else:
                same = (vm.version.major, vm.version.minor) == (spec.major, spec.minor)
                # The pinned counts belong to that Debian image; another version needs its own row.
                _opened[key] = vm if same else f"{found} is Linux {vm.version}, not {spec.key}: no pinned counts for it"
    got = _opened[key]
    if isinstance(got, str):
        pytest.skip(got)
    return got


@pytest.fixture(params=list(KERNELS), ids=KERNEL_IDS)
def vmlinux(request) -> Vmlinux:
    return open_kernel(request.param)


_SESSION: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _session_shelves(kernel_shelf):
    _SESSION["shelf"] = kernel_shelf


def rig_for(key: str, policy: str = "inject-reclaim") -> KernelRig:
    """The session's booted lab of the kernel under `policy` (tests/conftest.py kernel_shelf), restored to its boot."""
    vm = open_kernel(key)
    return KernelRig(_SESSION["shelf"]("model").lab(vm.path, policy))


# ------------------------------------------------------------------ references
GOLDEN_RATIO_64 = 0x61C8864680B583EB


def _rol64(x: int, n: int) -> int:
    return ((x << n) | (x >> (64 - n))) & MASK64


def full_name_hash_ref(salt: int, name: bytes) -> int:
    """fs/namei.c, DCACHE_WORD_ACCESS + 64-bit: word-at-a-time HASH_MIX, then fold_hash.

    HASH_MIX(x, y, a): x ^= a; y ^= x; x = rol64(x, 12); x += y; y = rol64(y, 45); y *= 9.
    The last partial word is masked to its `len` low bytes (little-endian bytemask_from_count).
    fold_hash(x, y): y ^= x * GOLDEN_RATIO_64; y *= GOLDEN_RATIO_64; return y >> 32.
    """
    x, y = 0, salt & MASK64
    rest = name
    while rest:
        a = int.from_bytes(rest[:8].ljust(8, b"\0"), "little")
        if len(rest) < 8:
            x ^= a & ((1 << (8 * len(rest))) - 1)
            break
        x ^= a
        y ^= x
        x = _rol64(x, 12)
        x = (x + y) & MASK64
        y = _rol64(y, 45)
        y = (y * 9) & MASK64
        rest = rest[8:]
    y ^= (x * GOLDEN_RATIO_64) & MASK64
    y = (y * GOLDEN_RATIO_64) & MASK64
    return y >> 32


def test_full_name_hash_reference_known_values():
    # Pinned from the algorithm by hand: empty name -> fold_hash(0, salt) with salt 0 is 0.
    assert full_name_hash_ref(0, b"") == 0
    # A name shorter than a word is one masked partial word and no HASH_MIX round:
    # x = 0x636261 ("abc" little-endian, bytes past len zero), y = salt 7; folded by hand:
    # y ^= x * GOLDEN_RATIO_64; y *= GOLDEN_RATIO_64; >> 32 = 0x885ab969.
    assert full_name_hash_ref(7, b"abc") == 0x885AB969
    assert full_name_hash_ref(7, b"abc") != full_name_hash_ref(7, b"abd")
    assert full_name_hash_ref(0, b"a" * 8) != full_name_hash_ref(0, b"a" * 9)


# fault.c fault_info[]: DFSC -> (handler, name); the pointers are what relocation fills in.
FAULT_INFO = {
    0x00: ("do_bad", "ttbr address size fault"),
    0x04: ("do_translation_fault", "level 0 translation fault"),
    0x05: ("do_translation_fault", "level 1 translation fault"),
    0x07: ("do_translation_fault", "level 3 translation fault"),
    0x09: ("do_page_fault", "level 1 access flag fault"),
    0x0D: ("do_page_fault", "level 1 permission fault"),
    0x10: ("do_sea", "synchronous external abort"),
    0x21: ("do_alignment_fault", "alignment fault"),
}
FAULT_INFO_ENTRY = 24  # struct fault_info { fn, int sig, int code, const char *name }

# docs/facts.md: the load_unaligned_zeropad users.
ZEROPAD_USERS = {"full_name_hash", "hashlen_string", "link_path_walk", "d_same_name", "__d_lookup_rcu",
                 "__siphash_unaligned", "__hsiphash_unaligned"}


# ------------------------------------------------------------------ extable, version, layout
@pytest.mark.kernel
def test_extable_counts_per_type(vmlinux):
    spec = KERNELS[f"{vmlinux.version.major}.{vmlinux.version.minor}"]
    assert dict(vmlinux.extable_counts()) == spec.by_type
    assert len(vmlinux.extable) == sum(spec.by_type.values())
    # Sorted by insn address, as sort_extable() leaves them (the kernel binary-searches it).
    insns = [e.insn for e in vmlinux.extable]
    assert insns == sorted(insns)


@pytest.mark.kernel
def test_version_and_numbering_detection(vmlinux):
    spec = KERNELS[f"{vmlinux.version.major}.{vmlinux.version.minor}"]
    assert vmlinux.banner.startswith(f"Linux version {spec.major}.{spec.minor}")
    assert vmlinux.numbering.name == spec.numbering


@pytest.mark.kernel
def test_type4_entries_decide_the_numbering(vmlinux):
    """Independent of the version: type 4 sits on loads (6.1 zeropad) or on MOPS CPY (7.x uaccess)."""
    type4 = [e for e in vmlinux.extable if e.type == 4]
    words = [int.from_bytes(vmlinux.read(e.insn, 4), "little") for e in type4]
    owners = {vmlinux.symbols.function_at(e.insn).name for e in type4}
    if vmlinux.numbering is NUMBERING_V7:
        # Arm ARM C4.1 'Memory Copy and Memory Set': bits 29:27 = 011, 25:24 = 01, 21 = 0, 11:10 = 01.
        assert all(w & 0x3B200C00 == 0x19000400 for w in words)
        assert owners == {"__arch_copy_from_user", "__arch_copy_to_user"}
    else:
        assert all(w >> 22 == 0xF9400000 >> 22 for w in words)  # ldr Xt, [Xn, #imm]
        assert {_base(o) for o in owners} >= ZEROPAD_USERS


def _base(name: str) -> str:
    """GCC clone suffixes (.part.0, .constprop.0, .isra.0) name the same source function."""
    return name.split(".", 1)[0]


@pytest.mark.kernel
def test_zeropad_owners(vmlinux):
    owners = vmlinux.extable_owners()[ExType.LOAD_UNALIGNED_ZEROPAD]
    assert {_base(o) for o in owners} - {"strscpy", "sized_strscpy"} == ZEROPAD_USERS
    # Every word load through the name pointer (x1) in full_name_hash has its entry.
    sym = vmlinux.symbols.lookup("full_name_hash")
    words = struct.unpack(f"<{sym.size // 4}I", vmlinux.read(sym.addr, sym.size))
    loads = [sym.addr + 4 * i for i, w in enumerate(words) if w & 0xFFC003E0 == 0xF9400020]  # ldr Xt, [x1, #imm]
    entries = [e.insn for e in vmlinux.extable if sym.addr <= e.insn < sym.addr + sym.size]
    assert loads and entries == loads


@pytest.mark.kernel
def test_relocations_fill_fault_info(vmlinux):
    base = vmlinux.address("fault_info")
    for dfsc, (handler, name) in FAULT_INFO.items():
        entry = vmlinux.read(base + dfsc * FAULT_INFO_ENTRY, FAULT_INFO_ENTRY)
        fn, name_ptr = struct.unpack_from("<Q", entry, 0)[0], struct.unpack_from("<Q", entry, 16)[0]
        assert fn == vmlinux.address(handler), f"fault_info[{dfsc:#x}].fn"
        assert vmlinux.read(name_ptr, len(name) + 1) == name.encode() + b"\0", f"fault_info[{dfsc:#x}].name"


@pytest.mark.kernel
def test_relocations_were_needed_for_6_1():
    vm = open_kernel("6.1")
    seg = vm.segments[0]
    at = vm.address("fault_info") + 16  # fault_info[0].name in the file, before relocation
    with open(vm.path, "rb") as f:
        f.seek(seg.offset + at - seg.vaddr)
        assert f.read(8) == bytes(8)
    assert vm.relocations.relative > 100_000


def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


@pytest.mark.kernel
def test_stack_canary_offset_is_the_one_code_uses(vmlinux):
    """BTF's task_struct.stack_canary against the code of functions that call __stack_chk_fail.

    In each such function, collect the offsets of `ldr xM, [xN, #off]` where xN came from
    `mrs xN, sp_el0` a few instructions before: the canary offset is common to all of them.
    """
    layout = vmlinux.task_layout
    assert layout is not None and layout.stack_canary is not None
    chk_fail = vmlinux.address("__stack_chk_fail")
    around = vmlinux.address("full_name_hash")
    common: set[int] | None = None
    functions = 0
    for sym in vmlinux.symbols.functions_in(around - 0x10000, around + 0x10000):
        words = struct.unpack(f"<{sym.size // 4}I", vmlinux.read(sym.addr, sym.size // 4 * 4))
        # bl: 100101 imm26, target = pc + imm26 * 4 (Arm ARM C6.2.34)
        if not any(w >> 26 == 0b100101 and sym.addr + 4 * i + _sext(w & 0x3FFFFFF, 26) * 4 == chk_fail for i, w in enumerate(words)):
            continue
        offsets = set()
        for i, w in enumerate(words):
            if w & ~0x1F == 0xD5384100:  # mrs xN, sp_el0
                n = w & 0x1F
                for nxt in words[i + 1 : i + 8]:
                    if nxt & 0xFFC00000 == 0xF9400000 and (nxt >> 5) & 0x1F == n:  # ldr xM, [xN, #imm]
                        offsets.add(((nxt >> 10) & 0xFFF) * 8)
        if offsets:
            functions += 1
            common = offsets if common is None else common & offsets
    assert functions >= 3
    assert common == {layout.stack_canary}


@pytest.mark.kernel
def test_static_key_patching(vmlinux):
    rig = rig_for(f"{vmlinux.version.major}.{vmlinux.version.minor}")  # boot enabled the pKVM key
    kernel = rig.kernel
    sites = kernel.jump_sites("kvm_protected_mode_initialized")
    if vmlinux.version.major == 7:
        assert len(sites) == 68  # docs/facts.md
    assert sites
    for site in sites:
        word = int.from_bytes(kernel.machine.read(site.code, 4), "little")
        if site.branch:  # enabled XOR branch-by-default = 0 -> nop
            assert word == 0xD503201F
        else:
            assert word >> 26 == 0b000101, f"{site.code:#x} is not a b"
            imm = word & 0x3FFFFFF
            offset = (imm - (1 << 26) if imm >> 25 else imm) * 4
            assert site.code + offset == site.target
    assert kernel.machine.read(kernel.resolve("kvm_protected_mode_initialized"), 4) == (1).to_bytes(4, "little")


# ------------------------------------------------------------------ running real routines
def _copy_case(key: str, n: int, k: int, policy: str = "inject-reclaim"):
    """__arch_copy_from_user(dst, src, n) with the user page after src[:k] donated to a guest."""
    rig = rig_for(key, policy)
    kernel, machine = rig.kernel, rig.machine
    user = kernel.map_user(2 * PAGE_SIZE)
    src = user + PAGE_SIZE - k
    pattern = bytes((i * 37 + 11) & 0xFF or 1 for i in range(k + n + 8))
    machine.write(src, pattern[: k])
    guest_bytes = bytes((0xC0 + i) & 0xFF for i in range(PAGE_SIZE))
    machine.write(user + PAGE_SIZE, guest_bytes)
    dst = kernel.alloc_buffer(PAGE_SIZE)
    machine.write(dst, b"\xee" * PAGE_SIZE)
    prot = rig.protect(user + PAGE_SIZE)
    result = rig.call("__arch_copy_from_user", dst, src, n)
    return rig, prot, result, machine.read(dst, PAGE_SIZE), pattern[:k] + guest_bytes


def _check_copy(rig, prot, result, dst_after, source, n, k, record_property):
    assert result.returned, result.outcome
    r = result.x0
    record_property("bytes_not_copied", r)
    # include/linux/uaccess.h (raw_copy_from_user contract): returns N <= size; size - N
    # bytes at `to` equal the source; nothing past to + size - N is modified; returning
    # `size` only when nothing could be copied.
    assert 0 <= r <= n
    copied = n - r
    assert copied <= k, "copied bytes from the protected page"
    assert dst_after[:copied] == source[:copied]
    assert dst_after[copied:] == b"\xee" * (PAGE_SIZE - copied)
    if n <= k:
        assert r == 0
    elif k > 0:
        assert copied >= 1
    fixups = result.events_of("fixup")
    assert bool(fixups) == (n > k)
    assert all(f.data["fixup"].kind is ExType.UACCESS_ERR_ZERO for f in fixups)
    # The guest keeps its page: no reclaim, contents intact.
    assert not result.events_of("reclaim")
    assert rig.hyp.ownership.guest_state(prot.handle, prot.gfn) is PageState.OWNED
    assert rig.machine.phys.read(prot.pfn << 12, PAGE_SIZE) == prot.before


COPY_CASES = [(16, 6), (8, 3), (64, 0), (5, 5), (100, 37), (200, 67), (1, 0), (33, 32)]


@pytest.mark.kernel
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
@pytest.mark.parametrize("n,k", COPY_CASES, ids=[f"n{n}-k{k}" for n, k in COPY_CASES])
def test_copy_from_user_stops_at_protected_page(key, n, k, record_property):
    rig, prot, result, dst_after, source = _copy_case(key, n, k)
    _check_copy(rig, prot, result, dst_after, source, n, k, record_property)


def _hash_case(key: str, length: int, gap: int, salt: int, policy: str = "inject-reclaim"):
    """full_name_hash(salt, name, len) with the name ending `gap` bytes before a donated page."""
    rig = rig_for(key, policy)
    kernel, machine = rig.kernel, rig.machine
    buf = kernel.alloc_buffer(2 * PAGE_SIZE)
    boundary = buf + PAGE_SIZE
    name = bytes(0x61 + (i * 7) % 26 for i in range(length))
    machine.write(boundary - 16 - length, b"\xa5" * (16 + length))
    machine.write(boundary - gap - length, name)
    machine.write(boundary, b"G" * PAGE_SIZE)
    prot = rig.protect(boundary)
    result = rig.call("full_name_hash", salt, boundary - gap - length, length)
    return rig, prot, result, name


def _check_hash(rig, prot, result, name, length, gap, salt, policy="inject-reclaim"):
    assert result.returned, result.outcome
    assert result.x0 == full_name_hash_ref(salt, name)
    # The last word load reads 8*ceil(len/8) bytes from the name's start: it crosses the
    # boundary exactly when that overshoot is larger than the gap.
    crosses = length > 0 and 8 * -(-length // 8) - length > gap
    fixups = result.events_of("fixup")
    if policy == "reclaim":
        assert not fixups
        assert bool(result.events_of("reclaim")) == crosses
        expected_state = PageState.POISON if crosses else PageState.OWNED
        assert rig.hyp.ownership.guest_state(prot.handle, prot.gfn) is expected_state
        return
    assert [f.data["fixup"].kind for f in fixups] == ([ExType.LOAD_UNALIGNED_ZEROPAD] if crosses else [])
    if fixups:
        assert rig.kernel.symbols.function_at(fixups[0].data["fixup"].entry.insn).name == "full_name_hash"
    assert not result.events_of("reclaim")
    assert rig.hyp.ownership.guest_state(prot.handle, prot.gfn) is PageState.OWNED
    assert rig.machine.phys.read(prot.pfn << 12, PAGE_SIZE) == prot.before


HASH_CASES = [(5, 0), (13, 2), (8, 0), (7, 1), (0, 0), (30, 1), (1, 6), (15, 0)]


@pytest.mark.kernel
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
@pytest.mark.parametrize("length,gap", HASH_CASES, ids=[f"len{n}-gap{g}" for n, g in HASH_CASES])
def test_full_name_hash_zeropad_at_protected_page(key, length, gap):
    salt = 0x1234_5678_9ABC_DEF0
    rig, prot, result, name = _hash_case(key, length, gap, salt)
    _check_hash(rig, prot, result, name, length, gap, salt)


@pytest.mark.kernel
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
def test_zeropad_overread_under_reclaim_costs_the_guest_its_page(key):
    """README row (a) with the kernel's own code: same hash, but the guest page is gone."""
    rig, prot, result, name = _hash_case(key, 5, 0, 0, policy="reclaim")
    _check_hash(rig, prot, result, name, 5, 0, 0, policy="reclaim")


@pytest.mark.kernel
def test_stubbed_callee_is_an_event(vmlinux):
    rig = rig_for(f"{vmlinux.version.major}.{vmlinux.version.minor}")
    kernel = rig.kernel
    # __check_object_size is stubbed by default; calling it directly shows the stub's behaviour.
    result = kernel.call("__check_object_size", 1, 2, 3)
    assert result.returned and result.x0 == 0
    assert [e.data["name"] for e in result.events_of("stub")] == ["__check_object_size"]


# ------------------------------------------------------------------ sweeps
SWEEP_LENGTHS = range(0, 65)


@pytest.mark.sweep
@pytest.mark.kernel
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
@pytest.mark.parametrize("n", SWEEP_LENGTHS, ids=[f"n{n}" for n in SWEEP_LENGTHS])
def test_sweep_copy_from_user(key, n, record_property):
    for k in sorted({0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, n - 1, n, n + 1} - {-1}):
        rig, prot, result, dst_after, source = _copy_case(key, n, k)
        _check_copy(rig, prot, result, dst_after, source, n, k, record_property)


@pytest.mark.sweep
@pytest.mark.kernel
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
@pytest.mark.parametrize("length", SWEEP_LENGTHS, ids=[f"len{n}" for n in SWEEP_LENGTHS])
def test_sweep_full_name_hash(key, length):
    for gap in range(0, 9):
        salt = (length * 0x9E37_79B9 + gap) & MASK64
        rig, prot, result, name = _hash_case(key, length, gap, salt)
        _check_hash(rig, prot, result, name, length, gap, salt)


# ------------------------------------------------------------------ CLI
@pytest.mark.kernel
def test_cli_info_prints_counts(vmlinux, capsys):
    assert kernel_main(["kernel", "info", str(vmlinux.path)]) == 0
    out = capsys.readouterr().out
    assert f"{len(vmlinux.extable)} entries" in out
    for kind, n in KERNELS[f"{vmlinux.version.major}.{vmlinux.version.minor}"].by_type.items():
        assert any(line.split()[0] == kind.value and line.split()[-1] == str(n) for line in out.splitlines() if line.startswith("  ")), kind


@pytest.mark.kernel
def test_cli_call_full_name_hash_takes_the_fixup(vmlinux, capsys):
    argv = ["kernel", "call", str(vmlinux.path), "full_name_hash", "0", "buf+4091", "5",
            "--buffer", "8192", "--write", "buf+4091=hello", "--protect", "buf+4096"]
    assert kernel_main(argv) == 0
    out = capsys.readouterr().out
    assert "fixup: LOAD_UNALIGNED_ZEROPAD" in out
    assert f"x0: {full_name_hash_ref(0, b'hello'):#x}" in out
    assert "OWNED, contents unchanged" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["kernel", "info", "/nonexistent/vmlinux"], "no such vmlinux"),
        (["kernel", "info", "bogus-suite-or-file"], "no such vmlinux"),
        (["kernel", "fetch", "potato"], "unknown suite"),
    ],
    ids=["missing-file", "bad-name", "bad-suite"],
)
def test_cli_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert kernel_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.kernel
@pytest.mark.parametrize(
    "extra,message",
    [
        (["no_such_function_xyz"], "unknown symbol"),
        (["full_name_hash", "12q"], "not an integer"),
        (["full_name_hash", "buf"], "not mapped"),
        (["full_name_hash", "--policy", "maybe"], "unknown policy"),
    ],
    ids=["unknown-symbol", "bad-int", "unmapped-buf", "bad-policy"],
)
def test_cli_call_bad_input(vmlinux, extra, message, capsys):
    assert kernel_main(["kernel", "call", str(vmlinux.path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_not_a_vmlinux(tmp_path, capsys):
    bogus = tmp_path / "vmlinux"
    bogus.write_bytes(b"\x7fELF" + bytes(60))
    assert kernel_main(["kernel", "info", str(bogus)]) == 2
    assert "not" in capsys.readouterr().err


# ------------------------------------------------------------------ numbering choice (no kernel needed)
LDR_X4_X1 = 0xF9400024
CPYFPRT = 0x19012446
MOV_X0 = 0xD2800000


def _entries(*types: int) -> list[ExtableEntry]:
    return [ExtableEntry(0x1000 + 4 * i, 0x2000, t, 0) for i, t in enumerate(types)]


@pytest.mark.parametrize(
    "version,types,word,expected",
    [
        ((6, 1), (2, 3, 4), LDR_X4_X1, NUMBERING_V6_1),
        ((6, 12), (2, 4), LDR_X4_X1, NUMBERING_V6_1),
        ((7, 2), (2, 4, 5), CPYFPRT, NUMBERING_V7),
        ((6, 17), (2, 4), CPYFPRT, NUMBERING_V7),  # inside the uncertain window: the entries decide
        ((6, 17), (2, 4), LDR_X4_X1, NUMBERING_V6_1),
        ((7, 0), (2, 3), MOV_X0, NUMBERING_V7),  # no type 4/5 at all: the version decides
    ],
    ids=["6.1-loads", "6.12-loads", "7.2-type5", "6.17-mops", "6.17-loads", "7.0-version-only"],
)
def test_choose_numbering(version, types, word, expected):
    numbering, _ = choose_numbering(KernelVersion(*version, 0, "x"), _entries(*types), lambda a: word)
    assert numbering is expected


@pytest.mark.parametrize(
    "version,types,word,message",
    [
        ((6, 1), (2, 4), CPYFPRT, "implies the v6.1"),
        ((7, 2), (2, 4), LDR_X4_X1, "implies the v7"),
        ((6, 1), (2, 6), LDR_X4_X1, "unknown"),
        ((7, 2), (2, 5, 7), CPYFPRT, "unknown"),
        ((6, 1), (2, 4), MOV_X0, "neither loads nor MOPS"),
        ((6, 16), (2, 3), MOV_X0, "ambiguous"),
    ],
    ids=["6.1-with-mops", "7.2-with-loads", "type6-in-v6.1", "type7-in-v7", "type4-on-mov", "window-no-evidence"],
)
def test_choose_numbering_refuses(version, types, word, message):
    with pytest.raises(VmlinuxError, match=message):
        choose_numbering(KernelVersion(*version, 0, "x"), _entries(*types), lambda a: word)


@pytest.mark.parametrize(
    "banner,expected",
    [
        ("Linux version 6.1.0-50-cloud-arm64 (debian-kernel@lists.debian.org) (gcc-12", (6, 1, 0, "6.1.0-50-cloud-arm64")),
        ("Linux version 7.2.13+deb14-cloud-arm64 (x) #1 SMP PREEMPT", (7, 2, 13, "7.2.13+deb14-cloud-arm64")),
        ("Linux version 6.18-rc3 (x)", (6, 18, 0, "6.18-rc3")),
    ],
    ids=["bookworm", "sid", "rc"],
)
def test_banner_version(banner, expected):
    assert KernelVersion.from_banner(banner) == KernelVersion(*expected)


@pytest.mark.parametrize("banner", ["Linux 6.1", "Linux version foo", ""], ids=["no-version-word", "no-number", "empty"])
def test_banner_version_refuses(banner):
    with pytest.raises(VmlinuxError):
        KernelVersion.from_banner(banner)


# ------------------------------------------------------------------ cache and fetcher (no kernel needed)
def test_cache_roundtrip_and_key(tmp_path):
    vm = tmp_path / "vmlinux"
    vm.write_bytes(b"x")
    record = {"a": [1, 2, 3], "b": b"\x00\x01", "c": ("t", None)}
    where = store_cached(vm, (1, 2, 3), record, tmp_path / "cache")
    assert where == tmp_path / "vmlinux.faultlab-cache"
    assert load_cached(vm, (1, 2, 3), tmp_path / "cache") == record
    assert load_cached(vm, (1, 2, 4), tmp_path / "cache") is None  # another size/mtime: parse again


def test_cache_refuses_objects(tmp_path):
    vm = tmp_path / "vmlinux"
    vm.write_bytes(b"x")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "vmlinux.faultlab-cache").write_bytes(pickle.dumps({"key": [1], "record": {"x": Evil()}}))
    assert load_cached(vm, (1,), tmp_path / "cache") is None
    (tmp_path / "vmlinux.faultlab-cache").write_bytes(b"garbage")
    assert load_cached(vm, (1,), tmp_path / "cache") is None


def test_cache_falls_back_when_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    vm = ro / "vmlinux"
    vm.write_bytes(b"x")
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write read-only folders (root)")
        where = store_cached(vm, (1,), {"v": 1}, tmp_path / "cache")
        assert where is not None and where.parent == tmp_path / "cache"
        assert load_cached(vm, (1,), tmp_path / "cache") == {"v": 1}
    finally:
        ro.chmod(0o755)


def _deb(members: dict[str, bytes], symlinks: dict[str, str]) -> bytes:
    """A minimal Debian package: ar archive with debian-binary, control.tar.xz, data.tar.xz (deb(5))."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in symlinks.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, blob in (("debian-binary", b"2.0\n"), ("control.tar.xz", b"\0" * 3), ("data.tar.xz", data.getvalue())):
        out.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(blob):<10}`\n".encode())
        out.write(blob + (b"\n" if len(blob) & 1 else b""))
    return out.getvalue()


def test_deb_extraction_takes_only_the_vmlinux(tmp_path, monkeypatch):
    deb = tmp_path / "k.deb"
    deb.write_bytes(
        _deb(
            {
                "./usr/lib/debug/lib/modules/9.9/vmlinux": b"ELF-image",
                "./usr/lib/debug/../../../evil/vmlinux": b"nope",
                "./usr/share/doc/vmlinux-notes": b"nope",
                "./usr/lib/debug/boot/System.map": b"nope",
            },
            {"./usr/lib/debug/boot/vmlinux-9.9": "../lib/modules/9.9/vmlinux"},
        )
    )
    monkeypatch.setattr(kernels.shutil, "which", lambda tool: None)  # our own ar reader, not dpkg-deb
    root = tmp_path / "cache" / "sid"
    written = kernels._extract_vmlinux(deb, root)
    assert written == [root / "usr/lib/debug/lib/modules/9.9/vmlinux"]
    assert written[0].read_bytes() == b"ELF-image"
    assert not (tmp_path / "evil").exists()
    monkeypatch.setenv("FAULTLAB_KCACHE", str(tmp_path / "cache"))
    assert kernels.find_cached("sid") == written[0]


def test_resolve_and_fetch_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("FAULTLAB_VMLINUX", raising=False)
    with pytest.raises(kernels.KernelFetchError, match="FAULTLAB_VMLINUX"):
        kernels.resolve(None)
    monkeypatch.setenv("FAULTLAB_VMLINUX", str(tmp_path / "missing"))
    with pytest.raises(kernels.KernelFetchError, match="no such vmlinux"):
        kernels.resolve(None)
    vm = tmp_path / "vmlinux"
    vm.write_bytes(b"x")
    monkeypatch.setenv("FAULTLAB_VMLINUX", str(vm))
    assert kernels.resolve(None) == vm
    with pytest.raises(kernels.KernelFetchError, match="unknown suite"):
        kernels.fetch("hamm")
    monkeypatch.setenv("FAULTLAB_KCACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(kernels.shutil, "which", lambda tool: None)
    with pytest.raises(kernels.KernelFetchError, match="apt-get not found"):
        kernels.fetch("bookworm")
