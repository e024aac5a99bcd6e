"""Sharded sweeps (faultlab/sweep/shard.py): K/N shards tile the unsharded sweep, case for case, and merge back."""
from __future__ import annotations

import json

import pytest

from faultlab.cli import main
from faultlab.sweep import Bench, Shard, ShardError, merge_records, routine, run_sweep
from faultlab.sweep.kernel import plan_cases
from faultlab.sweep.plan import cases

ROUTINE = "full_name_hash"
POLICIES = ["inject", "inject-reclaim"]
LIMIT = 23  # not a multiple of any N below: the last shards get fewer cases


@pytest.fixture(scope="module")
def bench() -> Bench:
    return Bench()


def _shards(n: int, bench: Bench) -> list[dict]:
    return [run_sweep(ROUTINE, POLICIES, bench=bench, limit=LIMIT, shard=Shard(k, n)).as_json() for k in range(1, n + 1)]


@pytest.mark.parametrize("n", [1, 3, 4])
def test_union_of_shards_is_the_unsharded_sweep_case_for_case(n, bench):
    whole = run_sweep(ROUTINE, POLICIES, bench=bench, limit=LIMIT)
    planned = list(cases(routine(ROUTINE), False, POLICIES))[:LIMIT]
    shards = _shards(n, bench)
    ids = [i for s in shards for i in s["case_ids"]]
    assert sorted(ids) == list(range(LIMIT)) and len(ids) == len(set(ids))
    for k, s in enumerate(shards, 1):
        assert s["shard"] == f"{k}/{n}" and s["planned"] == LIMIT
        assert s["cases"] == len(s["case_ids"]) and all(i % n == k - 1 for i in s["case_ids"])
    # case for case: each shard's case i is the unsharded plan's case i, with the same outcome
    by_case = {}
    for s in shards:
        one = run_sweep(ROUTINE, POLICIES, bench=bench, limit=LIMIT, shard=Shard.parse(s["shard"]))
        assert [planned[i] for i in one.case_ids] == [planned[i] for i in s["case_ids"]]
        by_case.update({i: planned[i] for i in one.case_ids})
    assert [by_case[i] for i in range(LIMIT)] == planned
    merged, = merge_records(shards)
    expect = whole.as_json()
    for key in ("routine", "cases", "passed", "unjudged", "failures", "outcomes"):
        assert merged[key] == expect[key], key
    assert merged["shards"] == n and sum(expect["outcomes"].values()) == LIMIT


def test_kernel_sweep_plan_shards_the_same_way():
    spec = routine(ROUTINE)  # plan_cases is the kernel sweep's planner; the guest_asm spec stands in for a vmlinux
    planned = plan_cases(spec, False, POLICIES, LIMIT)
    parts = [Shard(k, 4).select(planned) for k in range(1, 5)]
    assert sorted((c for p in parts for c in p), key=planned.index) == planned
    assert parts[1] == planned[1::4]


def test_merge_refuses_overlaps_and_gaps(bench):
    shards = _shards(3, bench)
    with pytest.raises(ShardError, match="incomplete: missing shard\\(s\\) 2/3"):
        merge_records([shards[0], shards[2]])
    with pytest.raises(ShardError, match="overlap"):
        merge_records([*shards, shards[1]])
    stolen = dict(shards[1], case_ids=[*shards[1]["case_ids"], shards[0]["case_ids"][0]])
    with pytest.raises(ShardError, match="overlap: case 0 in 1/3 and 2/3"):
        merge_records([shards[0], stolen, shards[2]])
    short = dict(shards[2], case_ids=shards[2]["case_ids"][:-1])
    with pytest.raises(ShardError, match="incomplete: 1 planned case"):
        merge_records([shards[0], shards[1], short])
    with pytest.raises(ShardError, match="different N"):
        merge_records([*shards[:2], _shards(4, bench)[2]])
    unsharded = run_sweep(ROUTINE, POLICIES, bench=bench, limit=LIMIT).as_json()
    with pytest.raises(ShardError, match="not a sharded result"):
        merge_records([unsharded])


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "x", "1-4", "", "-1/4"])
def test_bad_shard_is_refused(text):
    with pytest.raises(ShardError):
        Shard.parse(text)
    assert main(["sweep", ROUTINE, "--limit", "3", f"--shard={text}"]) == 2


def test_cli_shards_merge_and_refuse(tmp_path, capsys):
    files = []
    for k in (1, 2):
        assert main(["sweep", ROUTINE, "--limit", "9", "--json", "--shard", f"{k}/2"]) == 0
        files.append(tmp_path / f"s{k}.json")
        files[-1].write_text(capsys.readouterr().out)
    assert main(["sweep-merge", "--json", *map(str, files)]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert merged["cases"] == 9 and merged["shards"] == 2 and merged["routine"] == ROUTINE
    assert main(["sweep-merge", str(files[0])]) == 2
    assert "missing shard(s) 2/2" in capsys.readouterr().err
    assert main(["sweep-merge", str(files[0]), str(files[0]), str(files[1])]) == 2
    assert "overlap" in capsys.readouterr().err


def test_kernel_sweep_has_the_shard_flag():
    assert main(["kernel", "sweep", "bookworm", "__arch_copy_from_user", "--shard", "3/2"]) == 2
