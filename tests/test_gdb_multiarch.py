"""The real gdb against `faultlab run --gdb` and `faultlab kernel call --gdb`, in batch mode.

Connect, break in the routine, continue to the fault, read registers, continue
to the end - the session docs/gdb.md shows. Skips, saying why, without
gdb-multiarch (Debian package gdb-multiarch). Every process has a timeout.
"""
from __future__ import annotations

import os
import re
import threading
import shutil
import subprocess
import sys
import time
from pathlib import Path
from queue import Empty, Queue

import pytest

from faultlab.runner import setup
from faultlab.scenario import load

ROOT = Path(__file__).resolve().parent.parent
GDB = shutil.which("gdb-multiarch")
pytestmark = pytest.mark.skipif(GDB is None, reason="gdb-multiarch is not installed (apt-get install gdb-multiarch)")
TIMEOUT = 120
ZEROPAD = "faultlab/builtin/a_zeropad_overread.toml"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start_faultlab(*argv: str) -> tuple[subprocess.Popen, str, list[str]]:
    """Start faultlab with `--gdb 127.0.0.1:0`; return it, the address it waits on and its stderr so far."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultlab.cli", *argv, "--gdb", "127.0.0.1:0"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    queue: Queue[str] = Queue()
    threading.Thread(target=lambda: [queue.put(line) for line in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = queue.get(timeout=1.0)
        except Empty:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        m = re.search(r"waiting for gdb on (\S+)", line)
        if m:
            return proc, m.group(1), lines
    proc.kill()
    raise AssertionError("faultlab never said where gdb should connect:\n" + "".join(lines))


def _gdb(*commands: str) -> str:
    argv = [GDB, "-nx", "-q", "-batch"]
    for c in commands:
        argv += ["-ex", c]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    return done.stdout + done.stderr


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        out = proc.stdout.read() if proc.wait(timeout=TIMEOUT) is not None else ""
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out


def test_gdb_session_on_a_scenario(tmp_path):
    lab = setup(load(ROOT / ZEROPAD).variants()[0], "inject-reclaim")  # the same deterministic layout, for the references
    name = lab.regions["name"].va
    fault_pc = lab.symbol("full_name_hash") + 0x10  # the word load of load_unaligned_zeropad, inlined at +0x10
    proc, address, banner = _start_faultlab("run", ZEROPAD, "--policy", "inject-reclaim")
    elf = next(line.split("symbols: ", 1)[1].strip() for line in banner if "symbols: " in line)
    out = _gdb(
        "set architecture aarch64",
        f"file {elf}",
        f"target remote {address}",
        "break word_at_a_time.S:116",
        "continue",
        "info registers x1 x2 pc",
        "monitor owner fault",
        "continue",
        "p/x $x5",
        "continue",
    )
    code, stdout = _finish(proc)
    assert "full_name_hash () at" in out and "word_at_a_time.S:111" in out  # stopped at the entry, source known
    assert "Breakpoint 1 at" in out
    assert "protected-access: host read" in out and "Program received signal SIGSEGV" in out
    assert re.search(rf"x1\s+{name + 4090:#x}", out) and re.search(r"x2\s+0x6\b", out)
    assert re.search(rf"pc\s+{fault_pc:#x}\s+{fault_pc:#x} <full_name_hash\+16>", out)
    assert "owner guest" in out and "not mapped: a host access traps to EL2" in out
    assert "Breakpoint 1, full_name_hash ()" in out
    # The zeropad fixup's result: "pkvm.c" and two zero bytes, little-endian.
    assert f"$1 = {int.from_bytes(b'pkvm.c' + bytes(2), 'little'):#x}" in out
    assert "the run ended: returned" in out and "exited normally" in out
    assert code == 0 and "fixed-up" in stdout and "as expected" in stdout


@pytest.mark.slow
def test_gdb_session_on_a_real_kernel_function():
    from faultlab.kernel.fetch import find_cached

    if find_cached("sid") is None:
        pytest.skip("no Linux 7.2 vmlinux cached: run `faultlab kernel fetch sid`")
    proc, address, banner = _start_faultlab(
        "kernel", "call", "sid", "full_name_hash", "0", "buf+4091", "5",
        "--buffer", "8192", "--write", "buf+4091=hello", "--protect", "buf+4096", "--policy", "inject",
    )
    vmlinux = next(line.split("symbols: ", 1)[1].strip() for line in banner if "symbols: " in line)
    out = _gdb(f"file {vmlinux}", f"target remote {address}", "continue", "info registers pc", "monitor el2", "continue")
    code, stdout = _finish(proc)
    assert 'full_name_hash (salt=0x0, name=' in out and '"hello"' in out  # the kernel's own DWARF
    assert "Program received signal SIGSEGV" in out and "ESR_EL2=0x92000007" in out
    assert "exited normally" in out
    assert code == 0 and "outcome: returned" in stdout
