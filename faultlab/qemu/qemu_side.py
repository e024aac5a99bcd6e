"""Run cases on `qemu-system-aarch64 -M virt,virtualization=on -cpu max` and read back what it saw.

One boot runs a whole batch (up to layout.MAX_CASES_PER_BOOT cases; a boot costs ~0.1 s).
RAM is a file QEMU maps shared (`-object memory-backend-file,share=on`), written with the
image before the boot and read after it; the CPU starts at EL2 (virtualization=on, no EL3)
at the harness's first instruction (`-device loader,addr=...,cpu-num=0`).
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from faultlab.qemu import harness_asm as H
from faultlab.qemu.cases import Case
from faultlab.qemu.harness import Harness
from faultlab.qemu.layout import HARNESS_PA, MAX_CASES_PER_BOOT, RAM_BASE, RAM_SIZE, RESULT_BYTES, RESULTS_PA, WINDOW_BYTES
from faultlab.qemu.observation import Observation, Taken, normalised

QEMU = "qemu-system-aarch64"
BOOT_TIMEOUT = 120.0
EC_SVC64 = 0x15


class QemuError(RuntimeError):
    """QEMU is missing, failed to boot, or the harness did not finish."""


@dataclass(frozen=True)
class QemuVersion:
    major: int
    minor: int
    micro: int
    text: str

    @property
    def key(self) -> str:
        """Departures are keyed by major.minor (a stable series keeps its TCG behaviour)."""
        return f"{self.major}.{self.minor}"


def find_qemu(binary: str | None = None) -> str | None:
    return shutil.which(binary or os.environ.get("FAULTLAB_QEMU", QEMU))


def qemu_version(binary: str) -> QemuVersion:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise QemuError(f"cannot read a version from '{binary} --version': {out.strip()[:80]!r}")
    return QemuVersion(int(m[1]), int(m[2]), int(m[3]), out.splitlines()[0].strip())


def command(binary: str, ram_file: Path) -> list[str]:
    return [
        binary, "-M", "virt,virtualization=on,memory-backend=ram", "-cpu", "max", "-nographic",
        "-m", f"{RAM_SIZE >> 20}M",
        "-object", f"memory-backend-file,id=ram,size={RAM_SIZE >> 20}M,mem-path={ram_file},share=on",
        "-device", f"loader,addr={HARNESS_PA:#x},cpu-num=0",
    ]


class QemuSide:
    """Boots QEMU on batches of cases; one harness (assembled once) for all of them."""

    def __init__(self, binary: str, harness: Harness | None = None, *, workdir: str | None = None) -> None:
        self.binary = binary
        self.harness = harness or Harness()
        self.workdir = workdir

    def run(self, cases: list[Case]) -> list[Observation]:
        out: list[Observation] = []
        for start in range(0, len(cases), MAX_CASES_PER_BOOT):
            out += self._boot(cases[start: start + MAX_CASES_PER_BOOT])
        return out

    def _boot(self, cases: list[Case]) -> list[Observation]:
        with tempfile.TemporaryDirectory(prefix="faultlab-qemu-", dir=self.workdir) as tmp:
            ram = Path(tmp) / "ram.bin"
            with open(ram, "wb") as f:
                f.truncate(RAM_SIZE)
                for pa, data in self.harness.regions(cases):
                    f.seek(pa - RAM_BASE)
                    f.write(data)
            try:
                proc = subprocess.run(command(self.binary, ram), capture_output=True, timeout=BOOT_TIMEOUT,
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise QemuError(f"QEMU did not power off within {BOOT_TIMEOUT:.0f} s ({len(cases)} cases)") from None
            with open(ram, "rb") as f:
                config = self.harness.image.symbol("config") - RAM_BASE
                f.seek(config)
                cfg = f.read(H.CFG_BYTES)
                f.seek(RESULTS_PA - RAM_BASE)
                records = f.read(RESULT_BYTES * len(cases))
        done, = struct.unpack_from("<Q", cfg, H.CFG["done"])
        if done != H.DONE_MAGIC:
            slot, esr, elr, far = (struct.unpack_from("<Q", cfg, H.CFG[k])[0] for k in
                                   ("fatal_slot", "fatal_esr", "fatal_elr", "fatal_far"))
            raise QemuError(
                f"harness did not finish (exit {proc.returncode}; EL2 vector slot {slot}, ESR_EL2={esr:#x} "
                f"ELR_EL2={elr:#x} FAR_EL2={far:#x}); console: {proc.stdout.decode(errors='replace')[-200:]!r} "
                f"{proc.stderr.decode(errors='replace')[-300:]!r}"
            )
        return [self._observation(case, records[RESULT_BYTES * i: RESULT_BYTES * (i + 1)]) for i, case in enumerate(cases)]

    def _observation(self, case: Case, record: bytes) -> Observation:
        kind, esr, far, hpfar, elr = struct.unpack_from("<5Q", record, H.R_KIND)
        regs = struct.unpack_from("<8Q", record, H.R_REGS)
        window = record[H.R_WINDOW: H.R_WINDOW + WINDOW_BYTES]
        stub = self.harness.stub_va(case.form, case.el)
        if kind == H.KIND_DONE_EL1 or (kind == H.KIND_EL1 and (esr >> 26) & 0x3F == EC_SVC64 and case.el == 0
                                       and elr == stub + 8):
            return Observation(Taken.COMPLETED, regs=regs, window=window)
        if kind == H.KIND_EL1:
            return normalised(Taken.EL1, esr, far, hpfar, elr - stub, regs, window)
        if kind == H.KIND_EL2:
            return normalised(Taken.EL2, esr, far, hpfar, elr - stub, regs, window)
        if kind == H.KIND_EL1_OTHER:
            return Observation(Taken.ERROR, note=f"EL1 vector slot {far} (not synchronous)")
        return Observation(Taken.ERROR, note=f"no record (kind {kind})")
