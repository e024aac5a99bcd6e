#!/usr/bin/env python3
"""Instruction counts of the hot paths, for comparing trees on a machine whose speed swings.

Wall-clock A/B runs need a steady machine: on a shared one, two runs of the
same tree a minute apart can differ by 50%, which hides a 5-10% change.
Instruction counts do not move with the load. Each workload runs under
valgrind's callgrind (`Ir`, machine instructions of the whole process) twice,
with N units of work and with none; the difference over N is the cost of one
unit: a protected abort, or one sweep case on the 6.1 kernel (the kernel's
routine under `--host model` and `--host real`, and our guest_asm routine).

    python scripts/bench_instructions.py                    # this tree
    python scripts/bench_instructions.py --tree OLD --tree . # two trees, with the ratio

A tree is a checkout of this repository (e.g. `git worktree add /tmp/old REV`):
its packages are put first on PYTHONPATH. Needs `valgrind` (Debian package
valgrind) and, for the case workloads, the cached bookworm kernel
(`faultlab kernel fetch bookworm`). Two counts run at a time (one per core);
a unit count takes about a minute.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WORKLOADS = {
    "abort": ("protected-abort round trip", 1000),
    "model": ("6.1 __arch_copy_from_user case, kernel's routine, --host model", 100),
    "real": ("same case, --host real", 100),
    "ours": ("same case, our routine (guest_asm) on the 6.1 host", 100),
}
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def run_workload(name: str, count: int) -> None:
    """The workload itself (run inside valgrind): setup and a warm-up, then `count` units."""
    if name == "abort":
        from faultlab.lab import Lab
        from guest_asm import source_path

        lab = Lab("inject")
        lab.load_asm(source_path("fault_paths"))
        guest = lab.alloc("guest", 1)
        for pfn in guest.pfns:
            lab.hyp.stage2.idmap(pfn)
        lab.machine.flush_tlb()
        lab.donate(guest.pfns[0])
        snap = lab.snapshot()
        lab.restore(snap)
        lab.call("touch_again", guest.va, 5, max_events=200)
        lab.restore(snap)
        if count:
            assert lab.call("touch_again", guest.va, count, max_events=4 * count + 100).returned
        return
    from faultlab.api import open_kernel
    from faultlab.sweep import ROUTINES, Bench, run_case
    from faultlab.sweep import kernel as ks
    from faultlab.sweep.hosts import boundary_cases
    from kimage.profiles import profile_for

    vm = open_kernel("bookworm")
    routine = "__arch_copy_from_user"
    if name == "ours":
        bench, spec = Bench(host=profile_for(vm).host), ROUTINES[routine]
    else:
        bench, spec = ks.KernelBench(vm, fault_path=name), ks.kernel_spec(vm, routine)
    cases = boundary_cases(routine, range(65), ("inject",))
    for case in cases[:20]:
        run_case(bench, spec, case)
    for case in cases[::40][:count]:
        run_case(bench, spec, case)


def count_instructions(tree: Path, name: str, count: int) -> int:
    # A fixed hash seed: string hashes order sets and dicts, which moves counts by a few percent between runs.
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", PYTHONHASHSEED="0")
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, __file__, "--workload", name, "--count", str(count)]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    found = _REFS.search(done.stderr)
    if done.returncode or found is None:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"{name} in {tree}: valgrind run failed (exit {done.returncode}):\n{tail}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to measure (repeatable; default: this one)")
    parser.add_argument("--only", choices=sorted(WORKLOADS), action="append", help="measure only these workloads")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload:
        run_workload(args.workload, args.count)
        return 0
    if shutil.which("valgrind") is None:
        print("bench_instructions: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    trees = [t.resolve() for t in (args.tree or [Path(__file__).resolve().parent.parent])]
    names = args.only or list(WORKLOADS)
    jobs = [(tree, name, n) for tree in trees for name in names for n in (0, WORKLOADS[name][1])]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: count_instructions(*job), jobs)))
    print(f"{'workload':62} " + " ".join(f"{t.name[-14:]:>14}" for t in trees) + ("   ratio" if len(trees) == 2 else ""))
    for name in names:
        label, units = WORKLOADS[name]
        per_unit = [(counts[(t, name, units)] - counts[(t, name, 0)]) / units for t in trees]
        ratio = f"  {per_unit[1] / per_unit[0]:6.3f}x" if len(trees) == 2 else ""
        print(f"{label:62} " + " ".join(f"{v / 1e3:12.0f} k" for v in per_unit) + ratio)
    print("instructions per unit (callgrind Ir, whole process; N units minus none, over N)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
