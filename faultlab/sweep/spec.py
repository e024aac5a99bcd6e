"""What a sweep is made of: routine specs and plans, cases, and what they come to.

`RoutineSpec` says everything the sweep needs about one routine (its
buffers, reach, arguments, reference model and plans); `Case` is one run
of it; `CaseRun`, `Failure` and `SweepSummary` are what runs produce. The
table of routines is faultlab/sweep/routines.py; the engine that uses
these is faultlab/sweep/.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from faultlab import reference as ref
from faultlab.sweep.shard import Shard

FILL_SRC = bytes(1 + b % 63 for b in range(256))  # 0x01-0x3f: read-side host bytes (never NUL)
FILL_DST = bytes(0x40 + b % 64 for b in range(256))  # 0x40-0x7f: write-side host bytes
MAX_SHOWN = 6


class SweepError(ValueError):
    """A bad request (unknown routine or policy) or a policy the models cannot predict."""


# =========================================================================== specs


@dataclass(frozen=True)
class BufferSpec:
    """One buffer a routine uses: how it is mapped and filled."""

    name: str
    mapping: str = "kernel"  # "kernel" (linear map), "user" (user VA), "alias" (a second kernel mapping)
    fill: bytes = FILL_SRC
    align: int = 1  # the routine requires its start to be a multiple of this


@dataclass(frozen=True)
class Plan:
    """Which cases a sweep mode runs (see `cases`)."""

    sizes: Sequence[tuple[int, ...]]
    every_boundary_upto: int = 0  # sizes whose reach is at most this get every boundary position
    sampled_boundaries: int = 2  # otherwise: this many positions per side (one edge position, the rest random)
    all_policies_upto: int | None = None  # reach up to which every combination runs under every policy; None: always
    rotating_boundaries: int = 1  # above it: positions per side, each combination under one policy drawn at random
    rotate_sides: bool = True  # ... and only one of (no guest page, each side) per size, drawn at random
    exhaustive: bool = False  # every side x boundary x alignment x policy (for single accesses)


@dataclass(frozen=True)
class RoutineSpec:
    """Everything the sweep (and `faultlab sweep ROUTINE`) needs to know about one routine."""

    name: str
    file: str
    symbol: str
    buffers: tuple[BufferSpec, ...]
    sides: tuple[str, ...]
    reach: Callable[[tuple[int, ...], str], int]
    args: Callable[[tuple[int, ...], Mapping[str, int]], tuple[int, ...]]
    reference: Callable[[ref.RefCase], ref.Expected]
    quick: Plan
    full: Plan
    extable: str
    contract: str
    el: int = 1
    prepare: Callable[[tuple[int, ...], Mapping[str, bytearray], Mapping[str, int], random.Random], None] | None = None
    leak_window: int = 4

    def buffer(self, name: str) -> BufferSpec:
        for b in self.buffers:
            if b.name == name:
                return b
        raise SweepError(f"{self.name} has no buffer {name!r}")

    def max_reach(self, name: str) -> int:
        return max(max(self.reach(s, name), 1) for plan in (self.quick, self.full) for s in plan.sizes)


@dataclass(frozen=True)
class Case:
    routine: str
    policy: str
    sizes: tuple[int, ...]
    side: str | None  # the buffer that holds the guest page, or None
    boundary: int  # offset of the guest page from that buffer's start
    align: int  # start alignment (mod 16) of the buffers without the guest page
    seed: int

    def __str__(self) -> str:
        where = f"{self.side}@+{self.boundary}" if self.side else "no-guest-page"
        return f"{self.routine}[{self.policy}] sizes={self.sizes} {where} align={self.align} seed={self.seed}"


@dataclass(frozen=True)
class CaseRun:
    """What one case did: the judge's problems, and the raw run for whoever wants to look closer."""

    case: Case
    problems: tuple[str, ...]
    outcome: str
    regs: Mapping[str, int]
    memory: Mapping[str, bytes]  # the windows after the run, by buffer name
    windows: Mapping[str, ref.Window]  # the same windows before the run (with the guest's ranges)
    reclaimed: frozenset[str]  # buffers whose guest page the run took back
    events: tuple = ()


@dataclass(frozen=True)
class Failure:
    case: Case
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.case}:\n    " + "\n    ".join(self.problems)


@dataclass
class SweepSummary:
    routine: str
    cases: int = 0
    failures: list[Failure] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    unjudged: int = 0  # cases under a policy the reference models have no traits for (counted, never passed)
    seconds: float = 0.0
    full_product: int = 0  # the size of the unsampled cross product, for the docs
    shard: Shard | None = None  # --shard K/N: this summary covers only those planned cases
    planned: int = 0  # with a shard: how many cases the whole (unsharded) plan has
    case_ids: list[int] = field(default_factory=list)  # with a shard: the plan indexes it ran

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def rate(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0

    def merge(self, other: "SweepSummary") -> None:
        self.cases += other.cases
        self.unjudged += other.unjudged
        self.failures += other.failures
        for k, v in other.outcomes.items():
            self.outcomes[k] = self.outcomes.get(k, 0) + v

    def as_json(self) -> dict:
        """`faultlab sweep --json`'s summary object (`faultlab kernel sweep --json` adds the kernel's fields)."""
        return {
            "routine": self.routine,
            "cases": self.cases,
            "passed": self.ok,
            "unjudged": self.unjudged,
            "failures": [{"case": str(f.case), "problems": list(f.problems)} for f in self.failures],
            "outcomes": dict(sorted(self.outcomes.items())),
            "seconds": round(self.seconds, 3),
            **({"shard": str(self.shard), "planned": self.planned, "case_ids": self.case_ids} if self.shard else {}),
        }

    def __str__(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        unjudged = f", {self.unjudged} unjudged" if self.unjudged else ""
        head = f"{self.routine}: {self.cases} cases, {len(self.failures)} failures{unjudged}, {self.seconds:.1f}s ({self.rate:.0f} cases/s) [{kinds}]"
        return "\n".join([head, *(str(f) for f in self.failures[:MAX_SHOWN])])

