"""The guest_asm routines, one by one, with expectations written out by hand.

The sweeps (tests/test_sweeps.py) compare against faultlab/reference/;
these tests do not use it. Every expected value here comes from the kernel's
documented contract or from arithmetic done in the test, so a model and a
routine that are wrong the same way still fail here.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from kasm import assemble_file
from emu.disasm import Disassembler
from kimage.extable_format import NUMBERING_V7, ExType
from emu.memory import PAGE_SIZE
from faultlab.lab import Lab

ASM = Path(__file__).resolve().parent.parent / "guest_asm"
MASK64 = (1 << 64) - 1
EFAULT = (-14) & MASK64
E2BIG = (-7) & MASK64


def make_lab(policy: str) -> Lab:
    lab = Lab(policy)
    for name in ("uaccess.S", "word_at_a_time.S", "gup.S"):
        lab.load_asm(ASM / name)
    lab.load_user_asm(ASM / "vmm.S")
    return lab


@pytest.fixture(scope="module")
def labs():
    made: dict[str, Lab] = {}

    def get(policy: str) -> Lab:
        if policy not in made:
            made[policy] = make_lab(policy)
        return made[policy]

    return get


@pytest.fixture
def lab(labs) -> Lab:
    return labs("inject")


def fresh(lab: Lab, pages: int = 3, **kw):
    """A new region filled with 0x55 (so untouched bytes are recognisable)."""
    region = lab.alloc(f"r{len(lab.regions)}", pages, **kw)
    lab.write(region.va, b"\x55" * region.size)
    return region


def text(n: int, seed: int) -> bytes:
    """n bytes of 0x01-0x7f: no NUL, nothing in the guest's 0x80-0xff range."""
    rng = random.Random(seed)
    return bytes(rng.randrange(1, 0x80) for _ in range(n))


# =========================================================================== exception tables

UNPRIVILEGED = ("ldtr", "sttr")
EXCLUSIVE_OR_ATOMIC = ("ldxr", "stlxr", "ldaddal")

# Entries per routine: what the docs table (docs/routines.md) lists.
EXPECTED_ENTRIES = {
    "__arch_copy_from_user": (ExType.UACCESS_ERR_ZERO, 23),
    "__arch_copy_to_user": (ExType.UACCESS_ERR_ZERO, 23),
    "__arch_clear_user": (ExType.UACCESS_ERR_ZERO, 22),
    "get_user_1": (ExType.UACCESS_ERR_ZERO, 1),
    "get_user_8": (ExType.UACCESS_ERR_ZERO, 1),
    "put_user_4": (ExType.UACCESS_ERR_ZERO, 1),
    "copy_from_kernel_nofault": (ExType.KACCESS_ERR_ZERO, 4),
    "copy_to_kernel_nofault": (ExType.KACCESS_ERR_ZERO, 4),
    "strncpy_from_user": (ExType.UACCESS_ERR_ZERO, 2),
    "strnlen_user": (ExType.UACCESS_ERR_ZERO, 1),
    "futex_atomic_add_lse": (ExType.UACCESS_ERR_ZERO, 1),
    "futex_atomic_add_llsc": (ExType.UACCESS_ERR_ZERO, 2),
    "load_unaligned_zeropad": (ExType.LOAD_UNALIGNED_ZEROPAD, 1),
    "full_name_hash": (ExType.LOAD_UNALIGNED_ZEROPAD, 1),
    "hashlen_string": (ExType.LOAD_UNALIGNED_ZEROPAD, 1),
    "dentry_name_cmp": (ExType.LOAD_UNALIGNED_ZEROPAD, 1),
    "strscpy": (ExType.LOAD_UNALIGNED_ZEROPAD, 1),
    "gup_kernel_copy": (None, 0),
}


def _images():
    return {name: assemble_file(ASM / name, 0xFFFF_8000_0800_0000) for name in ("uaccess.S", "word_at_a_time.S", "gup.S")}


