"""Sweeps: move a guest-owned page across every routine's buffers and check the routine's contract.

For one routine the sweep enumerates cases - buffer sizes, which buffer
holds the guest page (or none), the offset at which that page starts inside
the buffer (the boundary), the alignment of the other buffers - and runs
each case under every policy in a `Lab`, then compares the run with the
routine's reference model (faultlab/reference.py): outcome, return
registers, every byte of the memory around the buffers, whether the guest
lost its page, and that no guest byte reached host memory or registers.

Memory layout per buffer: a region of pages
    [guard][before ...][G][after ...][guard]
where G is the page that may be donated to the guest. The buffer that holds
the boundary starts `boundary` bytes before G; the others start near the
region's beginning at the case's alignment. (The boundary is page aligned,
so that buffer's own alignment is (-boundary) mod 16.) Host bytes are
0x01-0x3f in buffers a routine reads and 0x40-0x7f in those it writes; the
guest's are 0x80-0xff, so a guest byte in host memory is recognisable.

Cost: one `Lab` per policy (machine creation and assembly once), reused by
every case; a case rewrites and reads back only its windows (the pages
around its buffers, one page either side).
"""
from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from emu.memory import PAGE_SIZE
from hyp.policies import POLICIES, FaultShape, Policy

from . import reference as ref
from .lab import Lab, Region

GUEST_ASM = Path(__file__).resolve().parent.parent / "guest_asm"
KERNEL_FILES = ("uaccess.S", "word_at_a_time.S", "gup.S")
USER_FILES = ("vmm.S",)

FILL_SRC = bytes(1 + b % 63 for b in range(256))  # 0x01-0x3f: read-side host bytes (never NUL)
FILL_DST = bytes(0x40 + b % 64 for b in range(256))  # 0x40-0x7f: write-side host bytes
MAX_SHOWN = 6
# x(len(args))..x7 at entry: junk, so a routine that forgets to set a result register shows it
POISON = tuple(0x2F2F_2F2F_2F2F_2F00 | i for i in range(8))


class SweepError(ValueError):
    """A bad request (unknown routine or policy) or a policy the models cannot predict."""


# =========================================================================== specs


@dataclass(frozen=True)
class BufferSpec:
    """One buffer a routine uses: how it is mapped and filled."""

    name: str
    mapping: str = "kernel"  # "kernel" (linear map), "user" (user VA), "alias" (a second kernel mapping)
    fill: bytes = FILL_SRC
    align: int = 1  # the routine requires its start to be a multiple of this


@dataclass(frozen=True)
class Plan:
    """Which cases a sweep mode runs (see `cases`)."""

    sizes: Sequence[tuple[int, ...]]
    every_boundary_upto: int = 0  # sizes whose reach is at most this get every boundary position
    sampled_boundaries: int = 2  # otherwise: this many positions per side (edges in rotation + random)
    all_policies_upto: int | None = None  # reach up to which every combo runs under every policy; None: always
    rotating_boundaries: int = 1  # positions per side when the policy rotates (reach above all_policies_upto)
    exhaustive: bool = False  # every side x boundary x alignment x policy (for single accesses)


@dataclass(frozen=True)
class RoutineSpec:
    """Everything the sweep (and `faultlab sweep ROUTINE`) needs to know about one routine."""

    name: str
    file: str
    symbol: str
    buffers: tuple[BufferSpec, ...]
    sides: tuple[str, ...]
    reach: Callable[[tuple[int, ...], str], int]
    args: Callable[[tuple[int, ...], Mapping[str, int]], tuple[int, ...]]
    reference: Callable[[ref.RefCase], ref.Expected]
    quick: Plan
    full: Plan
    extable: str
    contract: str
    el: int = 1
    prepare: Callable[[tuple[int, ...], Mapping[str, bytearray], Mapping[str, int], random.Random], None] | None = None
    leak_window: int = 4

    def buffer(self, name: str) -> BufferSpec:
        for b in self.buffers:
            if b.name == name:
                return b
        raise SweepError(f"{self.name} has no buffer {name!r}")

    def max_reach(self, name: str) -> int:
        return max(max(self.reach(s, name), 1) for plan in (self.quick, self.full) for s in plan.sizes)


@dataclass(frozen=True)
class Case:
    routine: str
    policy: str
    sizes: tuple[int, ...]
    side: str | None  # the buffer that holds the guest page, or None
    boundary: int  # offset of the guest page from that buffer's start
    align: int  # start alignment (mod 16) of the buffers without the guest page
    seed: int

    def __str__(self) -> str:
        where = f"{self.side}@+{self.boundary}" if self.side else "no-guest-page"
        return f"{self.routine}[{self.policy}] sizes={self.sizes} {where} align={self.align} seed={self.seed}"


