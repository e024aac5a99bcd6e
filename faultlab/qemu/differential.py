"""One call that runs the differential: cases on QEMU and on our machine, classified (compare.py)."""
from __future__ import annotations

import fnmatch
from typing import Iterable

from faultlab.qemu.cases import FAMILIES, FAMILY_BY_NAME, Case, Family
from faultlab.qemu.compare import Report, classify
from faultlab.qemu.harness import Harness
from faultlab.qemu.machine_side import MachineSide
from faultlab.qemu.qemu_side import QemuError, QemuSide, find_qemu, qemu_version


class SelectionError(ValueError):
    """A family or form pattern that selects nothing."""


def select(families: Iterable[str] = (), forms: Iterable[str] = ()) -> list[Case]:
    """The cases of the named families (all by default) whose form name matches one of `forms` (globs)."""
    names = list(families)
    unknown = [n for n in names if n not in FAMILY_BY_NAME]
    if unknown:
        raise SelectionError(f"unknown family {unknown[0]!r} (known: {', '.join(FAMILY_BY_NAME)})")
    chosen: list[Family] = [FAMILY_BY_NAME[n] for n in names] or list(FAMILIES)
    patterns = list(forms)
    cases = [c for f in chosen for c in f.cases() if not patterns or any(fnmatch.fnmatch(c.form.name, p) for p in patterns)]
    if not cases:
        raise SelectionError(f"no case matches --form {' '.join(patterns)}")
    return cases


def run_differential(cases: list[Case], binary: str | None = None) -> Report:
    """Run `cases` on QEMU (raises QemuError when it is missing or fails) and on the machine, and compare."""
    path = find_qemu(binary)
    if path is None:
        raise QemuError(f"{binary or 'qemu-system-aarch64'} not found (Debian/Ubuntu: apt-get install qemu-system-arm)")
    version = qemu_version(path)
    harness = Harness()
    qemu = QemuSide(path, harness).run(cases)
    machine = MachineSide(harness).run(cases)
    report = Report(version.key, version.text)
    report.results = [classify(version.key, c, q, m) for c, q, m in zip(cases, qemu, machine)]
    return report