def _owner(image, addr: int) -> str:
    for name, start in image.symbols.items():
        if start <= addr < start + image.sizes.get(name, 0):
            return name
    raise AssertionError(f"{addr:#x} is in no function")


def _insn(image, addr: int) -> str:
    off = addr - image.base
    return Disassembler().text(int.from_bytes(image.data[off : off + 4], "little"), addr)


@pytest.mark.parametrize("symbol", list(EXPECTED_ENTRIES))
def test_extable_entries_per_routine(symbol):
    for image in _images().values():
        if symbol in image.symbols:
            entries = [e for e in image.extable if _owner(image, e.insn) == symbol]
            kind, count = EXPECTED_ENTRIES[symbol]
            assert len(entries) == count
            assert all(NUMBERING_V7.kind(e.type) is kind for e in entries)
            # a fixup resumes inside the routine that faulted
            assert all(_owner(image, e.fixup) == symbol for e in entries)
            return
    raise AssertionError(f"{symbol} is in no guest_asm file")


@pytest.mark.parametrize("file", ["uaccess.S", "word_at_a_time.S", "gup.S"])
def test_entries_sit_on_the_right_instructions(file):
    image = _images()[file]
    for e in image.extable:
        kind = NUMBERING_V7.kind(e.type)
        insn = _insn(image, e.insn)
        mnemonic = insn.split()[0]
        if kind is ExType.UACCESS_ERR_ZERO:
            assert mnemonic.startswith(UNPRIVILEGED) or mnemonic in EXCLUSIVE_OR_ATOMIC, insn
        elif kind is ExType.KACCESS_ERR_ZERO:
            assert mnemonic in ("ldr", "ldrh", "ldrb", "str", "strh", "strb"), insn
        else:
            assert kind is ExType.LOAD_UNALIGNED_ZEROPAD
            # ldr x<data>, [x<addr>]: the entry names the same two registers
            assert insn == f"ldr x{e.reg_data}, [x{e.reg_addr}]", insn
            assert e.fixup == e.insn + 4


def test_every_unprivileged_access_has_an_entry():
    image = _images()["uaccess.S"]
    annotated = {e.insn for e in image.extable}
    for off in range(0, image.sections[".text"][1], 4):
        addr = image.base + off
        if _insn(image, addr).split()[0].startswith(UNPRIVILEGED):
            assert addr in annotated, f"unannotated user access at {addr:#x} in {_owner(image, addr)}: {_insn(image, addr)}"


# =========================================================================== copies without faults


@pytest.mark.parametrize("routine", ["__arch_copy_from_user", "__arch_copy_to_user", "gup_kernel_copy", "copy_from_kernel_nofault", "copy_to_kernel_nofault"])
def test_copies_copy_exactly_n_bytes(lab, routine):
    user = fresh(lab, 3, user=True, alias=True)
    kern = fresh(lab, 3)
    rng = random.Random(routine)
    for n in list(range(0, 70)) + [127, 128, 129, 200, 4096, 4096 + 77]:
        # dst at 16 + (0..15) into its region: the 16 guard bytes before it are the region's own, whatever
        # frame (a stage-1 table, another test's) precedes it in a lab shared by the module's tests.
        sa, da = rng.randrange(16), 16 + rng.randrange(16)
        data = text(n, n)
        if routine == "__arch_copy_from_user":
            src, dst, src_lin, dst_lin = user.user_va + sa, kern.va + da, user.va + sa, kern.va + da
        elif routine == "__arch_copy_to_user":
            src, dst, src_lin, dst_lin = kern.va + sa, user.user_va + da, kern.va + sa, user.va + da
        elif routine == "gup_kernel_copy":
            src, dst, src_lin, dst_lin = user.alias_va + sa, kern.va + da, user.va + sa, kern.va + da
        else:
            src, dst, src_lin, dst_lin = user.va + sa, kern.va + da, user.va + sa, kern.va + da
        lab.write(src_lin, data)
        lab.write(dst_lin - 16, b"\x55" * (n + 32))
        r = lab.call(routine, dst, src, n)
        assert r.outcome.kind == "returned"
        assert r.x0 == (dst if routine == "gup_kernel_copy" else 0)
        assert lab.read(dst_lin, n) == data
        assert lab.read(dst_lin - 16, 16) == b"\x55" * 16 and lab.read(dst_lin + n, 16) == b"\x55" * 16


