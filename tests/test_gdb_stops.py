"""Where the gdb stub stops the machine, and what a debugged run still is, against the undebugged run.

References: the same scenario run without a debugger (its instruction trace,
its events, its verdict), the vmlinux file's own bytes, and the stop table of
docs/gdb.md. Driven over a socket by a Python gdb (tests/gdb_client.py); every
wait has a timeout.
"""
from __future__ import annotations

import io
import re
import threading

import pytest

from faultlab.gdb.control import SIGINT, SIGSEGV, SIGTRAP
from faultlab.gdb.session import Address, GdbSession, Listener, RunKilled
from faultlab.lab import Lab
from gdb_client import GUP, ROOT, ZEROPAD, Client, attach as _attach, plain, start, stop_signal


# ------------------------------------------------------ stepping and stops
def _is_brk(word: int) -> bool:
    """BRK #imm16 (Arm ARM C6.2.38: 0xd4200000 | imm16 << 5): how the machine marks its hand-over points."""
    return word & 0xFFE0001F == 0xD4200000


def test_single_steps_visit_exactly_the_undebugged_trace(tmp_path):
    """Every instruction the undebugged run executed, in order, one step each; plus the hand-over points.

    The machine's trace leaves out its hand-over points (a `brk` at the host model's
    vectors, at the return sentinel, after a fixup's re-read): Python takes over there
    and they never execute. A step stops on them like on any instruction. (This run
    executes no brk of its own.)
    """
    reference = plain(ZEROPAD, "inject-reclaim", trace=True)
    debugged, gdb = _attach(tmp_path)
    visited = []  # (pc, the instruction word there when we stopped)
    try:
        gdb.cmd("?")
        assert gdb.monitor("stop-on none").startswith("stop on: none")
        for _ in range(2 * len(reference.result.trace) + 10):
            pc = gdb.pc()
            visited.append((pc, int.from_bytes(bytes.fromhex(gdb.cmd(f"m{pc:x},4")), "little")))
            _console, reply = gdb.resume("vCont;s:1;c" if len(visited) % 2 else "s")
            if reply.startswith("W"):
                break
            assert stop_signal(reply) == SIGTRAP
    finally:
        gdb.close()
    record = debugged.join()
    executed = [pc for pc, word in visited if not _is_brk(word)]
    handovers = [pc for pc, word in visited if _is_brk(word)]
    assert executed == [step.pc for step in reference.result.trace]
    assert handovers[-1] == record.lab.machine.return_sentinel
    assert record.lab.machine.cpu.read_sysreg("VBAR_EL1") + 0x200 in handovers  # the injected abort's vector
    assert record.verdict.as_dict() == plain(ZEROPAD, "inject-reclaim").verdict.as_dict()
    assert [e.kind for e in record.result.events] == [e.kind for e in reference.result.events]


def test_breakpoint_and_abort_stop_where_the_undebugged_run_faulted(tmp_path):
    reference = plain(ZEROPAD, "inject-reclaim")
    fault = reference.result.events_of("protected-access")[0]
    debugged, gdb = _attach(tmp_path)
    try:
        gdb.cmd("?")
        lab = debugged.gdb.session.lab
        # A breakpoint on the instruction after the faulting load: hit after the fixup.
        after = fault.pc + 4
        assert gdb.cmd(f"Z0,{after:x},4") == "OK"
        console, reply = gdb.resume("c")
        assert stop_signal(reply) == SIGSEGV and "protected-access" in console
        assert gdb.pc() == fault.pc  # at the faulting instruction, before EL2 acts
        assert "guest" in gdb.monitor("owner fault") and "OWNED" in gdb.monitor("owner fault")
        assert "not mapped" in gdb.monitor("owner fault")
        assert "ESR_EL2=0x92000007" in gdb.monitor("el2")
        assert "stage-2" in gdb.monitor("events")
        assert "idmap" not in gdb.monitor("events") and "idmap" in gdb.monitor("events all")
        assert "DFSC" in gdb.monitor("explain 0x96000087")
        # Then the injection: a stop at the EL1 vector, ESR_EL1/FAR_EL1 as injected.
        assert gdb.monitor("stop-on abort,inject").startswith("stop on: abort, inject")
        console, reply = gdb.resume("c")
        inject = reference.result.events_of("inject")[0]
        assert stop_signal(reply) == SIGTRAP and "inject into host EL1" in console
        vbar = lab.machine.cpu.read_sysreg("VBAR_EL1")
        assert gdb.pc() == vbar + 0x200  # current EL with SP_ELx, synchronous (Arm ARM D1.10.2)
        esr_el1 = 34  # the first register of our EL1 feature
        assert gdb.reg(esr_el1) == inject.data["injection"].esr.value
        assert gdb.reg(esr_el1 + 1) == fault.data["abort"].far
        console, reply = gdb.resume("c")
        assert stop_signal(reply) == SIGTRAP and gdb.pc() == after  # the breakpoint, after the fixup
        assert gdb.cmd(f"z0,{after:x},4") == "OK"
        console, reply = gdb.resume("c")
        assert reply == "W00" and "fixed-up" not in console and "returned" in console
    finally:
        gdb.close()
    record = debugged.join()
    assert record.verdict.as_dict() == reference.verdict.as_dict()


