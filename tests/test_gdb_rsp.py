"""The gdb remote protocol's framing (faultlab/gdb/rsp.py) against the rules of the gdb manual, Appendix E.

The references here are written from the manual's text, not by calling the
code under test: a checksum is the byte sum modulo 256 as two lower-case hex
digits; `}` escapes `#`, `$`, `}` and `*` as the byte XOR 0x20; a receiver acks
`+` or asks again with `-`; 0x03 outside a packet is an interrupt.
"""
from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings, strategies as st

from faultlab.gdb.rsp import Channel, RspError, checksum, escape, frame, hex_to_int_le, int_to_hex_le, unescape

TIMEOUT = 5.0


@pytest.fixture
def pair():
    """A connected socket pair: (our Channel, the raw peer playing gdb), both with timeouts."""
    ours, peer = socket.socketpair()
    peer.settimeout(TIMEOUT)
    yield Channel(ours, timeout=TIMEOUT), peer
    ours.close()
    peer.close()


def _reference_frame(data: bytes) -> bytes:
    total = 0
    for byte in data:
        total = (total + byte) % 256
    return b"$" + data + b"#" + format(total, "02x").encode()


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", b"$#00"),
        (b"OK", b"$OK#9a"),  # 0x4f + 0x4b = 0x9a
        (b"g", b"$g#67"),
        (b"qSupported", b"$qSupported#37"),  # the sum of the ASCII codes, mod 256
        (b"\xff\xff", b"$\xff\xff#fe"),  # 0x1fe mod 256
    ],
)
def test_frame_known_packets(data, expected):
    assert frame(data) == expected


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_frame_and_checksum_follow_the_rule(data):
    assert frame(data) == _reference_frame(data)
    assert checksum(data) == sum(data) % 256


@pytest.mark.parametrize(
    "raw, escaped",
    [(b"#", b"}\x03"), (b"$", b"}\x04"), (b"}", b"}]"), (b"*", b"}\x0a"), (b"a#b", b"a}\x03b"), (b"plain", b"plain")],
)
def test_escape_known_bytes(raw, escaped):
    assert escape(raw) == escaped
    assert unescape(escaped) == raw


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_escape_round_trip_and_no_bare_specials(data):
    out = escape(data)
    assert unescape(out) == data
    # No framing byte survives unescaped; every `}` starts a pair.
    assert b"#" not in out and b"$" not in out and b"*" not in out
    i = 0
    while i < len(out):
        if out[i] == 0x7D:
            assert out[i + 1] ^ 0x20 in b"#$}*"
            i += 2
        else:
            i += 1


def test_unescape_refuses_a_trailing_escape():
    with pytest.raises(RspError):
        unescape(b"abc}")


@pytest.mark.parametrize("value, size, text", [(0x1122334455667788, 8, "8877665544332211"), (0x4003C5, 4, "c5034000"), (0, 8, "0" * 16)])
def test_register_hex_is_little_endian(value, size, text):
    assert int_to_hex_le(value, size) == text
    assert hex_to_int_le(text) == value


def test_receive_acks_a_good_packet(pair):
    ch, peer = pair
    peer.sendall(b"$m1000,4#8e")  # 0x6d+0x31+3*0x30+0x2c+0x34 = 0x18e
    assert ch.receive() == b"m1000,4"
    assert peer.recv(1) == b"+"


def test_receive_nacks_a_bad_checksum_then_takes_the_resend(pair):
    ch, peer = pair
    peer.sendall(b"$g#00$g#67")
    assert ch.receive() == b"g"
    assert peer.recv(2) == b"-+"


def test_receive_skips_noise_and_reports_interrupt(pair):
    ch, peer = pair
    peer.sendall(b"++\x03")
    assert ch.receive() is None
    peer.sendall(b"garbage$?#3f")
    assert ch.receive() == b"?"


def test_send_waits_for_ack_and_resends_on_nack(pair):
    ch, peer = pair
    peer.sendall(b"-+")
    ch.send("OK")
    got = b""
    while len(got) < 12:
        got += peer.recv(100)
    assert got == b"$OK#9a$OK#9a"


def test_no_ack_mode_neither_sends_nor_waits(pair):
    ch, peer = pair
    ch.ack = False
    ch.send("OK")
    assert peer.recv(100) == b"$OK#9a"
    peer.sendall(b"$g#67")
    assert ch.receive() == b"g"
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)  # no '+'


def test_interrupt_pending_sees_ctrl_c_without_blocking(pair):
    ch, peer = pair
    assert not ch.interrupt_pending()
    peer.sendall(b"\x03")
    deadline_tries = 100
    while not ch.interrupt_pending():
        deadline_tries -= 1
        assert deadline_tries, "0x03 never seen"
        peer.settimeout(0.01)
        try:
            peer.recv(1)
        except socket.timeout:
            pass


def test_a_silent_or_closed_peer_is_an_error_not_a_hang(pair):
    ch, peer = pair
    ch.timeout = 0.2
    with pytest.raises(RspError, match="no data"):
        ch.receive()
    peer.close()
    with pytest.raises(RspError, match="closed"):
        ch.receive()