@pytest.mark.parametrize("n", [0, 1, 7, 15, 16, 17, 63, 64, 65, 100, 4096 + 3])
def test_clear_user_clears_exactly_n_bytes(lab, n):
    region = fresh(lab, 3, user=True)
    start = 5 + n % 11
    r = lab.call("__arch_clear_user", region.user_va + start, n)
    assert (r.outcome.kind, r.x0) == ("returned", 0)
    assert lab.read(region.va, start) == b"\x55" * start
    assert lab.read(region.va + start, n) == bytes(n)
    assert lab.read(region.va + start + n, 32) == b"\x55" * 32


# =========================================================================== faults in copies (policy: inject)


def test_copy_from_user_retries_one_byte_when_nothing_was_copied(lab):
    """n = 8 with 3 readable bytes: the 8-byte load faults, the fixup copies one byte and reports 7 not copied."""
    user, kern = fresh(lab, 2, user=True), fresh(lab, 1)
    lab.write(user.va + PAGE_SIZE - 3, b"abc")
    lab.donate(user.pfns[1])
    r = lab.call("__arch_copy_from_user", kern.va + 8, user.user_va + PAGE_SIZE - 3, 8)
    assert (r.outcome.kind, r.x0) == ("returned", 7)
    assert lab.read(kern.va + 8, 8) == b"a" + b"\x55" * 7


def test_copy_from_user_does_not_count_the_block_in_flight(lab):
    """256 bytes from 100 bytes before the guest page: 4 bytes align src, the 64-byte block [4, 68)
    completes, the next block faults at its 100th byte before storing anything: 68 reported.
    (The kernel allows reporting less than was readable, never more.)"""
    user, kern = fresh(lab, 2, user=True), fresh(lab, 1)
    data = text(100, 1)
    lab.write(user.va + PAGE_SIZE - 100, data)
    lab.donate(user.pfns[1])
    r = lab.call("__arch_copy_from_user", kern.va, user.user_va + PAGE_SIZE - 100, 256)
    assert (r.outcome.kind, r.x0) == ("returned", 256 - 68)
    assert lab.read(kern.va, 68) == data[:68]
    assert lab.read(kern.va + 68, 16) == b"\x55" * 16


def test_copy_to_user_stops_at_the_guest_page_and_leaves_it_alone(lab):
    user, kern = fresh(lab, 2, user=True), fresh(lab, 1)
    data = text(64, 2)
    lab.write(kern.va, data)
    page = lab.donate(user.pfns[1])
    r = lab.call("__arch_copy_to_user", user.user_va + PAGE_SIZE - 40, kern.va, 64)
    assert (r.outcome.kind, r.x0) == ("returned", 24)
    assert lab.read(user.va + PAGE_SIZE - 40, 40) == data[:40]
    assert lab.machine.phys.read(user.pfns[1] << 12, PAGE_SIZE) == page.secret


def test_kernel_side_fault_in_copy_from_user_is_an_oops(lab):
    user, kern = fresh(lab, 1, user=True), fresh(lab, 2)
    lab.donate(kern.pfns[1])
    r = lab.call("__arch_copy_from_user", kern.va + PAGE_SIZE - 8, user.user_va, 32)
    assert r.outcome.kind == "host-oops"


def test_clear_user_reports_what_it_could_not_clear(lab):
    user = fresh(lab, 2, user=True)
    lab.donate(user.pfns[1])
    r = lab.call("__arch_clear_user", user.user_va + PAGE_SIZE - 48, 100)
    assert (r.outcome.kind, r.x0) == ("returned", 52)
    assert lab.read(user.va + PAGE_SIZE - 48, 48) == bytes(48)


