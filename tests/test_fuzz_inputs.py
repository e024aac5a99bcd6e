"""Hypothesis fuzzing of faultlab's inputs: mutated scenario TOML, kernel-style assembly and ELF fragments.

Every mutation goes through `faultlab.cli.main` in-process (`run`, `matrix`, `kernel info`) and
must end as a user's command would: exit 0, 1 or 2, no traceback, and on exit 2 exactly one
stderr line starting "faultlab: error:"; each call ends within a wall-clock bound. The default
suite runs a short pass (well under 15 s); the 10,000-mutation run is marked `slow` (CI's
sweep/slow job). A traceback or hang found here is fixed in the loader or CLI and pinned as a
case in tests/bad_inputs/cases.toml.
"""
from __future__ import annotations

import contextlib
import io
import re
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultlab.cli import main

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "bad_inputs"
SEEDS = sorted(CORPUS.glob("*.toml")) + sorted((ROOT / "faultlab" / "builtin").glob("*.toml"))
SEEDS = [p for p in SEEDS if p.name != "cases.toml"]
ASM_FILES = sorted((ROOT / "guest_asm").glob("*.S"))
# One call's wall-clock bound: a scenario's runs are bounded by the machine's own timeout and
# budget; anything slower than this is a hang as far as a user is concerned.
CALL_SECONDS = 20.0
_SETTINGS = dict(
    deadline=None,  # the per-call bound below is stricter and names the input; hypothesis' own
    # deadline flakes on a shared 2-core machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    database=None,
)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """`faultlab <argv>` in-process: its exit code and stderr, asserting the bad-input contract."""
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own exits are a user's exits too
            code = e.code if isinstance(e.code, int) else 2
    took = time.monotonic() - start
    text = err.getvalue()
    assert took < CALL_SECONDS, f"{argv}: {took:.1f} s (hang)"
    assert "Traceback" not in text, text
    assert code in (0, 1, 2), (code, text)
    if code == 2:
        lines = text.splitlines()
        assert len(lines) == 1 and lines[0].startswith("faultlab: error:"), text
    return code, text


# ------------------------------------------------------------------ mutations
JUNK = st.sampled_from([
    b"\x00", b"\xff\xfe", b"\xc3(", b"[", b"]", b"[[", b"=", b'"', b"'''", b'"""', b"{", b"}", b",",
    b"\n", b"#", b"\\", b"\\u0000", b"1e308", b"-1", b"0x", b"99999999999999999999999", b"nan", b"inf",
    b"[routine]", b"[expect.x]", b"[[buffer]]", b"budget = 0", b"pages = 0", b"el = 3",
])
VALUES = st.sampled_from([
    '0', '-1', '1', '4096', '0xffffffffffffffff', '18446744073709551616', '-18446744073709551617', '1.5',
    'nan', 'inf', 'true', '""', '"x"', '"\\u0000"', '[]', '[1, 2]', '["a", 1]', '{}', '{ a = 1 }',
    '"SIGSEGV"', '"SIGFOO"', '"returned"', '"src"', '"dst.user + 4096"', '"../../etc/passwd"',
    '"truncated.elf"', '1979-05-27', '"' + "A" * 300 + '"', '2000000000',
])
KEYS = st.sampled_from([
    "name", "policies", "symbol", "asm", "file", "args", "el", "pan", "budget", "task", "pages", "user",
    "alias", "fill", "text", "at", "protect", "share", "outcome", "guest", "x0", "signal", "vmlinux",
    "bogus", "expect", "buffer", "routine",
])


@st.composite
def mutation(draw, data: bytes) -> bytes:
    """One to four edits of `data`: byte flips, truncation, inserted junk, key/value/line edits."""
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "value", "key", "drop", "dup"]))
        n = len(data)
        if op == "flip" and n:
            i = draw(st.integers(0, n - 1))
            data = data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1:]
        elif op == "truncate":
            data = data[: draw(st.integers(0, n))]
        elif op == "insert":
            i = draw(st.integers(0, n))
            data = data[:i] + draw(st.one_of(JUNK, st.binary(max_size=8))) + data[i:]
        else:
            lines = data.split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            line = lines[i].decode("utf-8", "replace")
            if op == "value" and "=" in line:
                lines[i] = (line.split("=", 1)[0] + "= " + draw(VALUES)).encode()
            elif op == "key":
                lines.insert(i, f"{draw(KEYS)} = {draw(VALUES)}".encode())
            elif op == "drop":
                del lines[i]
            elif op == "dup":
                lines.insert(i, lines[i])
            data = b"\n".join(lines)
    return data


