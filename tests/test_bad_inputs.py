"""The bad-input corpus (tests/bad_inputs/cases.toml): every case ends in one clear line and its exit code.

Bad input is exit 2 with exactly one stderr line starting "faultlab: error:"
and no traceback; accepted input is exit 0 with a silent stderr. Runs
`faultlab.cli.main` in-process, as a user's shell would run the command.
"""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from faultlab.cli import main
from faultlab.scenario import MAX_SCENARIO_BYTES

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES = tomllib.loads((CORPUS / "cases.toml").read_text())["case"]


@pytest.fixture(scope="module")
def huge(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("huge") / "huge.toml"
    path.write_text((CORPUS / "base_ok.toml").read_text() + "#" * MAX_SCENARIO_BYTES + "\n")
    return path


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, capsys, huge) -> None:
    argv = [a.format(dir=CORPUS, huge=huge) for a in case["argv"]]
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == case.get("exit", 2), err
    if code == 0:
        assert err == ""
        return
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("faultlab: error: "), err
    assert case["error"] in lines[0], err


# ------------------------------------------------------------------ the pytest plugin
def test_the_plugin_collects_every_routine_form_and_reports_bad_files_in_one_line(tmp_path) -> None:
    """Inline `routine = {...}` and `[ routine ]` are scenarios (as for `faultlab run`); a non-UTF-8 or
    malformed scenario is a collection error with `faultlab run`'s one-line message, not a traceback."""
    expect = '[expect.inject]\noutcome = "returned"\n'
    (tmp_path / "inline.toml").write_text('name = "inline"\npolicies = ["inject"]\nroutine = { asm = "f: ret", symbol = "f" }\n' + expect)
    (tmp_path / "spaced.toml").write_text('name = "spaced"\npolicies = ["inject"]\n[ routine ]\nasm = "f: ret"\nsymbol = "f"\n' + expect)
    (tmp_path / "bytes.toml").write_bytes((CORPUS / "non_utf8.toml").read_bytes())
    (tmp_path / "broken.toml").write_text('name = "broken"\n[routine]\nasm = "f: ret\nsymbol = "f"\n')
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "not-a-scenario"\n')  # no routine: left alone
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # the collection errors fail the session
    assert "Traceback" not in out and "UnicodeDecodeError" not in out
    assert "PASSED inline.toml::inline[inject]" in out
    assert "PASSED spaced.toml::spaced[inject]" in out
    assert "bytes.toml:1: file: not UTF-8 text" in out
    assert "broken.toml:3: syntax:" in out
    assert "2 passed, 2 errors" in out


# ------------------------------------------------------------------ broken pipes
@pytest.mark.parametrize("argv", [["matrix"], ["matrix", "--json"], ["list"]], ids=" ".join)
def test_a_reader_that_goes_away_ends_the_command_quietly(argv) -> None:
    """`faultlab matrix | head -1`: the pipe's reader is closed before faultlab writes, so every write
    meets EPIPE; the command still ends with exit 0 and nothing on stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultlab.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader leaves at once (head -1 after its line)
    try:
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert (code, err) == (0, ""), err


# ------------------------------------------------------------------ a real vmlinux cut short
@pytest.mark.parametrize("keep", [64, 4096, 1 << 20])
def test_a_real_vmlinux_cut_short_is_one_line_of_bad_input(tmp_path, capsys, keep) -> None:
    """A download cut short: the first `keep` bytes of Debian's vmlinux (kernel info), exit 2 in one line."""
    from faultlab.kernel.fetch import find_cached

    whole = find_cached("bookworm")  # never downloads: the kernel jobs cache it
    if whole is None:
        pytest.skip("the bookworm vmlinux is not cached (faultlab kernel fetch bookworm)")
    cut = tmp_path / "vmlinux"
    with open(whole, "rb") as f:
        cut.write_bytes(f.read(keep))
    assert main(["kernel", "info", str(cut)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [err.rstrip("\n")] and err.startswith("faultlab: error: ")
    assert f"truncated or corrupt ELF file ({keep} bytes" in err


# ------------------------------------------------------------------ kernel call --trace-limit
@pytest.mark.parametrize("limit", [1, 5, 17])
def test_kernel_call_trace_limit_caps_the_trace_and_says_so(capsys, limit) -> None:
    """`kernel call --trace --trace-limit N`, as on `faultlab run`: exactly N trace lines, then the cut is named."""
    from faultlab.kernel.fetch import find_cached

    if find_cached("sid") is None:
        pytest.skip("the sid vmlinux is not cached (faultlab kernel fetch sid)")
    argv = ["kernel", "call", "sid", "memset", "buf", "0", "256", "--buffer", "256", "--trace", "--trace-limit", str(limit)]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    start = out.index("trace and events:") + 1
    end = out.index(f"trace truncated after {limit} steps (--trace-limit N for more)")
    steps = [line for line in out[start:end] if line.startswith("  EL1 ")]  # events interleave as "      >> ..."
    assert len(steps) == limit
