"""EL2 numbers host hypercalls as the host kernel does: the model's own table, or a vmlinux's `host_hcall[]`.

A lab around a vmlinux answers a real `hvc #0` by looking x0 up in that
image's table (kimage.hcalls, wired in faultlab/stack.py boot_vmlinux), so
6.1's share_hyp (0xc6000009) is served on 6.1, 7.2's (0xc600001d) is not, and
7.2's force-reclaim id means nothing to a 6.1 EL2. Ids are never written here
without the table they come from being read too: the expected numbers are
checked against kimage.hcalls first.
"""
from __future__ import annotations


import pytest

from cached_kernels import SUITES, vmlinux

from faultlab.lab import Lab
from hyp.hypercalls import HCALL_BY_NAME, MODEL_ABI, HostAbi, Refusal
from hyp.page_state import PageState
from kimage.hcalls import FORCE_RECLAIM, HcallTable
from kimage.profiles import profile_for

SHARE_HYP = "__pkvm_host_share_hyp"
# Read from the images (tests/test_alternatives.py pins the tables themselves).
SHARE_HYP_ID = {"6.1": 0xC600_0009, "7.2": 0xC600_001D}
FORCE_RECLAIM_7_2 = 0xC600_002B
NOT_SUPPORTED = (1 << 64) - 1
HVC = "hvc #0\nret\n"


def hvc(lab: Lab, fid: int, *args: int):
    """A real `hvc #0` from EL1 with x0 = fid; the run result and its one `hypercall` event."""
    code = lab.load_asm("hvc.S", text=HVC)
    result = lab.call(code.base, fid, *args)
    assert result.returned, result.outcome
    (event,) = result.events_of("hypercall")
    assert event.data["fid"] == fid and event.data["status"] == result.x0
    return result, event


def booted(shelves, key: str, policy: str, host: str = "model") -> Lab:
    """The session's boot of Linux `key` under `policy` (tests/conftest.py kernel_shelf), restored: a fresh boot's equal."""
    return shelves(host).lab(vmlinux(key).path, policy)


def host_page(lab: Lab) -> int:
    (pfn,) = lab.alloc("page", 1).pfns
    assert lab.hyp.ownership.host_state(pfn) is PageState.OWNED
    return pfn


# ------------------------------------------------------------------ the model's own numbering
def test_model_abi_is_hyps_own_table():
    assert {MODEL_ABI.name_of(h.function_id) for h in HCALL_BY_NAME.values()} == set(HCALL_BY_NAME)
    assert MODEL_ABI.id_of(FORCE_RECLAIM) == FORCE_RECLAIM_7_2  # the one id shared with Linux 7.2
    assert MODEL_ABI.id_of("__kvm_vcpu_run") is None


def test_host_abi_lookup_is_exact():
    abi = HostAbi({0xC600_0009: SHARE_HYP}, "test")
    assert abi.name_of(0xC600_0009) == SHARE_HYP and abi.id_of(SHARE_HYP) == 0xC600_0009
    # hyp-main.c: `id` is an unsigned long; upper bits put it past host_hcall[].
    assert abi.name_of((1 << 32) | 0xC600_0009) is None


def test_lab_without_vmlinux_keeps_the_model_numbering():
    lab = Lab("inject-reclaim")
    assert lab.hyp.abi is MODEL_ABI
    pfn = host_page(lab)
    result, event = hvc(lab, HCALL_BY_NAME[SHARE_HYP].function_id, pfn << 12)
    assert (result.x0, result.regs["x1"]) == (0, 0) and event.data["name"] == SHARE_HYP
    assert lab.hyp.ownership.host_state(pfn) is PageState.SHARED_OWNED
    # 7.2's share_hyp id is not this numbering's.
    result, event = hvc(lab, SHARE_HYP_ID["7.2"], pfn << 12)
    assert result.x0 == NOT_SUPPORTED and event.data["refused"] == Refusal.UNKNOWN_ID and event.data["name"] is None


