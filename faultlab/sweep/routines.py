"""The routines a sweep knows: one `RoutineSpec` per guest_asm routine, with its plans and argument builders.

Each spec names the routine's buffers (how they are mapped and filled),
which of them the guest page may sit in (`sides`), how far the routine
reaches into each for given sizes, how the sizes and buffer addresses
become its arguments, its reference model (faultlab/reference/) and the
quick and full plans `faultlab sweep` and the tests run.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

from emu.memory import PAGE_SIZE

from faultlab import reference as ref
from faultlab.sweep.spec import FILL_DST, BufferSpec, Plan, RoutineSpec

TWO_PAGES = 2 * PAGE_SIZE
LARGE_SIZES = (4 * PAGE_SIZE + 5, 16 * PAGE_SIZE)
SALT = 0x6A09_E667_F3BC_C908  # any salt: the hash must not care where it comes from
PUT_USER_VALUE = 0x3132_3334_3536_3738  # bytes 0x31-0x38: unlike the 0x40-0x7f the buffer holds


def _every_length(extra: Sequence[int] = LARGE_SIZES) -> list[tuple[int, ...]]:
    return [(n,) for n in range(TWO_PAGES + 1)] + [(n,) for n in extra]


# quick: one short size with every boundary under every policy, then residues mod 8/16 and a page-crossing size
COPY_QUICK = Plan([(0,), (5,), (15,), (31,), (100,), (4096 + 23,)], every_boundary_upto=5, sampled_boundaries=2, all_policies_upto=5)
COPY_FULL = Plan(_every_length(), every_boundary_upto=40, sampled_boundaries=2, all_policies_upto=160)


def _n(sizes: tuple[int, ...], _buffer: str) -> int:
    return sizes[0]


def _dst_src_n(sizes: tuple[int, ...], at: Mapping[str, int]) -> tuple[int, ...]:
    return (at["dst"], at["src"], sizes[0])


def _copy(
    name: str, file: str, dst: BufferSpec, src: BufferSpec, sides: tuple[str, str],
    reference: Callable[[ref.RefCase], ref.Expected], extable: str, contract: str,
) -> RoutineSpec:
    """A copy(dst, src, n): both buffers reach n bytes, the guest page in either; the copy plans."""
    return RoutineSpec(
        name, file, name, (dst, src), sides,
        reach=_n, args=_dst_src_n, reference=reference, quick=COPY_QUICK, full=COPY_FULL, extable=extable, contract=contract,
    )


def _string_sizes(lengths: Iterable[int]) -> list[tuple[int, int]]:
    """(string length L, count) pairs: count around L and a roomy one; counts 0 and 1 for short strings only."""
    out = []
    for L in lengths:
        counts = {max(L - 1, 0), L, L + 1, L + 8, L + 64} | ({0, 1} if L < 16 else set())
        out += [(L, count) for count in sorted(counts)]
    return out


STRING_QUICK = Plan([(0, 1), (5, 64), (13, 13), (40, 100)], every_boundary_upto=0, sampled_boundaries=2)
STRING_FULL = Plan(
    _string_sizes(list(range(0, 100)) + list(range(100, TWO_PAGES + 1, 61)) + [TWO_PAGES - 1, TWO_PAGES]),
    every_boundary_upto=16,
    sampled_boundaries=2,
    all_policies_upto=48,
)


def _nul_at(buffer: str) -> Callable:
    """prepare(): the string in `buffer` ends with a NUL at L (sizes[0])."""

    def prepare(sizes, images, offsets, _rng) -> None:
        at = offsets[buffer] + sizes[0]
        if at < len(images[buffer]):
            images[buffer][at] = 0

    return prepare


def _same_name(sizes, images, offsets, _rng) -> None:
    """dentry_name_cmp: ct starts as a copy of cs's first tcount bytes, with one byte changed at `diff` (if >= 0)."""
    tcount, diff = sizes
    cs, ct = offsets["cs"], offsets["ct"]
    images["ct"][ct : ct + tcount] = images["cs"][cs : cs + tcount]
    if diff >= 0:
        images["ct"][ct + diff] ^= 0x01