@st.composite
def toml_case(draw) -> tuple[str, bytes]:
    seed = draw(st.sampled_from(SEEDS))
    return seed.name, draw(mutation(seed.read_bytes()))


def _toml_string(text: str) -> str:
    """`text` as a TOML basic string (every control character escaped)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@st.composite
def asm_case(draw) -> bytes:
    """A window of a guest_asm/*.S file with mutated lines, as an inline routine ending at `f`."""
    src = draw(st.sampled_from(ASM_FILES)).read_text().splitlines()
    start = draw(st.integers(0, max(0, len(src) - 1)))
    window = src[start: start + draw(st.integers(1, 40))]
    for _ in range(draw(st.integers(0, 4))):
        if not window:
            break
        i = draw(st.integers(0, len(window) - 1))
        how = draw(st.sampled_from(["junk", "operand", "drop", "label", "directive"]))
        if how == "junk":
            window[i] += draw(st.sampled_from([" ,", " [", " #0x", " x99", " :", " \\", " .req", " 1f", " #-1"]))
        elif how == "operand":
            window[i] = re.sub(r"\b(x|w)\d+\b", draw(st.sampled_from(["x31", "w32", "sp", "xzr", "x"])), window[i], count=1)
        elif how == "drop":
            del window[i]
        elif how == "label":
            window.insert(i, draw(st.sampled_from(["1:", "f:", "9999:", ".L:", "a b:"])))
        else:
            window.insert(i, draw(st.sampled_from([
                ".macro m", ".endm", ".if 1", ".endif", ".rept 100000", ".endr", ".align 30", ".skip 0x7fffffff",
                ".quad 1 << 70", "#define X X", "#include \"nope.h\"", ".section .x", "b .", ".inst 0x0",
            ])))
    asm = "\n".join(window) + "\nf:\n\tret\n"
    return (
        f'name = "fuzz-asm"\n[routine]\nasm = {_toml_string(asm)}\nsymbol = "f"\nbudget = 100000\n'
        '[expect.inject]\noutcome = "returned"\n'
    ).encode()


def synthetic_elf() -> bytes:
    """A tiny little-endian AArch64 ELF64: header, one PT_LOAD, .text, .symtab, .strtab, .shstrtab."""
    text = b"\xc0\x03\x5f\xd6" * 4 + b"Linux version 6.1.0-fuzz (fuzz@faultlab) #1 SMP\n".ljust(1024, b"\0")  # ret x4, the banner
    strtab = b"\0memcpy\0linux_banner\0"
    shstr = b"\0.text\0.symtab\0.strtab\0.shstrtab\0"
    sym = struct.pack("<IBBHQQ", 0, 0, 0, 0, 0, 0) + struct.pack("<IBBHQQ", 1, 0x12, 0, 1, 0xFFFF800008000000, 16)
    sym += struct.pack("<IBBHQQ", 8, 0x11, 0, 1, 0xFFFF800008000010, len(text) - 16)
    base = 0xFFFF800008000000
    off_text = 64 + 56
    off_sym = off_text + len(text)
    off_str = off_sym + len(sym)
    off_shstr = off_str + len(strtab)
    off_sh = (off_shstr + len(shstr) + 7) & ~7
    hdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 2, 183, 1, base, 64, off_sh, 0, 64, 56, 1, 64, 5, 4,
    )
    ph = struct.pack("<IIQQQQQQ", 1, 5, off_text, base, base, len(text), len(text), 0x10000)

    def sh(name: int, typ: int, flags: int, addr: int, off: int, size: int, link: int = 0, info: int = 0, ent: int = 0) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, typ, flags, addr, off, size, link, info, 8, ent)

    shdrs = (
        bytes(64)
        + sh(1, 1, 6, base, off_text, len(text))
        + sh(7, 2, 0, 0, off_sym, len(sym), link=3, info=1, ent=24)
        + sh(15, 3, 0, 0, off_str, len(strtab))
        + sh(23, 3, 0, 0, off_shstr, len(shstr))
    )
    body = hdr + ph + text + sym + strtab + shstr
    return body + bytes(off_sh - len(body)) + shdrs


def elf_seed() -> bytes:
    """The first 64 KiB of a cached Debian vmlinux (never downloaded here), else the synthetic ELF."""
    try:
        from faultlab.kernel.fetch import find_cached

        path = find_cached("bookworm") or find_cached("sid")
    except Exception:  # noqa: BLE001 - no cache machinery: the synthetic image does
        path = None
    if path is None:
        return synthetic_elf()
    with open(path, "rb") as f:
        return f.read(1 << 16)


ELF_SEEDS = {"synthetic": synthetic_elf()}


@st.composite
def elf_case(draw) -> bytes:
    """A mutated ELF prefix: header/section-table fields overwritten with extreme values, bytes flipped, cut."""
    which = draw(st.sampled_from(["synthetic", "vmlinux"]))
    if which not in ELF_SEEDS:
        ELF_SEEDS[which] = elf_seed()
    data = bytearray(ELF_SEEDS[which])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["field", "flip", "cut"]))
        if op == "field" and len(data) > 16:
            i = draw(st.one_of(st.integers(16, min(len(data), 64) - 1), st.integers(16, len(data) - 1)))  # past e_ident: flips test it
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 62, (1 << 64) - 1]))
            data[i: i + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")[: len(data) - i]
        elif op == "flip" and len(data) > 4:
            i = draw(st.one_of(st.integers(min(16, len(data) - 1), len(data) - 1), st.integers(4, min(15, len(data) - 1))))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":  # mostly past the identification bytes; sometimes anywhere
            del data[draw(st.one_of(st.integers(min(16, len(data)), len(data)), st.integers(0, len(data)))):]
    return bytes(data)


# ------------------------------------------------------------------ the properties
def check_toml(tmp: Path, name: str, data: bytes) -> None:
    path = tmp / name
    path.write_bytes(data)
    (tmp / "truncated.elf").write_bytes((CORPUS / "truncated.elf").read_bytes())  # keep relative refs honest
    run_cli(["run", str(path)])
    run_cli(["matrix", str(path)])


def check_elf(tmp: Path, data: bytes) -> None:
    path = tmp / "vmlinux"
    path.write_bytes(data)
    run_cli(["kernel", "info", str(path)])
    scenario = tmp / "elf.toml"
    scenario.write_text('name = "fuzz-elf"\n[routine]\nvmlinux = "vmlinux"\nsymbol = "memcpy"\nbudget = 100000\n'
                        '[expect.inject]\noutcome = "returned"\n')
    run_cli(["run", str(scenario)])


def _fuzz(examples: int):
    """The three fuzzers at `examples` examples each."""

    @settings(max_examples=examples, **_SETTINGS)
    @given(case=toml_case())
    def toml(tmp_path, case) -> None:
        check_toml(tmp_path, *case)

    @settings(max_examples=examples, **_SETTINGS)
    @given(data=asm_case())
    def asm(tmp_path, data) -> None:
        check_toml(tmp_path, "asm.toml", data)

    @settings(max_examples=examples, **_SETTINGS)
    @given(data=elf_case())
    def elf(tmp_path, data) -> None:
        check_elf(tmp_path, data)

    return toml, asm, elf


_short = _fuzz(30)
_long = _fuzz(10_000 // 3 + 1)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["toml", "asm", "elf"])
def test_mutated_inputs_end_in_one_line_or_a_bounded_outcome(tmp_path, which) -> None:
    """The default run's short pass: about 90 mutations over TOML, asm and ELF."""
    _short[which](tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("which", [0, 1, 2], ids=["toml", "asm", "elf"])
def test_ten_thousand_mutations_end_in_one_line_or_a_bounded_outcome(tmp_path, which) -> None:
    """The slow job's 10,000 mutations (about 3,334 per input kind): zero tracebacks, zero hangs."""
    _long[which](tmp_path)


def test_the_synthetic_elf_is_a_valid_image_the_fuzzer_starts_from(tmp_path) -> None:
    """The ELF seed gets past the header, sections, symbols and banner to the `__ex_table` check (else
    every mutation would only exercise the first check)."""
    path = tmp_path / "vmlinux"
    path.write_bytes(synthetic_elf())
    code, err = run_cli(["kernel", "info", str(path)])
    assert code == 2 and "has no __ex_table section" in err, err