# ------------------------------------------------------------------ a vmlinux's numbering
@pytest.mark.kernel
@pytest.mark.parametrize("key", list(SUITES))
def test_expected_ids_come_from_the_image(key):
    vm = vmlinux(key)
    table = HcallTable.read(vm)
    assert table.id_of(SHARE_HYP) == SHARE_HYP_ID[key]
    # The host model's force-reclaim id (its profile) is the table's: none on 6.1, 43 on 7.2.
    assert profile_for(vm).host.force_reclaim_hcall == table.id_of(FORCE_RECLAIM)
    assert table.id_of(FORCE_RECLAIM) == (FORCE_RECLAIM_7_2 if key == "7.2" else None)


@pytest.mark.kernel
@pytest.mark.parametrize("host", ["model", "real"])
def test_6_1_lab_serves_6_1s_share_hyp_and_not_7_2s(host, kernel_shelf):
    lab = booted(kernel_shelf, "6.1", "inject-reclaim", host)
    assert dict(lab.hyp.abi.names) == HcallTable.read(vmlinux("6.1")).names
    pfn = host_page(lab)
    before = lab.hyp.ownership.snapshot()
    result, event = hvc(lab, SHARE_HYP_ID["7.2"], pfn << 12)
    assert result.x0 == NOT_SUPPORTED and result.regs["x1"] == pfn << 12  # only x0 written
    assert event.data["refused"] == Refusal.UNKNOWN_ID and event.data["name"] is None
    assert lab.hyp.ownership.snapshot() == before
    result, event = hvc(lab, SHARE_HYP_ID["6.1"], pfn << 12)
    assert (result.x0, result.regs["x1"]) == (0, 0)
    assert event.data["name"] == SHARE_HYP and event.data["refused"] is None
    assert lab.hyp.ownership.host_state(pfn) is PageState.SHARED_OWNED


@pytest.mark.kernel
def test_7_2_lab_serves_7_2s_share_hyp_and_names_6_1s_id_as_its_own_call(kernel_shelf):
    lab = booted(kernel_shelf, "7.2", "inject-reclaim")
    pfn = host_page(lab)
    before = lab.hyp.ownership.snapshot()
    # 0xc6000009 is __kvm_vcpu_run in 7.2's table: a call of this kernel the model has no handler for.
    result, event = hvc(lab, SHARE_HYP_ID["6.1"], pfn << 12)
    assert result.x0 == NOT_SUPPORTED
    assert event.data["name"] == "__kvm_vcpu_run" and event.data["refused"] == Refusal.NOT_MODELLED
    assert "__kvm_vcpu_run (not modelled" in event.message
    assert lab.hyp.ownership.snapshot() == before
    result, event = hvc(lab, SHARE_HYP_ID["7.2"], pfn << 12)
    assert result.x0 == 0 and event.data["name"] == SHARE_HYP
    assert lab.hyp.ownership.host_state(pfn) is PageState.SHARED_OWNED


@pytest.mark.kernel
@pytest.mark.parametrize("host", ["model", "real"])
def test_7_2s_force_reclaim_id_is_not_supported_on_6_1(host, kernel_shelf):
    """Even under inject-reclaim (which serves the call by name): 6.1's table has no such id."""
    lab = booted(kernel_shelf, "6.1", "inject-reclaim", host)
    assert lab.hyp.policy.serves(FORCE_RECLAIM)
    pfn = host_page(lab)
    page = lab.donate(pfn)
    before = lab.hyp.ownership.snapshot()
    result, event = hvc(lab, FORCE_RECLAIM_7_2, pfn << 12)
    assert result.x0 == NOT_SUPPORTED and event.data["refused"] == Refusal.UNKNOWN_ID
    assert lab.hyp.ownership.snapshot() == before
    assert lab.hyp.ownership.guest_state(lab.guest, page.gfn) is PageState.OWNED


