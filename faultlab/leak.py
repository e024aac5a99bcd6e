"""The one leak rule: when guest data counts as having reached the host.

Guest pages hold bytes 0x80-0xff (faultlab/lab.py `guest_secret`, the
sweep's layout) and host buffers 0x01-0x7f, so guest data is recognisable.
A run leaked when, after it:
- a register x0..x30 holds a run of `n` consecutive bytes that occurs in a
  private guest page (`grams`), unless the value is a kernel pointer (top
  16 bits set: its low bytes are an address, not data) - runs of one
  repeated byte are not evidence;
- host-owned memory holds guest data it did not hold before: where a
  reference model predicts the memory image (sweeps), any byte in the
  guest's range the model does not explain; otherwise (scenarios), any new
  run of `n` bytes of a private guest page.
Pages the guest shared back with the host are not private. The oracle
(faultlab/oracle.py) and the sweep judge (faultlab/sweep/judge.py) both ask
this module.
"""
from __future__ import annotations

import functools
import re
from typing import Iterable, Mapping

WINDOW = 4  # n for scenario runs; a sweep routine states its own (RoutineSpec.leak_window)
GUEST_BYTE = re.compile(rb"[\x80-\xff]")


@functools.lru_cache(maxsize=256)
def grams(secret: bytes, n: int = WINDOW) -> frozenset[bytes]:
    """The runs of n guest bytes worth looking for (not one byte repeated).

    Memoised per (secret, n): a guest page's bytes are the same run after run
    (faultlab/lab.py `guest_secret` is a function of the frame and the seed),
    and building the set was a third of a scenario run (docs/performance.md).
    """
    runs = {secret[i : i + n] for i in range(len(secret) - n + 1)}
    return frozenset(runs - {bytes((b,)) * n for b in set(secret)})


def in_registers(regs: Mapping[str, int], guest: Iterable[frozenset[bytes]], n: int = WINDOW) -> list[tuple[str, int]]:
    """The registers (name, value) that hold a run of n guest bytes."""
    guest = tuple(g if type(g) is frozenset else frozenset(g) for g in guest)  # hashable: the memo key
    found = []
    if not guest:
        return found
    verdicts: dict[int, bool] = {}  # registers often share a value (0, a poison pattern, a buffer's address)
    for name in _X_NAMES:
        value = regs.get(name)
        if value is None or value >> 48 == 0xFFFF:
            continue
        holds = verdicts.get(value)
        if holds is None:
            holds = verdicts[value] = _holds_run(value, n, guest)
        if holds:
            found.append((name, value))
    return found


_X_NAMES = tuple(f"x{i}" for i in range(31))


@functools.lru_cache(maxsize=1 << 16)
def _holds_run(value: int, n: int, guest: tuple[frozenset[bytes], ...]) -> bool:
    """Does the 8-byte value hold a run of n bytes of one of the guest pages? Memoised (a pure
    function): registers repeat values within a run and across a sweep's cases (0, poison
    patterns, the same buffers' addresses), and a frozenset keeps its hash once computed."""
    raw = value.to_bytes(8, "little")
    windows = {raw[j : j + n] for j in range(9 - n)}
    return any(not g.isdisjoint(windows) for g in guest)


def new_in_memory(before: bytes, after: bytes, guest: Iterable[frozenset[bytes]], n: int = WINDOW) -> bool:
    """Whether `after` holds a run of n guest bytes that `before` did not (no model of the memory image).

    Only windows that overlap a changed byte can be new (any other equals the window of
    `before` at the same place), and a window was in `before` exactly when it is a
    substring of it: so the scan covers the changed span, not the page.
    """
    if after == before:
        return False
    guest = list(guest)
    lo, hi = _changed_span(before, after)
    for i in range(max(0, lo - n + 1), min(len(after) - n + 1, hi)):
        window = after[i : i + n]
        if any(window in g for g in guest) and window not in before:
            return True
    return False


def _changed_span(before: bytes, after: bytes, step: int = 64) -> tuple[int, int]:
    """[first, last + 1) of the bytes that differ (equal lengths assumed past the shorter one)."""
    size = max(len(before), len(after))
    lo = 0
    while lo < size and before[lo : lo + step] == after[lo : lo + step]:
        lo += step
    while lo < size and lo < len(before) and lo < len(after) and before[lo] == after[lo]:
        lo += 1
    hi = size
    while hi > lo and before[max(hi - step, 0) : hi] == after[max(hi - step, 0) : hi]:
        hi -= step
    while hi > lo and hi <= min(len(before), len(after)) and before[hi - 1] == after[hi - 1]:
        hi -= 1
    return lo, hi


def unexplained_guest_byte(data: bytes, explain: tuple[bytes, bytes], lo: int, hi: int) -> int | None:
    """The first byte in the guest's range in data[lo:hi] that neither image of the model explains, or None."""
    part = data[lo:hi]
    if part == explain[0][lo:hi] or part == explain[1][lo:hi]:
        return None  # the usual case, settled at C speed: every byte is one the model predicts
    for m in GUEST_BYTE.finditer(data, lo, hi):
        i = m.start()
        if data[i] not in (explain[0][i], explain[1][i]):
            return i
    return None
