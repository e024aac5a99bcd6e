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

Usage: python scripts/bench.py [--quick]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keystone import KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN, Ks  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc  # noqa: E402
from unicorn import arm64_const as A  # noqa: E402

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


def bench_scenario(repeat: int) -> float:
    from faultlab.runner import run
    from faultlab.scenario import load

    sc = load(Path(__file__).resolve().parent.parent / "scenarios" / "inline_zeropad.toml")
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        record = run(sc, "inject-reclaim")
        times.append(time.perf_counter() - t)
        assert record.passed
    return statistics.median(times)


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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes (seconds instead of tens of seconds)")
    args = ap.parse_args()
    iters = 200_000 if args.quick else 2_000_000
    pages = 200 if args.quick else 1000
    insns = iters * INSNS_PER_ITER
    bare = bench_bare(iters, count=False)
    bare_count = bench_bare(iters, count=True)
    machine = bench_machine(iters)
    machine_unchunked = bench_machine(iters, unchunked=True)
    per_abort, n_aborts = bench_abort(pages)
    scenario = bench_scenario(5 if args.quick else 20)
    asm = bench_assembler()
    run_cached, run_uncached = bench_scenario_runs(50 if args.quick else 200)
    hyp_new, dense_frames, nr_frames = bench_hyp_creation()

    t = Table(title=f"pkvm-faultlab benchmarks ({platform.machine()}, {platform.python_implementation()} {platform.python_version()})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("note")
    t.add_row("bare Unicorn", f"{insns / bare / 1e6:.1f} M insn/s", "flat memory, no budget")
    t.add_row("bare Unicorn + count", f"{insns / bare_count / 1e6:.1f} M insn/s", "with an instruction budget, as Machine uses")
    t.add_row("emu.Machine", f"{insns / machine / 1e6:.1f} M insn/s", "stage 1 + stage-2 callback via TLB fill, budget")
    t.add_row("ratio bare / Machine", f"{machine / bare:.2f}x", "target <= 1.5x")
    t.add_row("deadline chunks: chunked / one stretch", f"{machine / machine_unchunked:.2f}x",
              "emu_start per STRETCH_CHUNK instructions vs one unbounded stretch (fault-free loop)")
    t.add_row("ratio bare+count / Machine", f"{machine / bare_count:.2f}x", "the cost of the software MMU alone")
    t.add_row("stage-2 abort round trip", f"{per_abort * 1e6:.1f} us", f"mean over {n_aborts} aborts; target <= 30 us")
    t.add_row("scenario end to end", f"{scenario * 1e3:.1f} ms", "inline zeropad under inject-reclaim: setup, run, oracle")
    t.add_row("assembler, 300 lines", f"{asm * 1e3:.1f} ms", "kasm: kernel-style front end + keystone + capstone check")
    t.add_row("scenario runs/s (one core)", f"{1 / run_cached:.0f} /s",
              f"built-in zeropad, fresh setup per run, assembly memoised: {run_cached * 1e3:.2f} ms a run")
    t.add_row("  same, assembling every run", f"{1 / run_uncached:.0f} /s",
              f"{run_uncached * 1e3:.2f} ms a run; memoised is {run_uncached / run_cached:.2f}x faster")
    t.add_row("Hyp creation", f"{hyp_new * 1e6:.0f} us", f"64 MiB machine ({nr_frames} frames), sparse ownership; "
              f"a dense per-frame table alone would cost {dense_frames * 1e3:.2f} ms")
    Console().print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
