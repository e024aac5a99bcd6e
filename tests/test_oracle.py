"""The oracle's structured verdict and the one leak rule (faultlab/leak.py) it shares with the sweep judge."""
from __future__ import annotations

from emu.outcome import OutcomeKind
from faultlab import leak
from faultlab.lab import Lab
from faultlab.oracle import Architectural, Confidentiality, GuestIntegrity, judge, snapshot

STORE = "SYM_FUNC_START(store)\n\tstr x1, [x0]\n\tmov x1, #0\n\tret\nSYM_FUNC_END(store)\n"
LOAD = "SYM_FUNC_START(load)\n\tldr x0, [x0]\n\tret\nSYM_FUNC_END(load)\n"


def _lab(text: str, *, share_back: bool = False):
    lab = Lab("inject")
    lab.load_asm("t.S", text=text)
    buf = lab.alloc("buf", 1)
    guest = lab.alloc("guest", 1)
    page = lab.donate(guest.pfns[0], share_back=share_back)
    return lab, buf, page


def test_guest_data_in_a_register_is_a_leak_with_where():
    lab, buf, page = _lab(LOAD)
    lab.write(buf.va, page.secret[:8])  # how it got there does not matter to the oracle: that it is there does
    before = snapshot(lab)
    v = judge(lab, lab.call("load", buf.va), before)
    assert (v.outcome, v.guest, v.architectural) == (OutcomeKind.RETURNED, GuestIntegrity.INTACT, Architectural.NOT_APPLICABLE)
    assert v.confidentiality is Confidentiality.LEAK and v.leak_where == f"x0={int.from_bytes(page.secret[:8], 'little'):#018x}"
    assert v.as_dict()["confidentiality"] == "leak" and v.as_dict()["leak_where"].startswith("x0=")


def test_guest_data_written_to_host_memory_is_a_leak_unless_it_was_there_before():
    lab, buf, page = _lab(STORE)
    secret = int.from_bytes(page.secret[8:16], "little")
    before = snapshot(lab)
    v = judge(lab, lab.call("store", buf.va, secret), before)
    assert v.leaked and v.leak_where == f"host frame {buf.pfns[0]:#x}"
    before = snapshot(lab)  # the same bytes again: nothing new reached the host
    v = judge(lab, lab.call("store", buf.va, secret), before)
    assert not v.leaked and v.leak_where is None


def test_pages_shared_back_are_not_private():
    lab, buf, page = _lab(LOAD, share_back=True)
    lab.write(buf.va, page.secret[:8])
    v = judge(lab, lab.call("load", buf.va), snapshot(lab))
    assert v.confidentiality is Confidentiality.OK


def test_the_register_rule_skips_kernel_pointers_and_repeated_bytes():
    secret = bytes([0x81, 0x82, 0x83, 0x84, 0x85, 0x99, 0x99, 0x99, 0x99])
    g = leak.grams(secret, 4)
    assert bytes([0x99] * 4) not in g
    assert leak.in_registers({"x2": 0x8483_8281}, [g]) == [("x2", 0x8483_8281)]
    assert leak.in_registers({"x2": 0xFFFF_0000_8483_8281}, [g]) == []
    assert leak.in_registers({"x2": 0x9999_9999}, [g]) == []
