"""One gdb session over one run: listen, wait for gdb at the routine's entry, serve stops, report the end.

`GdbSession` is the machine's `Debugger` (emu/debug_hook.py) while attached.
gdb is accepted lazily, at the first stop (the routine's entry), so the first
state it sees is the call's: arguments in x0.., x30 the return sentinel. Each
later stop answers gdb's pending `c`/`s` with a stop reply, preceded by the
events that caused it as console output (`O` packets, printed by gdb). When
the run ends, a run that did not return (an oops, a hypervisor panic, a
budget) stops once more so its final state can be read, then gdb is told the
program exited (`W00` for a return) or was terminated (`X` with a signal).

Bound to 127.0.0.1 unless a host is given: the stub lets whoever connects read
and write the machine. gdb going away (or `detach`, or `quit`) lets the run go
on to its verdict; `kill` ends it with no verdict.
"""
from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from typing import Callable, TextIO

from emu.outcome import Event, OutcomeKind, RunResult

from faultlab.cli.errors import UsageError
from faultlab.gdb.control import (
    DEFAULT_STOP_ON,
    SIGABRT,
    SIGKILL,
    SIGSEGV,
    SIGTERM,
    SIGTRAP,
    SIGXCPU,
    Control,
    Resume,
    Stop,
    StopCause,
    StopOn,
)
from faultlab.gdb.monitor import Monitor
from faultlab.gdb.registers import PC_NUMBER, REGISTERS
from faultlab.gdb.rsp import Channel, RspError, int_to_hex_le
from faultlab.gdb.stub import THREAD_ID, Action, Console, Go, Stub
from faultlab.lab import Lab
from faultlab.runner import RunError

DEFAULT_HOST = "127.0.0.1"
CONSOLE_CHUNK = 1024  # characters of monitor output per `O` packet
CLOSE_WAIT = 5.0  # seconds to let gdb hang up after the exit packet

_END_SIGNAL = {
    OutcomeKind.HYP_PANIC: SIGABRT,
    OutcomeKind.HOST_OOPS: SIGSEGV,
    OutcomeKind.HOST_BUG: SIGSEGV,
    OutcomeKind.FATAL_CALL: SIGSEGV,
    OutcomeKind.UNEXPECTED_VECTOR: SIGSEGV,
    OutcomeKind.UNHANDLED_EXCEPTION: SIGSEGV,
    OutcomeKind.TASK_KILLED: SIGKILL,
    OutcomeKind.BUDGET_EXCEEDED: SIGXCPU,
    OutcomeKind.TIMEOUT: SIGXCPU,
    OutcomeKind.EVENT_LIMIT: SIGXCPU,
    OutcomeKind.LIVELOCK: SIGXCPU,
}


class GdbUsageError(UsageError):
    """A bad --gdb address, or a port that cannot be listened on (one line, exit 2)."""