# =========================================================================== get_user / put_user / nofault / futex


@pytest.mark.parametrize("size", [1, 2, 4, 8])
@pytest.mark.parametrize("offset", [0, 3, 4093])
def test_get_user_reads_little_endian(lab, size, offset):
    region = fresh(lab, 2, user=True)
    data = text(8, size * 100 + offset)
    lab.write(region.va + offset, data)
    r = lab.call(f"get_user_{size}", region.user_va + offset, 0x1234)
    assert r.outcome.kind == "returned"
    assert (r.x0, r.regs["x1"]) == (0, int.from_bytes(data[:size], "little"))


@pytest.mark.parametrize("size", [1, 2, 4, 8])
@pytest.mark.parametrize("before", [0, 1])
def test_get_user_fault_gives_efault_and_zero(lab, size, before):
    """ERR_ZERO: the value register is zeroed even though it held junk (0x1234 in x1 at entry)."""
    region = fresh(lab, 2, user=True)
    lab.donate(region.pfns[1])
    r = lab.call(f"get_user_{size}", region.user_va + PAGE_SIZE - before, 0x1234)
    if before and size == 1:
        assert (r.x0, r.regs["x1"]) == (0, 0x55)
    else:
        assert (r.outcome.kind, r.x0, r.regs["x1"]) == ("returned", EFAULT, 0)


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_put_user_stores_or_fails(lab, size):
    region = fresh(lab, 2, user=True)
    value = 0x0102_0304_0506_0708
    r = lab.call(f"put_user_{size}", value, region.user_va + 5)
    assert (r.outcome.kind, r.x0) == ("returned", 0)
    assert lab.read(region.va + 5, 8) == value.to_bytes(8, "little")[:size] + b"\x55" * (8 - size)
    page = lab.donate(region.pfns[1])
    r = lab.call(f"put_user_{size}", value, region.user_va + PAGE_SIZE)
    assert (r.outcome.kind, r.x0) == ("returned", EFAULT)
    assert lab.machine.phys.read(region.pfns[1] << 12, PAGE_SIZE) == page.secret


@pytest.mark.parametrize("routine,bad", [("copy_from_kernel_nofault", "src"), ("copy_to_kernel_nofault", "dst")])
def test_nofault_copies_return_efault_on_their_own_side_only(lab, routine, bad):
    a, b = fresh(lab, 2), fresh(lab, 2)
    lab.donate(a.pfns[1])
    edge = a.va + PAGE_SIZE - 12
    src, dst = (edge, b.va) if bad == "src" else (b.va, edge)
    r = lab.call(routine, dst, src, 20)
    assert (r.outcome.kind, r.x0) == ("returned", EFAULT)
    # the other way round the guest page is on the side without a fixup: an oops
    r = lab.call(routine, src, dst, 20)
    assert r.outcome.kind == "host-oops"


@pytest.mark.parametrize("variant", ["lse", "llsc"])
def test_futex_add_returns_old_value(lab, variant):
    region = fresh(lab, 2, user=True)
    lab.write(region.va + 8, (41).to_bytes(4, "little"))
    r = lab.call(f"futex_atomic_add_{variant}", region.user_va + 8, 3)
    assert (r.outcome.kind, r.x0, r.regs["x1"]) == ("returned", 0, 41)
    assert lab.read(region.va + 8, 4) == (44).to_bytes(4, "little")
    lab.donate(region.pfns[1])
    r = lab.call(f"futex_atomic_add_{variant}", region.user_va + PAGE_SIZE, 3)
    assert (r.outcome.kind, r.x0, r.regs["x1"]) == ("returned", EFAULT, 0)
    assert r.regs["pstate"] & (1 << 22), "PAN must be set again after the fixup"


# =========================================================================== user strings