@dataclass(frozen=True)
class CaseRun:
    """What one case did: the judge's problems, and the raw run for whoever wants to look closer."""

    case: Case
    problems: tuple[str, ...]
    outcome: str
    regs: Mapping[str, int]
    memory: Mapping[str, bytes]  # the windows after the run, by buffer name
    windows: Mapping[str, ref.Window]  # the same windows before the run (with the guest's ranges)
    reclaimed: frozenset[str]  # buffers whose guest page the run took back
    events: tuple = ()


@dataclass(frozen=True)
class Failure:
    case: Case
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.case}:\n    " + "\n    ".join(self.problems)


@dataclass
class SweepSummary:
    routine: str
    cases: int = 0
    failures: list[Failure] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    full_product: int = 0  # the size of the unsampled cross product, for the docs

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def rate(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0

    def merge(self, other: "SweepSummary") -> None:
        self.cases += other.cases
        self.failures += other.failures
        for k, v in other.outcomes.items():
            self.outcomes[k] = self.outcomes.get(k, 0) + v

    def __str__(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        head = f"{self.routine}: {self.cases} cases, {len(self.failures)} failures, {self.seconds:.1f}s ({self.rate:.0f} cases/s) [{kinds}]"
        return "\n".join([head, *(str(f) for f in self.failures[:MAX_SHOWN])])


# =========================================================================== policies


def traits_of(policy: Policy) -> ref.PolicyTraits:
    """The reference models' view of a policy; refuse combinations they cannot predict."""
    decision = policy.decide().value
    fatal = decision == "inject" and policy.shape is FaultShape.GPC
    if decision == "inject" and not fatal and not policy.host_pkvm_initialised:
        # The host would not recognise the injected abort as pKVM's and would loop on
        # the spurious-fault path: no model for that.
        raise SweepError(f"policy {policy.name}: injection into a host without pKVM support is not modelled")
    if decision == "reclaim" and not policy.inject_on_failed_reclaim:
        pass  # reclaim never fails in a sweep: the page is always a guest's
    return ref.PolicyTraits(policy.name, decision, fatal, policy.host_force_reclaim)


# =========================================================================== case enumeration


def _edges(reach: int) -> list[int]:
    """Boundary positions worth always trying: the ends, and around the last word."""
    picks = {0, 1, reach // 2, max(reach - 9, 0), max(reach - 8, 0), max(reach - 1, 0), reach}
    return sorted(p for p in picks if 0 <= p <= reach)


def _positions(spec: RoutineSpec, side: str, reach: int) -> range:
    step = spec.buffer(side).align
    return range(0, reach + 1, step)


def _aligns(spec: RoutineSpec, side: str | None) -> list[int]:
    steps = [b.align for b in spec.buffers if b.name != side]
    step = max(steps, default=1)
    return list(range(0, 16, step))


def cases(spec: RoutineSpec, full: bool, policies: Sequence[str]) -> Iterator[Case]:
    """The cases of one sweep mode, deterministically.

    For each size tuple: the case without a guest page, then for each side
    the boundary positions - all of them when the reach is at most
    `every_boundary_upto`, else edge positions in rotation plus random ones.
    Alignments of the other buffers are drawn from 0..15. Every combination
    runs under every policy while the reach is at most `all_policies_upto`;
    above it each combination runs under one policy, in rotation, so every
    policy still meets every kind of case across the sizes. An exhaustive
    plan runs the whole cross product instead.
    """
    plan = spec.full if full else spec.quick
    rng = random.Random(f"{spec.name}:{'full' if full else 'quick'}")
    turn = 0
    for sizes in plan.sizes:
        reaches = {side: max(spec.reach(sizes, side), 0) for side in spec.sides}
        every_policy = plan.exhaustive or plan.all_policies_upto is None or max(reaches.values(), default=0) <= plan.all_policies_upto
        combos: list[tuple[str | None, int, int]] = []
        aligns = _aligns(spec, None)
        combos += [(None, 0, a) for a in aligns] if plan.exhaustive else [(None, 0, aligns[rng.randrange(len(aligns))])]
        for side, reach in reaches.items():
            positions = _positions(spec, side, reach)
            if plan.exhaustive or reach <= plan.every_boundary_upto:
                chosen = list(positions)
            else:
                want = plan.sampled_boundaries if every_policy else plan.rotating_boundaries
                edges = [p for p in _edges(reach) if p % positions.step == 0]
                picks = {edges[turn % len(edges)]} if want > 1 or turn % 2 == 0 else set()
                while len(picks) < want and len(picks) < len(positions):
                    picks.add(positions[rng.randrange(len(positions))])
                chosen = sorted(picks)
                turn += 1
            aligns = _aligns(spec, side)
            for b in chosen:
                if plan.exhaustive:
                    combos += [(side, b, a) for a in aligns]
                else:
                    combos.append((side, b, aligns[rng.randrange(len(aligns))]))
        for side, b, align in combos:
            seed = rng.randrange(1 << 30)
            for policy in policies if every_policy else [policies[turn % len(policies)]]:
                yield Case(spec.name, policy, sizes, side, b, align, seed)
            turn += 1


def full_product(spec: RoutineSpec, npolicies: int) -> int:
    """The unsampled cross product of the full mode: sizes x (no page + every side x every boundary) x alignments x policies."""
    total = 0
    for sizes in spec.full.sizes:
        total += len(_aligns(spec, None))
        for side in spec.sides:
            total += len(_positions(spec, side, max(spec.reach(sizes, side), 0))) * len(_aligns(spec, side))
    return total * npolicies


# =========================================================================== the bench: labs and regions


@dataclass
class _Buffer:
    region: Region
    spec: BufferSpec
    span: int  # pages before and after the guest page

    @property
    def base(self) -> int:
        r = self.region
        return {"kernel": r.va, "user": r.user_va, "alias": r.alias_va}[self.spec.mapping]

    @property
    def guest_va(self) -> int:
        return self.base + (1 + self.span) * PAGE_SIZE

    @property
    def guest_pfn(self) -> int:
        return self.region.pfns[1 + self.span]

    def va_to_linear(self, va: int) -> int:
        return self.region.va + (va - self.base)


class Bench:
    """One Lab per policy with every guest_asm file loaded, and the buffers each routine uses.

    Reuse one Bench across sweeps (the default test run does): creating a Lab
    and assembling costs far more than a case.
    """

    def __init__(self, sources: Mapping[str, str] | None = None, *, secret_seed: int = 0) -> None:
        # sources: replacement text for guest_asm files, by file name (tests feed broken routines);
        # secret_seed: which data the guest keeps in its pages (tests compare runs with two)
        self.sources = dict(sources or {})
        self.secret_seed = secret_seed
        self.labs: dict[str, Lab] = {}
        self.buffers: dict[tuple[str, str, str], _Buffer] = {}
        self.secrets: dict[int, bytes] = {}
        self._grams: dict[tuple[bytes, int], frozenset[bytes]] = {}

    def grams(self, secret: bytes, n: int) -> frozenset[bytes]:
        """The runs of n guest bytes worth looking for in registers (not one byte repeated)."""
        key = (secret, n)
        if key not in self._grams:
            self._grams[key] = frozenset(secret[i : i + n] for i in range(len(secret) - n + 1) if len(set(secret[i : i + n])) > 1)
        return self._grams[key]

    def lab(self, policy: str) -> Lab:
        if policy not in self.labs:
            lab = Lab(POLICIES[policy])
            for name in KERNEL_FILES:
                lab.load_asm(GUEST_ASM / name, text=self.sources.get(name))
            for name in USER_FILES:
                lab.load_user_asm(GUEST_ASM / name, text=self.sources.get(name))
            self.labs[policy] = lab
        return self.labs[policy]

    def buffer(self, policy: str, spec: RoutineSpec, name: str) -> _Buffer:
        key = (policy, spec.name, name)
        if key not in self.buffers:
            bspec = spec.buffer(name)
            span = -(-(spec.max_reach(name) + 32) // PAGE_SIZE) + 1
            lab = self.lab(policy)
            region = lab.alloc(f"{spec.name}.{name}", 2 * span + 3, user=bspec.mapping == "user", alias=bspec.mapping == "alias")
            self.buffers[key] = _Buffer(region, bspec, span)
        return self.buffers[key]

    def guest_page(self, lab: Lab, buf: _Buffer, wanted: bool) -> bytes | None:
        """The guest's bytes in the buffer's guest page, donating it first if `wanted`; None if it is the host's.

        A page not wanted is left with the guest when it already is (taking it
        back costs a reclaim, and the buffer never reaches it in such a case).
        """
        pfn = buf.guest_pfn
        if wanted and lab.hyp.ownership.host_may_access(pfn):
            self.secrets[pfn] = lab.donate(pfn, seed=self.secret_seed).secret
        return None if lab.hyp.ownership.host_may_access(pfn) else self.secrets[pfn]


# =========================================================================== one case


def _window_bounds(buf: _Buffer, start: int, reach: int) -> tuple[int, int]:
    lo = (start & ~(PAGE_SIZE - 1)) - PAGE_SIZE
    hi = ((start + max(reach, 1) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)) + PAGE_SIZE
    region_lo, region_hi = buf.base, buf.base + buf.region.size
    return max(lo, region_lo), min(hi, region_hi)


def run_case(bench: Bench, spec: RoutineSpec, case: Case) -> CaseRun:
    """Lay one case out in the policy's Lab, run it, and judge it against the reference."""
    lab = bench.lab(case.policy)
    traits = traits_of(POLICIES[case.policy])
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
    images = {name: bytearray(rng.randbytes(hi - lo).translate(bufs[name].spec.fill)) for name, (lo, hi) in bounds.items()}
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
    grams = frozenset().union(*(bench.grams(x, spec.leak_window) for x in secrets.values() if x))
    problems = judge(spec, case, expected, result, windows, got, reclaimed, grams)
    return CaseRun(case, tuple(problems), result.outcome.kind, result.regs, got, windows, frozenset(reclaimed), tuple(result.events))


def _write_host(lab: Lab, buf: _Buffer, lo: int, data: bytes, guest: tuple[int, int] | None) -> None:
    """Write the host-owned parts of a window (the guest's page is not the host's to write)."""
    if guest is None:
        lab.write(lo, data)
        return
    g0, g1 = guest
    if g0 > lo:
        lab.write(lo, data[: g0 - lo])
    if lo + len(data) > g1:
        lab.write(g1, data[g1 - lo :])


def judge(
    spec: RoutineSpec,
    case: Case,
    exp: ref.Expected,
    result,
    windows: Mapping[str, ref.Window],
    got: Mapping[str, bytes],
    reclaimed: set[str],
    grams: frozenset[bytes],
) -> list[str]:
    """Every way the run can disagree with the reference, as readable lines."""
    problems: list[str] = []
    kind = result.outcome.kind
    if kind != exp.outcome:
        problems.append(f"outcome {kind} ({result.outcome.message}); expected {exp.outcome} ({exp.why})")
        return problems + _leaks(spec, result.regs, got, windows, grams)
    regs = result.regs
    if kind == ref.RETURNED:
        for reg, value in exp.regs.items():
            if regs[reg] != value:
                problems.append(f"{reg} = {regs[reg]:#x}, expected {value:#x} ({exp.why})")
        if exp.ret_check is not None:
            problems += exp.ret_check(regs)
    if problems:
        return problems
    touched = any(e.kind == "protected-access" for e in result.events)
    if touched != exp.touched:
        problems.append(f"the run {'touched' if touched else 'did not touch'} the guest page; the model says it {'does' if exp.touched else 'does not'}")
    if reclaimed != set(exp.reclaimed):
        problems.append(f"guest pages reclaimed: {sorted(reclaimed) or 'none'}, expected {sorted(exp.reclaimed) or 'none'}")
    images = exp.images(regs)
    for name, (want, alt) in images.items():
        problems += _compare(name, windows[name], got[name], want, alt)
    return problems + _leaks(spec, regs, got, windows, grams, reclaimed, images)


def _compare(name: str, window: ref.Window, got: bytes, want: bytes, alt: bytes) -> list[str]:
    if got == want or got == alt:
        return []
    diff = (int.from_bytes(got, "little") ^ int.from_bytes(want, "little")).to_bytes(len(got), "little")
    bad = [m.start() for m in re.finditer(rb"[^\x00]", diff, re.S) if got[m.start()] != alt[m.start()]]
    if not bad:
        return []
    shown = ", ".join(f"{window.va + i:#x}: {got[i]:#04x} (want {want[i]:#04x}{'' if alt[i] == want[i] else f' or {alt[i]:#04x}'})" for i in bad[:MAX_SHOWN])
    return [f"{name}: {len(bad)} wrong bytes: {shown}"]


def _leaks(
    spec: RoutineSpec,
    regs: Mapping[str, int],
    got: Mapping[str, bytes],
    windows: Mapping[str, ref.Window],
    grams: frozenset[bytes],
    reclaimed: set[str] = frozenset(),
    images: Mapping[str, tuple[bytes, bytes]] | None = None,
) -> list[str]:
    """Confidentiality: guest bytes in host-owned memory, runs of guest bytes in registers.

    Memory: a byte in 0x80-0xff (the guest's range; host buffers hold 0x01-0x7f)
    that neither the model's images nor, failing those, the memory before the
    run explain. Registers: `leak_window` consecutive bytes that occur in the
    guest's page (values with the top 16 bits set - kernel pointers, small
    negative numbers - are skipped; runs of one repeated byte are ignored).
    """
    problems = []
    for name, data in got.items():
        w = windows[name]
        explain = (images[name][0], images[name][1]) if images is not None else (w.data, w.data)
        guest = (w.guest[0] - w.va, w.guest[1] - w.va) if w.guest is not None and name not in reclaimed else None
        for m in re.finditer(rb"[\x80-\xff]", data):
            i = m.start()
            if guest is not None and guest[0] <= i < guest[1]:
                continue
            if data[i] not in (explain[0][i], explain[1][i]):
                problems.append(f"{name}: guest-range byte {data[i]:#04x} in host memory at {w.va + i:#x}")
                break
    n = spec.leak_window
    if grams:
        for i in range(31):
            value = regs[f"x{i}"]
            if value >> 48 == 0xFFFF:
                continue
            raw = value.to_bytes(8, "little")
            if any(raw[j : j + n] in grams for j in range(9 - n)):
                problems.append(f"x{i} = {value:#018x} holds a run of {n} guest bytes")
    return problems


# =========================================================================== running sweeps


ProgressFn = Callable[[int, int], None]


def run_sweep(
    name: str,
    policies: Iterable[str] | None = None,
    full: bool = False,
    progress: ProgressFn | None = None,
    *,
    bench: Bench | None = None,
    jobs: int = 1,
    limit: int | None = None,
) -> SweepSummary:
    """Sweep one routine under the given policies (default: all) and summarise.

    `progress(done, total)` is called as cases finish. `jobs` > 1 splits the
    cases over worker processes (each with its own Bench). `limit` caps the
    number of cases (for quick looks from the CLI).
    """
    spec = routine(name)
    names = list(POLICIES) if policies is None else list(policies)
    for p in names:
        if p not in POLICIES:
            raise SweepError(f"unknown policy {p!r} (known: {', '.join(POLICIES)})")
        traits_of(POLICIES[p])
    todo = list(cases(spec, full, names))
    if limit is not None:
        todo = todo[:limit]
    summary = SweepSummary(spec.name, full_product=full_product(spec, len(names)) if full else 0)
    started = time.monotonic()
    if jobs > 1 and len(todo) > 1:
        summary.merge(_run_parallel(spec.name, todo, jobs, progress))
    else:
        summary.merge(_run_cases(spec, todo, bench or Bench(), progress))
    summary.seconds = time.monotonic() - started
    return summary


def _run_cases(spec: RoutineSpec, todo: Sequence[Case], bench: Bench, progress: ProgressFn | None, offset: int = 0, total: int | None = None) -> SweepSummary:
    summary = SweepSummary(spec.name)
    total = len(todo) if total is None else total
    for i, case in enumerate(todo, 1):
        try:
            run = run_case(bench, spec, case)
            problems, kind = run.problems, run.outcome
        except ref.ModelError as exc:
            problems, kind = (f"model error: {exc}",), "model-error"
        summary.cases += 1
        summary.outcomes[kind] = summary.outcomes.get(kind, 0) + 1
        if problems:
            summary.failures.append(Failure(case, problems))
        if progress is not None and (i % 64 == 0 or i == len(todo)):
            progress(offset + i, total)
    return summary


def _worker(args: tuple[str, list[Case]]) -> SweepSummary:
    name, todo = args
    return _run_cases(routine(name), todo, Bench(), None)


def _run_parallel(name: str, todo: list[Case], jobs: int, progress: ProgressFn | None) -> SweepSummary:
    import multiprocessing

    # Interleaved chunks keep the workers' loads alike (cases are ordered by size).
    chunks = [todo[i::jobs] for i in range(jobs)]
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    summary = SweepSummary(name)
    with ctx.Pool(jobs) as pool:
        for part in pool.imap_unordered(_worker, [(name, c) for c in chunks if c]):
            summary.merge(part)
            if progress is not None:
                progress(summary.cases, len(todo))
    return summary


def routine(name: str) -> RoutineSpec:
    try:
        return ROUTINES[name]
    except KeyError:
        raise SweepError(f"unknown routine {name!r} (known: {', '.join(ROUTINES)})") from None


# =========================================================================== the routines

TWO_PAGES = 2 * PAGE_SIZE
LARGE_SIZES = (4 * PAGE_SIZE + 5, 16 * PAGE_SIZE)
SALT = 0x6A09_E667_F3BC_C908  # any salt: the hash must not care where it comes from
PUT_USER_VALUE = 0x3132_3334_3536_3738  # bytes 0x31-0x38: unlike the 0x40-0x7f the buffer holds


def _every_length(extra: Sequence[int] = LARGE_SIZES) -> list[tuple[int, ...]]:
    return [(n,) for n in range(TWO_PAGES + 1)] + [(n,) for n in extra]


# quick: one short size with every boundary under every policy, then residues mod 8/16 and a page-crossing size
COPY_QUICK = Plan([(0,), (5,), (15,), (31,), (100,), (4096 + 23,)], every_boundary_upto=5, sampled_boundaries=2, all_policies_upto=5)
COPY_FULL = Plan(_every_length(), every_boundary_upto=40, sampled_boundaries=2, all_policies_upto=160)


def _n(sizes: tuple[int, ...], _buffer: str) -> int:
    return sizes[0]


def _dst_src_n(sizes: tuple[int, ...], at: Mapping[str, int]) -> tuple[int, ...]:
    return (at["dst"], at["src"], sizes[0])


def _string_sizes(lengths: Iterable[int]) -> list[tuple[int, int]]:
    """(string length L, count) pairs: count around L, and a roomy one."""
    out = []
    for L in lengths:
        for count in sorted({0, 1, max(L - 1, 0), L, L + 1, L + 8, L + 64}):
            out.append((L, count))
    return out


STRING_QUICK = Plan([(0, 1), (5, 64), (13, 13), (40, 100)], every_boundary_upto=0, sampled_boundaries=2)
STRING_FULL = Plan(
    _string_sizes(list(range(0, 100)) + list(range(100, TWO_PAGES + 1, 61)) + [TWO_PAGES - 1, TWO_PAGES]),
    every_boundary_upto=16,
    sampled_boundaries=2,
    all_policies_upto=48,
)


def _nul_at(buffer: str) -> Callable:
    """prepare(): the string in `buffer` ends with a NUL at L (sizes[0])."""

    def prepare(sizes, images, offsets, _rng) -> None:
        at = offsets[buffer] + sizes[0]
        if at < len(images[buffer]):
            images[buffer][at] = 0

    return prepare


def _same_name(sizes, images, offsets, _rng) -> None:
    """dentry_name_cmp: ct starts as a copy of cs's first tcount bytes, with one byte changed at `diff` (if >= 0)."""
    tcount, diff = sizes
    cs, ct = offsets["cs"], offsets["ct"]
    images["ct"][ct : ct + tcount] = images["cs"][cs : cs + tcount]
    if diff >= 0:
        images["ct"][ct + diff] ^= 0x01


NAME_QUICK = Plan([(0,), (6,), (8,), (21,)], every_boundary_upto=0, sampled_boundaries=3)
NAME_FULL = Plan([(n,) for n in range(0, 300)] + [(n,) for n in range(300, 4200, 7)], every_boundary_upto=40, sampled_boundaries=3, all_policies_upto=120)


def _cmp_sizes(counts: Iterable[int]) -> list[tuple[int, int]]:
    out = []
    for t in counts:
        out += [(t, -1)] + [(t, d) for d in sorted({0, t // 2, t - 1}) if 0 <= d < t]
    return out


VMM_QUICK = Plan([(8,), (20,), (64,)], every_boundary_upto=0, sampled_boundaries=2)
VMM_FULL = Plan([(n,) for n in range(0, 97)] + [(n,) for n in range(97, TWO_PAGES + 1, 37)] + [(TWO_PAGES,)],
                every_boundary_upto=40, sampled_boundaries=2, all_policies_upto=96)

UACCESS_ENTRY = "UACCESS_ERR_ZERO (USER(): err/zero = wzr) on every user access"


def _single(sizes_list: Sequence[tuple[int, ...]], exhaustive: bool) -> Plan:
    return Plan(sizes_list, every_boundary_upto=64, exhaustive=exhaustive)


def _specs() -> list[RoutineSpec]:
    specs = [
        RoutineSpec(
            "load_unaligned_zeropad", "word_at_a_time.S", "load_unaligned_zeropad",
            (BufferSpec("addr"),), ("addr",),
            reach=lambda s, b: 8, args=lambda s, at: (at["addr"],), reference=ref.load_unaligned_zeropad,
            quick=_single([(8,)], False), full=_single([(8,)], True),
            extable="LOAD_UNALIGNED_ZEROPAD (data x0, addr x1)",
            contract="x0 = the 8 bytes at addr, those on the guest's page read as 0; oops if the first byte's word is the guest's",
            leak_window=3,
        ),
        RoutineSpec(
            "full_name_hash", "word_at_a_time.S", "full_name_hash",
            (BufferSpec("name"),), ("name",),
            reach=lambda s, b: s[0] + 8, args=lambda s, at: (SALT, at["name"], s[0]), reference=ref.full_name_hash,
            quick=NAME_QUICK, full=NAME_FULL,
            extable="LOAD_UNALIGNED_ZEROPAD on the word load",
            contract="fs/namei.c hash of name[0..len); over-read past len zero-padded; bytes past len never matter",
            leak_window=6,
        ),
        RoutineSpec(
            "hashlen_string", "word_at_a_time.S", "hashlen_string",
            (BufferSpec("name"),), ("name",),
            reach=lambda s, b: s[0] + 9, args=lambda s, at: (SALT, at["name"]), reference=ref.hashlen_string,
            quick=NAME_QUICK, full=NAME_FULL, prepare=_nul_at("name"),
            extable="LOAD_UNALIGNED_ZEROPAD on the word load",
            contract="(len << 32) | full_name_hash(name, len) of a NUL-terminated name; a guest page ends the name",
            leak_window=6,
        ),
        RoutineSpec(
            "dentry_name_cmp", "word_at_a_time.S", "dentry_name_cmp",
            (BufferSpec("cs", align=8), BufferSpec("ct")), ("ct", "cs"),
            reach=lambda s, b: s[0] + 8 if b == "ct" else max(8, -(-s[0] // 8) * 8),
            args=lambda s, at: (at["cs"], at["ct"], s[0]), reference=ref.dentry_name_cmp,
            quick=Plan(_cmp_sizes([0, 13]), sampled_boundaries=2, all_policies_upto=8),
            full=Plan(_cmp_sizes(list(range(0, 80)) + list(range(80, 1024, 29))), every_boundary_upto=24, sampled_boundaries=3, all_policies_upto=48),
            prepare=_same_name,
            extable="LOAD_UNALIGNED_ZEROPAD on ct's word load; none on cs (aligned, padded)",
            contract="0 if cs[0..tcount) == ct[0..tcount) else 1; ct over-read zero-padded",
            leak_window=6,
        ),
        RoutineSpec(
            "strscpy", "word_at_a_time.S", "strscpy",
            (BufferSpec("dst", fill=FILL_DST), BufferSpec("src")), ("src", "dst"),
            reach=lambda s, b: min(s[1], s[0] + 8), args=lambda s, at: (at["dst"], at["src"], s[1]), reference=ref.strscpy,
            quick=STRING_QUICK, full=STRING_FULL, prepare=_nul_at("src"),
            extable="LOAD_UNALIGNED_ZEROPAD on the word loads; none on the byte tail or on dst",
            contract="length, or -E2BIG (count 0 or no NUL in count: dst = count-1 bytes + NUL); word holding the NUL stored zero-padded",
        ),
        RoutineSpec(
            "__arch_copy_from_user", "uaccess.S", "__arch_copy_from_user",
            (BufferSpec("dst", fill=FILL_DST), BufferSpec("src", mapping="user")), ("src", "dst"),
            reach=_n, args=_dst_src_n, reference=ref.copy_from_user, quick=COPY_QUICK, full=COPY_FULL,
            extable=UACCESS_ENTRY + "; fixups 9997 (one-byte retry) / 9998",
            contract="x0 = bytes not copied; reported prefix copied; >= 1 copied if the first byte can be; nothing stored past the fault",
        ),
        RoutineSpec(
            "__arch_copy_to_user", "uaccess.S", "__arch_copy_to_user",
            (BufferSpec("dst", mapping="user", fill=FILL_DST), BufferSpec("src")), ("dst", "src"),
            reach=_n, args=_dst_src_n, reference=ref.copy_to_user, quick=COPY_QUICK, full=COPY_FULL,
            extable=UACCESS_ENTRY + "; fixups 9997 (one-byte retry) / 9998",
            contract="x0 = bytes not copied; reported prefix copied; unreported stores only before the fault",
        ),
        RoutineSpec(
            "__arch_clear_user", "uaccess.S", "__arch_clear_user",
            (BufferSpec("addr", mapping="user", fill=FILL_DST),), ("addr",),
            reach=_n, args=lambda s, at: (at["addr"], s[0]), reference=ref.clear_user, quick=COPY_QUICK, full=COPY_FULL,
            extable=UACCESS_ENTRY,
            contract="x0 = bytes not cleared; [0, n - x0) zero; never more reported than cleared",
        ),
    ]
    for size in (1, 2, 4, 8):
        specs.append(RoutineSpec(
            f"get_user_{size}", "uaccess.S", f"get_user_{size}",
            (BufferSpec("uaddr", mapping="user"),), ("uaddr",),
            reach=lambda s, b: s[0], args=lambda s, at: (at["uaddr"],), reference=ref.REFERENCES[f"get_user_{size}"],
            quick=_single([(size,)], False), full=_single([(size,)], True),
            extable="UACCESS_ERR_ZERO (err x0, zero x1)",
            contract="x0 = 0, x1 = value; or x0 = -EFAULT, x1 = 0",
        ))
    for size in (1, 2, 4, 8):
        specs.append(RoutineSpec(
            f"put_user_{size}", "uaccess.S", f"put_user_{size}",
            (BufferSpec("uaddr", mapping="user", fill=FILL_DST),), ("uaddr",),
            reach=lambda s, b: s[0], args=lambda s, at: (PUT_USER_VALUE, at["uaddr"]), reference=ref.REFERENCES[f"put_user_{size}"],
            quick=_single([(size,)], False), full=_single([(size,)], True),
            extable="UACCESS_ERR_ZERO (err x0)",
            contract="x0 = 0 and the value stored; or x0 = -EFAULT",
        ))
    specs += [
        RoutineSpec(
            "copy_from_kernel_nofault", "uaccess.S", "copy_from_kernel_nofault",
            (BufferSpec("dst", fill=FILL_DST), BufferSpec("src")), ("src", "dst"),
            reach=_n, args=_dst_src_n, reference=ref.copy_from_kernel_nofault, quick=COPY_QUICK, full=COPY_FULL,
            extable="KACCESS_ERR_ZERO (err x0, zero x4) on every source load",
            contract="0, or -EFAULT with the whole 8/4/2/1-byte chunks before the fault copied",
        ),
        RoutineSpec(
            "copy_to_kernel_nofault", "uaccess.S", "copy_to_kernel_nofault",
            (BufferSpec("dst", fill=FILL_DST), BufferSpec("src")), ("dst", "src"),
            reach=_n, args=_dst_src_n, reference=ref.copy_to_kernel_nofault, quick=COPY_QUICK, full=COPY_FULL,
            extable="KACCESS_ERR_ZERO (err x0) on every destination store",
            contract="0, or -EFAULT with the whole chunks before the fault copied",
        ),
        RoutineSpec(
            "strncpy_from_user", "uaccess.S", "strncpy_from_user",
            (BufferSpec("dst", fill=FILL_DST), BufferSpec("src", mapping="user")), ("src", "dst"),
            reach=lambda s, b: min(s[1], s[0] + 8), args=lambda s, at: (at["dst"], at["src"], s[1]), reference=ref.strncpy_from_user,
            quick=STRING_QUICK, full=STRING_FULL, prepare=_nul_at("src"),
            extable="UACCESS_ERR_ZERO (wzr/wzr) on the word load (-> byte loop) and the byte load (-> -EFAULT)",
            contract="length if NUL within count, else count; -EFAULT if a byte it needed faulted",
        ),
        RoutineSpec(
            "strnlen_user", "uaccess.S", "strnlen_user",
            (BufferSpec("src", mapping="user"),), ("src",),
            reach=lambda s, b: min(s[1], s[0] + 1) + 8, args=lambda s, at: (at["src"], s[1]), reference=ref.strnlen_user,
            quick=STRING_QUICK, full=STRING_FULL, prepare=_nul_at("src"),
            extable="UACCESS_ERR_ZERO (wzr/wzr) on the aligned word load (-> 0)",
            contract="strlen + 1 if NUL within count, count + 1 if not, 0 on a fault",
        ),
    ]
    for variant in ("lse", "llsc"):
        specs.append(RoutineSpec(
            f"futex_atomic_add_{variant}", "uaccess.S", f"futex_atomic_add_{variant}",
            (BufferSpec("uaddr", mapping="user", align=4),), ("uaddr",),
            reach=lambda s, b: 4, args=lambda s, at: (at["uaddr"], 3), reference=ref.futex_atomic_add,
            quick=_single([(4,)], False), full=_single([(4,)], True),
            extable="UACCESS_ERR_ZERO (err x0, zero x3) on " + ("ldaddal" if variant == "lse" else "ldxr and stlxr"),
            contract="x0 = 0, x1 = old and *uaddr += 3; or x0 = -EFAULT, x1 = 0",
        ))
    specs += [
        RoutineSpec(
            "gup_kernel_copy", "gup.S", "gup_kernel_copy",
            (BufferSpec("dst", fill=FILL_DST), BufferSpec("src", mapping="alias")), ("src", "dst"),
            reach=_n, args=_dst_src_n, reference=ref.gup_kernel_copy, quick=COPY_QUICK, full=COPY_FULL,
            extable="none (plain memcpy through a kernel alias)",
            contract="memcpy; returns dst; a guest page oopses under inject, is reclaimed under inject-reclaim",
        ),
        RoutineSpec(
            "vmm_main", "vmm.S", "vmm_main",
            (BufferSpec("guest", mapping="user"), BufferSpec("out", mapping="user", fill=FILL_DST)), ("guest",),
            reach=lambda s, b: s[0] + (16 if b == "out" else 0), args=lambda s, at: (at["guest"], s[0], at["out"]),
            reference=ref.vmm_main, quick=VMM_QUICK, full=VMM_FULL, el=0,
            extable="none (EL0): SIGSEGV handler + the vmm_fixups table",
            contract="x0 = bytes read, x1 = faults; faulting accesses skipped; record (count, last si_addr) at out - 16",
        ),
        RoutineSpec(
            "vmm_write", "vmm.S", "vmm_write",
            (BufferSpec("guest", mapping="user"), BufferSpec("rec", mapping="user", fill=FILL_DST)), ("guest",),
            reach=lambda s, b: s[0] if b == "guest" else 16, args=lambda s, at: (at["guest"], s[0], at["rec"]),
            reference=ref.vmm_write, quick=VMM_QUICK, full=VMM_FULL, el=0,
            extable="none (EL0): SIGSEGV handler + the vmm_fixups table",
            contract="x0 = bytes written, x1 = faults; faulting stores skipped; record at rec",
        ),
    ]
    return specs


ROUTINES: dict[str, RoutineSpec] = {s.name: s for s in _specs()}
