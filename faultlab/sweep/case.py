"""One sweep case: lay it out in the policy's Lab, run the routine, and judge it against the reference.

Memory layout per buffer: a region of pages
    [guard][before ...][G][after ...][guard]
where G is the page that may be donated to the guest. The buffer that holds
the boundary starts `boundary` bytes before G; the others start near the
region's beginning at the case's alignment. (The boundary is page aligned,
so that buffer's own alignment is (-boundary) mod 16.) Host bytes are
0x01-0x3f in buffers a routine reads and 0x40-0x7f in those it writes; the
guest's are 0x80-0xff, so a guest byte in host memory is recognisable.
"""
from __future__ import annotations

import functools
import random

from emu.memory import PAGE_SIZE
from hyp.policies import Policy

from faultlab import reference as ref
from faultlab.lab import Lab
from faultlab.sweep.bench import Bench, BenchBuffer
from faultlab.sweep.judge import judge
from faultlab.sweep.spec import Case, CaseRun, RoutineSpec, SweepError

# x(len(args))..x7 at entry: junk, so a routine that forgets to set a result register shows it
POISON = tuple(0x2F2F_2F2F_2F2F_2F00 | i for i in range(8))


# Window bytes come from a pool made once per fill table: a case takes a slice at an offset drawn
# from its own seed (drawing the window's bytes afresh, ~12 KiB a window, was ~5% of a sweep).
FILL_POOL = 1 << 20


@functools.lru_cache(maxsize=8)
def _fill_pool(table: bytes) -> bytes:
    """FILL_POOL random bytes through `table` (a cache of a pure function: a fixed seed, the table)."""
    return random.Random(0x5EED_F111).randbytes(FILL_POOL).translate(table)


def window_fill(rng: random.Random, size: int, table: bytes) -> bytearray:
    """`size` host bytes for a window, drawn through `table` (BufferSpec.fill) by the case's `rng`."""
    if size > FILL_POOL // 2:
        return bytearray(rng.randbytes(size).translate(table))
    start = rng.randrange(FILL_POOL - size + 1)
    return bytearray(_fill_pool(table)[start : start + size])


class Unjudged(SweepError):
    """The reference models have no traits for this policy: its cases can be run but not judged."""


def traits_of(policy: Policy | str) -> ref.PolicyTraits:
    """The reference models' own view of a policy, looked up by name (never derived from hyp's class)."""
    name = policy if isinstance(policy, str) else policy.name
    traits = ref.reference_traits(name)
    if traits is None:
        raise Unjudged(f"policy {name}: no reference traits (faultlab/reference/policy.py), so its cases are unjudged")
    return traits


def host_traits(lab: Lab) -> ref.HostTraits:
    """The reference's view of the host kernel the lab runs: its profile's host features (checked against the image)."""
    features = lab.kernel.config.profile.host
    return ref.HostTraits(pkvm_marker=features.pkvm_marker, force_reclaim=features.force_reclaim_hcall is not None)


def _window_bounds(buf: BenchBuffer, start: int, reach: int) -> tuple[int, int]:
    lo = (start & ~(PAGE_SIZE - 1)) - PAGE_SIZE
    hi = ((start + max(reach, 1) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)) + PAGE_SIZE
    region_lo, region_hi = buf.base, buf.base + buf.region.size
    return max(lo, region_lo), min(hi, region_hi)


def run_case(bench: Bench, spec: RoutineSpec, case: Case) -> CaseRun:
    """Lay one case out in the policy's Lab, run it, and judge it against the reference."""
    lab = bench.lab(case.policy)
    traits = traits_of(case.policy).for_host(host_traits(lab))
    rng = random.Random(case.seed)
    bufs = {b.name: bench.buffer(case.policy, spec, b.name) for b in spec.buffers}
    starts: dict[str, int] = {}
    for name, buf in bufs.items():
        if name == case.side:
            starts[name] = buf.guest_va - case.boundary
        else:
            offset = rng.randrange(0, PAGE_SIZE, 16) + case.align
            starts[name] = buf.base + PAGE_SIZE + offset
    secrets = {name: bench.guest_page(lab, buf, name == case.side) for name, buf in bufs.items()}

    # windows: host fill, the routine's own content, then the guest's bytes where it owns the page
    bounds = {name: _window_bounds(buf, starts[name], spec.reach(case.sizes, name)) for name, buf in bufs.items()}
    images = {name: window_fill(rng, hi - lo, bufs[name].spec.fill) for name, (lo, hi) in bounds.items()}
    offsets = {name: starts[name] - bounds[name][0] for name in bufs}
    if spec.prepare is not None:
        spec.prepare(case.sizes, images, offsets, rng)
    guest_ranges: dict[str, tuple[int, int]] = {}
    for name, secret in secrets.items():
        if secret is None:
            continue
        buf, (lo, hi) = bufs[name], bounds[name]
        g = buf.guest_va
        if lo <= g < hi:
            images[name][g - lo : g - lo + PAGE_SIZE] = secret
            guest_ranges[name] = (g, g + PAGE_SIZE)
    for name, (lo, hi) in bounds.items():
        _write_host(lab, bufs[name], lo, bytes(images[name]), guest_ranges.get(name))

    args = spec.args(case.sizes, starts)
    windows = {name: ref.Window(name, bounds[name][0], bytes(images[name]), guest_ranges.get(name)) for name in bufs}
    expected = spec.reference(ref.RefCase(args, windows, traits, case.sizes))
    result = lab.call(spec.symbol, *args, *POISON[len(args):], el=spec.el)
    got = {name: lab.read(lo, hi - lo) for name, (lo, hi) in bounds.items()}
    reclaimed = {name for name in guest_ranges if lab.hyp.ownership.host_may_access(bufs[name].guest_pfn)}
    grams = [bench.grams(x, spec.leak_window) for x in secrets.values() if x]
    problems = judge(spec, case, expected, result, windows, got, reclaimed, grams)
    return CaseRun(case, tuple(problems), result.outcome.kind, result.regs, got, windows, frozenset(reclaimed), tuple(result.events))


def _write_host(lab: Lab, buf: BenchBuffer, lo: int, data: bytes, guest: tuple[int, int] | None) -> None:
    """Write the host-owned parts of a window (the guest's page is not the host's to write)."""
    if guest is None:
        lab.write(lo, data)
        return
    g0, g1 = guest
    if g0 > lo:
        lab.write(lo, data[: g0 - lo])
    if lo + len(data) > g1:
        lab.write(g1, data[g1 - lo :])