@pytest.mark.kernel
def test_7_2_force_reclaim_by_its_id_follows_the_policy(kernel_shelf):
    for policy, status in (("inject-reclaim", 0), ("inject", NOT_SUPPORTED)):
        lab = booted(kernel_shelf, "7.2", policy)
        pfn = host_page(lab)
        page = lab.donate(pfn)
        result, event = hvc(lab, FORCE_RECLAIM_7_2, pfn << 12)
        assert result.x0 == status and event.data["name"] == FORCE_RECLAIM
        reclaimed = lab.hyp.ownership.guest_state(lab.guest, page.gfn) is not PageState.OWNED
        assert reclaimed == (status == 0), policy
        if status:
            assert event.data["refused"] == Refusal.NOT_SERVED


UNKNOWN = {
    "hyp-init (NULL slot)": 0xC600_0000,
    "past 7.2's table": 0xC600_0032,
    "upper bits + share_hyp": (1 << 32) | 0xC600_0009,
    "smc32 share_hyp": 0x8600_0009,
    "psci-version": 0x8400_0000,
}
CASES = [pytest.param(k, f, id=f"{k}-{n}") for k in SUITES for n, f in UNKNOWN.items()]
CASES.append(pytest.param("6.1", 0xC600_0017, id="6.1-past its table"))  # __tracing_enable_event on 7.2


@pytest.mark.kernel
@pytest.mark.parametrize("key,fid", CASES)
def test_unknown_ids_are_not_supported(key, fid, kernel_shelf):
    assert fid >> 32 or HcallTable.read(vmlinux(key)).name_of(fid) is None  # upper bits: past the table however low
    lab = booted(kernel_shelf, key, "inject-reclaim")
    before = lab.hyp.ownership.snapshot()
    result, event = hvc(lab, fid, 0x1000)
    assert result.x0 == NOT_SUPPORTED and result.regs["x1"] == 0x1000
    assert event.data["refused"] == Refusal.UNKNOWN_ID and event.data["name"] is None
    assert lab.hyp.ownership.snapshot() == before


@pytest.mark.kernel
@pytest.mark.parametrize("key", list(SUITES))
def test_named_but_unmodelled_calls_are_not_supported(key, kernel_shelf):
    """Every id the image names that the model has no handler for answers NOT_SUPPORTED with its table name."""
    lab = booted(kernel_shelf, key, "inject-reclaim")
    code = lab.load_asm("hvc.S", text=HVC)
    unmodelled = {fid: name for fid, name in lab.hyp.abi.names.items() if name not in HCALL_BY_NAME}
    assert unmodelled and "__pkvm_prot_finalize" in unmodelled.values()
    before = lab.hyp.ownership.snapshot()
    for fid, name in unmodelled.items():
        result = lab.call(code.base, fid, 0)
        (event,) = result.events_of("hypercall")
        assert result.x0 == NOT_SUPPORTED and event.data["name"] == name and event.data["refused"] == Refusal.NOT_MODELLED
    assert lab.hyp.ownership.snapshot() == before


@pytest.mark.kernel
def test_a_what_if_host_brings_its_force_reclaim_id():
    """6.1's routines on 7.2's fault path (KernelBench(host=...)): the 7.x host's id is served for that one call."""
    import dataclasses

    from host.kernel import KernelConfig
    from kimage.profiles import LINUX_7_2

    vm = vmlinux("6.1")
    config = KernelConfig(profile=dataclasses.replace(profile_for(vm), host=LINUX_7_2.host), pkvm_initialised=True)
    lab = Lab.with_vmlinux(vm, "inject-reclaim", config)
    assert lab.hyp.abi.name_of(FORCE_RECLAIM_7_2) == FORCE_RECLAIM
    assert lab.hyp.abi.name_of(SHARE_HYP_ID["6.1"]) == SHARE_HYP  # the rest is still 6.1's table
    page = lab.donate(host_page(lab))
    result, event = hvc(lab, FORCE_RECLAIM_7_2, page.pfn << 12)
    assert result.x0 == 0 and event.data["name"] == FORCE_RECLAIM
    assert lab.hyp.ownership.guest_state(lab.guest, page.gfn) is not PageState.OWNED
