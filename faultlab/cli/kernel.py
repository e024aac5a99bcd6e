"""`faultlab kernel fetch|info|call|sweep`: real Debian arm64 kernels from the command line.

`call` runs on a `Lab` around the booted vmlinux (faultlab/stack.py wires it,
`KernelRig` in faultlab/kernel/lab.py remembers the protected pages); `sweep` is
faultlab/cli/kernel_sweep.py (the boundary sweeps over real routines in
faultlab/sweep/kernel.py). Bad input (`KernelUsageError`, an unreadable
vmlinux, an unknown suite) is one line on stderr and exit code 2, as every
command's (faultlab/cli/main.py).
"""
from __future__ import annotations

import argparse
import re
import sys

from rich.console import Console

from abi.arch import PAGE_SIZE
from emu.machine import MachineError
from emu.outcome import Event
from emu.run_limits import DEFAULT_MAX_TRACE
from hyp.policies import known as known_policies
from kimage.elf import Vmlinux

from faultlab.kernel.lab import KernelRig, KernelUsageError
from faultlab.stack import HOSTS
from faultlab.lab import Lab
from faultlab.oracle import judge, snapshot
from faultlab.runner import RunError, evaluate
from faultlab.kernel.fetch import SUITES, fetch
from faultlab import report
from faultlab.cli.errors import EXIT_OK, trace_limit
from faultlab.cli.kernel_args import HOST_HELP, open_vmlinux, parse_int, say



# ---------------------------------------------------------------- argument parsing
# Buffers come out of the booted kernel's spare physical memory (kimage.loaded.DEFAULT_EXTRA_MEMORY, 64 MiB):
# each flag gets at most a quarter, so both together leave room for the page tables and the task.
MAX_BUFFER = 16 << 20


def _buffer_size(text: str, flag: str) -> int:
    size = _size(text)
    if size > MAX_BUFFER:
        raise KernelUsageError(f"{flag} {text}: at most {MAX_BUFFER >> 20}m ({MAX_BUFFER} bytes)")
    return size


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+|0x[0-9a-fA-F]+)([kKmM]?)", text.strip())
    if not m:
        raise KernelUsageError(f"not a size: {text!r} (e.g. 8192, 0x2000, 8k)")
    value = int(m.group(1), 0) * {"": 1, "k": 1 << 10, "m": 1 << 20}[m.group(2).lower()]
    if value <= 0:
        raise KernelUsageError(f"size must be positive: {text!r}")
    return value


