"""Exit addresses reached from Python are handed over without starting the engine (emu/machine.py).

An exception entry to a modelled host's vector sets PC to an exit address (a `brk`
the CPU never gets past). When the fill hook has granted a fetch from that page at
that EL since the engine's TLB was last flushed, the engine would fetch the `brk`
and stop on it at once, so `Machine._run_segment` calls the exit's handler itself.
Where the fetch could fault (the page's frame given away, a flush since) the engine
runs as before. Each comparison runs the same thing with `fast_fault_path` off too.
"""
from __future__ import annotations

import pytest

from emu.machine import Machine
from emu.outcome import OutcomeKind
from faultlab.lab import Lab
from guest_asm import source_path
from host.kernel import VECTORS_VA
from hyp.policies import POLICIES

from engine_paths import engine_only, record_of

TOUCH = source_path("fault_paths")


def _counting_starts(machine: Machine) -> list[int]:
    starts: list[int] = []
    start = machine.uc.emu_start

    def counted(*args, **kwargs):
        starts.append(args[0])
        return start(*args, **kwargs)

    machine.uc.emu_start = counted
    return starts


def _touch_again(policy: str, times: int, *, max_events: int = 1_000) -> tuple[tuple, list[int]]:
    lab = Lab(policy)
    lab.load_asm(TOUCH)
    guest = lab.alloc("guest", 1)
    lab.donate(guest.pfns[0])
    starts = _counting_starts(lab.machine)
    return record_of(lab.call("touch_again", guest.va, times, max_events=max_events)), starts


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("times", [1, 2, 7])
def test_hand_over_matches_the_engine_path(monkeypatch: pytest.MonkeyPatch, policy: str, times: int) -> None:
    fast, _ = _touch_again(policy, times)
    engine_only(monkeypatch)
    slow, _ = _touch_again(policy, times)
    assert fast == slow


@pytest.mark.parametrize("max_events", range(1, 16))
def test_hand_over_counts_as_a_segment(monkeypatch: pytest.MonkeyPatch, max_events: int) -> None:
    """The event limit trips at the same place: a hand-over is one segment, as the engine's stop on the brk was."""
    fast, _ = _touch_again("inject", 10, max_events=max_events)
    engine_only(monkeypatch)
    slow, _ = _touch_again("inject", 10, max_events=max_events)
    assert fast == slow
    assert fast[0] is OutcomeKind.EVENT_LIMIT


def test_vectors_are_handed_over_after_the_first_fetch() -> None:
    """Not vacuously equal: after the first injection (which fetches the vector page through the
    engine), every later one reaches the host's handler without an engine start at the vector."""
    record, starts = _touch_again("inject", 6)
    assert record[0] is OutcomeKind.RETURNED
    at_vectors = [pc for pc in starts if VECTORS_VA <= pc < VECTORS_VA + 0x800]
    # The first entry: the engine fetches at the vector (after the lazy idmap of the vector page's
    # frame, if that fetch took one, a second start there); none after it.
    vector_idmaps = [e for e in record[2] if e[1] == "idmap" and VECTORS_VA <= e[2] < VECTORS_VA + 0x800]
    assert len(at_vectors) == 1 + len(vector_idmaps)
    assert [e[1] for e in record[2]].count("fixup") == 6


def test_a_vector_page_that_cannot_be_fetched_goes_through_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vector page's frame given to a guest: the fetch there is a stage-2 instruction abort,
    which the engine must take (a hand-over would run the host's handler instead)."""

    def run() -> tuple:
        lab = Lab("inject")
        lab.load_asm(TOUCH)
        guest = lab.alloc("guest", 1)
        lab.call("touch_again", guest.va, 1)  # the vector page is fetchable now
        lab.donate(guest.pfns[0])
        lab.donate(lab.machine.stage1.lookup(VECTORS_VA).pfn)
        return record_of(lab.call("touch_again", guest.va, 3, max_events=40))

    fast = run()
    engine_only(monkeypatch)
    assert fast == run()
    assert "fixup" not in [e[1] for e in fast[2]]
    assert any(e[1] == "abort" and e[2] == VECTORS_VA + 0x200 for e in fast[2])


def test_tlbi_forgets_the_granted_fetches() -> None:
    """A TLBI the code executes flushes the engine's TLB: the machine's record of granted fetches goes too."""
    m = Machine()
    code = 0xFFFF_0000_0040_0000
    tlbi_vmalle1, dsb_ish, isb, ret = 0xD508871F, 0xD5033B9F, 0xD5033FDF, 0xD65F03C0
    m.load(code, b"".join(w.to_bytes(4, "little") for w in (tlbi_vmalle1, dsb_ish, isb, ret)), "r-x")
    stale = (0xFFFF_0000_0090_0000, 1)
    m.fetchable.add(stale)
    assert m.call(code).returned
    assert stale not in m.fetchable
    m.fetchable.add(stale)
    m.flush_tlb()
    assert not m.fetchable
