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

import re
from typing import Iterable, Mapping

WINDOW = 4  # n for scenario runs; a sweep routine states its own (RoutineSpec.leak_window)
GUEST_BYTE = re.compile(rb"[\x80-\xff]")


def grams(secret: bytes, n: int = WINDOW) -> frozenset[bytes]:
    """The runs of n guest bytes worth looking for (not one byte repeated)."""
    return frozenset(secret[i : i + n] for i in range(len(secret) - n + 1) if len(set(secret[i : i + n])) > 1)


def in_registers(regs: Mapping[str, int], guest: Iterable[frozenset[bytes]], n: int = WINDOW) -> list[tuple[str, int]]:
    """The registers (name, value) that hold a run of n guest bytes."""
    guest = list(guest)
    found = []
    if not guest:
        return found
    for i in range(31):
        value = regs.get(f"x{i}")
        if value is None or value >> 48 == 0xFFFF:
            continue
        raw = value.to_bytes(8, "little")
        if any(raw[j : j + n] in g for j in range(9 - n) for g in guest):
            found.append((f"x{i}", value))
    return found


def new_in_memory(before: bytes, after: bytes, guest: Iterable[frozenset[bytes]], n: int = WINDOW) -> bool:
    """Whether `after` holds a run of n guest bytes that `before` did not (no model of the memory image)."""
    if after == before:
        return False
    old = {before[i : i + n] for i in range(len(before) - n + 1)}
    return any(after[i : i + n] in g and after[i : i + n] not in old for i in range(len(after) - n + 1) for g in guest)


def unexplained_guest_byte(data: bytes, explain: tuple[bytes, bytes], lo: int, hi: int) -> int | None:
    """The first byte in the guest's range in data[lo:hi] that neither image of the model explains, or None."""
    for m in GUEST_BYTE.finditer(data, lo, hi):
        i = m.start()
        if data[i] not in (explain[0][i], explain[1][i]):
            return i
    return None
