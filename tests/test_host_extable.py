"""The host's exception-table handlers (host/extable.py), per kernel numbering, against extable.c references.

zeropad: the aligned re-read shifted into place, at every byte offset before a
protected page; ERR_ZERO: the register effects for (err, zero) pairs including
register 31 (XZR); UACCESS_CPY: the WnR check; unknown types: a kernel BUG.
"""
from __future__ import annotations

import pytest

from conftest import CODE_VA, DATA_VA
from kimage.extable_format import NUMBERING_V6_1, NUMBERING_V7, ExtableEntry, ExType, pack_err_zero, pack_zeropad
from emu.memory import PAGE_SIZE
from emu.outcome import Outcome
from hyp.ownership import PageState
from reference_fault import (
    EFAULT,
    GUEST_PATTERN,
    err_zero_reference,
    make_system,
    neg,
    oops_line,
    zeropad_reference,
)

NUMBERINGS = {"v6.1": NUMBERING_V6_1, "v7": NUMBERING_V7}
BOUNDARY = DATA_VA + PAGE_SIZE  # the second data page is the protected (or unmapped) one
GFN = 0x10


def page_pattern(seed: int = 0) -> bytes:
    """Distinct, non-zero bytes: a zero that shows up in a result came from the padding."""
    return bytes(((i * 7 + seed) % 255) + 1 for i in range(PAGE_SIZE))


def add_raw_entry(s, insn: int, fixup: int, type_number: int, data: int, numbering) -> None:
    s.kernel.add_extable([ExtableEntry(insn, fixup, type_number, data)], numbering)


# --------------------------------------------------------------------------------------------
# LOAD_UNALIGNED_ZEROPAD
# --------------------------------------------------------------------------------------------


def _zeropad_system(policy: str, numbering, protect: str, data_reg: int = 1, addr_reg: int = 0):
    s = make_system(policy, numbering)
    page = page_pattern()
    s.machine.write(DATA_VA, page)
    if protect == "donated":
        s.donate(s.data_pfns[1], GFN)
    else:
        s.machine.unmap_page(BOUNDARY)
    code = s.load(f"mov x{addr_reg}, x0; ldr x{data_reg}, [x{addr_reg}]; mov x0, x{data_reg}; ret")
    s.add_extable(code + 4, code + 8, ExType.LOAD_UNALIGNED_ZEROPAD, pack_zeropad(data_reg, addr_reg))
    return s, page, code


def _check_guest_intact(s, protect: str) -> None:
    if protect == "donated":
        assert s.own.guest_state(s.guest, GFN) is PageState.OWNED
        assert s.frame(s.data_pfns[1]) == bytes([GUEST_PATTERN]) * PAGE_SIZE
        assert s.own.check_invariants() == []


@pytest.mark.parametrize("back", range(1, 9), ids=lambda k: f"end-{k}")
@pytest.mark.parametrize("protect", ["donated", "unmapped"])
@pytest.mark.parametrize("policy", ["inject", "inject-reclaim"])
@pytest.mark.parametrize("numbering", NUMBERINGS.values(), ids=NUMBERINGS.keys())
def test_zeropad_in_the_last_8_bytes_before_a_protected_page(numbering, policy, protect, back):
    s, page, code = _zeropad_system(policy, numbering, protect)
    addr = BOUNDARY - back
    result = s.machine.call(code, addr)
    assert result.returned, result.outcome
    assert result.x0 == zeropad_reference(page, DATA_VA, addr, BOUNDARY)
    crossed = back < 8
    assert len(result.events_of("fixup")) == int(crossed)
    assert result.events_of("reclaim") == []  # the fixup is found first: nothing is taken from the guest
    _check_guest_intact(s, protect)


@pytest.mark.parametrize("regs", [(0, 0), (29, 28), (17, 3)], ids=lambda r: f"x{r[0]}-from-x{r[1]}")
def test_zeropad_uses_the_entrys_registers(regs):
    data_reg, addr_reg = regs
    s, page, code = _zeropad_system("inject", NUMBERING_V7, "donated", data_reg, addr_reg)
    for back in range(1, 8):
        addr = BOUNDARY - back
        result = s.machine.call(code, addr)
        assert result.returned and result.x0 == zeropad_reference(page, DATA_VA, addr, BOUNDARY), back
        if addr_reg != data_reg:
            assert result.regs[f"x{addr_reg}"] == addr  # the address register is left alone


def test_zeropad_under_reclaim_reads_the_same_bytes_but_the_guest_loses_its_page():
    """README row (a): the value is identical, the integrity is not."""
    s, page, code = _zeropad_system("reclaim", NUMBERING_V7, "donated")
    addr = BOUNDARY - 3
    result = s.machine.call(code, addr)
    assert result.returned and result.x0 == zeropad_reference(page, DATA_VA, addr, BOUNDARY)
    assert result.events_of("fixup") == []
    assert s.own.guest_state(s.guest, GFN) is PageState.POISON


