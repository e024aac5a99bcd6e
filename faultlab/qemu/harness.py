"""The RAM image QEMU boots: the assembled harness, its translation tables and a batch's case table.

QEMU's RAM is a file (`memory-backend-file`, share=on), so the image is written straight into
that file before the boot and the result records are read straight out of it after QEMU has
powered off: no monitor, no serial parsing (the UART only says "done").

Tables (4 KiB granule):
  stage 1, EL1&0, TTBR0, T0SZ = 25 (39-bit VAs, walk from level 1): VA 1-2 GiB identity-maps
  RAM with 2 MiB EL1 read/write/execute blocks (the harness, its vectors and the EL1 stubs);
  VA 2-3 GiB holds the data pages and the EL0 stub page in one level-3 table (layout.py).
  stage 2, T0SZ = 32 (4 GiB IPA, walk from level 1, VTCR_EL2.SL0 = 1): identity over RAM with
  2 MiB blocks, except layout.FRAMES_PA's 2 MiB, which has a level-3 table so that single frames
  can fault.
Sources: Arm ARM D8.1-D8.3 (VMSAv8-64 translation), D13.2 (TCR_EL1, VTCR_EL2, HCR_EL2, CPTR_EL2).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

from kasm import Image, assemble

from faultlab.qemu import harness_asm as H
from faultlab.qemu.cases import Case
from faultlab.qemu.forms import FORMS, Form
from faultlab.qemu.layout import (
    CASE_BYTES, CASES_PA, DATA_HI_PA, DATA_HI_VA, DATA_LO_PA, DATA_LO_VA, EL0_STUB_PA, EL0_STUB_VA, FRAMES_PA, HARNESS_PA, MAX_STUBS,
    PAGE, RAM_BASE, RAM_SIZE, RESULT_BYTES, RESULTS_PA, S1, S1_DATA_L2_PA, S1_DATA_L3_PA, S1_EL0_L3_PA, S2, STUB_BYTES,
    TABLES_PA, V_REGS, WINDOW_PA, X_REGS, s1_block, s1_page, s1_table, s2_block, s2_page, s2_table,
    window_pattern,
)

S1_L1_PA = TABLES_PA
S1_L2_RAM_PA = TABLES_PA + 0x1000
S2_L1_PA = TABLES_PA + 0x2000
S2_L2_PA = TABLES_PA + 0x3000
S2_L3_PA = TABLES_PA + 0x4000
STACK_PA = TABLES_PA + 0x10000

HCR_VM, HCR_RW = 1 << 0, 1 << 31
# VTCR_EL2: T0SZ 32, SL0 = 1 (level 1), IRGN0/ORGN0 write-back, SH0 inner, TG0 4K, PS 32 bits, bit 31 RES1.
VTCR = 32 | 1 << 6 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 31
# TCR_EL1: T0SZ 25, IRGN0/ORGN0 write-back, SH0 inner, TG0 4K, EPD1 (no TTBR1 walks), IPS 32 bits.
TCR = 25 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23
MAIR = 0xFF  # attr0: Normal, write-back
CPTR_EL2 = 0x32FF  # RES1 bits, TZ (SVE traps, unused), TFP = 0: SIMD/FP not trapped
CPACR_EL1 = 3 << 20  # FPEN: SIMD/FP usable at EL0 and EL1
SPSR_EL0T = 0x3C0  # DAIF masked, EL0t
SPSR_EL1H = 0x3C5  # DAIF masked, EL1h (PAN = 0)
SPSR_PAN = 1 << 22  # PSTATE.PAN (FEAT_PAN), restored by eret

_BLOCK = 2 << 20


def s1_entry_pa(va: int) -> int:
    """Where the stage-1 level-3 entry of a data-region VA lives."""
    return S1_DATA_L3_PA + 8 * ((va >> 12) & 0x1FF)


def s2_entry_pa(pa: int) -> int:
    """Where the stage-2 level-3 entry of a frame in layout.FRAMES_PA's 2 MiB lives."""
    assert FRAMES_PA <= pa < FRAMES_PA + _BLOCK
    return S2_L3_PA + 8 * ((pa - FRAMES_PA) >> 12)


