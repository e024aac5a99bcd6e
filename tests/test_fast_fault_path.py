"""The machine's fast fault path gives the runs the engine's path gives (issue 12, Build 2).

`Machine._resolve_in_fill` takes a lazy stage-2 idmap inside the TLB-fill hook
instead of stopping the engine at the access. Each test runs the same thing
twice - once as shipped, once with `fast_fault_path` off so every fault stops
the engine - and compares everything a run reports: outcome, events with their
data, registers, segment count.
"""
from __future__ import annotations

import pytest

from emu.machine import Machine
from guest_asm import source_path
from emu.outcome import OutcomeKind
from faultlab.lab import Lab
from hyp.policies import POLICIES

from engine_paths import engine_only, record_of

TOUCH = source_path("fault_paths")


def _page_granular(lab: Lab, *buffers) -> None:
    """Tables in the buffers' 2 MiB regions (as any earlier page-level change there leaves): each
    first touch is then one idmap abort, not one 2 MiB block for them all (hyp/stage2.py)."""
    for buf in buffers:
        for pfn in buf.pfns:
            lab.hyp.stage2.split(pfn)


def _lab_run(policy: str, routine: str, times: int, *, donate: bool, budget: int = 100_000, max_events: int = 1_000) -> tuple:
    lab = Lab(policy)
    lab.load_asm(TOUCH)
    pages = lab.alloc("pages", 4)
    guest = lab.alloc("guest", 1)
    _page_granular(lab, pages, guest)
    if donate:
        lab.donate(guest.pfns[0])
    va = guest.va if routine == "touch_again" else pages.va
    return record_of(lab.call(routine, va, times, budget=budget, max_events=max_events))


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("routine, times, donate", [("touch_pages", 4, False), ("touch_again", 1, True), ("touch_again", 5, True)])
def test_lab_runs_match_the_engine_path(monkeypatch: pytest.MonkeyPatch, policy: str, routine: str, times: int, donate: bool) -> None:
    fast = _lab_run(policy, routine, times, donate=donate)
    engine_only(monkeypatch)
    slow = _lab_run(policy, routine, times, donate=donate)
    assert fast == slow


@pytest.mark.parametrize("max_events", [2, 3, 4, 5, 8, 13])
@pytest.mark.parametrize("routine, donate", [("touch_pages", False), ("touch_again", True)])
def test_event_limit_counts_the_same(monkeypatch: pytest.MonkeyPatch, max_events: int, routine: str, donate: bool) -> None:
    """Each in-hook idmap is still one segment: the event limit trips at the same place."""
    times = 4 if routine == "touch_pages" else 20
    fast = _lab_run("inject", routine, times, donate=donate, max_events=max_events)
    engine_only(monkeypatch)
    slow = _lab_run("inject", routine, times, donate=donate, max_events=max_events)
    assert fast == slow
    if routine == "touch_again" or max_events <= 4:  # (4 pages: a few segments in all)
        assert fast[0] is OutcomeKind.EVENT_LIMIT


def _spin_run(budget: int, spins: int, *, max_events: int = 1_000) -> tuple:
    lab = Lab("inject")
    lab.load_asm(TOUCH)
    pages = lab.alloc("pages", 5)
    _page_granular(lab, pages)
    return record_of(lab.call("spin_touch", pages.va, 5, spins, budget=budget, max_events=max_events))


@pytest.mark.parametrize("chunk", [None, 3, 7])
def test_budget_counts_the_same_across_in_hook_idmaps(monkeypatch: pytest.MonkeyPatch, chunk: int | None) -> None:
    """Every budget from 1 up past the longest stretch, with the engine's chunk as shipped and
    tiny (so idmaps fall inside chunks at every offset): the same outcome at the same PC."""
    import emu.machine

    if chunk is not None:
        monkeypatch.setattr(emu.machine, "STRETCH_CHUNK", chunk)
    fast = [_spin_run(budget, 6) for budget in range(1, 40)]
    engine_only(monkeypatch)
    slow = [_spin_run(budget, 6) for budget in range(1, 40)]
    for budget, (f, s) in enumerate(zip(fast, slow), start=1):
        assert f == s, f"budget {budget}"
    kinds = {f[0] for f in fast}
    assert kinds == {OutcomeKind.BUDGET_EXCEEDED, OutcomeKind.RETURNED}  # the sweep crosses the boundary


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_accesses_of_every_shape_in_one_block(monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    """Loads, stores, pair and straddling accesses, writeback and an atomic, one block, each the
    first touch of its frame: the events (PC, syndrome, FAR, HPFAR of each abort) and registers match."""

    def run() -> tuple:
        lab = Lab(policy)
        lab.load_asm(TOUCH)
        pages = lab.alloc("pages", 8)
        _page_granular(lab, pages)
        return record_of(lab.call("mixed", pages.va, 1))

    fast = run()
    engine_only(monkeypatch)
    slow = run()
    assert fast == slow
    assert fast[0] is OutcomeKind.RETURNED
    assert [e[1] for e in fast[2]].count("idmap") >= 8


def test_in_hook_idmaps_happen() -> None:
    """The fast path is taken (not vacuously equal): a page walk's idmaps leave no engine stops behind."""
    lab = Lab("inject")
    lab.load_asm(TOUCH)
    pages = lab.alloc("pages", 6)
    _page_granular(lab, pages)
    machine = lab.machine
    stops = []
    start = machine.uc.emu_start

    def counted(*args, **kwargs):
        stops.append(args[0])
        return start(*args, **kwargs)

    machine.uc.emu_start = counted
    result = lab.call("touch_pages", pages.va, 6)
    assert result.returned
    assert [e.kind for e in result.events].count("idmap") >= 6
    if machine._counter is not None:
        assert len(stops) < 6


def test_abort_made_without_init_equals_the_dataclass() -> None:
    """emu/abort.py builds MemoryAbort without its generated __init__: same fields, equality, hash, repr."""
    import dataclasses

    from emu.abort import MemoryAbort, _new_abort
    from emu.memory import AccessType, WalkFault
    from emu.syndrome import Esr

    fields = dict(
        stage=2, pc=0x1000, el=1, access_type=AccessType.WRITE, va=0x2008, far=0x2008, size=8, pa=0x4000_2008,
        ipa=0x4000_2008, esr=Esr(0x9200_0047), hpfar=0x400020, fault=WalkFault("translation", 3), unprivileged=False,
        insn=None, text="str x1, [x2]",
    )
    fast, slow = _new_abort(**fields), MemoryAbort(**fields)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert dataclasses.asdict(fast) == dataclasses.asdict(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.pc = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        _new_abort(**{k: v for k, v in fields.items() if k != "text"})


def test_instruction_words_read_as_through_stage_one() -> None:
    """_insn_word's direct read equals a read through stage 1 for mapped, unmapped and misaligned PCs."""
    m = Machine()
    code = bytes(range(256)) * 16  # a whole page of distinct-ish words
    base = 0xFFFF_0000_0030_0000
    m.load(base, code, "r-x")
    for va in [base + off for off in range(0, 4096, 4)] + [base + 1, base + 4094, base + 4096, base - 4]:
        try:
            want = int.from_bytes(m.read(va, 4), "little")
        except Exception:
            want = 0
        assert m._insn_word(va) == want, hex(va)