@pytest.mark.sweep
@pytest.mark.parametrize("protect", ["donated", "unmapped"])
@pytest.mark.parametrize("numbering", NUMBERINGS.values(), ids=NUMBERINGS.keys())
def test_zeropad_every_address_of_the_page(numbering, protect):
    s, page, code = _zeropad_system("inject", numbering, protect)
    for addr in range(DATA_VA, BOUNDARY):
        result = s.machine.call(code, addr)
        assert result.returned and result.x0 == zeropad_reference(page, DATA_VA, addr, BOUNDARY), hex(addr)
    _check_guest_intact(s, protect)


# --------------------------------------------------------------------------------------------
# UACCESS_ERR_ZERO / KACCESS_ERR_ZERO
# --------------------------------------------------------------------------------------------

ERRZERO_UNMAPPED = 0xFFFF_0000_0070_0000


class ErrZeroRig:
    """One system: an exit that loads x0..x30 with distinct values, a faulting ldr, an exit that captures."""

    def __init__(self, numbering) -> None:
        self.numbering = numbering
        self.s = make_system("inject", numbering)
        m = self.s.machine
        self.code = self.s.load("nop; ldr x9, [x10]; nop")
        # Every register holds a distinct unmapped kernel address, so any base register faults.
        self.before = [ERRZERO_UNMAPPED + (i << 12) + i for i in range(31)]

        def prologue(machine):
            for i, value in enumerate(self.before):
                machine.cpu.set_x(i, value)
            machine.cpu.pc = self.code + 4

        def capture(machine):
            return Outcome("captured", "fixup target reached", machine.cpu.snapshot())

        m.add_exit(self.code, prologue)
        m.add_exit(self.code + 8, capture)

    def run(self, kind: ExType, err: int, zero: int) -> dict:
        self.s.add_extable(self.code + 4, self.code + 8, kind, pack_err_zero(err, zero), self.numbering)
        result = self.s.machine.call(self.code)
        assert result.outcome.kind == "captured", result.outcome
        return result.outcome.detail


@pytest.fixture(scope="module", params=NUMBERINGS.values(), ids=NUMBERINGS.keys())
def errzero(request):
    return ErrZeroRig(request.param)


SAMPLE_REGS = (0, 1, 9, 10, 29, 30, 31)


@pytest.mark.parametrize("kind", [ExType.UACCESS_ERR_ZERO, ExType.KACCESS_ERR_ZERO], ids=lambda k: k.value)
@pytest.mark.parametrize("zero", SAMPLE_REGS, ids=lambda r: f"zero{r}")
@pytest.mark.parametrize("err", SAMPLE_REGS, ids=lambda r: f"err{r}")
def test_err_zero_register_effects(errzero, kind, err, zero):
    regs = errzero.run(kind, err, zero)
    assert [regs[f"x{i}"] for i in range(31)] == err_zero_reference(errzero.before, err, zero)
    assert regs["pc"] == errzero.code + 8
    assert regs["sp"] == errzero.s.machine.kernel_stack_top


@pytest.mark.sweep
@pytest.mark.parametrize("kind", [ExType.UACCESS_ERR_ZERO, ExType.KACCESS_ERR_ZERO], ids=lambda k: k.value)
def test_err_zero_every_register_pair(errzero, kind):
    for err in range(32):
        for zero in range(32):
            regs = errzero.run(kind, err, zero)
            assert [regs[f"x{i}"] for i in range(31)] == err_zero_reference(errzero.before, err, zero), (err, zero)


def test_err_zero_through_an_injected_abort():
    """The same handler behind a pKVM injection: the host sees only ESR/FAR/ELR and fixes up."""
    s = make_system("inject")
    s.donate(s.data_pfns[1], GFN)
    code = s.load("ldr x5, [x0]; mov x0, x5; ret")
    s.add_extable(code, code + 4, ExType.UACCESS_ERR_ZERO, pack_err_zero(5, 31))
    result = s.machine.call(code, BOUNDARY + 0x100)
    assert result.returned and result.x0 == neg(EFAULT)


# --------------------------------------------------------------------------------------------
# UACCESS_CPY (v7 numbering only): fix up only a fault on the user side of the copy
# --------------------------------------------------------------------------------------------

CPY_CASES = {
    # (entry data bit 0 = "the user side writes", the faulting access)
    "user-reads-load-faults": (0, "ldr x1, [x0]", True),
    "user-writes-store-faults": (1, "str x1, [x0]", True),
    "user-writes-load-faults": (1, "ldr x1, [x0]", False),
    "user-reads-store-faults": (0, "str x1, [x0]", False),
}