# (string, count) -> strncpy_from_user's return (lib/strncpy_from_user.c)
STRNCPY = [
    (b"", 5, 0),
    (b"hello", 0, 0),
    (b"hello", 3, 3),
    (b"hello", 5, 5),
    (b"hello", 6, 5),
    (b"hello, world, long enough for words", 100, 35),
    (b"sixteen bytes!!!", 16, 16),
    (b"sixteen bytes!!!", 17, 16),
]


@pytest.mark.parametrize("string,count,expected", STRNCPY, ids=[f"{len(s)}-{c}" for s, c, _ in STRNCPY])
def test_strncpy_from_user(lab, string, count, expected):
    user, kern = fresh(lab, 1, user=True), fresh(lab, 1)
    lab.write(user.va + 3, string + b"\0")
    r = lab.call("strncpy_from_user", kern.va, user.user_va + 3, count)
    assert (r.outcome.kind, r.x0) == ("returned", expected)
    assert lab.read(kern.va, expected) == string[:expected]
    if expected < count:
        assert lab.read(kern.va + expected, 1) == b"\0"
    assert lab.read(kern.va + count, 8) == b"\x55" * 8, "nothing past count is written"


def test_strncpy_from_user_faults_only_on_bytes_it_needs(lab):
    """A word load that runs into the guest page falls back to bytes: the NUL before the page is found."""
    user, kern = fresh(lab, 2, user=True), fresh(lab, 1)
    lab.write(user.va + PAGE_SIZE - 6, b"abcd\0\x01")
    lab.donate(user.pfns[1])
    r = lab.call("strncpy_from_user", kern.va, user.user_va + PAGE_SIZE - 6, 64)
    assert (r.outcome.kind, r.x0) == ("returned", 4)
    lab.write(user.va + PAGE_SIZE - 6, b"abcdef")  # no NUL before the guest page
    r = lab.call("strncpy_from_user", kern.va, user.user_va + PAGE_SIZE - 6, 64)
    assert (r.outcome.kind, r.x0) == ("returned", EFAULT)


# (string, count) -> strnlen_user's return: strlen + 1, or count + 1 when too long
STRNLEN = [(b"", 10, 1), (b"abc", 10, 4), (b"abc", 3, 4), (b"abc", 2, 3), (b"x" * 40, 100, 41), (b"abc", 0, 0)]


@pytest.mark.parametrize("string,count,expected", STRNLEN, ids=[f"{len(s)}-{c}" for s, c, _ in STRNLEN])
@pytest.mark.parametrize("offset", [0, 5])
def test_strnlen_user(lab, string, count, expected, offset):
    user = fresh(lab, 1, user=True)
    lab.write(user.va + offset, string + b"\0")
    r = lab.call("strnlen_user", user.user_va + offset, count)
    assert (r.outcome.kind, r.x0) == ("returned", expected)


def test_strnlen_user_fault_gives_zero(lab):
    user = fresh(lab, 2, user=True)
    lab.write(user.va + PAGE_SIZE - 8, b"abcdefgh")
    lab.donate(user.pfns[1])
    r = lab.call("strnlen_user", user.user_va + PAGE_SIZE - 8, 100)
    assert (r.outcome.kind, r.x0) == ("returned", 0)
    r = lab.call("strnlen_user", user.user_va + PAGE_SIZE - 8, 8)
    assert (r.outcome.kind, r.x0) == ("returned", 9), "count reached before the guest page: no fault"


# =========================================================================== word at a time


