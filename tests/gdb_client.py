"""A tiny gdb for the tests: speaks the remote protocol over a socket (framing written here, from the manual).

And a harness that runs a scenario with `--gdb` semantics in a thread, so a
test can drive the stub while the machine runs; every wait has a timeout.
"""
from __future__ import annotations

import io
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from faultlab.gdb.attach import GdbAttach
from faultlab.runner import RunRecord, run
from faultlab.scenario import load

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0


class Client:
    def __init__(self, address, timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection((address.host, address.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as gdb does: no Nagle delay on acks
        self.buf = b""
        self.ack = True

    def close(self) -> None:
        self.sock.close()

    def _read(self, n: int = 1) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("stub closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data: str | bytes) -> None:
        raw = data.encode("latin-1") if isinstance(data, str) else data
        self.sock.sendall(b"$" + raw + b"#" + format(sum(raw) % 256, "02x").encode())
        if self.ack:
            assert self._read() == b"+"

    def packet(self) -> str:
        while self._read() != b"$":
            pass
        data = b""
        while (c := self._read()) != b"#":
            data += c
        cs = self._read(2)
        assert int(cs, 16) == sum(data) % 256, f"bad checksum on {data!r}"
        if self.ack:
            self.sock.sendall(b"+")
        return data.decode("latin-1")

    def cmd(self, data: str | bytes) -> str:
        self.send(data)
        return self.packet()

    def resume(self, data: str = "c") -> tuple[str, str]:
        """Send c/s (or vCont); return (console text printed on the way, the stop reply)."""
        self.send(data)
        console = ""
        while True:
            reply = self.packet()
            if reply.startswith("O") and reply != "OK":
                console += bytes.fromhex(reply[1:]).decode()
                continue
            return console, reply

    def monitor(self, command: str) -> str:
        """`monitor COMMAND`: its output comes as console packets, then OK."""
        self.send("qRcmd," + command.encode().hex())
        output = ""
        while (reply := self.packet()) != "OK":
            assert reply.startswith("O"), reply
            output += bytes.fromhex(reply[1:]).decode()
        return output

    def reg(self, number: int) -> int:
        return int.from_bytes(bytes.fromhex(self.cmd(f"p{number:x}")), "little")

    def pc(self) -> int:
        return self.reg(32)


def stop_signal(reply: str) -> int:
    assert reply[0] == "T", reply
    return int(reply[1:3], 16)


@dataclass
class DebuggedRun:
    """A scenario run in a thread, attached to a GdbAttach listening on a free port."""

    gdb: GdbAttach
    thread: threading.Thread
    out: io.StringIO
    record: list[RunRecord] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)

    def join(self) -> RunRecord | None:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the debugged run did not end"
        return self.record[0] if self.record else None


def start(scenario: str, policy: str, tmp_path: Path, *, timeout: float = TIMEOUT) -> DebuggedRun:
    sc = load(ROOT / scenario).variants()[0]
    out = io.StringIO()
    gdb = GdbAttach("127.0.0.1:0", name=sc.name, out=out, timeout=timeout, symbols_dir=tmp_path)
    debugged = DebuggedRun(gdb, threading.Thread(), out)

    def body() -> None:
        try:
            record = run(sc, policy, before_call=gdb.attach)
            gdb.finish(record.result)
            debugged.record.append(record)
        except BaseException as exc:  # reported to the test thread
            debugged.error.append(exc)
            gdb.listener.close()

    debugged.thread = threading.Thread(target=body, daemon=True)
    debugged.thread.start()
    return debugged


ZEROPAD = "faultlab/builtin/a_zeropad_overread.toml"
GUP = "faultlab/builtin/c_gup_kernel_alias.toml"


def plain(scenario: str, policy: str, trace: bool = False) -> RunRecord:
    """The reference: the same run with no debugger attached."""
    return run(load(ROOT / scenario).variants()[0], policy, trace=trace)


def attach(tmp_path: Path, scenario: str = ZEROPAD, policy: str = "inject-reclaim") -> tuple[DebuggedRun, Client]:
    debugged = start(scenario, policy, tmp_path)
    return debugged, Client(debugged.gdb.listener.address)
