"""The sweep's judge: every way one run can disagree with its routine's reference model.

Integrity (outcome, registers, every byte of the windows, the guest's page
taken back or not) against the model's `Expected`, and confidentiality
(guest bytes in host memory or in registers) against the guest's secret.
Host buffers hold 0x01-0x7f and guest pages 0x80-0xff (faultlab/sweep/case.py
lays them out so), which is what makes a leaked byte recognisable.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from faultlab import leak
from faultlab import reference as ref
from faultlab.sweep.spec import MAX_SHOWN, Case, RoutineSpec



def judge(
    spec: RoutineSpec,
    case: Case,
    exp: ref.Expected,
    result,
    windows: Mapping[str, ref.Window],
    got: Mapping[str, bytes],
    reclaimed: set[str],
    grams: Sequence[frozenset[bytes]],
) -> list[str]:
    """Every way the run can disagree with the reference, as readable lines."""
    problems: list[str] = []
    kind = result.outcome.kind
    if kind != exp.outcome:
        problems.append(f"outcome {kind} ({result.outcome.message}); expected {exp.outcome} ({exp.why})")
        return problems + leaks(spec, result.regs, got, windows, grams)
    regs = result.regs
    if kind == ref.RETURNED:
        for reg, value in exp.regs.items():
            if regs[reg] != value:
                problems.append(f"{reg} = {regs[reg]:#x}, expected {value:#x} ({exp.why})")
        if exp.ret_check is not None:
            problems += exp.ret_check(regs)
    if problems:
        return problems
    # A WARN in a run that otherwise went as predicted is a path nobody expected (e.g. the
    # spurious-fault path). On the way to a predicted oops it is part of dying: a 7.x host
    # WARNs when EL2 refuses its force-reclaim call (kvm_call_hyp_nvhe), then dies.
    warnings = [e.message for e in result.events if e.kind == "warn"]
    if any(e.kind == "hypercall" and e.data.get("status") for e in result.events):
        # The EL2 refused the host's force-reclaim call (e.g. `inject`, a pre-patch EL2):
        # kvm_call_hyp_nvhe()'s WARN_ON(res.a0 != SMCCC_RET_SUCCESS) is the kernel's own
        # expected warning on that path, and the outcome has already been judged.
        warnings = warnings[1:]
    if warnings and kind != ref.LIVELOCK:  # a livelock's WARNs are the spurious-fault path the model predicted
        problems.append(f"the host warned: {warnings[0]}")  # e.g. a spurious-fault path nobody expected
    touched = any(e.kind == "protected-access" for e in result.events)
    if touched != exp.touched:
        problems.append(f"the run {'touched' if touched else 'did not touch'} the guest page; the model says it {'does' if exp.touched else 'does not'}")
    if reclaimed != set(exp.reclaimed):
        problems.append(f"guest pages reclaimed: {sorted(reclaimed) or 'none'}, expected {sorted(exp.reclaimed) or 'none'}")
    images = exp.images(regs)
    for name, (want, alt) in images.items():
        problems += _compare(name, windows[name], got[name], want, alt)
    return problems + leaks(spec, regs, got, windows, grams, reclaimed, images)


# Per byte: 0x00 stays 0x00, anything else becomes 0xff (bytes.translate table).
_NONZERO = bytes(1) + b"\xff" * 255


def _differs(a: bytes, b: bytes) -> int:
    """0xff in every byte where a and b differ, 0x00 elsewhere, as a little-endian int."""
    diff = (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")
    return int.from_bytes(diff.translate(_NONZERO), "little")


def _compare(name: str, window: ref.Window, got: bytes, want: bytes, alt: bytes) -> list[str]:
    if got == want or got == alt:
        return []
    # A byte is wrong when it is neither the model's nor its alternative (where a faulting store may
    # have written): both per-byte masks at once, in C, rather than a Python test per differing byte.
    both = _differs(got, want) & _differs(got, alt)
    if not both:
        return []
    bad = [m.start() for m in re.finditer(rb"[^\x00]", both.to_bytes(len(got), "little"))]
    shown = ", ".join(f"{window.va + i:#x}: {got[i]:#04x} (want {want[i]:#04x}{'' if alt[i] == want[i] else f' or {alt[i]:#04x}'})" for i in bad[:MAX_SHOWN])
    return [f"{name}: {len(bad)} wrong bytes: {shown}"]


def leaks(
    spec: RoutineSpec,
    regs: Mapping[str, int],
    got: Mapping[str, bytes],
    windows: Mapping[str, ref.Window],
    grams: Sequence[frozenset[bytes]],
    reclaimed: set[str] = frozenset(),
    images: Mapping[str, tuple[bytes, bytes]] | None = None,
) -> list[str]:
    """Confidentiality by faultlab/leak.py's rule: guest bytes in host-owned memory, runs of guest bytes in registers.

    Memory: a guest-range byte that neither the model's images nor, failing
    those, the memory before the run explain. Registers: `leak_window`
    consecutive bytes of a guest page (`grams`), kernel pointers excepted.
    """
    problems = []
    for name, data in got.items():
        w = windows[name]
        explain = images[name] if images is not None else (w.data, w.data)
        parts = [(0, len(data))]
        if w.guest is not None and name not in reclaimed:
            parts = [(0, w.guest[0] - w.va), (w.guest[1] - w.va, len(data))]
        for lo, hi in parts:
            i = leak.unexplained_guest_byte(data, explain, lo, hi)
            if i is not None:
                problems.append(f"{name}: guest-range byte {data[i]:#04x} in host memory at {w.va + i:#x}")
    n = spec.leak_window
    for reg, value in leak.in_registers(regs, grams, n):
        problems.append(f"{reg} = {value:#018x} holds a run of {n} guest bytes")
    return problems

