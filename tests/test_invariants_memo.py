"""The memoised invariant check (hyp/invariants.py check_invariants) says exactly what the full check says.

check_invariants keys small states by every value the full check reads and
answers a repeated state from its memo (issue 12: the checks after every EL2
event were ~65 us of a ~500 us scenario run). These tests compare it with
check_from_scratch on random states - consistent and corrupted ones, with a
tiny frame range so that states repeat and the memo is really hit - on
copies built afresh (equal values, other objects), after in-place mutation
of an already-checked state, on records holding stray types, and along
random walks of the real transitions.
"""
from __future__ import annotations

import copy
import random

import pytest

from hyp import invariants
from hyp.invariants import MEMO_MAX_ITEMS, check_from_scratch, check_invariants, state_key
from hyp.ownership import Ownership
from hyp.ownership_frames import FrameTable
from hyp.page_state import HOST, HYP, Annotation, Component, GuestEntry, HypBug, PageState, VmRecord

FIRST_PFN = 0x100
NR = 4
STATES = list(PageState)


def _annotation(rng: random.Random) -> Annotation | None:
    return rng.choice([None, None, Annotation(HYP), Annotation(HOST), Annotation(Component.guest(0x1000), rng.randrange(3)),
                       Annotation(Component.guest(0x1001), rng.randrange(3))])


def random_state(rng: random.Random) -> tuple[FrameTable, dict[int, VmRecord]]:
    """Frames and VMs drawn at random over a few frames and gfns: most break some invariant, some hold."""
    frames = FrameTable(FIRST_PFN, NR)
    for pfn in rng.sample(range(FIRST_PFN, FIRST_PFN + NR), rng.randrange(NR + 1)):
        r = frames[pfn]
        if rng.random() < 0.3:
            continue  # stored but in the boot state
        r.host = rng.choice(STATES)
        r.hyp = rng.choice(STATES)
        r.annotation = _annotation(rng)
        r.host_share_guest_count = rng.choice([0, 0, 1, 2, -1])
        r.hyp_pin_count = rng.choice([0, 0, 1, -1])
        r.holds_guest_secret = rng.random() < 0.3
    vms = {}
    for handle in rng.sample([0x1000, 0x1001], rng.randrange(3)):
        vm = VmRecord(handle, protected=rng.random() < 0.5)
        for gfn in rng.sample(range(3), rng.randrange(3)):
            vm.entries[gfn] = GuestEntry(rng.choice(STATES), rng.randrange(FIRST_PFN - 1, FIRST_PFN + NR + 1))
        vm.poisoned = rng.sample(range(3), rng.randrange(2))
        vms[handle] = vm
    return frames, vms


def test_the_memo_agrees_with_the_full_check_on_random_states_and_fresh_copies():
    rng = random.Random(12)
    invariants._MEMO.results.clear()
    hits = 0
    for _ in range(4000):
        frames, vms = random_state(rng)
        key = state_key(frames, vms)
        assert key is not None
        hits += key in invariants._MEMO.results
        expected = check_from_scratch(frames, vms)
        assert check_invariants(frames, vms) == expected
        twin = copy.deepcopy((frames, vms))  # equal values, other objects: answered from the memo
        assert state_key(*twin) == key
        assert check_invariants(*twin) == expected == check_from_scratch(*twin)
    assert hits > 200, "the tiny state space must repeat, or the memo was never exercised"
    assert any(check_from_scratch(*random_state(random.Random(s))) == [] for s in range(200)), "no valid state drawn"