def namei_hash(salt: int, name: bytes) -> int:
    """fs/namei.c full_name_hash for 64-bit words, written out again for these tests."""
    def rol(v, s):
        return ((v << s) | (v >> (64 - s))) & MASK64

    golden = 0x61C8864680B583EB
    x, y = 0, salt
    words = [name[i : i + 8] for i in range(0, len(name), 8)]
    for w in words:
        a = int.from_bytes(w, "little")
        if len(w) < 8:
            x ^= a
            break
        x ^= a
        y ^= x
        x = rol(x, 12)
        x = (x + y) & MASK64
        y = rol(y, 45)
        y = (y * 9) & MASK64
    y ^= (x * golden) & MASK64
    y = (y * golden) & MASK64
    return y >> 32


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 15, 16, 17, 31, 64, 100])
def test_full_name_hash(lab, length):
    region = fresh(lab, 1)
    name = text(length, length)
    lab.write(region.va + 3, name + text(8, 99))
    salt = 0xFFFF_0000_1234_5678
    r = lab.call("full_name_hash", salt, region.va + 3, length)
    assert r.x0 == namei_hash(salt, name)
    # the bytes after the name do not matter
    lab.write(region.va + 3 + length, text(8, 98))
    assert lab.call("full_name_hash", salt, region.va + 3, length).x0 == r.x0


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 23, 24])
def test_hashlen_string(lab, length):
    region = fresh(lab, 1)
    name = text(length, length + 50)
    lab.write(region.va + 1, name + b"\0")
    r = lab.call("hashlen_string", 77, region.va + 1)
    assert r.x0 == (length << 32) | namei_hash(77, name)


def test_zeropad_users_stop_at_the_guest_page(lab):
    """A name running into the guest page reads as if it ended there (inject: the fixup's zeros)."""
    region = fresh(lab, 2)
    lab.write(region.va + PAGE_SIZE - 5, b"pkvm.")
    lab.donate(region.pfns[1])
    r = lab.call("hashlen_string", 0, region.va + PAGE_SIZE - 5)
    assert r.x0 == (5 << 32) | namei_hash(0, b"pkvm.")
    r = lab.call("load_unaligned_zeropad", region.va + PAGE_SIZE - 3)
    assert r.x0 == int.from_bytes(b"vm.", "little")


@pytest.mark.parametrize("tcount,diff,expected", [(0, None, 0), (5, None, 0), (8, None, 0), (13, None, 0), (13, 0, 1), (13, 12, 1), (13, 7, 1), (16, 15, 1)])
def test_dentry_name_cmp(lab, tcount, diff, expected):
    region = fresh(lab, 1)
    cs = text(24, 5)
    ct = bytearray(cs)
    ct[tcount:] = text(24 - tcount, 6)  # past tcount: different, and ignored
    if diff is not None:
        ct[diff] ^= 0x20
    lab.write(region.va, cs)
    lab.write(region.va + 203, bytes(ct))
    assert lab.call("dentry_name_cmp", region.va, region.va + 203, tcount).x0 == expected


# (src, count) -> (strscpy's return, bytes of dst that must hold): lib/string.c
STRSCPY = [
    (b"hello", 10, 5, b"hello\0"),
    (b"hello", 6, 5, b"hello\0"),
    (b"hello", 5, E2BIG, b"hell\0"),
    (b"", 1, 0, b"\0"),
    (b"a longer string than a word", 100, 27, b"a longer string than a word\0"),
    (b"a longer string than a word", 9, E2BIG, b"a longer\0"),
]


@pytest.mark.parametrize("src,count,ret,dst", STRSCPY, ids=[f"{len(s)}-{c}" for s, c, _, _ in STRSCPY])
def test_strscpy(lab, src, count, ret, dst):
    region = fresh(lab, 1)
    lab.write(region.va + 1, src + b"\0")
    r = lab.call("strscpy", region.va + 512, region.va + 1, count)
    assert r.x0 == ret
    assert lab.read(region.va + 512, len(dst)) == dst
    assert lab.read(region.va + 512 + count, 8) == b"\x55" * 8


def test_strscpy_count_zero_writes_nothing(lab):
    region = fresh(lab, 1)
    lab.write(region.va, b"abc\0")
    assert lab.call("strscpy", region.va + 100, region.va, 0).x0 == E2BIG
    assert lab.read(region.va + 100, 8) == b"\x55" * 8


# =========================================================================== the motivating cases, per policy


