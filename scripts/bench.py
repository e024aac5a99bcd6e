#!/usr/bin/env python3
"""Benchmarks, measured in one run on this machine (never asserted in tests).

1. Fault-free throughput: a kernel-style copy/checksum loop under bare Unicorn
   (flat memory, MMU off) and under emu.Machine (software MMU through the TLB
   fill hook, stage-2 callback, instruction budget). Reported as M instructions/s
   and the ratio bare / Machine.
2. Stage-2 abort round trip: the code touches N pages whose frames are revoked
   at stage 2; an EL2 handler grants each frame and the access retries. The
   per-abort cost is (time with revoked frames - time with granted frames) / N.
3. End to end: one built-in-style scenario (zeropad over-read) under
   inject-reclaim, from Lab creation to verdict.

4. Snapshot/restore (issue 12): small-scenario runs/s with a fresh lab per run vs
   a lab set up once and restored per run (faultlab/snapshot.py); guest_asm sweep
   cases/s; real-kernel sweep cases/s with the model and the real host (booted
   once per policy, boot cost shown apart); the lazy-idmap first touch and the
   protected-abort round trip (abort -> EL2 -> inject -> vector -> fixup -> eret);
   memory growth per 100k restored runs; the invariant checks' cost when the lab
   has that option.

Usage: python scripts/bench.py [--quick]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keystone import KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN, Ks  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_HOOK_TLB_FILL, UC_MODE_ARM, Uc, UcError  # noqa: E402
from unicorn import arm64_const as A  # noqa: E402
from unicorn.unicorn_const import UC_TLB_VIRTUAL  # noqa: E402

from guest_asm import source_path  # noqa: E402
from emu.machine import Machine  # noqa: E402
from emu.outcome import Outcome  # noqa: E402

LOOP = """
    mov x9, #0
1:  ldr x3, [x0, x9]
    add x4, x4, x3
    str x4, [x1, x9]
    add x9, x9, #8
    and x9, x9, #0xff8
    subs x2, x2, #1
    b.ne 1b
    mov x0, x4
    ret
"""
INSNS_PER_ITER = 7
ABORT_VA = 0xFFFF_0000_0100_0000
# The same relative layout as the bare run (code, +0x4000, +0x8000), so both see the same
# TLB index pattern: Unicorn's TLB is direct-mapped, and colliding pages would cost the
# Machine a victim-TLB lookup the bare run does not pay.
CODE_VA = 0xFFFF_8000_0801_0000
SRC_VA = CODE_VA + 0x4000
DST_VA = CODE_VA + 0x8000


def assemble(text: str, addr: int) -> bytes:
    # keystone has no numeric local labels: name the loop label for it.
    text = text.replace("1:", "loop:").replace("1b", "loop")
    return bytes(Ks(KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN).asm(text, addr)[0])


def best_of(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def bench_bare(iters: int, count: bool) -> float:
    """The same loop in bare Unicorn: flat memory, MMU off; stops at a brk like the Machine's sentinel."""
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
    base = 0x10000
    code = assemble(LOOP.replace("ret", "brk #0"), base)
    uc.mem_map(base, 0x10000)
    uc.mem_write(base, code)
    uc.hook_add(UC_HOOK_INTR, lambda uc, intno, data: uc.emu_stop())

    def once() -> float:
        uc.reg_write(A.UC_ARM64_REG_X0, base + 0x4000)
        uc.reg_write(A.UC_ARM64_REG_X1, base + 0x8000)
        uc.reg_write(A.UC_ARM64_REG_X2, iters)
        t = time.perf_counter()
        uc.emu_start(base, 0xFFFF_0000, count=10 * iters * INSNS_PER_ITER if count else 0)
        dt = time.perf_counter() - t
        assert uc.reg_read(A.UC_ARM64_REG_X2) == 0
        return dt

    return best_of(once, 3)


def bench_engine_floor(n: int) -> float:
    """What any abort that leaves emu_start costs before Python does anything: bare Unicorn in
    virtual-TLB mode, a fill hook that refuses one page, and a restart past the faulting load.
    The protected-abort round trip pays this once (the refused fill) on top of its Python work."""
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
    uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
    base, refused = 0x10000, 0x20000
    uc.mem_map(base, 0x10000)
    uc.mem_write(base, assemble("ldr x3, [x0]\nb .-4", base))

    def fill(uc, addr, typ, entry, _user) -> bool:
        if addr == refused:
            return False
        entry.paddr, entry.perms = addr, 7
        return True

    uc.hook_add(UC_HOOK_TLB_FILL, fill)
    uc.reg_write(A.UC_ARM64_REG_X0, refused)

    def once() -> float:
        t = time.perf_counter()
        for _ in range(n):
            try:
                uc.emu_start(base, 0xFFFF_0000, count=1000)
            except UcError:
                pass
        return (time.perf_counter() - t) / n

    return best_of(once, 3)