class RunKilled(RunError):
    """gdb killed the run (`kill`): there is no verdict."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Address":
        """`[HOST:]PORT`; HOST defaults to 127.0.0.1 (a bracketed IPv6 host: `[::1]:1234`); port 0 picks a free one."""
        host, sep, port = text.rpartition(":")
        host = host.strip("[]") if sep else DEFAULT_HOST
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise GdbUsageError(f"--gdb {text}: want [HOST:]PORT with a port 0-65535")
        return cls(host or DEFAULT_HOST, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Listener:
    """The listening socket, opened before anything runs (so a busy port is reported at once)."""

    def __init__(self, address: Address) -> None:
        sock = None
        try:
            family, kind, proto, _, where = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
            sock.listen(1)
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise GdbUsageError(f"--gdb {address}: cannot listen: {exc.strerror or exc}") from None
        self.sock = sock
        host, port = self.sock.getsockname()[:2]
        self.address = Address(host, port)

    def accept(self, timeout: float | None) -> socket.socket:
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except socket.timeout:
            raise RspError(f"gdb did not connect to {self.address} within {timeout} s") from None
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def close(self) -> None:
        self.sock.close()


class GdbSession:
    """Serves gdb for one run on `lab`'s machine, stopping first at `entry`.

    `timeout`: seconds to wait for gdb to connect and for each of its packets (None: as long
    as it takes, the command line's choice; tests always give one).
    """

    def __init__(
        self,
        listener: Listener,
        lab: Lab,
        entry: int | None,
        *,
        symbolize: Callable[[int], str] = lambda addr: "",
        out: TextIO | None = None,
        timeout: float | None = None,
        stop_on: frozenset[StopOn] | None = None,
    ) -> None:
        self.listener = listener
        self.lab = lab
        self.machine = lab.machine
        self.control = Control(self.machine, entry, DEFAULT_STOP_ON if stop_on is None else stop_on)
        self.control.poll_interrupt = self._interrupt_pending
        self.symbolize = symbolize
        self.stub = Stub(self.machine, self.control, Monitor(lab, self.control, symbolize))
        self.out = out if out is not None else sys.stderr
        self.timeout = timeout
        self.channel: Channel | None = None
        self.ended = False  # gdb detached, hung up or killed the run: no more stops

    # ------------------------------------------------------------ lifecycle
    def attach(self) -> None:
        self.machine.debugger = self
        self.control.attach()

    def _say(self, text: str) -> None:
        print(f"gdb: {text}", file=self.out, flush=True)

    def _release(self, why: str) -> None:
        """No more debugging: the run goes on alone."""
        self.control.resume(Resume.CONTINUE)
        self.control.detach()
        if self.machine.debugger is self:
            self.machine.debugger = None
        if not self.ended:
            self._say(why)
        self.ended = True
        self._close_channel()

    def _close_channel(self) -> None:
        if self.channel is not None:
            try:
                self.channel.sock.close()
            except OSError:
                pass
            self.channel = None

    def close(self) -> None:
        self._close_channel()
        self.listener.close()
        if self.machine.debugger is self:
            self.control.detach()
            self.machine.debugger = None

    # ------------------------------------------------- emu/debug_hook.py
    def engine_stop(self) -> int | None:
        return self.control.engine_stop()

    def serve_stop(self, machine) -> None:
        if self.control.stop is not None:
            self._serve(self.control.stop)

    def on_event(self, machine, event: Event) -> None:
        stop = self.control.on_event(event)
        if stop is not None:
            self._serve(stop)

    # ------------------------------------------------------------- stops
    def _stop_reply(self, stop: Stop) -> str:
        pc = REGISTERS[PC_NUMBER].read(self.machine.cpu)
        return f"T{stop.signal:02x}{PC_NUMBER:02x}:{int_to_hex_le(pc, 8)};thread:{THREAD_ID:x};"

    def _event_text(self, event: Event) -> str:
        where = self.symbolize(event.pc)
        return f"faultlab: {event}" + (f" <{where}>" if where else "") + "\n"

    def _console(self, text: str) -> None:
        for i in range(0, len(text), CONSOLE_CHUNK):
            self.channel.send("O" + text[i : i + CONSOLE_CHUNK].encode().hex())

    def _connect(self) -> None:
        where = self.symbolize(self.machine.cpu.pc)
        self._say(f"stopped at {self.machine.cpu.pc:#x}{f' <{where}>' if where else ''}; waiting for gdb on {self.listener.address}")
        self.channel = Channel(self.listener.accept(self.timeout), timeout=self.timeout)
        self._say("gdb connected")

    def _serve(self, stop: Stop, preamble: str = "") -> None:
        """Report `stop` and answer gdb until it resumes the machine (or leaves)."""
        if self.ended:
            return
        try:
            if self.channel is None:
                self._connect()  # gdb's first `?` learns of this stop
            else:
                self._console("".join(self._event_text(e) for e in stop.events) + preamble)
                self.channel.send(self._stop_reply(stop))
            self._answer(stop)
        except RspError as exc:
            self._release(f"{exc}; detached, the run goes on")

    def _answer(self, stop: Stop) -> None:
        reply_to_query = self._stop_reply(stop)
        while True:
            packet = self.channel.receive()
            if packet is None:
                continue  # Ctrl-C while stopped: nothing to interrupt
            reply = self.stub.handle(packet, reply_to_query)
            if isinstance(reply, Go):
                if reply.addr is not None:
                    self.machine.cpu.pc = reply.addr
                self.control.resume(reply.how)
                return
            if reply is Action.DETACH:
                self.channel.send("OK")
                self._release("gdb detached; the run goes on")
                return
            if reply is Action.KILL:
                pc = self.machine.cpu.pc
                self._release(f"gdb killed the run at pc={pc:#x}")
                raise RunKilled(f"the run was killed from gdb at pc={pc:#x}: no verdict")
            if isinstance(reply, Console):
                self._console(reply.text)
                reply = "OK"
            self.channel.send(reply)
            if self.stub.no_ack_requested and self.channel.ack:
                self.channel.ack = False  # from the packet after our OK on (gdb manual, QStartNoAckMode)

    def _interrupt_pending(self) -> bool:
        if self.channel is None:
            return False
        try:
            return self.channel.interrupt_pending()
        except RspError:
            return False

    # ------------------------------------------------------------- the end
    def finish(self, result: RunResult) -> None:
        """The run ended with `result`: a last stop if it did not return (or `stop-on end`), then the exit."""
        if self.channel is None and not self.ended:
            self._say(f"the run ended before gdb connected ({result.outcome.kind})")
        if self.channel is None or self.ended:
            self.close()
            return
        kind = result.outcome.kind
        leftover = self.control.take_deferred()
        ending = f"faultlab: the run ended: {result.outcome}\n"
        try:
            if kind is not OutcomeKind.RETURNED or StopOn.END in self.control.stop_on:
                try:
                    self._serve(Stop(StopCause.END, _END_SIGNAL.get(kind, SIGTRAP if kind is OutcomeKind.RETURNED else SIGTERM), leftover), ending)
                except RunKilled:
                    pass  # the run is over already: its verdict stands
                leftover, ending = [], ""
            if self.channel is not None and not self.ended:
                self._console("".join(self._event_text(e) for e in leftover) + ending)
                self.channel.send("W00" if kind is OutcomeKind.RETURNED else f"X{_END_SIGNAL.get(kind, SIGTERM):02x}")
                self._await_hangup()
        except RspError:
            pass
        finally:
            self.ended = True
            self.close()

    def _await_hangup(self) -> None:
        """After the exit packet gdb closes the connection; answer what it still asks until then."""
        self.channel.timeout = CLOSE_WAIT
        while True:
            packet = self.channel.receive()
            if packet is None:
                continue
            if packet[:1] in (b"D", b"k") or packet.startswith(b"vKill"):
                self.channel.send("OK")
                return
            self.channel.send("E01" if packet[:1] in (b"g", b"m", b"p") else "")