@pytest.mark.parametrize("policy,outcome,guest", [
    ("panic", "hyp-panic", "intact"),
    ("inject", "host-oops", "intact"),
    ("inject-reclaim", "returned", "reclaimed"),
    ("reclaim", "returned", "reclaimed"),
    ("rme-gpc-reclaim", "returned", "reclaimed"),
    ("rme-gpc-el3-inject", "host-oops", "intact"),
])
def test_gup_copy_through_a_kernel_alias(labs, policy, outcome, guest):
    lab = labs(policy)
    pinned, kern = fresh(lab, 1, user=True, alias=True), fresh(lab, 1)
    lab.write(pinned.va, b"A" * PAGE_SIZE)
    page = lab.donate(pinned.pfns[0])  # the VMM donated the page after the driver pinned it
    r = lab.call("gup_kernel_copy", kern.va, pinned.alias_va + 16, 64)
    assert r.outcome.kind == outcome
    reclaimed = lab.hyp.ownership.host_may_access(pinned.pfns[0])
    assert reclaimed == (guest == "reclaimed")
    if outcome == "returned":
        assert lab.read(kern.va, 64) == bytes(64), "a reclaimed page reads as zero, never as the guest's data"
    else:
        assert lab.machine.phys.read(pinned.pfns[0] << 12, PAGE_SIZE) == page.secret


@pytest.mark.parametrize("policy,outcome,faults,read", [
    ("inject", "returned", 2, 8),  # two 8-byte reads fault and are skipped
    ("inject-reclaim", "returned", 2, 8),
    ("reclaim", "returned", 0, 24),
    ("rme-gpc-el3-inject", "task-killed", None, None),
    ("panic", "hyp-panic", None, None),
])
def test_vmm_reads_past_its_buffer(labs, policy, outcome, faults, read):
    lab = labs(policy)
    mem, out = fresh(lab, 2, user=True), fresh(lab, 1, user=True)
    lab.write(mem.va + PAGE_SIZE - 8, b"12345678")
    lab.donate(mem.pfns[1])
    r = lab.call("vmm_main", mem.user_va + PAGE_SIZE - 8, 24, out.user_va + 64, el=0)
    assert r.outcome.kind == outcome
    if outcome != "returned":
        return
    assert (r.x0, r.regs["x1"]) == (read, faults)
    record = lab.read(out.va + 48, 16)
    assert int.from_bytes(record[:8], "little") == faults
    if faults:
        # si_addr of the last fault: the second word of the guest page
        assert int.from_bytes(record[8:], "little") == mem.user_va + PAGE_SIZE + 8
    assert lab.read(out.va + 64, 8) == b"12345678"
    expected_rest = bytes(16) if policy == "reclaim" else b"\x55" * 16
    assert lab.read(out.va + 72, 16) == expected_rest


def test_docs_case_counts_are_the_plans():
    """docs/routines.md's quick/full columns and its total are what the sweep plans under every
    registered policy (they went stale once when a policy was added)."""
    import re

    from hyp.policies import known
    from faultlab.sweep.plan import cases
    from faultlab.sweep.routines import ROUTINES

    policies = list(known())
    counts = {name: (sum(1 for _ in cases(s, False, policies)), sum(1 for _ in cases(s, True, policies))) for name, s in ROUTINES.items()}
    text = (Path(__file__).resolve().parent.parent / "docs" / "routines.md").read_text()
    rows = 0
    for line in text.splitlines():
        m = re.match(r"\| `(\w+)\(.*\| ([\d,]+) \| ([\d,]+) \|$", line)
        if m:
            rows += 1
            assert (int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))) == counts[m.group(1)], m.group(1)
    assert rows >= 14  # the routines with a row of their own (grouped rows give ranges)
    total = sum(full for _, full in counts.values())
    assert f"Full sweep: **{total:,} cases** under the {len(policies)} policies" in text
    assert f"(quick: {sum(q for q, _ in counts.values()):,})" in text