def bench_machine(iters: int, *, unchunked: bool = False) -> float:
    """`unchunked`: one emu_start per stretch, as before the deadline was checked inside stretches."""
    import emu.machine as machine_module

    saved = machine_module.STRETCH_CHUNK
    if unchunked:
        machine_module.STRETCH_CHUNK = 1 << 62
    try:
        return _bench_machine(iters)
    finally:
        machine_module.STRETCH_CHUNK = saved


def _bench_machine(iters: int) -> float:
    m = Machine(phys_size=8 << 20)
    m.load(CODE_VA, assemble(LOOP, CODE_VA), "rx")
    m.map_new(SRC_VA, 1, "rw")
    m.map_new(DST_VA, 1, "rw")
    m.stage2 = lambda pfn, access: True  # every frame mapped at stage 2: no aborts

    def once() -> float:
        t = time.perf_counter()
        r = m.call(CODE_VA, SRC_VA, DST_VA, iters, budget=10 * iters * INSNS_PER_ITER)
        dt = time.perf_counter() - t
        assert r.returned, r.outcome
        return dt

    return best_of(once, 3)


class GrantingEl2:
    def __init__(self, revoked: set[int], machine: Machine) -> None:
        self.revoked = revoked
        self.machine = machine
        self.aborts = 0

    def handle_abort(self, machine, abort) -> Outcome | None:
        self.aborts += 1
        self.revoked.discard(abort.ipa >> 12)
        return None  # granting needs no TLB flush: Unicorn never caches a refused fill

    def handle_hvc(self, machine, imm):
        return None


def bench_abort(pages: int) -> tuple[float, int]:
    text = "1: ldr x3, [x0]\n add x0, x0, #4096\n subs x1, x1, #1\n b.ne 1b\n ret"

    def run(revoke: bool) -> tuple[float, int]:
        m = Machine(phys_size=(pages + 64) * 4096 * 2)
        m.load(CODE_VA, assemble(text, CODE_VA), "rx")
        pfns = m.map_new(ABORT_VA, pages, "rw")
        revoked = set(pfns) if revoke else set()
        m.stage2 = lambda pfn, access: pfn not in revoked
        el2 = GrantingEl2(revoked, m)
        m.el2 = el2
        t = time.perf_counter()
        r = m.call(CODE_VA, ABORT_VA, pages, max_events=pages + 10)
        dt = time.perf_counter() - t
        assert r.returned, r.outcome
        return dt, el2.aborts

    with_aborts = min((run(True) for _ in range(3)), key=lambda x: x[0])
    without = min(run(False)[0] for _ in range(3))
    return (with_aborts[0] - without) / with_aborts[1], with_aborts[1]


def bench_scenario_runs(repeat: int) -> tuple[float, float]:
    """Seconds per built-in zeropad run with assembly memoised (today's fresh setup), and with it redone every run.

    Both use the runner's fresh setup (new machine, Hyp, host per run); the
    uncached figure clears Lab's shared AsmCache before each run, which is the
    path before the cache existed.
    """
    from faultlab.lab import SHARED_ASM_CACHE
    from faultlab.runner import run
    from faultlab.scenario import load

    sc = load(Path(__file__).resolve().parent.parent / "faultlab" / "builtin" / "a_zeropad_overread.toml")

    def runs(clear: bool) -> float:
        SHARED_ASM_CACHE.clear()
        assert run(sc, "inject-reclaim").passed  # warm: imports, first assembly
        t = time.perf_counter()
        for _ in range(repeat):
            if clear:
                SHARED_ASM_CACHE.clear()
            assert run(sc, "inject-reclaim").passed
        return (time.perf_counter() - t) / repeat

    cached = min(runs(False) for _ in range(3))
    uncached = min(runs(True) for _ in range(3))
    return cached, uncached


