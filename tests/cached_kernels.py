"""The cached Debian kernels tests run on, by Linux version: opened once per test process, skipped (saying why) when absent."""
from __future__ import annotations

import functools

import pytest

from faultlab.kernel import fetch as kernels
from kimage.elf import Vmlinux

SUITES = {"6.1": "bookworm", "7.2": "sid"}


@functools.cache
def _vmlinux(key: str) -> Vmlinux | None:
    path = kernels.find_cached(SUITES[key])
    return Vmlinux.open(path) if path else None


def vmlinux(key: str) -> Vmlinux:
    """The Linux `key` ("6.1" or "7.2") image; the test skips when it is not in the cache (never fetched here)."""
    v = _vmlinux(key)
    if v is None:
        pytest.skip(f"no Linux {key} vmlinux cached: run `faultlab kernel fetch {SUITES[key]}`")
    return v
