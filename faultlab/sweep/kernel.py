"""Boundary sweeps over real kernel routines, judged by the reference contracts of our own routines.

The sweep engine of faultlab/sweep/ does the work: the same cases (sizes,
which buffer holds the guest page, where the page boundary falls, the other
buffers' alignment, the policy), the same memory layout and judge. What
changes is the bench: `KernelBench` gives each policy a `Lab.with_vmlinux` (a booted
vmlinux), so `run_case` calls the kernel's own symbol and the kernel's own
`__ex_table` decides the fixups.

The contract of a routine is the reference model in faultlab/reference/,
with one exception per documented way a real kernel is looser than our
model (`kimage.profiles.Looseness`, listed per kernel in its profile; how
each widens the reference is `WIDEN` here); each says what the kernel does and why, and is pinned
by a test (tests/test_vmlinux_routines.py), so it can never hide a
different deviation:
- `__arch_copy_to_user` (both kernels) counts its progress per 16-byte
  block (a user_stp is two sttr and dst advances after both): it reports
  up to 15 bytes fewer copied than it stored (our routine: at most 7);
- 6.1 `copy_from_kernel_nofault` stores the zero that the KACCESS_ERR_ZERO
  fixup put in the data register: the faulting chunk of dst is zeroed
  (6.1's `__get_kernel_nofault` stores before it checks the error; 7.x
  jumps to its error label with asm goto and stores nothing);
- 7.x `sized_strscpy` writes the final NUL at dst[count - 1] before it
  reads src[count - 1], so a fatal fault on that byte leaves it written.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from kimage.elf import Vmlinux
from host.kernel import KernelConfig
from kimage.profiles import HostFeatures, Looseness, profile_for, profile_for_version
from hyp.policies import known as known_policies

from faultlab import reference as ref
from faultlab import sweep
from faultlab.lab import Lab
from faultlab.sweep import (
    ROUTINES,
    Bench,
    Case,
    Plan,
    RoutineSpec,
    SweepError,
    SweepSummary,
    cases,
)

from abi.arch import PAGE_SIZE
KACCESS_CHUNKS = (8, 4, 2, 1)  # mm/maccess.c copy_from_kernel_nofault_loop: 8-byte steps, then 4, 2, 1


# =========================================================================== the kernel's looser spots


def _with_alt(exp: ref.Expected, window: str, at: int, data: bytes) -> ref.Expected:
    """exp, also accepting `data` at VA `at` of `window` (the exact image is unchanged)."""
    inner = exp.images

    def images(regs: Mapping[str, int]) -> dict[str, tuple[bytes, bytes]]:
        out = dict(inner(regs))
        want, alt = out[window]
        widened = bytearray(alt)
        widened[at : at + len(data)] = data
        out[window] = (want, bytes(widened))
        return out

    return dataclasses.replace(exp, images=images)


def _guest_range(case: ref.RefCase, window: str) -> tuple[int, int] | None:
    w = case.windows.get(window)
    return None if w is None else w.guest


def _nofault_zeroes_faulting_chunk(case: ref.RefCase, exp: ref.Expected) -> ref.Expected:
    """6.1: the chunk whose load faulted is stored as zero in dst before -EFAULT is returned."""
    dst, src, n = case.args
    guest = _guest_range(case, "src")
    if exp.outcome != ref.RETURNED or exp.regs.get("x0") != ref.neg(ref.EFAULT) or guest is None:
        return exp  # only a fixed-up fault stores the zeroed register
    pos = 0
    for size in KACCESS_CHUNKS:
        while n - pos >= size:
            if src + pos < guest[1] and guest[0] < src + pos + size:
                w = case.windows["dst"]
                return _with_alt(exp, "dst", dst + pos - w.va, bytes(size))
            pos += size
            if size != 8:
                break
    return exp


def _strscpy_nul_before_last_read(case: ref.RefCase, exp: ref.Expected) -> ref.Expected:
    """7.x: dst[count - 1] = 0 is stored before src[count - 1] is read (the last byte of the byte path)."""
    dst, src, count = case.args
    guest = _guest_range(case, "src")
    if exp.outcome == ref.RETURNED or guest is None or count == 0:
        return exp
    if max(src, guest[0]) != src + count - 1 or not guest[0] <= src + count - 1 < guest[1]:
        return exp
    w = case.windows["dst"]
    return _with_alt(exp, "dst", dst + count - 1 - w.va, b"\0")


COPY_TO_USER_BLOCK = 16


def _copy_to_user_block_progress(case: ref.RefCase, exp: ref.Expected) -> ref.Expected:
    """Progress is counted per 16-byte block: up to 15 bytes before the fault may go unreported.

    arch/arm64/lib/copy_to_user.S stores a block with a user_stp (two sttr,
    one extable entry each) and advances dst after both; the 9997 fixup
    reports `dst - dstin`, so a fault in a block reports none of it (and the
    one-byte retry happens only when nothing at all was reported).
    """
    if exp.ret_check is None:
        return exp
    to, _frm, n = case.args
    guest = _guest_range(case, "dst")
    if guest is None:
        return exp
    off = max(to, guest[0]) - to
    low = max(0, off - (COPY_TO_USER_BLOCK - 1))
    if off >= 1:
        low = max(low, 1)

    return dataclasses.replace(exp, ret_check=ref.progress_check(n, low, off, "copied", ", 16-byte blocks"))


# How each documented looseness (which kernels have it is their profile's data) widens the reference.
WIDEN: dict[Looseness, Callable[[ref.RefCase, ref.Expected], ref.Expected]] = {
    Looseness.COPY_TO_USER_BLOCK_PROGRESS: _copy_to_user_block_progress,
    Looseness.NOFAULT_STORES_ZEROED_CHUNK: _nofault_zeroes_faulting_chunk,
    Looseness.STRSCPY_NUL_BEFORE_LAST_READ: _strscpy_nul_before_last_read,
}


# =========================================================================== routines and plans


def _copy_lengths(n: int) -> list[tuple[int, ...]]:
    return [(n,)]


def _string_lengths(n: int) -> list[tuple[int, ...]]:
    """strscpy (L, count): the string of length L with count around it, and a roomy count."""
    return [(n, c) for c in sorted({0, 1, max(n - 1, 0), n, n + 1, n + 8})]


def _copy_full() -> Plan:
    sizes = [(n,) for n in range(0, 257)] + [(n,) for n in range(257, 2 * PAGE_SIZE + 1, 29)] + [(4 * PAGE_SIZE + 5,)]
    return Plan(sizes, every_boundary_upto=40, sampled_boundaries=3, all_policies_upto=96)


def _name_full() -> Plan:
    sizes = [(n,) for n in range(0, 200)] + [(n,) for n in range(200, 4200, 13)]
    return Plan(sizes, every_boundary_upto=40, sampled_boundaries=3, all_policies_upto=96)


def _string_full() -> Plan:
    lengths = list(range(0, 80)) + list(range(80, 2 * PAGE_SIZE + 1, 97))
    return Plan([s for n in lengths for s in _string_lengths(n)], every_boundary_upto=16, sampled_boundaries=2, all_policies_upto=40)


@dataclass(frozen=True)
class KernelRoutine:
    """A routine both the kernels and guest_asm have: its symbols in a vmlinux and its sweep plans."""

    name: str  # as in faultlab/sweep/ ROUTINES and faultlab/reference/ REFERENCES
    symbols: tuple[str, ...]  # candidates, the first one the vmlinux has wins
    lengths: Callable[[int], list[tuple[int, ...]]]
    full: Callable[[], Plan]

    def symbol_in(self, vm: Vmlinux) -> str:
        for name in self.symbols:
            if name in vm.symbols:
                return name
        raise SweepError(f"Linux {vm.version} has none of {', '.join(self.symbols)}")


KERNEL_ROUTINES: dict[str, KernelRoutine] = {
    r.name: r
    for r in (
        KernelRoutine("__arch_copy_from_user", ("__arch_copy_from_user",), _copy_lengths, _copy_full),
        KernelRoutine("__arch_copy_to_user", ("__arch_copy_to_user",), _copy_lengths, _copy_full),
        KernelRoutine("__arch_clear_user", ("__arch_clear_user",), _copy_lengths, _copy_full),
        KernelRoutine("copy_from_kernel_nofault", ("copy_from_kernel_nofault",), _copy_lengths, _copy_full),
        KernelRoutine("full_name_hash", ("full_name_hash",), _copy_lengths, _name_full),
        KernelRoutine("hashlen_string", ("hashlen_string",), _copy_lengths, _name_full),
        # lib/string.c: strscpy became sized_strscpy (the 2-argument strscpy macro) in v6.9.
        KernelRoutine("strscpy", ("strscpy", "sized_strscpy"), _string_lengths, _string_full),
    )
}


def kernel_routine(name: str) -> KernelRoutine:
    """By our name or by a kernel symbol (sized_strscpy -> strscpy)."""
    if name in KERNEL_ROUTINES:
        return KERNEL_ROUTINES[name]
    for r in KERNEL_ROUTINES.values():
        if name in r.symbols:
            return r
    raise SweepError(f"no sweep for {name!r} (supported: {', '.join(KERNEL_ROUTINES)})")


def looseness(vm: Vmlinux, name: str) -> tuple[Looseness, ...]:
    """The documented looseness of `name` in this kernel, from its profile."""
    return profile_for_version(vm.version).loose(name)


def lengths_plan(routine: KernelRoutine, lengths: Iterable[int]) -> Plan:
    """Every boundary position under every policy for each length (sampled above 64 bytes of reach)."""
    sizes = [s for n in lengths for s in routine.lengths(n)]
    return Plan(sizes, every_boundary_upto=64, sampled_boundaries=4, all_policies_upto=None)


def kernel_spec(vm: Vmlinux, name: str, plan: Plan | None = None) -> RoutineSpec:
    """Our routine's spec, pointed at the kernel's symbol, with the kernel's documented looseness.

    `plan` replaces the full plan (the CLI's --lengths); the quick plan stays ours.
    """
    routine = kernel_routine(name)
    base = ROUTINES[routine.name]
    widen = looseness(vm, routine.name)
    reference = base.reference
    if widen:

        def reference(case: ref.RefCase, _model=base.reference, _widen=widen) -> ref.Expected:
            exp = _model(case)
            for x in _widen:
                exp = WIDEN[x](case, exp)
            return exp

    return dataclasses.replace(
        base,
        symbol=routine.symbol_in(vm),
        reference=reference,
        full=plan if plan is not None else routine.full(),
        file=str(vm.path),
    )


# =========================================================================== running


class KernelBench(Bench):
    """A sweep bench whose labs are booted copies of one vmlinux (one per policy).

    One bench may serve several routines (their buffers are kept apart by
    name), but each routine with one plan: buffers are sized for the first
    spec's reach.
    """

    def __init__(self, vmlinux: Vmlinux, *, secret_seed: int = 0, host: HostFeatures | None = None, fault_path: str = "model") -> None:
        # host: other fault-path features than the kernel's own profile (a what-if: "this kernel's
        # routines on another kernel's fault path"); the reference models follow the same host.
        # fault_path: who handles an injected abort, the Python model ("model") or the image's own
        # do_mem_abort ("real"); a real boot costs ~0.5 s (alternatives), so labs are kept per policy.
        super().__init__(secret_seed=secret_seed, host=host)
        self.vmlinux = vmlinux
        self.fault_path = fault_path

    def _make_lab(self, policy: str) -> Lab:
        """A booted copy of the vmlinux for `policy` (Bench.lab snapshots it and goes back to it)."""
        config = None
        if self.host is not None:
            pol = known_policies()[policy]
            profile = dataclasses.replace(profile_for(self.vmlinux), host=self.host)
            config = KernelConfig(profile=profile, pkvm_initialised=pol.pkvm_initialised)
        return Lab.with_vmlinux(self.vmlinux, policy, config, host=self.fault_path)


ProgressFn = Callable[[int, int], None]


def plan_cases(spec: RoutineSpec, full: bool, policies: Sequence[str], limit: int | None = None) -> list[Case]:
    sweep.check_policies(policies)
    todo = list(cases(spec, full, list(policies)))
    return todo if limit is None else todo[:limit]


def run_cases(spec: RoutineSpec, todo: Sequence[Case], bench: Bench, progress: ProgressFn | None = None) -> SweepSummary:
    """The guest_asm sweep's case loop, timed."""
    started = time.monotonic()
    summary = sweep.run_cases(spec, todo, bench, progress)
    summary.seconds = time.monotonic() - started
    return summary


def _worker(job: tuple[str, str, Plan | None, str, list[Case]]) -> SweepSummary:
    path, name, plan, fault_path, todo = job
    vm = Vmlinux.open(path)
    spec = kernel_spec(vm, name, plan)
    return run_cases(spec, todo, KernelBench(vm, fault_path=fault_path))


def sweep_kernel(
    vm: Vmlinux,
    name: str,
    policies: Sequence[str] | None = None,
    *,
    full: bool = False,
    plan: Plan | None = None,
    limit: int | None = None,
    jobs: int = 1,
    progress: ProgressFn | None = None,
    bench: KernelBench | None = None,
    fault_path: str = "model",
    shard: sweep.Shard | None = None,
) -> SweepSummary:
    """Sweep one kernel routine: the quick plan, the full one, or `plan` (e.g. from --lengths).

    `fault_path="real"`: injected aborts go to the image's own do_mem_abort (`--host real`).
    `shard` K/N: only those planned cases (faultlab/sweep/shard.py).
    """
    spec = kernel_spec(vm, name, plan)
    names = list(known_policies()) if policies is None else list(policies)
    planned = plan_cases(spec, full or plan is not None, names, limit)
    todo, ids = sweep.shard_cases(planned, shard)
    started = time.monotonic()
    if jobs > 1 and len(todo) > 1:
        summary = sweep.run_parallel(spec.name, todo, jobs, progress, _worker, (str(vm.path), spec.name, plan, fault_path))
    else:
        summary = run_cases(spec, todo, bench or KernelBench(vm, fault_path=fault_path), progress)
    summary.seconds = time.monotonic() - started
    return sweep.with_shard(summary, shard, ids, len(planned))


# =========================================================================== JSON


def summary_record(summary: SweepSummary, vm: Vmlinux, spec: RoutineSpec, policies: Sequence[str]) -> dict:
    """`faultlab sweep --json`'s summary object (`SweepSummary.as_json`), plus which kernel and symbol ran."""
    record = summary.as_json()
    record.update(
        symbol=spec.symbol,
        vmlinux=str(vm.path),
        release=vm.version.release,
        policies=list(policies),
        looseness=[x.what for x in looseness(vm, summary.routine)],
    )
    return record
