"""Shards: split one sweep's planned cases over N machines, and merge their JSON summaries back into one.

Every shard plans the same list (the plan is deterministic: seeded from the
routine, sizes and policy), then keeps the cases whose index i in that list
has i mod N == K-1. The union of shards 1/N..N/N is therefore the unsharded
sweep case for case, and each shard's `--json` names the case ids (plan
indexes) it ran so `merge_records` can refuse overlapping or incomplete sets.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence, TypeVar

T = TypeVar("T")

# Fields of `SweepSummary.as_json` that `merge_records` adds up or recomputes; the rest (kernel, symbol, ...) must agree.
_SUMMED = ("cases", "unjudged", "seconds")
_RECOMPUTED = ("passed", "failures", "outcomes", "shard", "case_ids", "planned")


class ShardError(ValueError):
    """A bad K/N, or a set of shard results that does not make exactly one whole sweep."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`: the planned cases whose index mod count == index - 1."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not m:
            raise ShardError(f"--shard {text!r}: expected K/N, e.g. 1/4")
        k, n = int(m[1]), int(m[2])
        if n < 1 or not 1 <= k <= n:
            raise ShardError(f"--shard {text}: need 1 <= K <= N (N >= 1)")
        return cls(k, n)

    def ids(self, planned: int) -> list[int]:
        """The plan indexes this shard runs out of `planned` cases."""
        return list(range(self.index - 1, planned, self.count))

    def select(self, todo: Sequence[T]) -> list[T]:
        return [todo[i] for i in self.ids(len(todo))]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _key(rec: dict) -> tuple:
    """Which sweep a record belongs to: the routine (and, for kernel sweeps, the kernel it ran on)."""
    return (rec.get("routine"), rec.get("vmlinux"), rec.get("release"))


def merge_records(records: Iterable[dict]) -> list[dict]:
    """Merge shard summaries (one list per routine) into one summary per routine; ShardError if they do not tile.

    Refused: a record without a shard; shards of one routine with different N
    or plan sizes; a shard given twice or a case run by two shards (overlap);
    a missing shard or a planned case no shard ran (gap).
    """
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        if "shard" not in rec or "case_ids" not in rec:
            raise ShardError(f"{rec.get('routine', '?')}: not a sharded result (run the sweep with --shard K/N)")
        groups.setdefault(_key(rec), []).append(rec)
    merged = []
    for key, recs in groups.items():
        name = key[0]
        shards = [Shard.parse(r["shard"]) for r in recs]
        counts = {s.count for s in shards}
        if len(counts) != 1:
            raise ShardError(f"{name}: shards of different N ({', '.join(sorted(map(str, shards)))})")
        planned = {r["planned"] for r in recs}
        if len(planned) != 1:
            raise ShardError(f"{name}: shards planned different case lists ({sorted(planned)} cases)")
        (n,), (total,) = counts, planned
        seen: dict[int, Shard] = {}
        for s, r in zip(shards, recs):
            for cid in r["case_ids"]:
                if cid in seen:
                    raise ShardError(f"{name}: shards overlap: case {cid} in {seen[cid]} and {s}")
                seen[cid] = s
        given = {s.index for s in shards}
        if len(given) != len(shards):
            dup = next(s for s in shards if shards.count(s) > 1)
            raise ShardError(f"{name}: shards overlap: {dup} given twice")
        missing = sorted(set(range(1, n + 1)) - given)
        if missing:
            raise ShardError(f"{name}: incomplete: missing shard(s) {', '.join(f'{k}/{n}' for k in missing)}")
        stray = sorted(set(seen) - set(range(total)))
        if stray:
            raise ShardError(f"{name}: case id {stray[0]} is outside the plan of {total} cases")
        gaps = sorted(set(range(total)) - set(seen))
        if gaps:
            raise ShardError(f"{name}: incomplete: {len(gaps)} planned case(s) ran in no shard (first {gaps[:1]})")
        out = {k: v for k, v in recs[0].items() if k not in _SUMMED + _RECOMPUTED}
        for k in _SUMMED:
            out[k] = sum(r.get(k, 0) for r in recs)
        out["seconds"] = round(out["seconds"], 3)
        outcomes: dict[str, int] = {}
        for r in recs:
            for kind, v in r["outcomes"].items():
                outcomes[kind] = outcomes.get(kind, 0) + v
        out["outcomes"] = dict(sorted(outcomes.items()))
        out["failures"] = [f for r in sorted(recs, key=lambda r: Shard.parse(r["shard"]).index) for f in r["failures"]]
        out["passed"] = not out["failures"]
        out["shards"] = n
        merged.append(out)
    return merged