@dataclass
class Harness:
    """The assembled harness for a list of forms (one stub per form at each EL)."""

    forms: tuple[Form, ...] = FORMS

    def __post_init__(self) -> None:
        if len(self.forms) > MAX_STUBS:
            raise ValueError(f"at most {MAX_STUBS} forms fit the EL0 stub page")
        self.index = {form.name: i for i, form in enumerate(self.forms)}

    @cached_property
    def image(self) -> Image:
        return assemble(H.harness_source([f.text for f in self.forms]), HARNESS_PA, filename="<qemu-harness>")

    @cached_property
    def el0_stubs(self) -> bytes:
        """`insn; svc #0` for every form, STUB_BYTES apart, assembled at EL0_STUB_VA."""
        src = "\n".join(f".balign 8\n{f.text}\nsvc #0" for f in self.forms)
        data = assemble(src, EL0_STUB_VA, filename="<qemu-el0-stubs>").data
        assert len(data) == STUB_BYTES * len(self.forms)
        return data

    def stub_va(self, form: Form, el: int) -> int:
        i = self.index[form.name]
        return self.image.symbol(f"stub_{i}") if el == 1 else EL0_STUB_VA + STUB_BYTES * i

    # ------------------------------------------------------------------ the RAM image
    def regions(self, cases: list[Case]) -> list[tuple[int, bytes]]:
        """(PA, bytes) to write into QEMU's RAM for one boot running `cases`."""
        image = bytearray(self.image.data)
        config = self.image.symbol("config") - HARNESS_PA

        def put(name: str, value: int) -> None:
            struct.pack_into("<Q", image, config + H.CFG[name], value)

        for name, value in (
            ("hcr", HCR_VM | HCR_RW), ("vtcr", VTCR), ("vttbr", S2_L1_PA), ("tcr", TCR), ("mair", MAIR),
            ("ttbr0", S1_L1_PA), ("cptr", CPTR_EL2), ("cpacr", CPACR_EL1), ("sp_el1", STACK_PA),
            ("sp_el0", STACK_PA - 0x1000), ("ncases", len(cases)), ("cases", CASES_PA), ("results", RESULTS_PA),
            ("window", WINDOW_PA),
        ):
            put(name, value)
        image[config + H.CFG_PATTERN: config + H.CFG_PATTERN + len(window_pattern())] = window_pattern()
        for n, value in enumerate(X_REGS):
            struct.pack_into("<Q", image, config + H.CFG_XREGS + 8 * n, value)
        for n, value in enumerate(V_REGS):
            image[config + H.CFG_VREGS + 16 * n: config + H.CFG_VREGS + 16 * (n + 1)] = value.to_bytes(16, "little")
        return [(HARNESS_PA, bytes(image)), (EL0_STUB_PA, self.el0_stubs), *self._tables(),
                (CASES_PA, self.case_table(cases)), (RESULTS_PA, bytes(RESULT_BYTES * len(cases)))]

    def _tables(self) -> list[tuple[int, bytes]]:
        def table(entries: dict[int, int]) -> bytes:
            out = bytearray(PAGE)
            for i, value in entries.items():
                struct.pack_into("<Q", out, 8 * i, value)
            return bytes(out)

        ram_blocks = range(RAM_BASE, RAM_BASE + RAM_SIZE, _BLOCK)
        s1_l1 = table({1: s1_table(S1_L2_RAM_PA), 2: s1_table(S1_DATA_L2_PA)})
        s1_l2_ram = table({(pa >> 21) & 0x1FF: s1_block(pa, el1_exec=True) for pa in ram_blocks})
        s1_l2_data = table({(DATA_LO_VA >> 21) & 0x1FF: s1_table(S1_DATA_L3_PA),
                            (EL0_STUB_VA >> 21) & 0x1FF: s1_table(S1_EL0_L3_PA)})
        s1_l3 = table({(va >> 12) & 0x1FF: s1_page(pa, S1.KERNEL_RW) for va, pa in _data_pages()})
        s1_el0_l3 = table({(EL0_STUB_VA >> 12) & 0x1FF: s1_page(EL0_STUB_PA, S1.USER_RX)})
        s2_l1 = table({1: s2_table(S2_L2_PA)})
        s2_l2 = table({(pa >> 21) & 0x1FF: (s2_table(S2_L3_PA) if pa == FRAMES_PA else s2_block(pa)) for pa in ram_blocks})
        s2_l3 = table({i: s2_page(FRAMES_PA + PAGE * i, S2.RW) for i in range(512)})
        return [(S1_L1_PA, s1_l1), (S1_L2_RAM_PA, s1_l2_ram), (S1_DATA_L2_PA, s1_l2_data), (S1_DATA_L3_PA, s1_l3),
                (S1_EL0_L3_PA, s1_el0_l3), (S2_L1_PA, s2_l1), (S2_L2_PA, s2_l2), (S2_L3_PA, s2_l3)]

    def case_table(self, cases: list[Case]) -> bytes:
        out = bytearray(CASE_BYTES * len(cases))
        for n, case in enumerate(cases):
            patches = case_patches(case)
            if len(patches) > H.MAX_PATCHES:
                raise ValueError(f"{case.id}: more than {H.MAX_PATCHES} table entries")
            spsr = (SPSR_EL1H | (SPSR_PAN if case.pan else 0)) if case.el == 1 else SPSR_EL0T
            words = [self.stub_va(case.form, case.el), spsr, case.x0, case.sctlr, len(patches)]
            for address, value in patches:
                words += [address, value]
            struct.pack_into(f"<{len(words)}Q", out, CASE_BYTES * n, *words)
        return bytes(out)


def _data_pages() -> list[tuple[int, int]]:
    return [(DATA_LO_VA, DATA_LO_PA), (DATA_HI_VA, DATA_HI_PA)]


def case_patches(case: Case) -> list[tuple[int, int]]:
    """The table entries a case writes before it runs (the harness puts the old ones back after)."""
    (lo_va, lo_pa), (hi_va, hi_pa) = _data_pages()
    return [
        (s1_entry_pa(lo_va), s1_page(lo_pa, case.s1[0])),
        (s1_entry_pa(hi_va), s1_page(hi_pa, case.s1[1])),
        (s2_entry_pa(lo_pa), s2_page(lo_pa, case.s2[0])),
        (s2_entry_pa(hi_pa), s2_page(hi_pa, case.s2[1])),
        (s2_entry_pa(S1_DATA_L3_PA), s2_page(S1_DATA_L3_PA, case.s2_walk)),
    ]
