"""The pKVM page-ownership model against an independent reference of its transition table.

The reference below is written from docs/facts.md ("pKVM at EL2") and the
decision order of mem_protect.c (recorded in hyp/ownership.py docstrings),
for ONE frame shared by a protected guest A and a non-protected guest B, each
with two gfns. It never calls the code under test: a breadth-first search over
the reference enumerates every reachable state of that frame, each state is
reached in the real model by replaying the transitions that led to it, and then
every transition is tried from every state, in the spirit of pKVM's own
ownership selftest.
"""
from __future__ import annotations

import dataclasses
import random
from collections import Counter, deque
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)

from abi.linux import Errno
from hyp.ownership import HOST, HYP, Component, Ownership, PageState
from hyp.page_state import HypBug

from picks import DataPick, Pick, RandomPick

OWNED, SHARED_OWNED, SHARED_BORROWED, NOPAGE, POISON = (
    PageState.OWNED,
    PageState.SHARED_OWNED,
    PageState.SHARED_BORROWED,
    PageState.NOPAGE,
    PageState.POISON,
)
ACCESSIBLE = {OWNED, SHARED_OWNED, SHARED_BORROWED}
FIRST_PFN = 0x80000
GFNS = (0, 1)
# Guest IPA space of the model's default (40 bits, 4 KiB pages).
GFN_LIMIT = 1 << 28


