"""The gdb remote protocol's commands, answered from a stopped `Machine`.

What gdb-multiarch sends to an AArch64 stub (gdb manual, Appendix E "Packets"
and "General Query Packets"): the feature handshake (`qSupported`, target.xml
through `qXfer:features:read`), registers (`g`/`G`, `p`/`P`), memory (`m`/`M`,
binary `X`), execution (`c`, `s`, `vCont`), software and hardware breakpoints
(`Z0`/`Z1`, both are PC checks here), thread queries for the one CPU, `D`
(detach), `k` (kill) and `qRcmd` (`monitor ...`). Unknown packets get the empty
reply, which tells gdb "not supported".

Memory goes through our stage 1 (`Machine.read`/`write`): virtual addresses,
kernel or user, as the CPU sees them at any EL; an address stage 1 does not
map is `E14` (EFAULT). Permissions and stage 2 are not applied: the debugger
sees the frame whoever owns it (`monitor owner ADDR` says who does).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

from emu.address_space import MachineError

from faultlab.gdb.control import Resume
from faultlab.gdb.registers import REGISTERS, target_xml
from faultlab.gdb.rsp import escape, hex_to_int_le, int_to_hex_le, unescape

THREAD_ID = 1
PACKET_SIZE = 0x4000
MAX_MEMORY_READ = (PACKET_SIZE - 16) // 2  # two hex digits a byte must fit in one reply
EFAULT = "E14"
EINVAL = "E16"


class Action(enum.Enum):
    DETACH = "detach"
    KILL = "kill"


@dataclass(frozen=True)
class Console:
    """Text for gdb's console (a `monitor` command's output): sent as `O` packets, then `OK`."""

    text: str


@dataclass(frozen=True)
class Go:
    """A packet that resumes the machine: how, and from where (None: the current PC)."""

    how: Resume
    addr: int | None = None




class Stub:
    """Answers one packet at a time; the session owns the socket and the stop/resume cycle."""

    def __init__(self, machine, control, monitor: Callable[[str], str]) -> None:
        self.machine = machine
        self.control = control
        self.monitor = monitor
        self.no_ack_requested = False
        self._xml = target_xml().encode()

    def handle(self, packet: bytes, stop_reply: str) -> "str | Go | Action | Console":
        if packet.startswith(b"X"):
            return self._write_binary(packet)
        text = packet.decode("latin-1")
        head = text[:1]
        try:
            if head == "?":
                return stop_reply
            if head == "g":
                return "".join(int_to_hex_le(r.read(self.machine.cpu), r.size) for r in REGISTERS)
            if head == "G":
                return self._write_all(text[1:])
            if head == "p":
                return self._read_reg(int(text[1:], 16))
            if head == "P":
                number, value = text[1:].split("=", 1)
                return self._write_reg(int(number, 16), value)
            if head == "m":
                addr, length = (int(v, 16) for v in text[1:].split(","))
                return self._read_memory(addr, length)
            if head == "M":
                where, data = text[1:].split(":", 1)
                addr, length = (int(v, 16) for v in where.split(","))
                return self._write_memory(addr, bytes.fromhex(data)[:length])
            if head in "cs" and head:
                how = Resume.CONTINUE if head == "c" else Resume.STEP
                return Go(how, int(text[1:], 16) if len(text) > 1 else None)
            if head in "CS" and head:  # continue/step with a signal: there is no task to deliver it to
                how = Resume.CONTINUE if head == "C" else Resume.STEP
                _sig, _, addr = text[1:].partition(";")
                return Go(how, int(addr, 16) if addr else None)
            if head in "Zz" and head:
                return self._breakpoint(text)
            if head == "D":
                return Action.DETACH
            if head == "k":
                return Action.KILL
            if head == "H" or head == "T":
                return "OK"  # one thread: any thread id names it
            if text.startswith("v"):
                return self._v_packet(text)
            if text.startswith("q") or text.startswith("Q"):
                return self._query(text)
        except (ValueError, IndexError):
            return EINVAL
        return ""

    # ------------------------------------------------------------ registers
    def _read_reg(self, number: int) -> str:
        if not 0 <= number < len(REGISTERS):
            return EINVAL
        reg = REGISTERS[number]
        return int_to_hex_le(reg.read(self.machine.cpu), reg.size)

    def _write_reg(self, number: int, value: str) -> str:
        if not 0 <= number < len(REGISTERS):
            return EINVAL
        reg = REGISTERS[number]
        if len(value) != 2 * reg.size:
            return EINVAL
        reg.write(self.machine.cpu, hex_to_int_le(value))
        return "OK"

    def _write_all(self, data: str) -> str:
        pos = 0
        for reg in REGISTERS:
            width = 2 * reg.size
            if pos + width > len(data):
                break  # gdb may send fewer registers than it was given: leave the rest
            reg.write(self.machine.cpu, hex_to_int_le(data[pos : pos + width]))
            pos += width
        return "OK"

    # --------------------------------------------------------------- memory
    def _read_memory(self, addr: int, length: int) -> str:
        """The bytes stage 1 maps from `addr`: all, or the mapped prefix (gdb accepts a short read), or E14."""
        length = min(length, MAX_MEMORY_READ)
        out = bytearray()
        while len(out) < length:
            va = (addr + len(out)) & 0xFFFF_FFFF_FFFF_FFFF
            chunk = min(length - len(out), 0x1000 - (va & 0xFFF))
            try:
                out += self.machine.read(va, chunk)
            except MachineError:
                break
        return out.hex() if out or length == 0 else EFAULT

    def _write_memory(self, addr: int, data: bytes) -> str:
        try:
            self.machine.translate(addr)
            if data:
                self.machine.translate(addr + len(data) - 1)
            self.machine.write(addr, data)
        except MachineError:
            return EFAULT
        return "OK"

    def _write_binary(self, packet: bytes) -> str:
        head, _, data = packet[1:].partition(b":")
        try:
            addr, length = (int(v, 16) for v in head.decode().split(","))
        except ValueError:
            return EINVAL
        data = unescape(data)
        if len(data) != length:
            return EINVAL
        return self._write_memory(addr, data) if length else "OK"

    # ---------------------------------------------------------- breakpoints
    def _breakpoint(self, text: str) -> str:
        kind, addr, _size = text[1:].split(",")[:3]
        if kind not in ("0", "1"):
            return ""  # watchpoints: not supported
        address = int(addr, 16)
        if text[0] == "Z":
            self.control.breakpoints.add(address)
        else:
            self.control.breakpoints.discard(address)
        return "OK"

    # ---------------------------------------------------------- v packets
    def _v_packet(self, text: str) -> "str | Go":
        if text == "vCont?":
            return "vCont;c;C;s;S"
        if text.startswith("vCont;"):
            # Actions in order, each for some threads; the first that applies to our one thread wins.
            for action in text[6:].split(";"):
                verb, _, thread = action.partition(":")
                if thread and thread not in ("-1", "1", "01", "p1.1", "p1.-1"):
                    continue
                if verb[:1] in ("c", "C"):
                    return Go(Resume.CONTINUE)
                if verb[:1] in ("s", "S"):
                    return Go(Resume.STEP)
            return EINVAL
        return ""  # vMustReplyEmpty, vKill, vFile...: the empty reply

    # -------------------------------------------------------------- queries
    def _query(self, text: str) -> "str | Console":
        name = text.split(":", 1)[0].split(",", 1)[0]
        if name == "qSupported":
            return f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;QStartNoAckMode+;vContSupported+"
        if name == "QStartNoAckMode":
            self.no_ack_requested = True
            return "OK"
        if text.startswith("qXfer:features:read:"):
            return self._xfer_features(text[len("qXfer:features:read:") :])
        if name == "qAttached":
            return "1"  # quitting gdb detaches: the run goes on to its verdict
        if name == "qC":
            return f"QC{THREAD_ID:x}"
        if name == "qfThreadInfo":
            return f"m{THREAD_ID:x}"
        if name == "qsThreadInfo":
            return "l"
        if name == "qSymbol":
            return "OK"
        if name == "qRcmd":
            command = bytes.fromhex(text.split(",", 1)[1]).decode("utf-8", "replace")
            return Console(self.monitor(command))
        return ""

    def _xfer_features(self, rest: str) -> str:
        annex, _, window = rest.partition(":")
        if annex != "target.xml":
            return "E00"
        offset, length = (int(v, 16) for v in window.split(","))
        part = self._xml[offset : offset + length]
        more = offset + length < len(self._xml)
        return ("m" if more else "l") + escape(part).decode("latin-1")  # qXfer data is binary: escaped
