"""Keep the collector off the objects a sweep sets up once and reads for its whole length.

A sweep's process holds parsed kernel images, booted labs and their caches for as
long as it runs. Each case then allocates a few hundred short-lived objects, and
every so often one of CPython's full collections walks the whole heap to find
that the setup is still alive: measured 50-60 ms a collection with three kernel
benches loaded, ~8% of a real-kernel differential sweep (docs/performance.md).

`gc.freeze()` moves everything tracked so far to the permanent generation, out of
every collection's sight, in constant time; `gc.unfreeze()` gives it back to the
oldest generation. Nothing is collected less: objects made inside the block are
collected as usual, and garbage that was already there is collected after the block.
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def setup_frozen() -> Iterator[None]:
    """Freeze what exists now for the block's length.

    When something is frozen already (a test session freezes what its collection built), the
    block leaves it alone: `gc.unfreeze()` is all or nothing, and freezing more without giving
    it back would keep whatever became cyclic garbage later (a finished module's booted labs)
    for the rest of the process.
    """
    if gc.get_freeze_count() > 0:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