@pytest.mark.parametrize("policy", ["inject-reclaim", "inject"])
@pytest.mark.parametrize("case", CPY_CASES.values(), ids=CPY_CASES.keys())
def test_uaccess_cpy_checks_wnr(case, policy):
    data, access, fixed = case
    s = make_system(policy, NUMBERING_V7)
    pfn = s.data_pfns[1]
    s.donate(pfn, GFN)
    code = s.load(f"{access}; mov x0, #0x11; ret; mov x0, #0x66; ret")
    s.add_extable(code, code + 12, ExType.UACCESS_CPY, data, NUMBERING_V7)
    va = BOUNDARY + 0x80
    result = s.machine.call(code, va, 0xABCD)
    if fixed:
        assert result.returned and result.x0 == 0x66
        assert result.regs["x1"] == 0xABCD  # the handler writes no register
        assert s.own.guest_state(s.guest, GFN) is PageState.OWNED
        assert s.frame(pfn) == bytes([GUEST_PATTERN]) * PAGE_SIZE
    elif policy == "inject":
        assert result.outcome.kind == "host-oops"
        assert result.outcome.message == oops_line("access to hypervisor-protected memory", va)
    else:
        # No fixup: the kernel falls through to the force-reclaim path and retries the access.
        assert result.returned and result.x0 == 0x11
        assert s.own.guest_state(s.guest, GFN) is PageState.POISON
        stored = 0xABCD if access.startswith("str") else 0
        assert s.machine.phys.read((pfn << 12) + 0x80, 8) == stored.to_bytes(8, "little")


# --------------------------------------------------------------------------------------------
# Type numbers: per kernel generation; an unknown type is a kernel BUG
# --------------------------------------------------------------------------------------------

UNKNOWN_TYPES = {
    "v6.1-type5": (NUMBERING_V6_1, 5),
    "v6.1-type0x7fff": (NUMBERING_V6_1, 0x7FFF),
    "v7-type6": (NUMBERING_V7, 6),
    "v7-type-minus1": (NUMBERING_V7, 0xFFFF),
    "v6.1-none": (NUMBERING_V6_1, 0),
    "v7-none": (NUMBERING_V7, 0),
    "v7-bpf": (NUMBERING_V7, 1),  # needs a BPF JIT image: a BUG in this model
}


@pytest.mark.parametrize("case", UNKNOWN_TYPES.values(), ids=UNKNOWN_TYPES.keys())
def test_unknown_extable_type_is_a_host_bug(case):
    numbering, type_number = case
    s = make_system("inject", numbering)
    code = s.load("ldr x1, [x0]; ret; ret")
    add_raw_entry(s, code, code + 8, type_number, 0, numbering)
    result = s.machine.call(code, ERRZERO_UNMAPPED)
    assert result.outcome.kind == "host-bug", result.outcome
    assert "extable" in result.outcome.message


@pytest.mark.parametrize("numbering", NUMBERINGS.values(), ids=NUMBERINGS.keys())
def test_type_4_is_zeropad_in_v6_1_and_uaccess_cpy_in_v7(numbering):
    s, page, code = _zeropad_system("inject", numbering, "donated")
    # Replace the entry with a raw type 4 whose data means "x1 from x0" to zeropad, "user side writes" to CPY.
    add_raw_entry(s, code + 4, code + 8, 4, pack_zeropad(1, 0), numbering)
    addr = BOUNDARY - 5
    result = s.machine.call(code, addr)
    if numbering is NUMBERING_V6_1:
        assert result.returned and result.x0 == zeropad_reference(page, DATA_VA, addr, BOUNDARY)
    else:
        # A load faulting under a "user side writes" copy entry: no fixup, the kernel dies.
        assert result.outcome.kind == "host-oops"
        assert result.outcome.message == oops_line("access to hypervisor-protected memory", BOUNDARY)


@pytest.mark.parametrize("numbering", NUMBERINGS.values(), ids=NUMBERINGS.keys())
def test_type_5_is_zeropad_in_v7_and_unknown_in_v6_1(numbering):
    s, page, code = _zeropad_system("inject", numbering, "donated")
    add_raw_entry(s, code + 4, code + 8, 5, pack_zeropad(1, 0), numbering)
    addr = BOUNDARY - 2
    result = s.machine.call(code, addr)
    if numbering is NUMBERING_V7:
        assert result.returned and result.x0 == zeropad_reference(page, DATA_VA, addr, BOUNDARY)
    else:
        assert result.outcome.kind == "host-bug"


def test_entries_keep_the_numbering_of_the_image_they_came_from():
    """A v6.1 table loaded into a v7 host: its type 4 is still zeropad."""
    s, page, code = _zeropad_system("inject", NUMBERING_V7, "donated")
    add_raw_entry(s, code + 4, code + 8, 4, pack_zeropad(1, 0), NUMBERING_V6_1)
    addr = BOUNDARY - 6
    result = s.machine.call(code, addr)
    assert result.returned and result.x0 == zeropad_reference(page, DATA_VA, addr, BOUNDARY)
    assert CODE_VA == code