def test_a_run_that_does_not_return_stops_at_its_end_then_terminates(tmp_path):
    reference = plain(GUP, "inject")
    assert reference.verdict.outcome == "host-oops"
    debugged, gdb = _attach(tmp_path, GUP, "inject")
    try:
        gdb.cmd("?")
        gdb.monitor("stop-on none")
        console, reply = gdb.resume("c")
        assert stop_signal(reply) == SIGSEGV and "the run ended: host-oops" in console
        assert gdb.monitor("events").count("oops") >= 1
        console, reply = gdb.resume("c")
        assert reply == "X0b"
    finally:
        gdb.close()
    record = debugged.join()
    assert record.verdict.as_dict() == reference.verdict.as_dict()


def test_kill_at_the_last_stop_keeps_the_verdict(tmp_path):
    reference = plain(GUP, "inject")
    debugged, gdb = _attach(tmp_path, GUP, "inject")
    try:
        gdb.cmd("?")
        gdb.monitor("stop-on none")
        _console, reply = gdb.resume("c")
        assert stop_signal(reply) == SIGSEGV  # the oops, the run's end
        gdb.send("k")
    finally:
        gdb.close()
    record = debugged.join()
    assert not debugged.error and record.verdict.as_dict() == reference.verdict.as_dict()


def test_detach_lets_the_run_finish_with_the_same_verdict(tmp_path):
    for policy in ("inject", "reclaim", "panic"):
        reference = plain(ZEROPAD, policy)
        debugged, gdb = _attach(tmp_path, ZEROPAD, policy)
        try:
            gdb.cmd("?")
            gdb.cmd(f"Z0,{gdb.pc() + 4:x},4")
            gdb.resume("c")
            assert gdb.cmd("D") == "OK"
        finally:
            gdb.close()
        record = debugged.join()
        assert record.verdict.as_dict() == reference.verdict.as_dict(), policy
        assert record.lab.machine.debugger is None


def test_hanging_up_detaches(tmp_path):
    debugged, gdb = _attach(tmp_path)
    gdb.cmd("?")
    gdb.close()
    record = debugged.join()
    assert record.verdict.outcome == "fixed-up"
    assert "detached" in debugged.out.getvalue()


def test_kill_ends_the_run_without_a_verdict(tmp_path):
    debugged, gdb = _attach(tmp_path)
    try:
        gdb.cmd("?")
        gdb.send("k")
    finally:
        gdb.close()
    assert debugged.join() is None
    assert isinstance(debugged.error[0], RunKilled)


def test_gdb_that_never_connects_times_out_and_the_run_goes_on(tmp_path):
    debugged = start(ZEROPAD, "inject", tmp_path, timeout=0.3)
    record = debugged.join()
    assert record.verdict.outcome == "fixed-up"
    assert "did not connect" in debugged.out.getvalue()


def test_interrupt_stops_a_running_loop(tmp_path):
    lab = Lab("inject")
    lab.load_asm("spin.S", text=".globl spin\nspin:\n  add x0, x0, #1\n  b spin\n")
    listener = Listener(Address.parse("0"))
    session = GdbSession(listener, lab, lab.symbol("spin"), out=io.StringIO(), timeout=20)
    session.attach()
    results = []
    thread = threading.Thread(target=lambda: results.append(lab.call("spin", budget=20_000_000, timeout=60)), daemon=True)
    thread.start()
    gdb = Client(listener.address)
    try:
        gdb.cmd("?")
        gdb.send("c")
        gdb.sock.sendall(b"\x03")
        reply = gdb.packet()
        assert stop_signal(reply) == SIGINT
        assert gdb.reg(0) > 0  # it ran
        pc = gdb.pc()
        assert pc in (lab.symbol("spin"), lab.symbol("spin") + 4)
        gdb.cmd("D")
    finally:
        gdb.close()
    thread.join(20)
    assert not thread.is_alive()
    assert results[0].outcome.kind == "budget-exceeded"  # the budget counts the instructions, debugged or not
    session.close()