def bench_hyp_creation() -> tuple[float, float, int]:
    """Seconds to create a Hyp on a 64 MiB machine, and what a dense per-frame table (the old layout) would cost."""
    from hyp.page_state import FrameRecord
    from hyp.pkvm import Hyp

    m = Machine(phys_size=64 << 20)
    first, nr = m.phys.first_pfn, m.phys.nr_frames

    def hyp() -> float:
        t = time.perf_counter()
        Hyp(m)
        return time.perf_counter() - t

    def dense() -> float:
        t = time.perf_counter()
        _ = {pfn: FrameRecord() for pfn in range(first, first + nr)}
        return time.perf_counter() - t

    return min(hyp() for _ in range(20)), min(dense() for _ in range(5)), nr


def bench_assembler() -> float:
    """Assemble a 300-line kernel-style file (local labels, LSE, branches) with kasm."""
    from kasm import assemble as kernel_assemble

    lines = [".text", "SYM_FUNC_START(big)"]
    for i in range(300):
        if i % 10 == 0:
            lines.append("1:")
        lines.append([f"add x{i % 29}, x{(i + 1) % 29}, #{i}", f"ldr x{i % 29}, [x{(i + 3) % 29}, #{8 * (i % 64)}]",
                      "b.ne 1b", f"ldaddal x{i % 29}, x1, [x2]", "cbz x3, 1f"][i % 5])
    lines += ["1: ret", "SYM_FUNC_END(big)"]
    text = "\n".join(lines) + "\n"

    def once() -> float:
        t = time.perf_counter()
        kernel_assemble(text, 0x10000)
        return time.perf_counter() - t

    return best_of(once, 3)


ZEROPAD = Path(__file__).resolve().parent.parent / "faultlab" / "builtin" / "a_zeropad_overread.toml"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / (1 << 20)


