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
from faultlab.sweep.kernel import KERNEL_ROUTINES
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


def _compare_sweep_cases(monkeypatch: pytest.MonkeyPatch, host, name: str, lengths) -> int:
    """Our routine's boundary cases under every policy, on `host`, copying and not: the same runs. Returns the copies."""
    cases = boundary_cases(name, lengths, ("inject", "inject-reclaim", "panic"))

    def runs() -> tuple[list, int]:
        bench = Bench(host=host)
        out = [run_case(bench, ROUTINES[name], case) for case in cases]
        copied = sum(lab.machine._loop_replay.copied for lab in bench.labs.values())
        return [(r.outcome, r.regs, [(e.seq, e.kind, e.pc, e.el, e.message, repr(e.data)) for e in r.events], r.problems, r.memory)
                for r in out], copied

    fast, copied = runs()
    with monkeypatch.context() as patch:
        engine_only(patch)
        slow, none = runs()
    assert none == 0
    assert fast == slow
    return copied


HOSTS = pytest.mark.parametrize("host", [LINUX_6_1.host, LINUX_7_2.host], ids=["6.1", "7.2"])


@HOSTS
@pytest.mark.parametrize("name", ["__arch_copy_from_user", "strscpy", "full_name_hash", "copy_from_kernel_nofault"])
def test_sweep_cases_match_the_engine_path(monkeypatch: pytest.MonkeyPatch, host, name: str) -> None:
    """Our routines on a 6.1 host (livelocks where the marker is missing) and a 7.2 host (force-reclaim:
    ownership changes, nothing is copied), a spread of lengths: the same runs."""
    copied = _compare_sweep_cases(monkeypatch, host, name, range(0, 40, 9 if name == "strscpy" else 4))
    if host is LINUX_6_1.host and name != "copy_from_kernel_nofault":
        assert copied > 0  # 6.1 retries its spurious faults: some runs were copies


@pytest.mark.slow
@HOSTS
@pytest.mark.parametrize("name", sorted(KERNEL_ROUTINES))
def test_every_boundary_case_matches_the_engine_path(monkeypatch: pytest.MonkeyPatch, host, name: str) -> None:
    """The slow job: every routine with a kernel twin, every length 0-64, every boundary case."""
    _compare_sweep_cases(monkeypatch, host, name, range(65))


GUEST_VECTORS = """
.text
.balign 2048
SYM_FUNC_START(retry_vectors)     // its own exception vectors: only "current EL, SPx, sync" is used
    .skip 0x200
    ldr  x9, [x10]                // count the entry in memory...
    add  x9, x9, #1
    str  x9, [x10]
    cmp  x9, #20
    mov  x9, #0                   // ...and leave the registers as they were
    b.lt 1f
    mrs  x11, elr_el1             // the 20th entry skips the access
    add  x11, x11, #4
    msr  elr_el1, x11
    mov  x11, #0
1:  eret
SYM_FUNC_END(retry_vectors)
SYM_FUNC_START(retry_load)        // x0 = vectors, x1 = the guest's page, x2 = the counter
    msr  vbar_el1, x0
    isb
    mov  x10, x2
    ldr  x3, [x1]
    ret
SYM_FUNC_END(retry_load)
"""


def test_retries_by_code_of_its_own_are_run_not_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    """A vector table of the routine's own retries the access with the registers unchanged, counting
    the entries in memory: the takings look alike, but memory changes, and only a modelled host
    vouches for an iteration. Nothing is copied; the 20th entry skips the access and the run returns."""

    def run() -> tuple[tuple, Lab]:
        config = KernelConfig(profile=dataclasses.replace(model_profile(), host=LINUX_6_1.host), pkvm_initialised=True)
        lab = Lab("inject", host_config=config)
        lab.load_asm("retry_vectors.S", text=GUEST_VECTORS)
        guest, counter = lab.alloc("guest", 1), lab.alloc("counter", 1)
        lab.donate(guest.pfns[0])
        result = lab.call("retry_load", lab.symbol("retry_vectors"), guest.va, counter.va, max_events=1_000)
        return record_of(result), lab

    fast, lab = run()
    assert fast[0] is OutcomeKind.RETURNED
    assert [e[1] for e in fast[2]].count("protected-access") == 20
    assert lab.machine._loop_replay.copied == 0
    assert int.from_bytes(lab.read(lab.regions["counter"].va, 8), "little") == 20
    engine_only(monkeypatch)
    assert run()[0] == fast


def test_a_lazy_idmap_changes_el2s_loop_state() -> None:
    """An iteration that mapped a frame is no repeat (the next finds it mapped and logs no idmap): the
    host stage 2 is part of what EL2 reports, though an idmap is no ownership transition."""
    lab = Lab("inject")
    region = lab.alloc("pages", 1)
    before = lab.hyp.loop_state()
    transitions = len(lab.hyp.ownership.transitions)
    assert lab.hyp.stage2.idmap(region.pfns[0])  # a frame the host never touched: mapped now
    assert len(lab.hyp.ownership.transitions) == transitions
    assert lab.hyp.loop_state() != before
    assert lab.hyp.loop_state() == lab.hyp.loop_state()  # and stays put while nothing changes
