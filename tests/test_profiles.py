"""Kernel profiles: each claim checked against the real image; the host model follows the profile.

The GUP kernel-alias case (a kernel memcpy, no fixup, from a page later donated
to a guest) is where 6.1 and 7.2 differ by their fault.c: 7.2 has the pKVM
marker and the force-reclaim call, 6.1 has neither and re-faults forever.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from faultlab.runner import run
from faultlab.scenario import load
from kimage.profiles import (
    LINUX_6_1,
    LINUX_7_2,
    MODEL_DEFAULT,
    PROFILES,
    HostFeatures,
    ProfileError,
    check_profile,
    host_features_of,
    profile_for,
)
from test_vmlinux import open_kernel

ROOT = Path(__file__).resolve().parent.parent
GUP = "c_gup_kernel_alias.toml"  # names both kernels; runs once per kernel
VERSION = {LINUX_6_1.name: "6.1", LINUX_7_2.name: "7.2"}


def test_one_profile_per_suite_and_the_model_follows_the_newest():
    assert len({p.suite for p in PROFILES}) == len(PROFILES)
    assert MODEL_DEFAULT is max(PROFILES, key=lambda p: p.version)
    assert LINUX_7_2.host.force_reclaim_hcall == 0xC600_002B and not LINUX_6_1.host.force_reclaim


@pytest.mark.kernel
@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_profile_claims_are_what_the_image_shows(profile):
    vm = open_kernel(VERSION[profile.name])
    assert host_features_of(vm) == profile.host
    assert profile_for(vm) is profile


@pytest.mark.kernel
@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_a_wrong_claim_fails_loudly(profile):
    vm = open_kernel(VERSION[profile.name])
    flipped = HostFeatures(pkvm_marker=not profile.host.pkvm_marker, force_reclaim_hcall=profile.host.force_reclaim_hcall)
    with pytest.raises(ProfileError, match="pkvm_marker"):
        check_profile(dataclasses.replace(profile, host=flipped), vm)
    wrong_id = HostFeatures(profile.host.pkvm_marker, None if profile.host.force_reclaim else 0xC600_002B)
    with pytest.raises(ProfileError, match="force-reclaim hypercall"):
        check_profile(dataclasses.replace(profile, host=wrong_id), vm)
    other = LINUX_7_2 if profile is LINUX_6_1 else LINUX_6_1
    with pytest.raises(ProfileError, match="version"):
        check_profile(other, vm)


@pytest.fixture
def shelf(kernel_shelf):
    return kernel_shelf("model")


def _gup(profile, policy, shelf):
    return run(load(ROOT / "scenarios" / "kernel" / GUP).on_kernel(profile.suite), policy, kernels=shelf)


@pytest.mark.kernel
def test_7_2_inject_reclaim_reclaims_and_retries(shelf):
    rec = _gup(LINUX_7_2, "inject-reclaim", shelf)
    assert rec.result.outcome.kind == "returned"
    calls = [e for e in rec.result.events_of("hypercall") if e.data["name"] == "__pkvm_force_reclaim_guest_page"]
    assert [c.data["results"] for c in calls] == [[0]]


@pytest.mark.kernel
@pytest.mark.parametrize("policy", ["inject", "inject-reclaim"])
def test_6_1_livelocks_with_warns_under_injection(policy, shelf):
    rec = _gup(LINUX_6_1, policy, shelf)
    outcome = rec.result.outcome
    assert outcome.kind == "livelock"
    assert outcome.detail["count"] == 8 and f"FAR={outcome.detail['far']:#x}" in outcome.message
    warns = [e for e in rec.result.events_of("warn") if "Ignoring spurious kernel translation fault" in e.message]
    assert len(warns) == 8 - 1 or len(warns) == 8
    assert rec.result.events_of("hvc") == []  # 6.1 has no force-reclaim call