def bench_fresh_vs_restored(repeat: int) -> tuple[float, float, float]:
    """Seconds per built-in zeropad run: fresh setup each run, and a pooled lab restored each run; all built-ins mixed, restored."""
    from faultlab.runner import run
    from faultlab.scenario import load
    from faultlab.snapshot import LabPool
    from hyp.policies import known

    sc = load(ZEROPAD)
    pool = LabPool()
    assert run(sc, "inject-reclaim").passed and run(sc, "inject-reclaim", labs=pool).passed  # warm

    def timed(labs) -> float:
        t = time.perf_counter()
        for _ in range(repeat):
            run(sc, "inject-reclaim", labs=labs)
        return (time.perf_counter() - t) / repeat

    fresh = min(timed(None) for _ in range(3))
    restored = min(timed(pool) for _ in range(3))
    scenarios = [load(p) for p in sorted(ZEROPAD.parent.glob("*.toml"))]
    pairs = [(s, p) for s in scenarios for p in sorted(known())]
    mixed_pool = LabPool(max_labs=len(pairs))
    for s, p in pairs:
        run(s, p, labs=mixed_pool)
    t = time.perf_counter()
    rounds = max(1, repeat // len(pairs))
    for _ in range(rounds):
        for s, p in pairs:
            run(s, p, labs=mixed_pool)
    mixed = (time.perf_counter() - t) / (rounds * len(pairs))
    return fresh, restored, mixed


def bench_memory(runs: int) -> tuple[float, int]:
    """RSS growth (MiB) per 100k restored zeropad runs after a warm-up, and the change in live objects: neither may grow per run."""
    import gc

    from faultlab.runner import run
    from faultlab.scenario import load
    from faultlab.snapshot import LabPool

    sc = load(ZEROPAD)
    pool = LabPool()
    for _ in range(3000):
        run(sc, "inject-reclaim", labs=pool)
    gc.collect()
    before, objects = rss_mib(), len(gc.get_objects())
    for _ in range(runs):
        run(sc, "inject-reclaim", labs=pool)
    gc.collect()
    return (rss_mib() - before) / runs * 100_000, len(gc.get_objects()) - objects


def bench_sweep_cases(n: int) -> float:
    """Seconds per guest_asm sweep case (__arch_copy_from_user, quick plan, all policies), the bench's labs already built."""
    from faultlab.sweep import ROUTINES, Bench, cases, run_cases
    from hyp.policies import known

    spec = ROUTINES["__arch_copy_from_user"]
    todo = list(cases(spec, True, sorted(known())))[:n]
    bench = Bench()
    run_cases(spec, todo[:50], bench)  # labs, buffers, first donations
    t = time.perf_counter()
    summary = run_cases(spec, todo, bench)
    assert not summary.failures, summary.failures[:1]
    return (time.perf_counter() - t) / len(todo)


def bench_kernel_cases(host: str, n: int) -> tuple[float, float] | None:
    """(seconds per case, seconds per boot) for Linux 6.1's __arch_copy_from_user under every policy; None without the kernel."""
    from faultlab.kernel.fetch import find_cached
    from faultlab.sweep.kernel import KernelBench, kernel_spec, plan_cases
    from faultlab.sweep import run_cases
    from hyp.policies import known
    from kimage.elf import Vmlinux

    path = find_cached("bookworm")
    if path is None:
        return None
    vm = Vmlinux.open(path)
    spec = kernel_spec(vm, "__arch_copy_from_user")
    todo = plan_cases(spec, True, sorted(known()), limit=n)
    bench = KernelBench(vm, fault_path=host)
    t = time.perf_counter()
    run_cases(spec, todo[:40], bench)  # one boot per policy
    boots = time.perf_counter() - t
    t = time.perf_counter()
    summary = run_cases(spec, todo, bench)
    assert not summary.failures, summary.failures[:1]
    return (time.perf_counter() - t) / len(todo), boots / max(bench.boots, 1)


TOUCH = source_path("fault_paths")  # touch_pages, touch_again (and spin_touch, for the tests)


def bench_fault_paths(n: int, *, fast: bool = True) -> tuple[float, float, float, int]:
    """Per-event seconds: a lazy stage-2 idmap abort, a first touch of a page as pKVM maps memory
    (2 MiB blocks where the table allows: most first touches take no abort at all), and a
    protected-abort round trip (inject + fixup); and how many idmap aborts the block run took.

    Each is (time with the event - the same run without it) / events, on a lab restored before every run.
    The idmap abort is measured with the pages' 2 MiB regions already holding tables (as after any
    page-level change there), so that every first touch is one abort.
    `fast=False` turns the machine's fast fault path off (every fault and exit through the engine).
    """
    from faultlab.lab import Lab

    lab = Lab("inject")
    lab.machine.fast_fault_path = fast
    lab.load_asm(TOUCH)
    region = lab.alloc("pages", n)
    guest = lab.alloc("guest", 1)
    snap = lab.snapshot()
    idmaps = [0]

    def timed(fn, *args, premap: bool = False, donate: bool = False, split: bool = False) -> float:
        best = float("inf")
        for _ in range(5):
            lab.restore(snap)
            if split:
                for pfn in region.pfns + guest.pfns:
                    lab.hyp.stage2.split(pfn)
            if premap:
                for pfn in region.pfns + guest.pfns:
                    lab.hyp.stage2.idmap(pfn)
                lab.machine.flush_tlb()
            if donate:
                lab.donate(guest.pfns[0])
            t = time.perf_counter()
            r = lab.call(fn, *args, max_events=4 * n + 100)
            best = min(best, time.perf_counter() - t)
            assert r.returned, r.outcome
            idmaps[0] = len(r.events_of("idmap"))
        return best

    idmap = (timed("touch_pages", region.va, n, split=True) - timed("touch_pages", region.va, n, premap=True, split=True)) / n
    fresh = timed("touch_pages", region.va, n)
    block_idmaps = idmaps[0]  # the idmap aborts of that run
    first_touch = (fresh - timed("touch_pages", region.va, n, premap=True)) / n
    inject = (timed("touch_again", guest.va, n, donate=True, premap=True) - timed("touch_again", guest.va, n, premap=True)) / n
    return idmap, first_touch, inject, block_idmaps


COPY = """
.text
SYM_FUNC_START(copy_words)      // x0 = dst, x1 = src, x2 = bytes (a multiple of 8)
1:  ldr x3, [x1], #8
    str x3, [x0], #8
    subs x2, x2, #8
    b.gt 1b
    ret
SYM_FUNC_END(copy_words)
"""


def bench_growth(sizes: tuple[int, ...], faults: tuple[int, ...]) -> tuple[list[tuple[int, float, int]], list[tuple[int, float]]]:
    """How a restored run's cost grows: with the bytes a routine copies (each new page is a lazy idmap
    for src and dst), and with the number of protected aborts it takes (inject + fixup each)."""
    from faultlab.lab import Lab

    by_size = []
    for size in sizes:
        lab = Lab("inject", phys_size=max(64 << 20, 4 * size + (8 << 20)))
        lab.load_asm("copy.S", text=COPY)
        pages = -(-size // PAGE_SIZE_BENCH)
        src, dst = lab.alloc("src", pages), lab.alloc("dst", pages)
        snap = lab.snapshot()
        best, events = float("inf"), 0
        for _ in range(5):
            lab.restore(snap)
            t = time.perf_counter()
            r = lab.call("copy_words", dst.va, src.va, size, max_events=4 * pages + 100)
            best = min(best, time.perf_counter() - t)
            assert r.returned, r.outcome
            events = len(r.events)
        by_size.append((size, best, events))
    lab = Lab("inject")
    lab.load_asm(TOUCH)
    guest = lab.alloc("guest", 1)
    lab.hyp.stage2.idmap(guest.pfns[0])
    lab.donate(guest.pfns[0])
    snap = lab.snapshot()
    by_faults = []
    for k in faults:
        best = float("inf")
        for _ in range(3):
            lab.restore(snap)
            t = time.perf_counter()
            r = lab.call("touch_again", guest.va, k, max_events=20 * k + 100)
            best = min(best, time.perf_counter() - t)
            assert r.returned, r.outcome
        by_faults.append((k, best))
    return by_size, by_faults


PAGE_SIZE_BENCH = 4096


def bench_invariants(repeat: int) -> tuple[str, float, float] | None:
    """If the lab has an invariant-check option (issue 13), seconds per restored zeropad run with it on and off."""
    import dataclasses
    import functools

    import faultlab.runner as runner
    from faultlab.lab import Lab
    from faultlab.scenario import load
    from faultlab.snapshot import LabPool

    option = next((f.name for f in dataclasses.fields(Lab) if "invariant" in f.name), None)
    if option is None:
        return None
    sc = load(ZEROPAD)
    out = []
    for on in (True, False):
        runner.Lab = functools.partial(Lab, **{option: on})  # what the runner's setup builds
        try:
            pool = LabPool()
            runner.run(sc, "inject-reclaim", labs=pool)
            t = time.perf_counter()
            for _ in range(repeat):
                runner.run(sc, "inject-reclaim", labs=pool)
            out.append((time.perf_counter() - t) / repeat)
        finally:
            runner.Lab = Lab
    return option, out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes (seconds instead of tens of seconds)")
    args = ap.parse_args()
    quick = args.quick
    iters = 200_000 if quick else 2_000_000
    pages = 200 if quick else 1000
    insns = iters * INSNS_PER_ITER
    bare = bench_bare(iters, count=False)
    bare_count = bench_bare(iters, count=True)
    machine = bench_machine(iters)
    machine_unchunked = bench_machine(iters, unchunked=True)
    per_abort, n_aborts = bench_abort(pages)
    asm = bench_assembler()
    run_cached, run_uncached = bench_scenario_runs(50 if quick else 200)
    hyp_new, dense_frames, nr_frames = bench_hyp_creation()
    fresh, restored, mixed = bench_fresh_vs_restored(300 if quick else 2000)
    sweep_case = bench_sweep_cases(300 if quick else 2000)
    kernel = {host: bench_kernel_cases(host, 300 if quick else 1500) for host in ("model", "real")}
    touches = 100 if quick else 500
    idmap, first_touch, inject, block_idmaps = bench_fault_paths(touches)
    idmap_engine, _, inject_engine, _ = bench_fault_paths(touches, fast=False)
    floor = bench_engine_floor(2_000 if quick else 20_000)
    memory = bench_memory(5_000 if quick else 30_000)
    invariants = bench_invariants(300 if quick else 2000)
    by_size, by_faults = bench_growth((256, 4096, 65536, 1 << 20), (1, 10, 100, 1000))

    t = Table(title=f"pkvm-faultlab benchmarks ({platform.machine()}, {platform.python_implementation()} {platform.python_version()})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("note")
    t.add_row("small scenario, restored lab", f"{1 / restored:.0f} runs/s", f"built-in zeropad under inject-reclaim, oracle included: {restored * 1e6:.0f} us a run; target >= 2,000/s")
    t.add_row("  same, fresh lab per run", f"{1 / fresh:.0f} runs/s", f"{fresh * 1e6:.0f} us a run; restored is {fresh / restored:.1f}x faster")
    t.add_row("  every built-in x every policy, restored", f"{1 / mixed:.0f} runs/s", f"{mixed * 1e6:.0f} us a run (mean)")
    t.add_row("guest_asm sweep case", f"{1 / sweep_case:.0f} cases/s", f"__arch_copy_from_user, full plan, every policy: {sweep_case * 1e6:.0f} us a case")
    for host, got in kernel.items():
        if got is None:
            t.add_row(f"real-kernel case (--host {host})", "n/a", "Linux 6.1 not cached (faultlab kernel fetch bookworm)")
        else:
            per, boot = got
            t.add_row(f"real-kernel case (--host {host})", f"{1 / per:.0f} cases/s",
                      f"6.1 __arch_copy_from_user, labs booted once per policy ({boot:.2f} s a boot); target >= 500/s with model")
    t.add_row("lazy idmap first touch", f"{first_touch * 1e6:.1f} us",
              f"a page's first host access, memory mapped as pKVM maps it (2 MiB blocks): {block_idmaps} idmap aborts for {touches} pages; target <= 5 us")
    t.add_row("  one idmap abort", f"{idmap * 1e6:.1f} us",
              f"page-granular region: host stage-2 abort -> EL2 idmap inside the TLB-fill hook; engine path {idmap_engine * 1e6:.1f} us ({idmap_engine / idmap:.2f}x)")
    t.add_row("protected-abort round trip", f"{inject * 1e6:.1f} us",
              f"abort -> EL2 inject -> EL1 vector -> do_mem_abort -> fixup -> eret; engine path {inject_engine * 1e6:.1f} us ({inject_engine / inject:.2f}x); target <= 15 us")
    t.add_row("  engine floor: refused fill + restart", f"{floor * 1e6:.1f} us",
              "bare Unicorn, a fill hook that refuses, emu_start again: what an abort costs before any Python")
    t.add_row("memory growth", f"{memory[0]:+.1f} MiB / 100k runs", f"restored zeropad runs after a warm-up ({memory[1]:+d} live objects): must stay ~0")
    if invariants is not None:
        option, on, off = invariants
        t.add_row(f"invariant checks ({option})", f"{(on - off) * 1e6:+.0f} us a run", f"{on / off:.2f}x a restored zeropad run")
    t.add_row("bare Unicorn", f"{insns / bare / 1e6:.1f} M insn/s", "flat memory, no budget")
    t.add_row("bare Unicorn + count", f"{insns / bare_count / 1e6:.1f} M insn/s", "with an instruction budget, as Machine uses")
    t.add_row("emu.Machine", f"{insns / machine / 1e6:.1f} M insn/s", "stage 1 + stage-2 callback via TLB fill, budget")
    t.add_row("ratio bare / Machine", f"{machine / bare:.2f}x", "fault-free; target <= 1.5x")
    t.add_row("deadline chunks: chunked / one stretch", f"{machine / machine_unchunked:.2f}x",
              "emu_start per STRETCH_CHUNK instructions vs one unbounded stretch (fault-free loop)")
    t.add_row("ratio bare+count / Machine", f"{machine / bare_count:.2f}x", "the cost of the software MMU alone")
    t.add_row("stage-2 abort round trip (bare EL2)", f"{per_abort * 1e6:.1f} us", f"mean over {n_aborts} aborts, a Python EL2 that grants")
    t.add_row("assembler, 300 lines", f"{asm * 1e3:.1f} ms", "kasm: kernel-style front end + keystone + capstone check")
    t.add_row("fresh runs, assembly memoised", f"{1 / run_cached:.0f} runs/s", f"{run_cached * 1e3:.2f} ms a run")
    t.add_row("  same, assembling every run", f"{1 / run_uncached:.0f} runs/s", f"{run_uncached * 1e3:.2f} ms a run")
    t.add_row("Hyp creation", f"{hyp_new * 1e6:.0f} us", f"64 MiB machine ({nr_frames} frames), sparse ownership; "
              f"a dense per-frame table alone would cost {dense_frames * 1e3:.2f} ms")
    t.add_row("context: QEMU booting pKVM", "4.3-11 s a boot", "protected-mode pKVM kernel under QEMU, before any scenario runs")
    Console().print(t)
    g = Table(title="How a restored run's cost grows")
    g.add_column("run")
    g.add_column("time", justify="right")
    g.add_column("note")
    for size, secs, events in by_size:
        g.add_row(f"copy {size} bytes", f"{secs * 1e6:.0f} us", f"{events} events (lazy idmaps of src and dst: a 2 MiB block each where the table allows)")
    for k, secs in by_faults:
        g.add_row(f"{k} protected aborts", f"{secs * 1e6:.0f} us", f"{secs / k * 1e6:.1f} us each (inject + do_mem_abort + fixup + eret)")
    Console().print(g)
    return 0


if __name__ == "__main__":
    sys.exit(main())
