"""The gdb Remote Serial Protocol's framing: packets, checksums, escapes, acknowledgements.

From the protocol's description in the gdb manual (Appendix E, "Overview"):
a packet is `$` data `#` two hex digits, the checksum being the sum of the
data bytes modulo 256; the receiver answers `+` (good) or `-` (send it again)
until both sides agree on no-ack mode (`QStartNoAckMode`). Inside binary data
(the `X` packet, `qXfer` replies) `#`, `$`, `}` and `*` are sent as `}` and the
byte XOR 0x20. A lone 0x03 byte outside a packet is an interrupt request
(Ctrl-C in gdb). Run-length encoding is only ever sent by stubs, and this one
does not send it.

`Channel` wraps a connected socket; every wait has a timeout (None: wait as
long as the client takes, the command line's choice) so no test can hang.
"""
from __future__ import annotations

import select
import socket

INTERRUPT = 0x03
_ESCAPED = frozenset(b"#$}*")


class RspError(ConnectionError):
    """The client went away, sent garbage we cannot resynchronise on, or timed out."""


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def frame(data: bytes) -> bytes:
    """`$data#cs`: `data` must already be escaped if it is binary."""
    return b"$" + data + b"#" + b"%02x" % checksum(data)


def escape(data: bytes) -> bytes:
    out = bytearray()
    for byte in data:
        if byte in _ESCAPED:
            out += bytes((0x7D, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for byte in it:
        if byte == 0x7D:
            nxt = next(it, None)
            if nxt is None:
                raise RspError("binary data ends in a lone escape byte '}'")
            out.append(nxt ^ 0x20)
        else:
            out.append(byte)
    return bytes(out)


def hex_to_int_le(text: str) -> int:
    """A register value as gdb sends it: target byte order (little-endian) in hex."""
    return int.from_bytes(bytes.fromhex(text), "little")


def int_to_hex_le(value: int, size: int) -> str:
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little").hex()


class Channel:
    """Packets over one connected socket, both directions, with acks until no-ack mode."""

    def __init__(self, sock: socket.socket, *, timeout: float | None = None) -> None:
        self.sock = sock
        self.timeout = timeout
        self.ack = True
        self._buf = bytearray()
        self.interrupted = False  # a 0x03 arrived while we were reading something else
        self.log: list[tuple[str, bytes]] = []  # ("<", received) / (">", sent): for tests and --verbose

    # ----------------------------------------------------------------- bytes
    def _fill(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(4096)
        except socket.timeout:
            raise RspError(f"no data from gdb within {timeout} s") from None
        except OSError as exc:
            raise RspError(f"connection lost: {exc}") from None
        if not chunk:
            raise RspError("gdb closed the connection")
        self._buf += chunk

    def _byte(self) -> int:
        if not self._buf:
            self._fill(self.timeout)
        byte = self._buf[0]
        del self._buf[0]
        return byte

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise RspError(f"connection lost: {exc}") from None

    # --------------------------------------------------------------- packets
    def send(self, data: str | bytes, *, retries: int = 5) -> None:
        """Send one packet; in ack mode wait for `+` (resending on `-`)."""
        raw = data.encode("latin-1") if isinstance(data, str) else data
        packet = frame(raw)
        self.log.append((">", raw))
        for _ in range(retries):
            self.send_raw(packet)
            if not self.ack:
                return
            while True:
                byte = self._byte()
                if byte == ord("+"):
                    return
                if byte == ord("-"):
                    break
                if byte == INTERRUPT:
                    self.interrupted = True
                # anything else before the ack is line noise: skip it
        raise RspError(f"gdb refused a packet {retries} times")

    def receive(self) -> bytes | None:
        """The next packet's data (checksum verified, acked), or None for an interrupt byte."""
        while True:
            byte = self._byte()
            if byte == INTERRUPT:
                return None
            if byte != ord("$"):
                continue  # stray acks, noise between packets
            data = bytearray()
            while (byte := self._byte()) != ord("#"):
                data.append(byte)
            sent = bytes((self._byte(), self._byte()))
            try:
                good = int(sent, 16) == checksum(data)
            except ValueError:
                good = False
            if not self.ack:
                self.log.append(("<", bytes(data)))
                return bytes(data)
            if good:
                self.send_raw(b"+")
                self.log.append(("<", bytes(data)))
                return bytes(data)
            self.send_raw(b"-")

    def interrupt_pending(self) -> bool:
        """Without waiting: has the client sent 0x03 (Ctrl-C) since we last looked?"""
        if self.interrupted:
            self.interrupted = False
            return True
        if not self._buf:
            try:
                ready, _, _ = select.select([self.sock], [], [], 0)
            except (OSError, ValueError):
                return False
            if not ready:
                return False
            try:
                self._fill(0.5)
            except RspError:
                return False
        if self._buf and self._buf[0] == INTERRUPT:
            del self._buf[0]
            return True
        return False