# Event kinds each stop-on class covers, written from docs/gdb.md's table (not from control.py).
REPORTED = {"protected-access", "inject", "fixup", "resume", "hvc", "reclaim", "signal", "exception", "exception-entry"}
BUILTIN = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "faultlab" / "builtin").glob("*.toml"))


@pytest.mark.parametrize("scenario", BUILTIN)
def test_stop_on_all_reports_every_event_once_in_order(scenario, tmp_path):
    """Under every policy: continuing with `stop-on all` tells gdb of exactly the undebugged run's events, in order."""
    for policy in ("panic", "inject", "inject-reclaim", "reclaim", "rme-gpc-el3-inject", "rme-gpc-realm-inject"):
        reference = plain(scenario, policy)
        want = [
            e.seq
            for e in reference.result.events
            if e.kind in REPORTED or (e.kind == "abort" and e.data["abort"].stage == 1)
        ]
        debugged, gdb = _attach(tmp_path, scenario, policy)
        told, replies = [], []
        try:
            gdb.cmd("?")
            gdb.monitor("stop-on all")
            for _ in range(200):
                console, reply = gdb.resume("c")
                told += [int(m) for m in re.findall(r"^faultlab: \[\s*(\d+)\]", console, re.M)]
                replies.append(reply)
                if reply[0] in "WX":
                    break
        finally:
            gdb.close()
        record = debugged.join()
        assert told == want, (scenario, policy)
        assert record.verdict.as_dict() == reference.verdict.as_dict(), (scenario, policy)
        assert (replies[-1] == "W00") == (reference.result.outcome.kind == "returned"), (scenario, policy, replies[-1])


# ------------------------------------------------------------ a real kernel
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect_when_listening(port: int, seconds: float = 60.0) -> Client:
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            return Client(Address("127.0.0.1", port))
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "faultlab kernel call never listened"
            time.sleep(0.05)


@pytest.mark.parametrize("host", ["model", "real"])
def test_kernel_call_gdb_reads_the_kernels_own_text_and_stops_at_its_fault(host, capsys):
    from cached_kernels import vmlinux
    from elftools.elf.elffile import ELFFile

    from faultlab.cli.main import main

    vm = vmlinux("7.2")
    entry = vm.symbols.lookup("full_name_hash").addr
    port = _free_port()
    argv = ["kernel", "call", str(vm.path), "full_name_hash", "0", "buf+4091", "5", "--buffer", "8192",
            "--write", "buf+4091=hello", "--protect", "buf+4096", "--policy", "inject", "--host", host, "--gdb", f"127.0.0.1:{port}"]
    codes = []
    thread = threading.Thread(target=lambda: codes.append(main(argv)), daemon=True)
    thread.start()
    gdb = _connect_when_listening(port)
    try:
        assert stop_signal(gdb.cmd("?")) == SIGTRAP
        assert gdb.pc() == entry and gdb.reg(0) == 0 and gdb.reg(2) == 5
        assert bytes.fromhex(gdb.cmd(f"m{gdb.reg(1):x},5")) == b"hello"  # a kernel linear-map VA
        # The function's code at its kernel VA is the vmlinux file's bytes there (read with pyelftools).
        with open(vm.path, "rb") as f:
            text = next(s for s in ELFFile(f).iter_sections() if s["sh_addr"] <= entry < s["sh_addr"] + s["sh_size"])
            want = text.data()[entry - text["sh_addr"] : entry - text["sh_addr"] + 64]
            text = {"sh_addr": text["sh_addr"], "sh_size": text["sh_size"]}
        assert bytes.fromhex(gdb.cmd(f"m{entry:x},40")) == want
        console, reply = gdb.resume("c")
        assert stop_signal(reply) == SIGSEGV and "protected-access" in console
        assert "owner guest" in gdb.monitor("owner fault")
        # Injected, the abort enters the host at VBAR_EL1 + 0x200; with --host real the kernel's
        # own do_mem_abort runs from there (a step lands in the image's text).
        gdb.monitor("stop-on inject")
        console, reply = gdb.resume("c")
        assert "inject into host EL1" in console and gdb.pc() == gdb.reg(38) + 0x200  # vbar_el1
        _console, reply = gdb.resume("s")
        in_text = text["sh_addr"] <= gdb.pc() < text["sh_addr"] + text["sh_size"]
        assert in_text == (host == "real"), hex(gdb.pc())
        gdb.monitor("stop-on none")
        console, reply = gdb.resume("c")
        assert reply == "W00" and "the run ended: returned" in console
    finally:
        gdb.close()
    thread.join(60)
    assert not thread.is_alive() and codes == [0]
    out = capsys.readouterr()
    assert "outcome: returned" in out.out and f"waiting for gdb on 127.0.0.1:{port}" in out.err
