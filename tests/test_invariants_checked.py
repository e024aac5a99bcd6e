"""Ownership invariants checked after every EL2 event: a broken one ends the run, named, in text and JSON.

Invariants are broken on purpose: a test-local policy (added with `registered`) that
gives the host back a guest's frame without taking it from the guest, and an EL2 whose
share-with-hyp handler forgets the host side. Each run must end at the event that broke
the invariant with an `invariant-broken` outcome naming it; with the option off the same
runs go on as if nothing happened (which is what the check is for).
"""
from __future__ import annotations

import json

import pytest

from emu.outcome import OutcomeKind
from faultlab.cli import main
from faultlab.lab import Lab
from hyp.hypercalls import HCALL_BY_NAME
from hyp.page_state import PageState
from hyp.policies import Inject, registered

SCENARIO = """\
name = "read-guest-page"

[routine]
asm = "f: ldr x0, [x0]\\n ret"
symbol = "f"
args = ["buf + 0x1000"]

[[buffer]]
name = "buf"
pages = 2
protect = [1]
"""


class HandsBackWithoutTaking(Inject):
    """A buggy 'reclaim': the host's stage 2 is given the frame while the guest still owns it."""

    name = "test-hands-back"
    summary = "host OWNED again, guest mapping left in place (two owners)"

    def on_protected_access(self, el2, access):
        el2.ownership._set_host(access.pfn, PageState.OWNED)  # no guest-side change: the bug
        return None  # the access retries and now succeeds


@pytest.fixture
def buggy_policy():
    with registered(HandsBackWithoutTaking()):
        yield HandsBackWithoutTaking.name


def test_a_policy_that_breaks_an_invariant_ends_the_run_naming_it(tmp_path, capsys, buggy_policy):
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    assert main(["run", str(path), "--policy", buggy_policy]) == 0
    out = capsys.readouterr().out
    assert "invariant-broken: ownership invariant broken after the host abort at pc=" in out
    assert "host regained access before the frame was zeroed (and 3 more)" in out  # the invariant, named
    assert main(["run", str(path), "--policy", buggy_policy, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["outcome"] == "invariant-broken"
    assert "host regained access before the frame was zeroed" in record["detail"]


def test_the_same_bug_goes_unnoticed_with_the_check_off(buggy_policy):
    lab = Lab(buggy_policy, check_invariants=False)
    buf = lab.alloc("buf", 2)
    lab.donate(buf.pfns[1])
    lab.load_asm("t.S", text="f: ldr x0, [x0]\n ret")
    result = lab.call("f", buf.page_va(1))
    assert result.returned  # the host read a frame the guest still owns, and nobody said so
    assert lab.hyp.ownership.check_invariants()  # ... though the state is broken


def test_the_policies_break_nothing_on_the_same_access():
    """Control: every built-in policy keeps the invariants on this access (so the check costs no outcome)."""
    from hyp.policies import POLICIES

    for name in POLICIES:
        lab = Lab(name)
        buf = lab.alloc("buf", 2)
        lab.donate(buf.pfns[1])
        lab.load_asm("t.S", text="f: ldr x0, [x0]\n ret")
        result = lab.call("f", buf.page_va(1))
        assert result.outcome.kind is not OutcomeKind.INVARIANT_BROKEN, (name, result.outcome)
        assert lab.hyp.ownership.check_invariants() == [], name


@pytest.mark.parametrize("check", [True, False])
def test_a_hypercall_that_breaks_an_invariant_ends_the_run_at_the_hvc(check):
    lab = Lab("inject", check_invariants=check)
    buf = lab.alloc("buf", 1)
    own = lab.hyp.ownership

    def share_hyp_forgetting_the_host(pfn):  # hyp SHARED_BORROWED, host still OWNED
        own._frames[pfn].hyp = PageState.SHARED_BORROWED
        return 0

    own.host_share_hyp = share_hyp_forgetting_the_host
    fid = HCALL_BY_NAME["__pkvm_host_share_hyp"].function_id
    lab.load_asm("t.S", text=f"f: mov x1, x0\n movz x0, #{fid >> 16:#x}, lsl #16\n movk x0, #{fid & 0xFFFF:#x}\n hvc #0\n mov x0, #7\n ret")
    result = lab.call("f", buf.pfns[0] << 12)
    if not check:
        assert result.returned and result.x0 == 7
        return
    assert result.outcome.kind is OutcomeKind.INVARIANT_BROKEN
    assert result.outcome.message.startswith("ownership invariant broken after hypercall __pkvm_host_share_hyp: ")
    assert "hyp SHARED_BORROWED but host OWNED" in result.outcome.message
    (event,) = result.events_of("invariant-broken")
    assert event.data["after"] == "hypercall __pkvm_host_share_hyp"
    assert result.regs["x0"] != 7  # stopped at the hvc: `mov x0, #7` never ran


def test_labs_check_by_default():
    assert Lab("inject").hyp.check_invariants is True
