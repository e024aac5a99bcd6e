"""Keep the collector off the objects a sweep sets up once and reads for its whole length.

A sweep's process holds parsed kernel images, booted labs and their caches for as
long as it runs. Each case then allocates a few hundred short-lived objects, and
every so often one of CPython's full collections walks the whole heap to find
that the setup is still alive: measured 50-60 ms a collection with three kernel
benches loaded, ~8% of a real-kernel differential sweep (docs/performance.md).

`gc.freeze()` moves everything tracked so far to the permanent generation, out of
every collection's sight, in constant time; `gc.unfreeze()` gives it back to the
oldest generation. Objects made inside the block are collected as usual, and
garbage that was already there is collected after the block (but see below for a
process that had frozen objects itself).
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def setup_frozen() -> Iterator[None]:
    """Freeze what exists now for the block's length.

    When something was frozen already (a test session freezes what its collection built), the
    block cannot give back only its own part - `gc.unfreeze()` is all or nothing - so what it
    froze stays frozen with the rest, as the caller's own freeze would have kept it: the young
    garbage is collected first (generations 0 and 1, cheap), so little of it is kept for good.
    """
    frozen_before = gc.get_freeze_count() > 0
    if frozen_before:
        gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()
