"""Which cases a sweep runs: the enumeration of a routine's `Plan`, and the size of what it samples.

Deterministic: the draws are seeded by the routine's name and the mode,
so a failing case comes back on every run (and across --jobs splits).
"""
from __future__ import annotations

import random
from typing import Iterator, Sequence

from faultlab.sweep.spec import Case, RoutineSpec


def _edges(reach: int) -> list[int]:
    """Boundary positions worth always trying: the ends, and around the last word."""
    picks = {0, 1, reach // 2, max(reach - 9, 0), max(reach - 8, 0), max(reach - 1, 0), reach}
    return sorted(p for p in picks if 0 <= p <= reach)


def _positions(spec: RoutineSpec, side: str, reach: int) -> range:
    step = spec.buffer(side).align
    return range(0, reach + 1, step)


def _aligns(spec: RoutineSpec, side: str | None) -> list[int]:
    steps = [b.align for b in spec.buffers if b.name != side]
    step = max(steps, default=1)
    return list(range(0, 16, step))


def cases(spec: RoutineSpec, full: bool, policies: Sequence[str]) -> Iterator[Case]:
    """The cases of one sweep mode, deterministically (seeded by the routine's name).

    For each size tuple, while the reach (the bytes the routine may touch in
    a buffer) is at most `all_policies_upto`: the case without a guest page
    and, for each side, the boundary positions - all of them up to
    `every_boundary_upto`, else `sampled_boundaries` of them (one edge
    position, the rest random) - each under every policy. Above it, one of
    (no guest page, each side) per size with `rotating_boundaries` positions
    (an edge or a random one) under one policy, all drawn at random, so every
    policy meets every side and every range of sizes. The other buffers'
    alignments are drawn from 0..15. An exhaustive plan runs the whole cross
    product instead.
    """
    plan = spec.full if full else spec.quick
    rng = random.Random(f"{spec.name}:{'full' if full else 'quick'}")
    for sizes in plan.sizes:
        reaches = {side: max(spec.reach(sizes, side), 0) for side in spec.sides}
        every_policy = plan.exhaustive or plan.all_policies_upto is None or max(reaches.values(), default=0) <= plan.all_policies_upto
        sides: list[str | None] = [None, *reaches]
        if not every_policy and plan.rotate_sides:
            sides = [rng.choice(sides)]
        combos: list[tuple[str | None, int, int]] = []
        for side in sides:
            aligns = _aligns(spec, side)
            if side is None:
                chosen = [0]
            else:
                reach = reaches[side]
                positions = _positions(spec, side, reach)
                if plan.exhaustive or reach <= plan.every_boundary_upto:
                    chosen = list(positions)
                else:
                    want = min(plan.sampled_boundaries if every_policy else plan.rotating_boundaries, len(positions))
                    edges = [p for p in _edges(reach) if p % positions.step == 0]
                    picks = {rng.choice(edges)} if every_policy or rng.random() < 0.5 else set()
                    while len(picks) < want:
                        picks.add(positions[rng.randrange(len(positions))])
                    chosen = sorted(picks)
            for b in chosen:
                if plan.exhaustive:
                    combos += [(side, b, a) for a in aligns]
                else:
                    combos.append((side, b, rng.choice(aligns)))
        for side, b, align in combos:
            seed = rng.randrange(1 << 30)
            for policy in policies if every_policy else [rng.choice(policies)]:
                yield Case(spec.name, policy, sizes, side, b, align, seed)


def full_product(spec: RoutineSpec, npolicies: int) -> int:
    """The unsampled cross product of the full mode: sizes x (no page + every side x every boundary) x alignments x policies."""
    total = 0
    for sizes in spec.full.sizes:
        total += len(_aligns(spec, None))
        for side in spec.sides:
            total += len(_positions(spec, side, max(spec.reach(sizes, side), 0))) * len(_aligns(spec, side))
    return total * npolicies