NAME_QUICK = Plan([(0,), (6,), (8,), (21,)], every_boundary_upto=0, sampled_boundaries=3)
NAME_FULL = Plan([(n,) for n in range(0, 300)] + [(n,) for n in range(300, 4200, 7)], every_boundary_upto=40, sampled_boundaries=3, all_policies_upto=120)


def _cmp_sizes(counts: Iterable[int]) -> list[tuple[int, int]]:
    out = []
    for t in counts:
        out += [(t, -1)] + [(t, d) for d in sorted({0, t // 2, t - 1}) if 0 <= d < t]
    return out


VMM_QUICK = Plan([(8,), (20,), (64,)], every_boundary_upto=0, sampled_boundaries=2)
VMM_FULL = Plan([(n,) for n in range(0, 97)] + [(n,) for n in range(97, TWO_PAGES + 1, 37)] + [(TWO_PAGES,)],
                every_boundary_upto=40, sampled_boundaries=2, all_policies_upto=96)

UACCESS_ENTRY = "UACCESS_ERR_ZERO (USER(): err/zero = wzr) on every user access"


def _single(sizes_list: Sequence[tuple[int, ...]], exhaustive: bool) -> Plan:
    return Plan(sizes_list, every_boundary_upto=64, exhaustive=exhaustive)


def _specs() -> list[RoutineSpec]:
    specs = [
        RoutineSpec(
            "load_unaligned_zeropad", "word_at_a_time.S", "load_unaligned_zeropad",
            (BufferSpec("addr"),), ("addr",),
            reach=lambda s, b: 8, args=lambda s, at: (at["addr"],), reference=ref.load_unaligned_zeropad,
            quick=_single([(8,)], False), full=_single([(8,)], True),
            extable="LOAD_UNALIGNED_ZEROPAD (data x0, addr x1)",
            contract="x0 = the 8 bytes at addr, those on the guest's page read as 0; oops if the first byte's word is the guest's",
            leak_window=3,
        ),
        RoutineSpec(
            "full_name_hash", "word_at_a_time.S", "full_name_hash",
            (BufferSpec("name"),), ("name",),
            reach=lambda s, b: s[0] + 8, args=lambda s, at: (SALT, at["name"], s[0]), reference=ref.full_name_hash,
            quick=NAME_QUICK, full=NAME_FULL,
            extable="LOAD_UNALIGNED_ZEROPAD on the word load",
            contract="fs/namei.c hash of name[0..len); over-read past len zero-padded; bytes past len never matter",
            leak_window=6,
        ),
        RoutineSpec(
            "hashlen_string", "word_at_a_time.S", "hashlen_string",
            (BufferSpec("name"),), ("name",),
            reach=lambda s, b: s[0] + 9, args=lambda s, at: (SALT, at["name"]), reference=ref.hashlen_string,
            quick=NAME_QUICK, full=NAME_FULL, prepare=_nul_at("name"),
            extable="LOAD_UNALIGNED_ZEROPAD on the word load",
            contract="(len << 32) | full_name_hash(name, len) of a NUL-terminated name; a guest page ends the name",
            leak_window=6,
        ),
        RoutineSpec(
            "dentry_name_cmp", "word_at_a_time.S", "dentry_name_cmp",
            (BufferSpec("cs", align=8), BufferSpec("ct")), ("ct", "cs"),
            reach=lambda s, b: s[0] + 8 if b == "ct" else max(8, -(-s[0] // 8) * 8),
            args=lambda s, at: (at["cs"], at["ct"], s[0]), reference=ref.dentry_name_cmp,
            quick=Plan(_cmp_sizes([0, 13]), sampled_boundaries=2, all_policies_upto=8),
            full=Plan(_cmp_sizes(list(range(0, 80)) + list(range(80, 1024, 29))), every_boundary_upto=24, sampled_boundaries=3, all_policies_upto=48),
            prepare=_same_name,
            extable="LOAD_UNALIGNED_ZEROPAD on ct's word load; none on cs (aligned, padded)",
            contract="0 if cs[0..tcount) == ct[0..tcount) else 1; ct over-read zero-padded",
            leak_window=6,
        ),
        RoutineSpec(
            "strscpy", "word_at_a_time.S", "strscpy",
            (BufferSpec("dst", fill=FILL_DST), BufferSpec("src")), ("src", "dst"),
            reach=lambda s, b: min(s[1], s[0] + 8), args=lambda s, at: (at["dst"], at["src"], s[1]), reference=ref.strscpy,
            quick=STRING_QUICK, full=STRING_FULL, prepare=_nul_at("src"),
            extable="LOAD_UNALIGNED_ZEROPAD on the word loads; none on the byte tail or on dst",
            contract="length, or -E2BIG (count 0 or no NUL in count: dst = count-1 bytes + NUL); word holding the NUL stored zero-padded",
        ),
        _copy(
            "__arch_copy_from_user", "uaccess.S", BufferSpec("dst", fill=FILL_DST), BufferSpec("src", mapping="user"), ("src", "dst"),
            reference=ref.copy_from_user,
            extable=UACCESS_ENTRY + "; fixups 9997 (one-byte retry) / 9998",
            contract="x0 = bytes not copied; reported prefix copied; >= 1 copied if the first byte can be; nothing stored past the fault",
        ),
        _copy(
            "__arch_copy_to_user", "uaccess.S", BufferSpec("dst", mapping="user", fill=FILL_DST), BufferSpec("src"), ("dst", "src"),
            reference=ref.copy_to_user,
            extable=UACCESS_ENTRY + "; fixups 9997 (one-byte retry) / 9998",
            contract="x0 = bytes not copied; reported prefix copied; unreported stores only before the fault",
        ),
        RoutineSpec(
            "__arch_clear_user", "uaccess.S", "__arch_clear_user",
            (BufferSpec("addr", mapping="user", fill=FILL_DST),), ("addr",),
            reach=_n, args=lambda s, at: (at["addr"], s[0]), reference=ref.clear_user, quick=COPY_QUICK, full=COPY_FULL,
            extable=UACCESS_ENTRY,
            contract="x0 = bytes not cleared; [0, n - x0) zero; never more reported than cleared",
        ),
    ]
    for size in (1, 2, 4, 8):
        specs.append(RoutineSpec(
            f"get_user_{size}", "uaccess.S", f"get_user_{size}",
            (BufferSpec("uaddr", mapping="user"),), ("uaddr",),
            reach=lambda s, b: s[0], args=lambda s, at: (at["uaddr"],), reference=ref.REFERENCES[f"get_user_{size}"],
            quick=_single([(size,)], False), full=_single([(size,)], True),
            extable="UACCESS_ERR_ZERO (err x0, zero x1)",
            contract="x0 = 0, x1 = value; or x0 = -EFAULT, x1 = 0",
        ))
    for size in (1, 2, 4, 8):
        specs.append(RoutineSpec(
            f"put_user_{size}", "uaccess.S", f"put_user_{size}",
            (BufferSpec("uaddr", mapping="user", fill=FILL_DST),), ("uaddr",),
            reach=lambda s, b: s[0], args=lambda s, at: (PUT_USER_VALUE, at["uaddr"]), reference=ref.REFERENCES[f"put_user_{size}"],
            quick=_single([(size,)], False), full=_single([(size,)], True),
            extable="UACCESS_ERR_ZERO (err x0)",
            contract="x0 = 0 and the value stored; or x0 = -EFAULT",
        ))
    specs += [
        _copy(
            "copy_from_kernel_nofault", "uaccess.S", BufferSpec("dst", fill=FILL_DST), BufferSpec("src"), ("src", "dst"),
            reference=ref.copy_from_kernel_nofault,
            extable="KACCESS_ERR_ZERO (err x0, zero x4) on every source load",
            contract="0, or -EFAULT with the whole 8/4/2/1-byte chunks before the fault copied",
        ),
        _copy(
            "copy_to_kernel_nofault", "uaccess.S", BufferSpec("dst", fill=FILL_DST), BufferSpec("src"), ("dst", "src"),
            reference=ref.copy_to_kernel_nofault,
            extable="KACCESS_ERR_ZERO (err x0) on every destination store",
            contract="0, or -EFAULT with the whole chunks before the fault copied",
        ),
        RoutineSpec(
            "strncpy_from_user", "uaccess.S", "strncpy_from_user",
            (BufferSpec("dst", fill=FILL_DST), BufferSpec("src", mapping="user")), ("src", "dst"),
            reach=lambda s, b: min(s[1], s[0] + 8), args=lambda s, at: (at["dst"], at["src"], s[1]), reference=ref.strncpy_from_user,
            quick=STRING_QUICK, full=STRING_FULL, prepare=_nul_at("src"),
            extable="UACCESS_ERR_ZERO (wzr/wzr) on the word load (-> byte loop) and the byte load (-> -EFAULT)",
            contract="length if NUL within count, else count; -EFAULT if a byte it needed faulted",
        ),
        RoutineSpec(
            "strnlen_user", "uaccess.S", "strnlen_user",
            (BufferSpec("src", mapping="user"),), ("src",),
            reach=lambda s, b: min(s[1], s[0] + 1) + 8, args=lambda s, at: (at["src"], s[1]), reference=ref.strnlen_user,
            quick=STRING_QUICK, full=STRING_FULL, prepare=_nul_at("src"),
            extable="UACCESS_ERR_ZERO (wzr/wzr) on the aligned word load (-> 0)",
            contract="strlen + 1 if NUL within count, count + 1 if not, 0 on a fault",
        ),
    ]
    for variant in ("lse", "llsc"):
        specs.append(RoutineSpec(
            f"futex_atomic_add_{variant}", "uaccess.S", f"futex_atomic_add_{variant}",
            (BufferSpec("uaddr", mapping="user", align=4),), ("uaddr",),
            reach=lambda s, b: 4, args=lambda s, at: (at["uaddr"], 3), reference=ref.futex_atomic_add,
            quick=_single([(4,)], False), full=_single([(4,)], True),
            extable="UACCESS_ERR_ZERO (err x0, zero x3) on " + ("ldaddal" if variant == "lse" else "ldxr and stlxr"),
            contract="x0 = 0, x1 = old and *uaddr += 3; or x0 = -EFAULT, x1 = 0",
        ))
    specs += [
        _copy(
            "gup_kernel_copy", "gup.S", BufferSpec("dst", fill=FILL_DST), BufferSpec("src", mapping="alias"), ("src", "dst"),
            reference=ref.gup_kernel_copy,
            extable="none (plain memcpy through a kernel alias)",
            contract="memcpy; returns dst; a guest page oopses under inject, is reclaimed under inject-reclaim",
        ),
        RoutineSpec(
            "vmm_main", "vmm.S", "vmm_main",
            (BufferSpec("guest", mapping="user"), BufferSpec("out", mapping="user", fill=FILL_DST)), ("guest",),
            reach=lambda s, b: s[0] + (16 if b == "out" else 0), args=lambda s, at: (at["guest"], s[0], at["out"]),
            reference=ref.vmm_main, quick=VMM_QUICK, full=VMM_FULL, el=0,
            extable="none (EL0): SIGSEGV handler + the vmm_fixups table",
            contract="x0 = bytes read, x1 = faults; faulting accesses skipped; record (count, last si_addr) at out - 16",
        ),
        RoutineSpec(
            "vmm_write", "vmm.S", "vmm_write",
            (BufferSpec("guest", mapping="user"), BufferSpec("rec", mapping="user", fill=FILL_DST)), ("guest",),
            reach=lambda s, b: s[0] if b == "guest" else 16, args=lambda s, at: (at["guest"], s[0], at["rec"]),
            reference=ref.vmm_write, quick=VMM_QUICK, full=VMM_FULL, el=0,
            extable="none (EL0): SIGSEGV handler + the vmm_fixups table",
            contract="x0 = bytes written, x1 = faults; faulting stores skipped; record at rec",
        ),
    ]
    return specs


ROUTINES: dict[str, RoutineSpec] = {s.name: s for s in _specs()}
