"""Where a random walk's choices come from: seeded `random` for long runs, hypothesis for shrinking.

A walk written against `Pick` runs both ways: tens of thousands of seeded steps in the
sweeps (a hypothesis draw costs tens of microseconds of its own bookkeeping, which
dominated the walks' time), and as a hypothesis stateful test in the default run, where
a failure shrinks to a short sequence of choices.
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Protocol, Sequence

from hypothesis import strategies as st


class Pick(Protocol):
    def choice(self, items: Sequence): ...

    def integer(self, lo: int, hi: int) -> int: ...


class RandomPick:
    def __init__(self, rng: random.Random) -> None:
        self.choice = rng.choice
        self.integer = rng.randint


@lru_cache(maxsize=None)
def _integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


class DataPick:
    """Draws through hypothesis's `data`. An item is drawn as its index from a cached `integers`
    strategy, not from a new `sampled_from` per draw: hypothesis validates each new strategy and
    works out its properties, a quarter of a walk's time. Shrinks towards the first item."""

    def __init__(self, data) -> None:
        self.data = data

    def choice(self, items: Sequence):
        return items[self.data.draw(_integers(0, len(items) - 1))]

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(_integers(lo, hi))
