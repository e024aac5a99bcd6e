"""Differential sweeps: the kernel's routines with injected aborts handled by `--host model` and `--host real`.

The same boundary cases (faultlab/sweep/hosts.py) run on two benches over one
vmlinux: the Python fault.c following the kernel's profile, and the image's own
do_mem_abort. Per case they must agree on the outcome, x0 when returned, every
host byte of the windows, the reclaimed pages and the fixups taken; both must
also meet the routine's reference contract. The default run takes a sample of
every routine on both kernels; `-m "sweep and kernel"` every boundary of
lengths 0-64 (0-32 for strscpy) and some longer ones, inside the full ours-vs-kernel
differential of tests/test_vmlinux_routines.py (the same cases: it judges each
case's kernel-model run against ours and against the real host's run).
"""
from __future__ import annotations

from collections import Counter

import pytest

from faultlab.lab import Lab
from guest_asm import SOURCE_DIR
from faultlab.sweep.hosts import DIFF_POLICIES, HostPair, boundary_cases, sample
from test_vmlinux import KERNEL_IDS, KERNELS, open_kernel

pytestmark = pytest.mark.kernel

ROUTINES = ("__arch_copy_from_user", "__arch_copy_to_user", "__arch_clear_user", "full_name_hash", "hashlen_string", "strscpy")
SAMPLE_LENGTHS = (0, 5, 13, 70)
SAMPLE_SIZE = 30


@pytest.fixture(scope="module")
def pairs():
    made: dict[str, HostPair] = {}

    def get(key: str) -> HostPair:
        if key not in made:
            made[key] = HostPair(open_kernel(key))
        return made[key]

    return get


def _check(summary, todo) -> None:
    assert summary.cases == len(todo)
    assert not summary.disagreements, f"{len(summary.disagreements)} of {summary.cases} cases disagree:\n" + "\n".join(map(str, summary.disagreements[:8]))
    assert not summary.contract, "\n".join(summary.contract[:8])


@pytest.mark.parametrize("name", ROUTINES)
@pytest.mark.parametrize("key", list(KERNELS), ids=KERNEL_IDS)
def test_sample_real_vs_model(pairs, key, name):
    todo = sample(boundary_cases(name, SAMPLE_LENGTHS, every_upto=16), SAMPLE_SIZE)
    assert {c.policy for c in todo} == set(DIFF_POLICIES)
    summary = pairs(key).run(name, todo)
    _check(summary, todo)
    assert summary.real_entries > 0  # the kernel's own fault path decided some of the sample


# The full sweep: every boundary of lengths 0-64 (0-32 for strscpy, six sizes a length) and some longer
# ones, under the three policies. Its cases are exactly the full ours-vs-kernel differential's
# (tests/test_vmlinux_routines.py::test_differential_full, `-m sweep`), which runs each of them under
# the model's fault path anyway: that item runs the case under the kernel's own fault path as well and
# judges the pair with the same `compare` and contract checks as `HostPair.run` (disagreements, contract
# problems, every case counted), so the kernel-model runs are not made twice. Pinned here: same cases.
LONG_LENGTHS = (96, 127, 128, 255, 1000, 4096 + 23)


def full_lengths(name: str) -> list[int]:
    """Every length of the full sweep: 0-64 (0-32 for strscpy, six sizes a length) and some longer ones."""
    upto = 33 if name == "strscpy" else 65
    return [*range(upto), *LONG_LENGTHS]


@pytest.mark.parametrize("name", ROUTINES)
def test_full_sweep_runs_in_the_differential(name):
    from test_vmlinux_routines import FULL_DIFF_POLICIES, REAL_VS_MODEL, full_differential_cases

    assert name in REAL_VS_MODEL and FULL_DIFF_POLICIES == DIFF_POLICIES
    todo = boundary_cases(name, full_lengths(name))
    assert full_differential_cases(name) == todo
    assert Counter(c for p in DIFF_POLICIES for c in full_differential_cases(name, p)) == Counter(todo)


def test_a_reused_lab_counts_refaults_per_run():
    """Found by the differential sweep: the model counted 'the same abort retried' across runs of a
    reused lab, so the 8th sweep case reclaiming at the same PC and FAR became a livelock."""
    lab = Lab("inject-reclaim")
    lab.load_asm(SOURCE_DIR / "gup.S")
    page, dst = lab.alloc("page", 1, alias=True), lab.alloc("dst", 1)
    for i in range(10):
        lab.donate(page.pfns[0])
        result = lab.call("gup_kernel_copy", dst.va, page.alias_va, 64)
        assert result.outcome.kind == "returned", (i, result.outcome)
        assert lab.hyp.ownership.host_may_access(page.pfns[0])
