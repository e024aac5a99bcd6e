"""A run repeating one abort from one state: its iterations copied, run for run the same (emu/loop_replay.py).

Linux 6.1 has no pKVM marker check: an injected abort on a page stage 1 maps is a
spurious translation fault to it, so it WARNs and retries until the host model calls
the run a livelock. Each test runs the same thing with the machine's fast paths on
(iterations copied once proven repeats) and off (every iteration through the engine
and the models) and compares everything a run reports, and checks that copies were
made at all.
"""
from __future__ import annotations

import dataclasses

import pytest

from emu.outcome import OutcomeKind
from faultlab.lab import Lab
from faultlab.sweep import ROUTINES, Bench, run_case
from faultlab.sweep.hosts import boundary_cases
from guest_asm import source_path
from host.kernel import KernelConfig
from host.results import LIVELOCK_AFTER
from kimage.profiles import LINUX_6_1, LINUX_7_2, model_profile

from engine_paths import engine_only, record_of

TOUCH = source_path("fault_paths")


def _livelock(max_events: int = 1_000, *, policy: str = "inject", pages: int = 1) -> tuple[tuple, Lab]:
    """A kernel load with no fixup from a page given to the guest, under 6.1's fault path."""
    config = KernelConfig(profile=dataclasses.replace(model_profile(), host=LINUX_6_1.host), pkvm_initialised=True)
    lab = Lab(policy, host_config=config)
    lab.load_asm(TOUCH)
    guest = lab.alloc("guest", pages)
    for pfn in guest.pfns:
        lab.donate(pfn)
    result = lab.call("touch_pages", guest.va, pages, max_events=max_events)
    return record_of(result), lab


def _books(lab: Lab) -> tuple:
    """What EL2 and the host keep of the iterations besides the run's events."""
    return (lab.hyp.injections, lab.kernel._refaults, lab.kernel._refault, lab.kernel.fixups)


@pytest.mark.parametrize("policy", ["inject", "inject-reclaim"])
def test_a_livelock_is_copied_and_ends_as_when_run(monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    fast, lab = _livelock(policy=policy)
    assert fast[0] is OutcomeKind.LIVELOCK
    assert [e[1] for e in fast[2]].count("protected-access") == LIVELOCK_AFTER
    # Iterations 1 and 2 (the first is where the fingerprint is taken) and the last are run; of those
    # between, the ones after the last lazy idmap (a mapping change) of the vector and stub pages are copies.
    assert 1 <= lab.machine._loop_replay.copied <= LIVELOCK_AFTER - 3
    books = _books(lab)
    engine_only(monkeypatch)
    slow, slow_lab = _livelock(policy=policy)
    assert slow_lab.machine._loop_replay.copied == 0
    assert fast == slow
    assert books == _books(slow_lab)


@pytest.mark.parametrize("max_events", range(1, 3 * LIVELOCK_AFTER + 3))
def test_the_event_limit_trips_where_it_would(monkeypatch: pytest.MonkeyPatch, max_events: int) -> None:
    """Every limit from 1 to past the livelock: copies stop short of it, so it trips in an iteration run."""
    fast, lab = _livelock(max_events)
    books = _books(lab)
    engine_only(monkeypatch)
    slow, slow_lab = _livelock(max_events)
    assert fast == slow
    assert books == _books(slow_lab)


def test_two_pages_two_loops() -> None:
    """The first page's loop ends the run as a livelock: the second is never reached, and nothing of
    it shows; copies belong to the run that made them (a second run starts afresh)."""
    record, lab = _livelock(pages=2)
    assert record[0] is OutcomeKind.LIVELOCK
    first = lab.machine._loop_replay.copied
    again = lab.call("touch_pages", lab.regions["guest"].va, 2)
    assert again.outcome.kind is OutcomeKind.LIVELOCK
    assert [e.kind for e in again.events].count("abort") == LIVELOCK_AFTER  # every page mapped by now: no idmap
    assert lab.machine._loop_replay.copied == first + LIVELOCK_AFTER - 3


@pytest.mark.parametrize("host", [LINUX_6_1.host, LINUX_7_2.host], ids=["6.1", "7.2"])
@pytest.mark.parametrize("name", ["__arch_copy_from_user", "strscpy", "full_name_hash", "copy_from_kernel_nofault"])
def test_sweep_cases_match_the_engine_path(monkeypatch: pytest.MonkeyPatch, host, name: str) -> None:
    """Our routines on a 6.1 host (livelocks where the marker is missing) and a 7.2 host (force-reclaim:
    ownership changes, nothing is copied), every policy, a spread of boundary cases: the same runs."""
    cases = boundary_cases(name, range(0, 40, 3), ("inject", "inject-reclaim", "panic"))

    def runs() -> tuple[list, int]:
        bench = Bench(host=host)
        out = [run_case(bench, ROUTINES[name], case) for case in cases]
        copied = sum(lab.machine._loop_replay.copied for lab in bench.labs.values())
        return [(r.outcome, r.regs, [(e.seq, e.kind, e.pc, e.el, e.message, repr(e.data)) for e in r.events], r.problems, r.memory)
                for r in out], copied

    fast, copied = runs()
    engine_only(monkeypatch)
    slow, none = runs()
    assert none == 0
    assert fast == slow
    if host is LINUX_6_1.host and name != "copy_from_kernel_nofault":
        assert copied > 0  # 6.1 retries its spurious faults: some runs were copies
