"""Policies as objects: each one's on_protected_access on a real Machine + Hyp, the hypercalls
each EL2 serves, the realm EL2's composed syndrome, and adding a policy in a few lines.

Expectations come from docs/facts.md ("pKVM at EL2", "Architecture: syndromes and
translation"), computed here, not read from hyp/.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from emu.memory import PAGE_SIZE
from emu.outcome import Outcome
from faultlab.oracle import GuestIntegrity
from hyp.el2 import El2, ProtectedAccess
from hyp.ownership import PageState
from hyp.policies import POLICIES, Policy, UnknownPolicy, policy, with_policies
from faultlab.reference.policy import reference_traits
from reference_fault import DATA_VA, GUEST_PATTERN, SMCCC_NOT_SUPPORTED, make_system

GFN = 0x10
FORCE_RECLAIM_ID = 0xC600_002B  # Linux 7.2 pkvm_force_reclaim_guest_page(): function 43
# docs/facts.md: ESR EC bits[31:26], IL bit 25, S1PTW bit 7, DFSC bits[5:0]; EC 0x24/0x25 data abort lower/current EL.
EC_DABT_LOW, EC_DABT_CUR = 0x24, 0x25
IL, S1PTW = 1 << 25, 1 << 7
DFSC_TRANSLATION_L3 = 0x07


def _load_plain_access(s, *, el: int = 1):
    pfn = s.data_pfns[1]
    s.donate(pfn, GFN)
    code = s.load("ldr x1, [x0]; mov x0, x1; ret")
    return pfn, s.machine.call(code, DATA_VA + PAGE_SIZE + 0x40, el=el)


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(UnknownPolicy) as exc:
        policy("nope")
    assert all(name in str(exc.value) for name in POLICIES)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        POLICIES["x"] = POLICIES["inject"]  # type: ignore[index]


@pytest.mark.parametrize("name, served", [("panic", False), ("inject", False), ("inject-reclaim", True),
                                          ("reclaim", True), ("rme-gpc-reclaim", False),
                                          ("rme-gpc-el3-inject", False), ("rme-gpc-realm-inject", True)])
def test_force_reclaim_hypercall_served_only_by_a_patched_el2(name, served):
    s = make_system(name)
    pfn = s.data_pfns[1]
    s.donate(pfn, GFN)
    code = s.load("hvc #0; ret")
    result = s.machine.call(code, FORCE_RECLAIM_ID, pfn << 12)
    assert result.returned, result.outcome
    if served:
        assert (result.regs["x0"], result.regs["x1"]) == (0, 0)
        assert s.own.guest_state(s.guest, GFN) is PageState.POISON
    else:
        # SMCCC: NOT_SUPPORTED in x0, nothing else written, nothing changed.
        assert (result.regs["x0"], result.regs["x1"]) == (SMCCC_NOT_SUPPORTED, pfn << 12)
        assert s.own.guest_state(s.guest, GFN) is PageState.OWNED
        assert s.frame(pfn) == bytes([GUEST_PATTERN]) * PAGE_SIZE


def test_inject_host_with_force_reclaim_path_dies_when_el2_refuses():
    """A 7.x host asks; a pre-patch EL2 answers NOT_SUPPORTED; fault.c retries only on 0/-EAGAIN: oops."""
    s = make_system("inject")
    _, result = _load_plain_access(s)
    assert result.outcome.kind == "host-oops"
    assert "access to hypervisor-protected memory" in result.outcome.message
    (call,) = result.events_of("hypercall")
    assert call.data["status"] == SMCCC_NOT_SUPPORTED
    assert s.own.guest_state(s.guest, GFN) is PageState.OWNED


@pytest.mark.parametrize("from_el", [1, 0])
def test_realm_el2_injects_pkvm_marked_translation_fault(from_el):
    s = make_system("rme-gpc-realm-inject")
    pfn = s.data_pfns[1]
    s.donate(pfn, GFN)
    if from_el == 1:
        code = s.load("ldr x1, [x0]; ret")
        va = DATA_VA + PAGE_SIZE + 0x40
    else:
        s.machine.map_page(0x1000_0000, pfn, "rwu")
        code = s.load("ldr x1, [x0]; ret", 0x2000_0000, "rxu")
        va = 0x1000_0040
    s.machine.call(code, va, el=from_el)
    (inj,) = s.hyp.injections
    # Independent expectation: data abort for the host's EL, IL, S1PTW marker, translation L3
    # (a granule is a last-level page), no instruction syndrome (ISS[24:14] = 0), WnR = 0 for a load.
    ec = EC_DABT_CUR if from_el == 1 else EC_DABT_LOW
    assert inj.esr.value == (ec << 26) | IL | S1PTW | DFSC_TRANSLATION_L3
    assert inj.marker and inj.non_architectural == ("S1PTW",)
    assert (inj.far, inj.from_el) == (va, from_el)


def test_every_builtin_policy_states_el2_facts_and_has_a_reference():
    for p in POLICIES.values():
        assert isinstance(p.pkvm_initialised, bool) and p.summary
        assert reference_traits(p.name) is not None, p.name
    # the marker is only understood by a host that expects it
    assert policy("rme-gpc-realm-inject").pkvm_initialised
    assert not policy("rme-gpc-el3-inject").pkvm_initialised


class _ReclaimThenPanic(Policy):
    """Test-local: EL2 reclaims; if that fails, BUG."""

    name = "test-reclaim-then-panic"
    summary = "test only"

    def on_protected_access(self, el2: El2, access: ProtectedAccess) -> Outcome | None:
        return None if el2.reclaim(access) == 0 else el2.panic(access, "reclaim failed")


def test_a_policy_is_one_class_and_registers_locally():
    local = with_policies(_ReclaimThenPanic())
    assert "test-reclaim-then-panic" in local and "test-reclaim-then-panic" not in POLICIES
    assert policy("test-reclaim-then-panic", local).name == "test-reclaim-then-panic"
    s = make_system(local["test-reclaim-then-panic"])
    pfn, result = _load_plain_access(s)
    assert result.returned and result.x0 == 0
    assert s.own.guest_state(s.guest, GFN) is PageState.POISON
    with pytest.raises(ValueError):
        with_policies(POLICIES["inject"])  # names are unique


def test_a_new_policy_runs_a_builtin_scenario():
    from faultlab import runner
    from faultlab.scenario import load

    sc = load(Path(__file__).parents[1] / "faultlab" / "builtin" / "c_gup_kernel_alias.toml")
    record = runner.run(sc, _ReclaimThenPanic())
    assert record.verdict.outcome == "returned"
    assert record.verdict.guest is GuestIntegrity.RECLAIMED
    assert reference_traits(_ReclaimThenPanic.name) is None  # no reference: its sweep cases are unjudged