class _Names:
    """ADDR arguments: `faultlab.runner.evaluate` over the lab's buffers (buf, ubuf) and the kernel's symbols."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.values: dict[str, int] = {}  # ubuf: the user view of its buffer

    def value(self, text: str) -> int:
        for name, flag in (("buf", "--buffer"), ("ubuf", "--user-buffer")):
            if re.search(rf"(?<![\w.]){name}(?![\w.])", text) and name not in self.lab.regions:
                raise KernelUsageError(f"{name!r} is used but not mapped: add {flag} SIZE")
        try:
            return evaluate(text, self.lab, self.values)
        except RunError as exc:
            raise KernelUsageError(str(exc)) from None


def _write_spec(text: str) -> tuple[str, bytes]:
    if "=" not in text:
        raise KernelUsageError(f"--write wants ADDR=TEXT or ADDR=hex:BYTES, not {text!r}")
    where, data = text.split("=", 1)
    if data.startswith("hex:"):
        try:
            return where, bytes.fromhex(data[4:])
        except ValueError:
            raise KernelUsageError(f"bad hex bytes in {text!r}") from None
    return where, data.encode()


MAX_DUMP = 1 << 20


def _dump_spec(spec: str) -> tuple[str, str, int]:
    """--dump ADDR:LEN, checked before anything runs: (spec, ADDR, LEN) with 0 < LEN <= MAX_DUMP."""
    where, _, length = spec.rpartition(":")
    if not where:
        raise KernelUsageError(f"--dump wants ADDR:LEN, not {spec!r}")
    size = parse_int(length, "dump length")
    if not 0 < size <= MAX_DUMP:
        raise KernelUsageError(f"--dump {spec}: the length must be 1 .. {MAX_DUMP} bytes")
    return spec, where, size


# ---------------------------------------------------------------- commands
def cmd_fetch(args, console: Console) -> int:
    fetched = []
    for suite in args.suites or ["bookworm"]:
        path = fetch(suite, progress=lambda msg: print(f"{suite}: {msg}", file=sys.stderr))
        fetched.append({"suite": suite, "path": str(path), "version": SUITES[suite]})
        if not args.json:
            say(console, f"{suite}: {path}")
    if args.json:
        report.dump({"kernels": fetched}, sys.stdout)
    return EXIT_OK


def info_record(vm: Vmlinux) -> dict:
    counts = vm.extable_counts()
    owners = vm.extable_owners()
    layout = vm.task_layout
    return {
        "path": str(vm.path),
        "release": vm.version.release,
        "version": f"{vm.version.major}.{vm.version.minor}",
        "banner": vm.banner,
        "extable": {
            "address": vm.extable_addr,
            "entries": len(vm.extable),
            "numbering": vm.numbering.name,
            "numbering_reason": vm.numbering_reason,
            "by_type": {kind.value: n for kind, n in counts.most_common()},
            "owners": {kind.value: dict(c.most_common()) for kind, c in owners.items()},
        },
        "symbols": len(vm.symbols),
        "relocations": vars(vm.relocations),
        "task_struct": None if layout is None else vars(layout),
    }


def cmd_info(args, console: Console) -> int:
    vm = open_vmlinux(args.vmlinux)
    rec = info_record(vm)
    if args.json:
        report.dump(rec, sys.stdout)
        return EXIT_OK
    ex = rec["extable"]
    say(console, f"vmlinux:   {vm.path}")
    say(console, f"version:   Linux {rec['version']} ({vm.version.release})")
    say(console, f"banner:    {vm.banner}")
    say(console, f"symbols:   {rec['symbols']}")
    rel = vm.relocations
    say(console, 
        f"relocs:    .rela.dyn {rel.relative} RELATIVE ({rel.already_in_place} already in place), "
        f"{rel.symbolic} symbolic; .relr.dyn {rel.relr} words (addends in place)"
    )
    if vm.task_layout:
        t = vm.task_layout
        say(console, f"current:   task_struct {t.task_struct_size} bytes, stack_canary at {t.stack_canary}, preempt_count at {t.preempt_count}")
    say(console, f"extable:   {ex['entries']} entries at {ex['address']:#x}, numbering {ex['numbering']} ({ex['numbering_reason']})")
    for kind, n in ex["by_type"].items():
        number = vm.numbering.numbers[next(k for k in vm.numbering.numbers if k.value == kind)]
        say(console, f"  {kind:<24} (type {number}) {n:5d}")
    say(console, "owners:")
    for kind, funcs in ex["owners"].items():
        say(console, f"  {kind} ({sum(funcs.values())} entries in {len(funcs)} functions):")
        line = "   "
        for name, n in funcs.items():
            item = f" {name} {n},"
            if len(line) + len(item) > 110:
                say(console, line.rstrip(","))
                line = "   "
            line += item
        say(console, line.rstrip(","))
    return EXIT_OK


def _gdb(spec: str, name: str):
    from faultlab.gdb.attach import GdbAttach  # faultlab/gdb imports faultlab.cli's errors: not at module level

    return GdbAttach(spec, name=name)


DEFAULT_CALL_POLICY = "inject-reclaim"
DEFAULT_BUDGET = "2000000"


def _defaulted(args, name: str, default: str) -> tuple[str, bool]:
    """(value, given): argparse defaults these to None so the header can say what was chosen for you."""
    value = getattr(args, name)
    return (default, False) if value is None else (value, True)


def call_header(args, vm: Vmlinux, policy: tuple[str, bool], host: tuple[str, bool], task: tuple[str, bool], budget: tuple[str, bool]) -> str:
    """The settings of `kernel call`, each default marked: a verdict is read with what produced it."""
    def item(label: str, pair: tuple[str, bool], why: str) -> str:
        return f"{label} {pair[0]}" + ("" if pair[1] else f" (default{why})")

    return "settings: " + "; ".join([
        item("policy", policy, "; --policy to choose"),
        item("host", host, "; --host real for the image's own fault path"),
        item("task", task, ": user with --user-buffer, else kthread"),
        item("budget", budget, " instructions per segment"),
        f"kernel Linux {vm.version.release} ({vm.path})",
    ])


def cmd_call(args, console: Console) -> int:
    policy = _defaulted(args, "policy", DEFAULT_CALL_POLICY)
    host = _defaulted(args, "host", "model")
    budget_text = _defaulted(args, "budget", DEFAULT_BUDGET)
    if policy[0] not in known_policies():
        raise KernelUsageError(f"unknown policy {policy[0]!r} (known: {', '.join(known_policies())})")
    budget = parse_int(budget_text[0], "instruction budget")
    if budget <= 0:
        raise KernelUsageError(f"--budget {budget_text[0]}: the instruction budget must be positive")
    if len(args.args) > 8:
        # AAPCS64 passes the first eight integer arguments in x0..x7; the rest go on a stack we do not build.
        raise KernelUsageError(f"{len(args.args)} arguments: at most 8 arguments (x0..x7)")
    max_trace = trace_limit(args)
    dumps = [_dump_spec(d) for d in args.dump or []]
    buffer_size = _buffer_size(args.buffer, "--buffer") if args.buffer else None
    user_size = _buffer_size(args.user_buffer, "--user-buffer") if args.user_buffer else None
    writes = [_write_spec(w) for w in args.write or []]
    gdb = _gdb(args.gdb, args.symbol) if args.gdb else None  # listens now: a busy port fails before the boot
    vm = open_vmlinux(args.vmlinux)
    # The task context, as in scenario files: a user task when a user buffer is mapped, else a kernel thread.
    task = (args.task, True) if args.task else ("user" if user_size else "kthread", False)
    out = (lambda text: None) if args.json else (lambda text: say(console, text))
    doc: dict = {
        "vmlinux": str(vm.path), "release": vm.version.release, "policy": policy[0], "host": host[0], "task": task[0],
        "budget": budget, "defaults": [k for k, (_, given) in (("policy", policy), ("host", host), ("task", task), ("budget", budget_text)) if not given],
    }
    out(call_header(args, vm, policy, host, task, budget_text))
    rig = KernelRig.boot(vm, policy[0], host=host[0], user_mm=task[0] == "user")
    lab, kernel = rig.lab, rig.kernel
    target = kernel.resolve(args.symbol)
    kernel.check_intact(target)
    names = _Names(lab)
    doc["buffers"] = {}
    if buffer_size:
        buf = lab.alloc("buf", -(-buffer_size // PAGE_SIZE))
        doc["buffers"]["buf"] = {"va": buf.va, "size": buffer_size, "mapping": "kernel"}
        out(f"buf  = {buf.va:#x} ({buffer_size} bytes, kernel linear map)")
    if user_size:
        names.values["ubuf"] = lab.alloc("ubuf", -(-user_size // PAGE_SIZE), user=True).user_va
        doc["buffers"]["ubuf"] = {"va": names.values["ubuf"], "size": user_size, "mapping": "user"}
        out(f"ubuf = {names.values['ubuf']:#x} ({user_size} bytes, user)")
    for where, data in writes:
        try:
            kernel.machine.write(names.value(where), data)
        except MachineError as exc:
            raise KernelUsageError(f"--write {where}: {exc}") from None
    call_args = [names.value(a) for a in args.args]
    for name in args.static_key or []:
        kernel.enable_static_key(name)
    for spec in args.stub or []:
        name, _, ret = spec.partition("=")
        kernel.stub(name, parse_int(ret, "stub return value") if ret else 0)
    for where in args.protect or []:
        try:
            prot = rig.protect(names.value(where))
        except MachineError as exc:
            raise KernelUsageError(f"--protect {where}: {exc}") from None
        out(f"protect {prot.va:#x} (pfn {prot.pfn:#x}) -> guest {prot.handle:#x} gfn {prot.gfn:#x}")
    shown = ", ".join(f"{a:#x}" for a in call_args)
    doc.update(symbol=kernel.symbolize(target), address=target, args=call_args)
    out(f"call {kernel.symbolize(target)}({shown}) on Linux {vm.version.release} under {policy[0]} ({host[0]} host, {task[0]})")
    before = snapshot(lab)  # for the oracle's verdict in --json (the same judge as scenario runs)
    if gdb:
        gdb.attach(lab, target)
    result = kernel.call(target, *call_args, budget=budget, trace=args.trace, max_trace=max_trace)
    if gdb:
        gdb.finish(result)

    def at(pc: int) -> str:
        return f" <{kernel.symbolize(pc)}>" if kernel.owns(pc) else ""

    if args.trace and result.trace is not None:
        out("trace and events:")
        for item in report.trace_stream(result.trace, result.events, verbose=args.verbose):
            out(f"      >> {item}{at(item.pc)}" if isinstance(item, Event) else f"  {item}{at(item.pc)}")
        if result.trace_truncated:
            out(f"trace truncated after {len(result.trace)} steps (--trace-limit N for more)")
        doc["trace"] = [{"pc": t.pc, "el": t.el, "text": t.text} for t in report.executed(result.trace, result.events)]
        doc["trace_truncated"] = result.trace_truncated
    else:
        out("events:")
        for event in report.visible_events(result.events, args.verbose):
            out(f"  {event}{at(event.pc)}")
    doc["events"] = [
        {"seq": e.seq, "kind": e.kind, "pc": e.pc, "el": e.el, "message": e.message, "housekeeping": report.housekeeping(result.events, i)}
        for i, e in enumerate(result.events)
    ]
    out(f"outcome: {result.outcome}")
    doc["outcome"] = {"kind": str(result.outcome.kind), "message": result.outcome.message}
    x0 = result.x0
    doc["x0"] = x0
    out(f"x0: {x0:#x} ({x0 - (1 << 64) if x0 >> 63 else x0})")
    doc["protected"] = []
    for prot in rig.protected:
        out(rig.guest_page_report(prot))
        now = rig.machine.phys.read(prot.pfn << 12, PAGE_SIZE)
        doc["protected"].append({
            "va": prot.va, "pfn": prot.pfn, "guest": prot.handle, "gfn": prot.gfn,
            "state": str(rig.hyp.ownership.guest_state(prot.handle, prot.gfn)),
            "contents": "unchanged" if now == prot.before else "scrubbed" if not any(now) else "changed",
        })
    doc["dumps"] = []
    for spec, where, size in dumps:
        addr = names.value(where)
        try:
            data = kernel.machine.read(addr, size)
        except MachineError as exc:
            raise KernelUsageError(f"--dump {spec}: {exc}") from None
        out(f"{where} [{addr:#x}, +{size}]: {data.hex()}")
        doc["dumps"].append({"spec": spec, "address": addr, "hex": data.hex()})
    if args.json:
        doc["verdict"] = judge(lab, result, before).as_dict()
        report.dump(doc, sys.stdout)
    return EXIT_OK


def add_kernel_commands(subparsers) -> argparse.ArgumentParser:
    """Add `kernel fetch|info|call|sweep` to a `faultlab` argparse subparsers object (handlers: func(args, console))."""
    kernel = subparsers.add_parser("kernel", help="real arm64 kernels: fetch Debian's, inspect one, call its functions")
    sub = kernel.add_subparsers(dest="kernel_command", required=True)
    f = sub.add_parser("fetch", help="download a Debian cloud-arm64 debug vmlinux into the user cache")
    f.add_argument("suites", nargs="*", metavar="SUITE", help=f"one of {', '.join(SUITES)} (default bookworm)")
    f.add_argument("--json", action="store_true", help="the fetched paths as one JSON object (docs/schema/kernel-fetch.schema.json)")
    f.set_defaults(func=cmd_fetch)
    i = sub.add_parser("info", help="version, extable entries by type and the functions that own them")
    i.add_argument("vmlinux", nargs="?", help="a vmlinux path or a suite name (default: $FAULTLAB_VMLINUX)")
    i.add_argument("--json", action="store_true", help="one JSON object on stdout (docs/schema/kernel-info.schema.json)")
    i.set_defaults(func=cmd_info)
    c = sub.add_parser("call", help="run one kernel function at EL1 under a policy, with buffers and protected pages")
    c.add_argument("vmlinux", help="a vmlinux path or a suite name")
    c.add_argument("symbol", help="function symbol (or symbol+offset, or an address)")
    c.add_argument("args", nargs="*", help="x0..x7: integers, buf[+N], ubuf[+N] or kernel symbols")
    c.add_argument("--buffer", metavar="SIZE", help="map a kernel (linear-map) buffer, named buf")
    c.add_argument("--user-buffer", metavar="SIZE", help="map a user buffer, named ubuf")
    c.add_argument("--write", action="append", metavar="ADDR=TEXT", help="write TEXT (or hex:BYTES) at ADDR before the call")
    c.add_argument("--protect", action="append", metavar="ADDR", help="donate the page holding ADDR to a guest (repeatable)")
    c.add_argument("--policy", help=f"EL2 policy (default {DEFAULT_CALL_POLICY}; {', '.join(known_policies())})")
    c.add_argument("--static-key", action="append", metavar="NAME", help="enable a static key before the call")
    c.add_argument("--stub", action="append", metavar="NAME[=RET]", help="make a callee return RET (default 0) at once")
    c.add_argument("--dump", action="append", metavar="ADDR:LEN", help="print memory after the call")
    c.add_argument("--budget", help=f"instructions per run segment (default {DEFAULT_BUDGET})")
    c.add_argument("--trace", action="store_true", help=f"print the executed instructions (at most {DEFAULT_MAX_TRACE}), with the events between them")
    c.add_argument("--trace-limit", type=int, metavar="N", help=f"trace at most N instructions (default {DEFAULT_MAX_TRACE})")
    c.add_argument("--host", choices=HOSTS, help=HOST_HELP + " (default model)")
    c.add_argument("--json", action="store_true", help="one JSON object on stdout (docs/schema/kernel-call.schema.json)")
    c.add_argument("--verbose", action="store_true", help="also show housekeeping events (lazy stage-2 idmap aborts)")
    c.add_argument("--task", choices=("user", "kthread"), help="current: a user task with an mm, or a kernel thread (default: user with --user-buffer, else kthread)")
    c.add_argument("--gdb", metavar="[HOST:]PORT", help="serve gdb's remote protocol (127.0.0.1 unless HOST), stopped at the function's entry (docs/gdb.md)")
    c.set_defaults(func=cmd_call)
    from faultlab.cli.kernel_sweep import add_sweep_parser  # it uses this module's argument helpers

    add_sweep_parser(sub)
    return kernel