class Recorder:
    """Collects the side-effect callbacks in the order they fire."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def stage2(self, pfn: int, mapped_allowed: bool) -> None:
        self.events.append(("stage2", pfn, mapped_allowed))

    def zero(self, pfn: int) -> None:
        self.events.append(("zero", pfn))

    def take(self) -> list[tuple]:
        events, self.events = self.events, []
        return events


# --------------------------------------------------------------------------
# The reference: one frame, guest A (protected) and guest B (non-protected).
# --------------------------------------------------------------------------

LIVE, DYING, GONE = "live", "dying", "gone"


@dataclass(frozen=True)
class RefGuest:
    status: str
    entries: tuple[PageState, PageState]  # state at gfn 0 and gfn 1

    def at(self, gfn: int) -> PageState:
        return self.entries[gfn]

    def set(self, gfn: int, state: PageState) -> RefGuest:
        entries = list(self.entries)
        entries[gfn] = state
        return replace(self, entries=tuple(entries))


@dataclass(frozen=True)
class RefState:
    host: PageState
    hyp: PageState
    pins: int
    a: RefGuest
    b: RefGuest

    @property
    def share_count(self) -> int:
        return self.b.entries.count(SHARED_BORROWED)

    def __str__(self) -> str:
        def g(guest: RefGuest) -> str:
            return f"{guest.status}[{','.join(s.name for s in guest.entries)}]"

        return f"host={self.host.name} hyp={self.hyp.name} pins={self.pins} A={g(self.a)} B={g(self.b)}"


START = RefState(OWNED, NOPAGE, 0, RefGuest(LIVE, (NOPAGE, NOPAGE)), RefGuest(LIVE, (NOPAGE, NOPAGE)))
MAX_PINS = 2  # the search stops pinning beyond this


@dataclass(frozen=True)
class Outcome:
    result: Errno
    state: RefState
    scrub: bool = False  # the frame must be zeroed by this transition
    bug: bool = False  # pKVM BUG()s: the model raises HypBug and changes nothing
    unspecified: bool = False  # pKVM defines no result: the model must refuse (any errno) and change nothing


def fail(errno: Errno, s: RefState) -> Outcome:
    return Outcome(errno, s)


def ok(s: RefState, scrub: bool = False) -> Outcome:
    return Outcome(Errno.SUCCESS, s, scrub)


# Each rule: the checks in pKVM's order, then the new state on success.


def ref_host_share_hyp(s: RefState) -> Outcome:
    if s.host is not OWNED or s.hyp is not NOPAGE:
        return fail(Errno.EPERM, s)
    return ok(replace(s, host=SHARED_OWNED, hyp=SHARED_BORROWED))


def ref_host_unshare_hyp(s: RefState) -> Outcome:
    if s.host is not SHARED_OWNED or s.hyp is not SHARED_BORROWED:
        return fail(Errno.EPERM, s)
    if s.pins:
        return fail(Errno.EBUSY, s)
    return ok(replace(s, host=OWNED, hyp=NOPAGE))


def ref_pin(s: RefState) -> Outcome:
    if s.host is not SHARED_OWNED or s.hyp is not SHARED_BORROWED:
        return fail(Errno.EPERM, s)
    return ok(replace(s, pins=s.pins + 1))


def ref_unpin(s: RefState) -> Outcome:
    # mem_protect.c hyp_unpin_shared_mem() checks no state; hyp_page_ref_dec() BUG()s at refcount 0.
    if s.pins == 0:
        return Outcome(Errno.SUCCESS, s, bug=True)
    return ok(replace(s, pins=s.pins - 1))


def ref_host_donate_hyp(s: RefState) -> Outcome:
    if s.host is not OWNED or s.hyp is not NOPAGE:
        return fail(Errno.EPERM, s)
    return ok(replace(s, host=NOPAGE, hyp=OWNED))


def ref_hyp_donate_host(s: RefState) -> Outcome:
    if s.hyp is not OWNED or s.host is not NOPAGE:
        return fail(Errno.EPERM, s)
    return ok(replace(s, host=OWNED, hyp=NOPAGE))


def ref_donate_guest_a(gfn: int) -> Callable[[RefState], Outcome]:
    def rule_(s: RefState) -> Outcome:
        if s.a.status != LIVE:
            return fail(Errno.EINVAL, s)
        if s.host is not OWNED:
            return fail(Errno.EPERM, s)
        if s.a.at(gfn) is not NOPAGE:
            return fail(Errno.EPERM, s)
        return ok(replace(s, host=NOPAGE, a=s.a.set(gfn, OWNED)))

    return rule_


def ref_always(errno: Errno) -> Callable[[RefState], Outcome]:
    return lambda s: fail(errno, s)


def ref_share_guest_b(gfn: int) -> Callable[[RefState], Outcome]:
    def rule_(s: RefState) -> Outcome:
        if s.b.status != LIVE:
            return fail(Errno.EINVAL, s)
        if s.b.at(gfn) is not NOPAGE:
            return fail(Errno.EPERM, s)
        if not (s.host is OWNED or (s.host is SHARED_OWNED and s.share_count > 0)):
            return fail(Errno.EPERM, s)
        return ok(replace(s, host=SHARED_OWNED, b=s.b.set(gfn, SHARED_BORROWED)))

    return rule_


def ref_unshare_guest_b(gfn: int) -> Callable[[RefState], Outcome]:
    def rule_(s: RefState) -> Outcome:
        if s.b.status == GONE:
            return fail(Errno.EINVAL, s)
        if s.b.at(gfn) in (NOPAGE, POISON):
            return fail(Errno.ENOENT, s)
        if s.b.at(gfn) is not SHARED_BORROWED:
            return fail(Errno.EPERM, s)
        b = s.b.set(gfn, NOPAGE)
        host = SHARED_OWNED if SHARED_BORROWED in b.entries else OWNED
        return ok(replace(s, host=host, b=b))

    return rule_


def _guest_entry_checks(guest: RefGuest, gfn: int) -> Errno | None:
    if guest.status != LIVE:
        return Errno.EINVAL
    if guest.at(gfn) is POISON:
        return Errno.EHWPOISON
    if guest.at(gfn) is NOPAGE:
        return Errno.ENOENT
    return None


def ref_guest_share_host(which: str, gfn: int) -> Callable[[RefState], Outcome]:
    def rule_(s: RefState) -> Outcome:
        guest = getattr(s, which)
        if err := _guest_entry_checks(guest, gfn):
            return fail(err, s)
        if guest.at(gfn) is not OWNED or s.host is not NOPAGE:
            return fail(Errno.EPERM, s)
        return ok(replace(s, host=SHARED_BORROWED, **{which: guest.set(gfn, SHARED_OWNED)}))

    return rule_


def ref_guest_unshare_host(which: str, gfn: int) -> Callable[[RefState], Outcome]:
    def rule_(s: RefState) -> Outcome:
        guest = getattr(s, which)
        if err := _guest_entry_checks(guest, gfn):
            return fail(err, s)
        if guest.at(gfn) is not SHARED_OWNED or s.host is not SHARED_BORROWED:
            return fail(Errno.EPERM, s)
        return ok(replace(s, host=NOPAGE, **{which: guest.set(gfn, OWNED)}))

    return rule_


def ref_force_reclaim(s: RefState) -> Outcome:
    # docs/facts.md: needs host NOPAGE, owner a guest, guest OWNED; -EAGAIN when
    # the host already has it back; -EPERM otherwise. Dying VMs are not refused.
    if s.host is not NOPAGE:
        return fail(Errno.EAGAIN, s)
    if s.hyp is OWNED:
        return fail(Errno.EPERM, s)
    owned = [g for g in GFNS if s.a.at(g) is OWNED]
    if len(owned) != 1:
        return fail(Errno.EPERM, s)
    return ok(replace(s, host=OWNED, a=s.a.set(owned[0], POISON)), scrub=True)


def ref_teardown(which: str) -> Callable[[RefState], Outcome]:
    def rule_(s: RefState) -> Outcome:
        guest = getattr(s, which)
        if guest.status == GONE:  # pkvm.c __pkvm_start_teardown_vm(): no VM -> -ENOENT
            return fail(Errno.ENOENT, s)
        if guest.status != LIVE:
            return fail(Errno.EINVAL, s)
        return ok(replace(s, **{which: replace(guest, status=DYING)}))

    return rule_


def ref_reclaim_dying(which: str, gfn: int) -> Callable[[RefState], Outcome]:
    def rule_(s: RefState) -> Outcome:
        guest = getattr(s, which)
        if guest.status != DYING:
            return fail(Errno.EINVAL, s)
        state = guest.at(gfn)
        if state is NOPAGE:
            return fail(Errno.ENOENT, s)
        if state is SHARED_BORROWED:
            return fail(Errno.EPERM, s)
        cleared = {which: guest.set(gfn, NOPAGE)}
        if state is POISON:
            return ok(replace(s, **cleared))
        # OWNED: contents never seen by the host -> scrub; SHARED_OWNED: the host saw them.
        return ok(replace(s, host=OWNED, **cleared), scrub=state is OWNED)

    return rule_


def ref_finalize(which: str) -> Callable[[RefState], Outcome]:
    def rule_(s: RefState) -> Outcome:
        guest = getattr(s, which)
        if guest.status == GONE:  # pkvm.c __pkvm_finalize_teardown_vm(): no VM -> -ENOENT
            return fail(Errno.ENOENT, s)
        if guest.status != DYING:  # not dying -> -EBUSY
            return fail(Errno.EBUSY, s)
        if any(e is not NOPAGE for e in guest.entries):  # pages the host never reclaimed: pKVM defines nothing
            return Outcome(Errno.SUCCESS, s, unspecified=True)
        return ok(replace(s, **{which: replace(guest, status=GONE)}))

    return rule_


@dataclass(frozen=True)
class Env:
    model: Ownership
    recorder: Recorder
    pfn: int
    a: int
    b: int


@dataclass(frozen=True)
class Action:
    id: str
    kernel_name: str
    ref: Callable[[RefState], Outcome]
    apply: Callable[[Env], Errno]


def _actions() -> list[Action]:
    acts = [
        Action("share_hyp", "__pkvm_host_share_hyp", ref_host_share_hyp, lambda e: e.model.host_share_hyp(e.pfn)),
        Action("unshare_hyp", "__pkvm_host_unshare_hyp", ref_host_unshare_hyp, lambda e: e.model.host_unshare_hyp(e.pfn)),
        Action("pin", "hyp_pin_shared_mem", ref_pin, lambda e: e.model.hyp_pin_shared_mem(e.pfn)),
        Action("unpin", "hyp_unpin_shared_mem", ref_unpin, lambda e: e.model.hyp_unpin_shared_mem(e.pfn)),
        Action("donate_hyp", "__pkvm_host_donate_hyp", ref_host_donate_hyp, lambda e: e.model.host_donate_hyp(e.pfn)),
        Action("hyp_donate_host", "__pkvm_hyp_donate_host", ref_hyp_donate_host, lambda e: e.model.hyp_donate_host(e.pfn)),
        Action("donate_guest-B-g0", "__pkvm_host_donate_guest", ref_always(Errno.EINVAL),
               lambda e: e.model.host_donate_guest(e.pfn, e.b, 0)),
        Action("share_guest-A-g0", "__pkvm_host_share_guest", ref_always(Errno.EINVAL),
               lambda e: e.model.host_share_guest(e.pfn, e.a, 0)),
        Action("unshare_guest-A-g0", "__pkvm_host_unshare_guest", ref_always(Errno.EINVAL),
               lambda e: e.model.host_unshare_guest(e.a, 0)),
        Action("force_reclaim", "__pkvm_host_force_reclaim_page_guest", ref_force_reclaim,
               lambda e: e.model.host_force_reclaim_guest_page(e.pfn)),
    ]
    for g in GFNS:
        acts += [
            Action(f"donate_guest-A-g{g}", "__pkvm_host_donate_guest", ref_donate_guest_a(g),
                   lambda e, g=g: e.model.host_donate_guest(e.pfn, e.a, g)),
            Action(f"share_guest-B-g{g}", "__pkvm_host_share_guest", ref_share_guest_b(g),
                   lambda e, g=g: e.model.host_share_guest(e.pfn, e.b, g)),
            Action(f"unshare_guest-B-g{g}", "__pkvm_host_unshare_guest", ref_unshare_guest_b(g),
                   lambda e, g=g: e.model.host_unshare_guest(e.b, g)),
        ]
    for which in ("a", "b"):
        name = which.upper()
        acts += [
            Action(f"teardown-{name}", "__pkvm_start_teardown_vm", ref_teardown(which),
                   lambda e, w=which: e.model.teardown_guest(getattr(e, w))),
            Action(f"finalize-{name}", "__pkvm_finalize_teardown_vm", ref_finalize(which),
                   lambda e, w=which: e.model.finalize_teardown_guest(getattr(e, w))),
        ]
        for g in GFNS:
            acts += [
                Action(f"guest_share_host-{name}-g{g}", "__pkvm_guest_share_host", ref_guest_share_host(which, g),
                       lambda e, w=which, g=g: e.model.guest_share_host(getattr(e, w), g)),
                Action(f"guest_unshare_host-{name}-g{g}", "__pkvm_guest_unshare_host",
                       ref_guest_unshare_host(which, g),
                       lambda e, w=which, g=g: e.model.guest_unshare_host(getattr(e, w), g)),
                Action(f"reclaim-{name}-g{g}", "__pkvm_reclaim_dying_guest_page", ref_reclaim_dying(which, g),
                       lambda e, w=which, g=g: e.model.reclaim_dying_guest_page(getattr(e, w), g)),
            ]
    return acts


ACTIONS = _actions()
ACTIONS_BY_ID = {a.id: a for a in ACTIONS}


@lru_cache(maxsize=None)
def reachable() -> dict[RefState, tuple[str, ...]]:
    """Breadth-first search over the reference: each reachable state with a shortest path to it."""
    paths = {START: ()}
    queue = deque([START])
    while queue:
        state = queue.popleft()
        for action in ACTIONS:
            nxt = action.ref(state).state
            if nxt not in paths and nxt.pins <= MAX_PINS:
                paths[nxt] = paths[state] + (action.id,)
                queue.append(nxt)
    return paths


def fresh_env() -> Env:
    recorder = Recorder()
    model = Ownership(FIRST_PFN, 1, on_host_stage2_change=recorder.stage2, zero_frame=recorder.zero)
    a = model.create_guest(protected=True)
    b = model.create_guest(protected=False)
    return Env(model, recorder, FIRST_PFN, a, b)


def observed(env: Env) -> dict:
    """The real model's view of the frame, in the reference's vocabulary."""
    m, p = env.model, env.pfn

    def guest(handle: int) -> object:
        if handle not in m.guests():
            return GONE
        return (DYING if m.is_dying(handle) else LIVE, tuple(m.guest_state(handle, g) for g in GFNS))

    return {
        "host": m.host_state(p),
        "hyp": m.hyp_state(p),
        "pins": m.hyp_pin_count(p),
        "share_count": m.host_share_guest_count(p),
        "host_may_access": m.host_may_access(p),
        "owner": m.owner(p),
        "annotation": m.annotation(p),
        "A": guest(env.a),
        "B": guest(env.b),
    }


def expected(s: RefState, env: Env) -> dict:
    """What the reference says the same queries must answer, derived from the semantics."""

    def guest(g: RefGuest) -> object:
        return GONE if g.status == GONE else (g.status, g.entries)

    if s.host in (OWNED, SHARED_OWNED):
        owner = HOST
    elif s.hyp is OWNED:
        owner = HYP
    else:  # host NOPAGE or SHARED_BORROWED: guest A owns it at exactly one gfn
        owner = Component.guest(env.a)
    annotation = None
    if s.host is NOPAGE and s.hyp is not OWNED:
        annotation = (env.a, next(g for g in GFNS if s.a.at(g) is OWNED))
    return {
        "host": s.host,
        "hyp": s.hyp,
        "pins": s.pins,
        "share_count": s.share_count,
        "host_may_access": s.host in ACCESSIBLE,
        "owner": owner,
        "annotation": annotation,
        "A": guest(s.a),
        "B": guest(s.b),
    }


def step(env: Env, action: Action, before: RefState) -> RefState:
    """Apply one action to the model and check everything the reference predicts about it."""
    outcome = action.ref(before)
    snap = env.model.snapshot()
    access_before = env.model.host_may_access(env.pfn)
    env.recorder.take()
    nlog = len(env.model.transitions)

    if outcome.bug:
        with pytest.raises(HypBug):
            action.apply(env)
        assert env.model.snapshot() == snap and env.recorder.take() == [], f"{action.id} from {before}"
        return before
    if outcome.unspecified:
        assert action.apply(env) < 0, f"{action.id} from {before}"
        assert env.model.snapshot() == snap and env.recorder.take() == [], f"{action.id} from {before}"
        return before
    result = action.apply(env)

    where = f"{action.id} from {before}"
    assert isinstance(result, Errno), where
    assert result == outcome.result, where
    assert observed(env) == expected(outcome.state, env), where
    assert env.model.check_invariants() == [], where
    if result:
        assert env.model.snapshot() == snap, f"{where}: a failed transition changed state"
    # Side effects: a scrub when the reference says so, and a stage-2 callback
    # exactly when host access flips, after the scrub.
    access_after = outcome.state.host in ACCESSIBLE
    events = ([("zero", env.pfn)] if outcome.scrub else []) + (
        [("stage2", env.pfn, access_after)] if access_after != access_before else []
    )
    assert env.recorder.take() == events, where
    # The log: one entry, named after the kernel function, with the result.
    log = env.model.transitions[nlog:]
    assert [(t.name, t.result) for t in log] == [(action.kernel_name, result)], where
    if log[0].after:
        assert log[0].after[0].host == outcome.state.host, where
        assert log[0].before[0].host == before.host, where
    return outcome.state


def drive(path: tuple[str, ...]) -> tuple[Env, RefState]:
    env, state = fresh_env(), START
    for action_id in path:
        state = step(env, ACTIONS_BY_ID[action_id], state)
    return env, state


def test_search_reaches_every_kind_of_frame_state():
    """Guard the search itself: it must reach each ownership situation the table talks about."""
    states = reachable()
    situations = {
        "host owned": lambda s: s.host is OWNED,
        "shared with hyp, pinned twice": lambda s: s.hyp is SHARED_BORROWED and s.pins == 2,
        "hyp owned": lambda s: s.hyp is OWNED,
        "donated to A at gfn 1": lambda s: s.a.at(1) is OWNED,
        "A shared it back": lambda s: s.host is SHARED_BORROWED,
        "shared with B twice": lambda s: s.share_count == 2,
        "poisoned at both gfns": lambda s: s.a.entries == (POISON, POISON),
        "donated to a dying A": lambda s: s.a.status == DYING and OWNED in s.a.entries,
        "both guests gone": lambda s: s.a.status == GONE and s.b.status == GONE,
    }
    missing = [name for name, pred in situations.items() if not any(pred(s) for s in states)]
    assert missing == []
    assert len(states) > 100


@pytest.mark.parametrize("action", ACTIONS, ids=[a.id for a in ACTIONS])
def test_transition_from_every_reachable_state(action: Action):
    """One transition, tried from every reachable state of the frame."""
    results = set()
    for state, path in reachable().items():
        env, reached = drive(path)
        assert reached == state
        step(env, action, state)
        outcome = action.ref(state)
        results.add("BUG" if outcome.bug else "UNSPECIFIED" if outcome.unspecified else outcome.result)
    # Every transition succeeds from some state and fails from another, except
    # the ones the VM kind rules out.
    if action.id in NEVER_SUCCEEDS:
        assert Errno.SUCCESS not in results
    else:
        assert Errno.SUCCESS in results and len(results) > 1


# The hypercall handlers reject the wrong VM kind; and a non-protected guest
# never owns a page, so it has nothing to share back or to have reclaimed.
NEVER_SUCCEEDS = {"donate_guest-B-g0", "share_guest-A-g0", "unshare_guest-A-g0"} | {
    f"{kind}-B-g{g}" for kind in ("guest_share_host", "guest_unshare_host", "reclaim") for g in GFNS
}


# --------------------------------------------------------------------------
# The seed patch: forced reclaim.
# --------------------------------------------------------------------------


@pytest.fixture
def env() -> Env:
    return fresh_env()


def test_force_reclaim_zeroes_before_the_host_regains_access():
    order: list[str] = []
    holder: dict[str, Ownership] = {}

    def zero(pfn: int) -> None:
        # At scrub time the host must still be locked out.
        order.append(f"zero host_may_access={holder['m'].host_may_access(pfn)}")

    def stage2(pfn: int, allowed: bool) -> None:
        order.append(f"stage2 {allowed}")

    m = Ownership(FIRST_PFN, 2, on_host_stage2_change=stage2, zero_frame=zero)
    holder["m"] = m
    a = m.create_guest()
    assert m.host_donate_guest(FIRST_PFN + 1, a, 7) == 0
    assert order == ["stage2 False"]
    assert m.host_force_reclaim_guest_page(FIRST_PFN + 1) == 0
    assert order == ["stage2 False", "zero host_may_access=False", "stage2 True"]
    assert m.host_state(FIRST_PFN + 1) is OWNED
    assert m.check_invariants() == []


def test_second_force_reclaim_is_eagain_and_changes_nothing(env: Env):
    m = env.model
    assert m.host_donate_guest(env.pfn, env.a, 1) == 0
    assert m.host_force_reclaim_guest_page(env.pfn) == 0
    snap = m.snapshot()
    env.recorder.take()
    assert m.host_force_reclaim_guest_page(env.pfn) == Errno.EAGAIN
    assert m.snapshot() == snap
    assert env.recorder.take() == []


def test_guest_sees_poison_after_force_reclaim(env: Env):
    m = env.model
    assert m.host_donate_guest(env.pfn, env.a, 1) == 0
    assert m.host_force_reclaim_guest_page(env.pfn) == 0
    assert m.guest_state(env.a, 1) is POISON
    assert m.guest_in_poison_fault(env.a, 1)
    assert not m.guest_in_poison_fault(env.a, 0)
    assert m.poisoned(env.a) == [1]
    assert m.guest_frames(env.a) == {}
    # The poisoned gfn cannot be used again, nor shared.
    assert m.guest_share_host(env.a, 1) == Errno.EHWPOISON
    assert m.host_donate_guest(env.pfn, env.a, 1) == Errno.EPERM
    # The frame itself is the host's again and can go to another gfn.
    assert m.host_donate_guest(env.pfn, env.a, 0) == 0
    assert m.annotation(env.pfn) == (env.a, 0)


def test_force_reclaim_refuses_hyp_pages_and_shared_back_pages(env: Env):
    m = env.model
    assert m.host_donate_hyp(env.pfn) == 0
    assert m.host_force_reclaim_guest_page(env.pfn) == Errno.EPERM
    assert m.hyp_donate_host(env.pfn) == 0
    assert m.host_donate_guest(env.pfn, env.a, 0) == 0
    assert m.guest_share_host(env.a, 0) == 0
    # The host can already touch it: "already handled", retry.
    assert m.host_force_reclaim_guest_page(env.pfn) == Errno.EAGAIN


# --------------------------------------------------------------------------
# Teardown.
# --------------------------------------------------------------------------


def test_teardown_returns_everything():
    rec = Recorder()
    m = Ownership(FIRST_PFN, 8, on_host_stage2_change=rec.stage2, zero_frame=rec.zero)
    a, b = m.create_guest(protected=True), m.create_guest(protected=False)
    p = [FIRST_PFN + i for i in range(8)]
    assert m.host_donate_guest(p[0], a, 0) == 0  # stays private: scrubbed at teardown
    assert m.host_donate_guest(p[1], a, 1) == 0
    assert m.guest_share_host(a, 1) == 0  # shared back: the host saw it, no scrub
    assert m.host_donate_guest(p[2], a, 2) == 0
    assert m.host_force_reclaim_guest_page(p[2]) == 0  # already scrubbed once
    assert m.host_share_guest(p[3], b, 0) == 0
    assert m.host_share_guest(p[3], b, 1) == 0  # the same frame twice
    assert m.host_share_guest(p[4], b, 5) == 0
    assert m.host_share_hyp(p[5]) == 0  # unrelated to the guests: left alone
    assert m.host_donate_hyp(p[6]) == 0
    rec.take()

    assert m.finalize_teardown_guest(a) == Errno.EBUSY  # not dying yet (pkvm.c)
    assert m.teardown_guest(a) == 0 and m.teardown_guest(b) == 0
    assert m.teardown_guest(a) == Errno.EINVAL
    assert m.finalize_teardown_guest(a) == Errno.EBUSY  # pages not reclaimed yet
    assert m.reclaim_all_dying_guest_pages(a) == 0
    assert m.reclaim_all_dying_guest_pages(b) == 0
    assert m.finalize_teardown_guest(a) == 0 and m.finalize_teardown_guest(b) == 0

    assert m.guests() == ()
    assert [m.host_state(x) for x in p] == [OWNED] * 5 + [SHARED_OWNED, NOPAGE, OWNED]
    assert [m.owner(x) for x in p] == [HOST] * 6 + [HYP, HOST]
    assert [m.host_share_guest_count(x) for x in p] == [0] * 8
    # Exactly the one private frame was scrubbed, and before the host got it back.
    # gfn 1 of A (shared back) and B's shares were host-accessible all along: no callback.
    assert rec.take() == [("zero", p[0]), ("stage2", p[0], True)]
    assert m.check_invariants() == []
    # Handles are gone for good.
    assert m.host_donate_guest(p[7], a, 0) == Errno.EINVAL
    assert m.guest_state(a, 0) is None


def test_teardown_scrubs_only_private_pages_in_order():
    rec = Recorder()
    m = Ownership(FIRST_PFN, 3, on_host_stage2_change=rec.stage2, zero_frame=rec.zero)
    a = m.create_guest()
    assert m.host_donate_guest(FIRST_PFN, a, 0) == 0
    assert m.host_donate_guest(FIRST_PFN + 1, a, 1) == 0
    assert m.guest_share_host(a, 1) == 0
    assert m.host_donate_guest(FIRST_PFN + 2, a, 2) == 0
    assert m.host_force_reclaim_guest_page(FIRST_PFN + 2) == 0
    assert m.teardown_guest(a) == 0
    rec.take()
    assert m.reclaim_all_dying_guest_pages(a) == 0
    # gfn 0 private: zero then map; gfn 1 shared back: host had access already;
    # gfn 2 poisoned: the host got it back at the forced reclaim.
    assert rec.take() == [("zero", FIRST_PFN), ("stage2", FIRST_PFN, True)]
    assert m.guest_frames(a) == {}
    assert m.poisoned(a) == [2]  # history survives the teardown
    assert m.finalize_teardown_guest(a) == 0


def test_force_reclaim_works_on_a_dying_vm(env: Env):
    """pKVM tests is_dying only in vCPU load, teardown and reclaim (not in forced reclaim)."""
    m = env.model
    assert m.host_donate_guest(env.pfn, env.a, 0) == 0
    assert m.teardown_guest(env.a) == 0
    assert m.host_force_reclaim_guest_page(env.pfn) == 0
    assert m.reclaim_dying_guest_page(env.a, 0) == 0  # the poisoned entry goes quietly
    assert m.finalize_teardown_guest(env.a) == 0


# --------------------------------------------------------------------------
# Argument validation: always an Errno, never an exception, never a change.
# --------------------------------------------------------------------------

NR = 4
LAST = FIRST_PFN + NR - 1
PFN_LIMIT = 1 << 36  # 48-bit PA space, 4 KiB pages
UNKNOWN = 0x0FFF


@pytest.fixture
def arg_env():
    rec = Recorder()
    m = Ownership(FIRST_PFN, NR, on_host_stage2_change=rec.stage2, zero_frame=rec.zero)
    a, b = m.create_guest(True), m.create_guest(False)
    d = m.create_guest(True)
    assert m.teardown_guest(d) == 0
    gone = m.create_guest(True)
    assert m.teardown_guest(gone) == 0 and m.finalize_teardown_guest(gone) == 0
    rec.take()
    return m, rec, {"A": a, "B": b, "D": d, "GONE": gone, "UNKNOWN": UNKNOWN}


# (id, method, args with guest names, expected) -- expected from the decision
# order documented for pKVM: types/VM -> EINVAL, pfn_range_is_valid -> EINVAL,
# not memory -> EPERM, range leaving memory -> EINVAL, gfn beyond IPA -> ERANGE.
ARG_CASES = [
    ("share_hyp-below-memory", "host_share_hyp", (FIRST_PFN - 1,), Errno.EPERM),
    ("share_hyp-above-memory", "host_share_hyp", (LAST + 1,), Errno.EPERM),
    ("share_hyp-negative", "host_share_hyp", (-1,), Errno.EPERM),
    ("share_hyp-str", "host_share_hyp", ("0x80000",), Errno.EINVAL),
    ("share_hyp-none", "host_share_hyp", (None,), Errno.EINVAL),
    ("share_hyp-bool", "host_share_hyp", (True,), Errno.EINVAL),
    ("unshare_hyp-not-shared", "host_unshare_hyp", (FIRST_PFN,), Errno.EPERM),
    ("unshare_hyp-outside", "host_unshare_hyp", (LAST + 1,), Errno.EPERM),
    ("pin-not-shared", "hyp_pin_shared_mem", (FIRST_PFN,), Errno.EPERM),
    ("pin-runs-out", "hyp_pin_shared_mem", (LAST, 2), Errno.EINVAL),
    ("pin-nr0", "hyp_pin_shared_mem", (FIRST_PFN, 0), Errno.EINVAL),
    ("donate_hyp-nr0", "host_donate_hyp", (FIRST_PFN, 0), Errno.EINVAL),
    ("donate_hyp-nr-negative", "host_donate_hyp", (FIRST_PFN, -1), Errno.EINVAL),
    ("donate_hyp-runs-out", "host_donate_hyp", (LAST, 2), Errno.EINVAL),
    ("donate_hyp-starts-outside", "host_donate_hyp", (FIRST_PFN - 1, 2), Errno.EPERM),
    ("donate_hyp-negative", "host_donate_hyp", (-1, 1), Errno.EINVAL),
    ("donate_hyp-beyond-pa", "host_donate_hyp", (PFN_LIMIT, 1), Errno.EINVAL),
    ("donate_hyp-float-nr", "host_donate_hyp", (FIRST_PFN, 1.0), Errno.EINVAL),
    ("hyp_donate_host-host-owned", "hyp_donate_host", (FIRST_PFN,), Errno.EPERM),
    ("hyp_donate_host-outside", "hyp_donate_host", (LAST + 1,), Errno.EPERM),
    ("hyp_donate_host-negative", "hyp_donate_host", (-1,), Errno.EINVAL),
    ("donate_guest-unknown-vm", "host_donate_guest", (FIRST_PFN, "UNKNOWN", 0), Errno.EINVAL),
    ("donate_guest-gone-vm", "host_donate_guest", (FIRST_PFN, "GONE", 0), Errno.EINVAL),
    ("donate_guest-dying-vm", "host_donate_guest", (FIRST_PFN, "D", 0), Errno.EINVAL),
    ("donate_guest-np-vm", "host_donate_guest", (FIRST_PFN, "B", 0), Errno.EINVAL),
    ("donate_guest-gfn-negative", "host_donate_guest", (FIRST_PFN, "A", -1), Errno.ERANGE),
    ("donate_guest-gfn-beyond-ipa", "host_donate_guest", (FIRST_PFN, "A", GFN_LIMIT), Errno.ERANGE),
    ("donate_guest-outside-before-gfn", "host_donate_guest", (FIRST_PFN - 1, "A", -1), Errno.EPERM),
    ("donate_guest-gfn-str", "host_donate_guest", (FIRST_PFN, "A", "1"), Errno.EINVAL),
    ("share_guest-protected-vm", "host_share_guest", (FIRST_PFN, "A", 0), Errno.EINVAL),
    ("share_guest-dying-vm", "host_share_guest", (FIRST_PFN, "D", 0), Errno.EINVAL),
    ("share_guest-negative-pfn", "host_share_guest", (-1, "B", 0), Errno.EINVAL),
    ("share_guest-outside", "host_share_guest", (FIRST_PFN - 1, "B", 0), Errno.EPERM),
    ("share_guest-gfn-beyond-ipa", "host_share_guest", (FIRST_PFN, "B", GFN_LIMIT), Errno.ERANGE),
    ("unshare_guest-unmapped", "host_unshare_guest", ("B", 0), Errno.ENOENT),
    ("unshare_guest-protected", "host_unshare_guest", ("A", 0), Errno.EINVAL),
    ("unshare_guest-unknown", "host_unshare_guest", ("UNKNOWN", 0), Errno.EINVAL),
    ("unshare_guest-gfn-negative", "host_unshare_guest", ("B", -1), Errno.ERANGE),
    ("guest_share_host-unmapped", "guest_share_host", ("A", 0), Errno.ENOENT),
    ("guest_share_host-dying", "guest_share_host", ("D", 0), Errno.EINVAL),
    ("guest_share_host-gone", "guest_share_host", ("GONE", 0), Errno.EINVAL),
    ("guest_share_host-gfn-beyond-ipa", "guest_share_host", ("A", GFN_LIMIT), Errno.ERANGE),
    ("guest_share_host-gfn-none", "guest_share_host", ("A", None), Errno.EINVAL),
    ("guest_unshare_host-unmapped", "guest_unshare_host", ("A", 3), Errno.ENOENT),
    ("force_reclaim-host-owned", "host_force_reclaim_guest_page", (FIRST_PFN,), Errno.EAGAIN),
    ("force_reclaim-outside", "host_force_reclaim_guest_page", (LAST + 1,), Errno.EPERM),
    ("force_reclaim-str", "host_force_reclaim_guest_page", ("x",), Errno.EINVAL),
    ("teardown-unknown", "teardown_guest", ("UNKNOWN",), Errno.ENOENT),
    ("teardown-already-dying", "teardown_guest", ("D",), Errno.EINVAL),
    ("teardown-gone", "teardown_guest", ("GONE",), Errno.ENOENT),
    ("reclaim-not-dying", "reclaim_dying_guest_page", ("A", 0), Errno.EINVAL),
    ("reclaim-unmapped", "reclaim_dying_guest_page", ("D", 0), Errno.ENOENT),
    ("reclaim-gfn-negative", "reclaim_dying_guest_page", ("D", -1), Errno.ERANGE),
    ("reclaim-unknown", "reclaim_dying_guest_page", ("UNKNOWN", 0), Errno.EINVAL),
    ("finalize-not-dying", "finalize_teardown_guest", ("A",), Errno.EBUSY),
    ("finalize-gone", "finalize_teardown_guest", ("GONE",), Errno.ENOENT),
]


@pytest.mark.parametrize(("method", "args", "want"), [c[1:] for c in ARG_CASES], ids=[c[0] for c in ARG_CASES])
def test_bad_arguments_give_an_errno_and_change_nothing(arg_env, method, args, want):
    m, rec, names = arg_env
    args = tuple(names.get(x, x) if isinstance(x, str) else x for x in args)
    snap, nlog = m.snapshot(), len(m.transitions)
    result = getattr(m, method)(*args)
    assert isinstance(result, Errno)
    assert result == want
    assert m.snapshot() == snap
    assert rec.take() == []
    assert [t.result for t in m.transitions[nlog:]] == [want]
    assert m.check_invariants() == []


def test_boundary_gfn_and_last_frame_are_valid(arg_env):
    m, _rec, names = arg_env
    assert m.host_donate_guest(LAST, names["A"], GFN_LIMIT - 1) == 0
    assert m.annotation(LAST) == (names["A"], GFN_LIMIT - 1)


def test_multi_page_donation_is_all_or_nothing():
    m = Ownership(FIRST_PFN, 3)
    assert m.host_share_hyp(FIRST_PFN + 2) == 0
    snap = m.snapshot()
    assert m.host_donate_hyp(FIRST_PFN, 3) == Errno.EPERM
    assert m.snapshot() == snap
    assert m.host_donate_hyp(FIRST_PFN, 2) == 0
    assert [m.owner(FIRST_PFN + i) for i in range(3)] == [HYP, HYP, HOST]
    assert m.hyp_donate_host(FIRST_PFN, 3) == Errno.EPERM
    assert m.hyp_donate_host(FIRST_PFN, 2) == 0
    assert m.check_invariants() == []


def test_queries_outside_memory():
    m = Ownership(FIRST_PFN, 1)
    for pfn in (FIRST_PFN - 1, FIRST_PFN + 1, -5, "x", None):
        assert m.host_state(pfn) is NOPAGE
        assert m.hyp_state(pfn) is NOPAGE
        assert m.host_may_access(pfn) is False
        assert m.owner(pfn) is None
        assert m.annotation(pfn) is None
        assert m.frame_state(pfn) is None


def _corrupt_host_owned_but_guest_maps(m, a, b, p):
    m._frames[p].host, m._frames[p].annotation = OWNED, None


def _corrupt_share_count(m, a, b, p):
    m._frames[p + 1].host_share_guest_count += 1


def _corrupt_pin_on_owned(m, a, b, p):
    m._frames[p + 2].hyp_pin_count = 1


def _corrupt_secret_visible(m, a, b, p):
    m._frames[p + 2].holds_guest_secret = True


def _corrupt_annotation_gfn(m, a, b, p):
    m._frames[p].annotation = dataclasses.replace(m._frames[p].annotation, gfn=9)


def _corrupt_two_owners(m, a, b, p):
    m._frames[p + 2].hyp = OWNED


def _corrupt_poison_without_reclaim(m, a, b, p):
    m._vms[a].entries[5] = dataclasses.replace(m._vms[a].entries[0], state=POISON)


def _corrupt_borrowed_in_protected_vm(m, a, b, p):
    m._vms[a].entries[3] = dataclasses.replace(m._vms[b].entries[0], state=SHARED_BORROWED)


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_host_owned_but_guest_maps,
        _corrupt_share_count,
        _corrupt_pin_on_owned,
        _corrupt_secret_visible,
        _corrupt_annotation_gfn,
        _corrupt_two_owners,
        _corrupt_poison_without_reclaim,
        _corrupt_borrowed_in_protected_vm,
    ],
    ids=lambda f: f.__name__.removeprefix("_corrupt_"),
)
def test_check_invariants_reports_corruption(corrupt):
    """The checker is not vacuous: each hand-made corruption (through private fields) is reported."""
    m = Ownership(FIRST_PFN, 3)
    a, b = m.create_guest(True), m.create_guest(False)
    assert m.host_donate_guest(FIRST_PFN, a, 0) == 0
    assert m.host_share_guest(FIRST_PFN + 1, b, 0) == 0
    assert m.check_invariants() == []
    corrupt(m, a, b, FIRST_PFN)
    assert m.check_invariants() != []


def test_transition_log_records_frames_before_and_after(env: Env):
    m = env.model
    assert m.host_donate_guest(env.pfn, env.a, 1) == 0
    t = m.transitions[-1]
    assert (t.name, t.pfn, t.args, t.result) == ("__pkvm_host_donate_guest", env.pfn, (env.pfn, env.a, 1), 0)
    assert (t.before[0].host, t.before[0].owner, t.before[0].guest_mappings) == (OWNED, HOST, ())
    assert (t.after[0].host, t.after[0].owner, t.after[0].guest_mappings) == (
        NOPAGE,
        Component.guest(env.a),
        ((env.a, 1, OWNED),),
    )
    assert str(t) == f"__pkvm_host_donate_guest({env.pfn:#x}, {env.a:#x}, 0x1) = 0"
    assert str(Errno.EPERM) == "-EPERM"


def test_page_state_values_match_the_kernel():
    # docs/facts.md: OWNED 0, SHARED_OWNED 1, SHARED_BORROWED 2, NOPAGE 3 (v6.15+); memory.h: PKVM_POISON BIT(2).
    assert [int(s) for s in (OWNED, SHARED_OWNED, SHARED_BORROWED, NOPAGE, POISON)] == [0, 1, 2, 3, 4]
    assert [int(e) for e in (Errno.EPERM, Errno.ENOENT, Errno.EAGAIN, Errno.EBUSY, Errno.EINVAL, Errno.ERANGE)] == [
        -1, -2, -11, -16, -22, -34,
    ]


# --------------------------------------------------------------------------
# Random walks: hypothesis stateful machine.
# --------------------------------------------------------------------------

MACHINE_FRAMES = 3
MACHINE_PFNS = [FIRST_PFN + i for i in range(MACHINE_FRAMES)]

# Arguments every transition must refuse: not memory, not an int, beyond the
# PA or IPA space, a VM that never existed, an empty or negative count. Each is a
# function of a `Pick` (tests/picks.py), so seeded walks and hypothesis draw the same kinds.
BAD_PFN_VALUES = (FIRST_PFN - 1, FIRST_PFN + MACHINE_FRAMES, -1, PFN_LIMIT, None, "x", 1.5, True)
BAD_HANDLES = (UNKNOWN, -1, None, "vm", 2**64)
BAD_GFN_VALUES = (None, "g", 0.5, -1, GFN_LIMIT)
BAD_NRS = (0, -1, None, 1.0)
GOOD_GFNS = (0, 1, 2)


def _bad(pick: Pick, values: tuple, below: int, above: int):
    """One of `values`, or an int at or below `below`, or at or above `above` (to +-2**64)."""
    kind = pick.choice((0, 1, 2))
    if kind == 0:
        return pick.choice(values)
    return pick.integer(-(2**64), below) if kind == 1 else pick.integer(above, 2**64)


def bad_pfn(pick: Pick):
    return _bad(pick, BAD_PFN_VALUES, FIRST_PFN - 1, FIRST_PFN + MACHINE_FRAMES)


def bad_gfn(pick: Pick):
    return _bad(pick, BAD_GFN_VALUES, -1, GFN_LIMIT)


def _garbage_kinds() -> tuple:
    """(method, pick -> its arguments) pairs; each call has at least one bad argument ("live": a VM the walk picks)."""
    good_pfn = lambda pick: pick.choice(MACHINE_PFNS)  # noqa: E731
    kinds = []
    for m in ("host_share_hyp", "host_unshare_hyp", "host_force_reclaim_guest_page"):
        kinds.append((m, lambda pick: (bad_pfn(pick),)))
    for m in ("hyp_pin_shared_mem", "hyp_unpin_shared_mem", "host_donate_hyp", "hyp_donate_host"):
        kinds.append((m, lambda pick: (bad_pfn(pick), 1)))
        kinds.append((m, lambda pick: (good_pfn(pick), pick.choice(BAD_NRS))))
    for m in ("host_donate_guest", "host_share_guest"):
        kinds.append((m, lambda pick: (bad_pfn(pick), "live", pick.choice(GOOD_GFNS))))
        kinds.append((m, lambda pick: (good_pfn(pick), pick.choice(BAD_HANDLES), pick.choice(GOOD_GFNS))))
        kinds.append((m, lambda pick: (good_pfn(pick), "live", bad_gfn(pick))))
    for m in ("host_unshare_guest", "guest_share_host", "guest_unshare_host", "reclaim_dying_guest_page"):
        kinds.append((m, lambda pick: (pick.choice(BAD_HANDLES), pick.choice(GOOD_GFNS))))
        kinds.append((m, lambda pick: ("live", bad_gfn(pick))))
    for m in ("teardown_guest", "finalize_teardown_guest"):
        kinds.append((m, lambda pick: (pick.choice(BAD_HANDLES),)))
    return tuple(kinds)


GARBAGE_KINDS = _garbage_kinds()


# Starting situations for one frame P (G: a gfn private to that frame).
SETUPS = [
    (),
    (("host_share_hyp", ("P",)),),
    (("host_share_hyp", ("P",)), ("hyp_pin_shared_mem", ("P",))),
    (("host_donate_hyp", ("P",)),),
    (("host_donate_guest", ("P", "A", "G")),),
    (("host_donate_guest", ("P", "A", "G")), ("guest_share_host", ("A", "G"))),
    (("host_share_guest", ("P", "B", "G")),),
]


class OwnershipWalk:
    """Random sequences of transitions, with well-formed and with invalid arguments.

    After each call: the result is an Errno; a failure changes nothing and
    fires no callback; the log grows by one entry with that result. After
    each step: the invariants hold, and host access replayed from the
    stage-2 callbacks alone agrees with host_may_access.
    """

    def __init__(self, pick: Pick, tally: Counter | None = None) -> None:
        self.pick = pick
        self.tally = tally
        self.rec = Recorder()
        self.model = Ownership(FIRST_PFN, MACHINE_FRAMES, on_host_stage2_change=self.rec.stage2, zero_frame=self.rec.zero)
        self.allowed = {pfn: True for pfn in MACHINE_PFNS}
        self.handles: list[int] = []
        self.last_events: list[tuple] = []
        # Guest A (protected) and B (not), and each frame in a drawn starting situation.
        a, b = self.model.create_guest(True), self.model.create_guest(False)
        self.handles += [a, b]
        for gfn, pfn in enumerate(MACHINE_PFNS):
            for method, args in pick.choice(SETUPS):
                args = tuple({"A": a, "B": b, "P": pfn, "G": gfn}.get(x, x) for x in args)
                assert self.call(method, *args) == 0
        self.check()

    def pick_handle(self) -> int:
        """Any VM ever created (live, dying or gone), preferring live ones."""
        live = [h for h in self.model.guests() if not self.model.is_dying(h)]
        return self.pick.choice(live or self.handles if self.pick.choice((0, 1)) == 0 else self.handles)

    def pick_entry(self) -> tuple[int, int]:
        """A VM and a gfn, preferring gfns the VM maps right now."""
        handle = self.pick_handle()
        mapped = sorted(self.model.guest_frames(handle))
        gfn = self.pick.choice(mapped) if mapped and self.pick.choice((0, 1)) == 0 else self.pick.choice(GOOD_GFNS)
        return handle, gfn

    def call(self, method: str, *args: object) -> Errno:
        before = self.model.snapshot()
        nlog = len(self.model.transitions)
        self.rec.take()
        try:
            result = getattr(self.model, method)(*args)
        except HypBug:
            # Only the refcount BUG_ONs of hyp_(un)pin_shared_mem: pKVM panics; the model changes nothing.
            assert method in ("hyp_pin_shared_mem", "hyp_unpin_shared_mem"), method
            assert self.model.snapshot() == before and self.rec.take() == [] and len(self.model.transitions) == nlog
            return Errno.SUCCESS
        assert isinstance(result, Errno)
        if self.tally is not None:
            self.tally[method, result] += 1
        events = self.last_events = self.rec.take()
        log = self.model.transitions[nlog:]
        if method != "reclaim_all_dying_guest_pages":  # a loop of transitions, not one
            assert [t.result for t in log] == [result]
            if result:
                assert self.model.snapshot() == before
                assert events == []
        for event in events:
            if event[0] == "stage2":
                _kind, pfn, allowed = event
                assert self.allowed[pfn] != allowed, f"stage-2 callback without a change for {pfn:#x}"
                self.allowed[pfn] = allowed
        return result

    # ------------------------------------------------------------ the steps
    def step(self) -> None:
        """One step drawn from those whose precondition holds, then the checks."""
        steps = STEPS if any(self.model.is_dying(h) for h in self.model.guests()) else STEPS_WITHOUT_DYING
        self.pick.choice(steps)(self)
        self.check()

    def create_guest(self) -> None:
        self.handles.append(self.model.create_guest(self.pick.choice((False, True))))

    def garbage(self) -> None:
        method, args_of = self.pick.choice(GARBAGE_KINDS)
        args = tuple(self.pick_handle() if a == "live" else a for a in args_of(self.pick))
        assert self.call(method, *args) != 0

    def share_hyp(self) -> None:
        self.call("host_share_hyp", self.pick.choice(MACHINE_PFNS))

    def unshare_hyp(self) -> None:
        self.call("host_unshare_hyp", self.pick.choice(MACHINE_PFNS))

    def pin(self) -> None:
        self.call("hyp_pin_shared_mem", self.pick.choice(MACHINE_PFNS), self.pick.integer(1, 2))

    def unpin(self) -> None:
        self.call("hyp_unpin_shared_mem", self.pick.choice(MACHINE_PFNS), self.pick.integer(1, 2))

    def donate_hyp(self) -> None:
        self.call("host_donate_hyp", self.pick.choice(MACHINE_PFNS), self.pick.integer(1, 2))

    def hyp_donate_host(self) -> None:
        self.call("hyp_donate_host", self.pick.choice(MACHINE_PFNS), self.pick.integer(1, 2))

    def donate_guest(self) -> None:
        pfn, gfn = self.pick.choice(MACHINE_PFNS), self.pick.choice(GOOD_GFNS)
        self.call("host_donate_guest", pfn, self.pick_handle(), gfn)

    def share_guest(self) -> None:
        pfn, gfn = self.pick.choice(MACHINE_PFNS), self.pick.choice(GOOD_GFNS)
        self.call("host_share_guest", pfn, self.pick_handle(), gfn)

    def unshare_guest(self) -> None:
        self.call("host_unshare_guest", *self.pick_entry())

    def guest_share_host(self) -> None:
        self.call("guest_share_host", *self.pick_entry())

    def guest_unshare_host(self) -> None:
        self.call("guest_unshare_host", *self.pick_entry())

    def force_reclaim(self) -> None:
        pfn = self.pick.choice(MACHINE_PFNS)
        victim = self.model.annotation(pfn)
        if self.call("host_force_reclaim_guest_page", pfn) == 0:
            # Scrub first, then the host may map it; the guest entry is poisoned.
            assert self.last_events == [("zero", pfn), ("stage2", pfn, True)]
            assert self.model.guest_state(*victim) is POISON

    def teardown_vm(self) -> None:
        if self.pick.integer(0, 7) == 0:  # rarely: a dying VM takes most transitions off the table
            self.call("teardown_guest", self.pick_handle())

    def reclaim_dying(self) -> None:
        dying = [h for h in self.model.guests() if self.model.is_dying(h)]
        if dying and self.pick.choice((0, 1)) == 0:  # a dying VM's page, mostly, when there is one
            handle = self.pick.choice(dying)
            mapped = sorted(self.model.guest_frames(handle))
            gfn = self.pick.choice(mapped) if mapped else self.pick.choice(GOOD_GFNS)
        else:
            handle, gfn = self.pick_entry()
        state = self.model.guest_state(handle, gfn)
        pfn = self.model.guest_frames(handle).get(gfn)
        if self.call("reclaim_dying_guest_page", handle, gfn) == 0 and state is OWNED:
            assert self.last_events == [("zero", pfn), ("stage2", pfn, True)]

    def reclaim_all_then_finalize(self) -> None:
        """Only while some VM is dying (step() offers it then)."""
        handle = self.pick.choice([h for h in self.model.guests() if self.model.is_dying(h)])
        assert self.call("reclaim_all_dying_guest_pages", handle) == 0
        assert self.call("finalize_teardown_guest", handle) == 0
        assert handle not in self.model.guests()

    def check(self) -> None:
        assert self.model.check_invariants() == []
        for pfn, allowed in self.allowed.items():
            assert self.model.host_may_access(pfn) == allowed


STEPS_WITHOUT_DYING = (
    OwnershipWalk.create_guest, OwnershipWalk.garbage, OwnershipWalk.share_hyp, OwnershipWalk.unshare_hyp,
    OwnershipWalk.pin, OwnershipWalk.unpin, OwnershipWalk.donate_hyp, OwnershipWalk.hyp_donate_host,
    OwnershipWalk.donate_guest, OwnershipWalk.share_guest, OwnershipWalk.unshare_guest,
    OwnershipWalk.guest_share_host, OwnershipWalk.guest_unshare_host, OwnershipWalk.force_reclaim,
    OwnershipWalk.teardown_vm, OwnershipWalk.reclaim_dying,
)
STEPS = STEPS_WITHOUT_DYING + (OwnershipWalk.reclaim_all_then_finalize,)


class OwnershipMachine(RuleBasedStateMachine):
    """The same walk drawn by hypothesis, so that a failure shrinks to a short sequence."""

    @initialize(data=st.data())
    def start(self, data):
        self.walk = OwnershipWalk(DataPick(data))

    @rule(data=st.data())
    def step(self, data):
        self.walk.pick = DataPick(data)
        self.walk.step()


def test_random_transitions_keep_invariants():
    run_state_machine_as_test(
        OwnershipMachine,
        settings=settings(max_examples=60, stateful_step_count=40, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )


def ownership_walks(count: int, steps: int, seed: int, tally: Counter | None = None) -> int:
    """`count` seeded walks of `steps` steps each; returns the steps taken. A failure names the walk's
    own seed: `OwnershipWalk(RandomPick(random.Random(that)))` and its steps replay it."""
    seeds = random.Random(seed)
    taken = 0
    for _ in range(count):
        walk_seed = seeds.randrange(1 << 32)
        try:
            walk = OwnershipWalk(RandomPick(random.Random(walk_seed)), tally)
            for _ in range(steps):
                walk.step()
                taken += 1
        except AssertionError as failure:
            raise AssertionError(f"the walk seeded {walk_seed} failed after {taken % steps} steps: {failure}") from failure
    return taken


TRANSITIONS = (
    "host_share_hyp", "host_unshare_hyp", "hyp_pin_shared_mem", "hyp_unpin_shared_mem", "host_donate_hyp",
    "hyp_donate_host", "host_donate_guest", "host_share_guest", "host_unshare_guest", "guest_share_host",
    "guest_unshare_host", "host_force_reclaim_guest_page", "teardown_guest", "reclaim_dying_guest_page",
    "reclaim_all_dying_guest_pages", "finalize_teardown_guest",
)
# Refusals each shard's walks must meet besides every transition's success (each met at least ten
# times in every shard when written): a guard against walks too shallow to reach them.
E = Errno
SWEEP_REFUSALS = {
    ("finalize_teardown_guest", E.ENOENT), ("teardown_guest", E.ENOENT), ("reclaim_dying_guest_page", E.EINVAL),
    ("guest_share_host", E.EHWPOISON), ("guest_share_host", E.ERANGE), ("guest_share_host", E.EINVAL),
    ("guest_share_host", E.ENOENT), ("guest_share_host", E.EPERM), ("guest_unshare_host", E.EHWPOISON),
    ("guest_unshare_host", E.ERANGE), ("guest_unshare_host", E.EINVAL), ("guest_unshare_host", E.ENOENT),
    ("guest_unshare_host", E.EPERM), ("host_donate_guest", E.EINVAL), ("host_donate_guest", E.EPERM),
    ("host_donate_hyp", E.EINVAL), ("host_donate_hyp", E.EPERM), ("host_force_reclaim_guest_page", E.EAGAIN),
    ("host_force_reclaim_guest_page", E.EPERM), ("host_share_guest", E.EINVAL), ("host_share_guest", E.EPERM),
    ("host_share_hyp", E.EPERM), ("host_unshare_guest", E.ERANGE), ("host_unshare_guest", E.EINVAL),
    ("host_unshare_guest", E.ENOENT), ("host_unshare_hyp", E.EBUSY), ("host_unshare_hyp", E.EPERM),
    ("hyp_donate_host", E.EINVAL), ("hyp_donate_host", E.EPERM), ("hyp_pin_shared_mem", E.EINVAL),
    ("hyp_pin_shared_mem", E.EPERM), ("hyp_unpin_shared_mem", E.EINVAL), ("hyp_unpin_shared_mem", E.EPERM),
}

# 2,000 seeded random walks of 80 steps, in shards so that pytest-xdist (and --faultlab-shard) spread them.
# Seeded `random` draws, not hypothesis: its own bookkeeping per draw was most of a walk's time (the
# default run's hypothesis walks above shrink a failure; a sweep failure names its seed and walk).
SWEEP_WALKS, SWEEP_SHARDS = 2000, 8


@pytest.mark.sweep
@pytest.mark.parametrize("shard", range(SWEEP_SHARDS))
def test_random_transitions_keep_invariants_sweep(shard):
    tally: Counter = Counter()
    count = SWEEP_WALKS // SWEEP_SHARDS
    assert ownership_walks(count, 80, seed=7919 + shard, tally=tally) == count * 80
    assert ({(m, Errno.SUCCESS) for m in TRANSITIONS} | SWEEP_REFUSALS) - set(tally) == set()


def _refusal_as_success(original):
    def host_force_reclaim_guest_page(self, pfn):  # a model that reports every refusal as done
        original(self, pfn)
        return Errno.SUCCESS
    return host_force_reclaim_guest_page


def _silent_donation(original):
    def host_donate_hyp(self, *args):  # a model that loses the host's stage-2 callback when it gives frames away
        callback, self._on_host_stage2_change = self._on_host_stage2_change, lambda *a: None
        try:
            return original(self, *args)
        finally:
            self._on_host_stage2_change = callback
    return host_donate_hyp


@pytest.mark.parametrize("name, mutant", [("host_force_reclaim_guest_page", _refusal_as_success), ("host_donate_hyp", _silent_donation)])
def test_the_seeded_walks_catch_a_broken_model(monkeypatch, name, mutant):
    """Guard the sweep's seeded walks: each deliberately broken transition is caught within a shard's walks."""
    monkeypatch.setattr(Ownership, name, mutant(getattr(Ownership, name)))
    with pytest.raises(AssertionError):
        ownership_walks(SWEEP_WALKS // SWEEP_SHARDS, 80, seed=7919)


# ---------------------------------------------------------------- pKVM's VM limits
def _fresh_ownership() -> Ownership:
    return Ownership(FIRST_PFN, 1, on_host_stage2_change=lambda *a: None, zero_frame=lambda pfn: None)


def test_init_vm_is_refused_with_enomem_once_kvm_max_pvms_vms_exist():
    """kvm_pkvm.h KVM_MAX_PVMS = 255 slots; pkvm.c allocate_vm_table_entry() returns -ENOMEM when full."""
    from hyp.page_state import FIRST_VM_HANDLE, KVM_MAX_PVMS

    m = _fresh_ownership()
    handles = [m.create_guest() for _ in range(KVM_MAX_PVMS)]
    assert KVM_MAX_PVMS == 255
    assert handles == list(range(FIRST_VM_HANDLE, FIRST_VM_HANDLE + KVM_MAX_PVMS))  # idx + HANDLE_OFFSET
    assert m.create_guest() == Errno.ENOMEM
    assert m.transitions[-1].name == "__pkvm_init_vm" and m.transitions[-1].result == Errno.ENOMEM


def test_a_slot_freed_by_teardown_is_reused_first():
    """__pkvm_reserve_vm() takes the first free vm_table slot, so a torn-down VM's handle comes back."""
    from hyp.page_state import FIRST_VM_HANDLE, KVM_MAX_PVMS

    m = _fresh_ownership()
    for _ in range(KVM_MAX_PVMS):
        m.create_guest()
    victim = FIRST_VM_HANDLE + 7
    assert m.teardown_guest(victim) == Errno.SUCCESS
    assert m.create_guest() == Errno.ENOMEM  # dying, not yet finalized: the slot is still taken
    assert m.finalize_teardown_guest(victim) == Errno.SUCCESS
    assert m.create_guest() == victim
    assert m.create_guest() == Errno.ENOMEM