def test_mutating_a_checked_state_in_place_is_seen():
    rng = random.Random(13)
    for _ in range(2000):
        frames, vms = random_state(rng)
        check_invariants(frames, vms)
        pfn = rng.randrange(FIRST_PFN, FIRST_PFN + NR)
        field = rng.choice(["host", "hyp", "annotation", "host_share_guest_count", "hyp_pin_count", "holds_guest_secret"])
        value = {"host": rng.choice(STATES), "hyp": rng.choice(STATES), "annotation": _annotation(rng),
                 "host_share_guest_count": rng.randrange(-1, 3), "hyp_pin_count": rng.randrange(-1, 2),
                 "holds_guest_secret": rng.random() < 0.5}[field]
        setattr(frames[pfn], field, value)
        if vms and rng.random() < 0.5:
            vm = rng.choice(list(vms.values()))
            vm.protected = not vm.protected
            vm.entries[rng.randrange(3)] = GuestEntry(rng.choice(STATES), rng.randrange(FIRST_PFN, FIRST_PFN + NR))
            vm.poisoned.append(rng.randrange(3))
        assert check_invariants(frames, vms) == check_from_scratch(frames, vms)


@pytest.mark.parametrize("corrupt", [
    lambda r: setattr(r, "host", int(r.host)),  # an IntEnum's raw value: equal, but not `is`
    lambda r: setattr(r, "hyp_pin_count", True),  # prints as True, not 1
    lambda r: setattr(r, "host_share_guest_count", 1.0),
    lambda r: setattr(r, "annotation", Annotation(Component.guest(0x1000), True)),  # gfn prints as True, not 1
])
def test_a_record_with_a_stray_type_is_checked_in_full(corrupt):
    rng = random.Random(14)
    for _ in range(300):
        frames, vms = random_state(rng)
        check_invariants(*copy.deepcopy((frames, vms)))  # the canonical twin goes into the memo
        corrupt(frames[FIRST_PFN])
        assert state_key(frames, vms) is None
        assert check_invariants(frames, vms) == check_from_scratch(frames, vms)


def test_big_states_are_not_keyed():
    frames = FrameTable(0, MEMO_MAX_ITEMS + 2)
    for pfn in range(MEMO_MAX_ITEMS + 1):
        frames[pfn].hyp = PageState.OWNED  # host OWNED too: two owners each
    assert state_key(frames, {}) is None
    assert check_invariants(frames, {}) == check_from_scratch(frames, {}) != []


@pytest.mark.parametrize("seed", range(4))
def test_the_memo_agrees_along_random_walks_of_the_real_transitions(seed):
    rng = random.Random(seed)
    m = Ownership(FIRST_PFN, NR)
    handles = [m.create_guest(protected=True), m.create_guest(protected=False)]
    pfns = list(range(FIRST_PFN - 1, FIRST_PFN + NR + 1))
    moves = [
        lambda: m.host_donate_hyp(rng.choice(pfns)),
        lambda: m.hyp_donate_host(rng.choice(pfns)),
        lambda: m.host_share_hyp(rng.choice(pfns)),
        lambda: m.host_unshare_hyp(rng.choice(pfns)),
        lambda: m.host_donate_guest(rng.choice(pfns), rng.choice(handles), rng.randrange(3)),
        lambda: m.host_share_guest(rng.choice(pfns), rng.choice(handles), rng.randrange(3)),
        lambda: m.host_unshare_guest(rng.choice(handles), rng.randrange(3)),
        lambda: m.guest_share_host(rng.choice(handles), rng.randrange(3)),
        lambda: m.guest_unshare_host(rng.choice(handles), rng.randrange(3)),
        lambda: m.host_force_reclaim_guest_page(rng.choice(pfns)),
        lambda: m.hyp_pin_shared_mem(rng.choice(pfns)),
        lambda: m.hyp_unpin_shared_mem(rng.choice(pfns)),
        lambda: m.teardown_guest(rng.choice(handles)) if rng.random() < 0.05 else None,
        lambda: m.reclaim_dying_guest_page(rng.choice(handles), rng.randrange(3)),
    ]
    for _ in range(1500):
        try:
            rng.choice(moves)()
        except HypBug:  # hyp_unpin_shared_mem()'s BUG_ON on an unpinned frame: nothing changed
            pass
        assert check_invariants(m._frames, m._vms) == check_from_scratch(m._frames, m._vms)
        assert m.check_invariants() == []
