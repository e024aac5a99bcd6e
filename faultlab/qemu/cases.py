"""Cases of the differential, grouped in families, and what each family's status is.

A case is one form executed once at EL0 or EL1 with x0 chosen so that the access sits at a given
offset below the page boundary (layout.BOUNDARY_VA), with one of the two data pages made to
fault at stage 1 or stage 2 (translation: an invalid level-3 entry; permission: a read-only one).
The translation setup is data (`s1`, `s2`, `sctlr`), not code, so both sides build it from the
same description, and a new fault class is a new family with new entries:

  * an access-flag family: a stage-1 entry kind with AF = 0 (layout.S1, s1_page);
  * an S1PTW family: a stage-2 entry for the frame of the stage-1 level-3 table
    (layout.S1_DATA_L3_PA) made invalid, i.e. a third `s2` target;
  * alignment with SCTLR_EL1.A = 1 or the MMU off: the `sctlr` of the case.

A family is either expected to agree (`gap` is None) or is a named gap of our machine, whose
differences are counted apart until the gap closes (then the mark is removed).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterator

from faultlab.qemu.forms import FORMS, Form, FormClass
from faultlab.qemu.layout import BOUNDARY_VA, PAGE, S1, S1_DATA_L3_PA, S2, window_pattern
from faultlab.qemu.observation import Observation, Taken


class Page(enum.Enum):
    """Which of the two data pages faults."""

    LO = "lo"
    HI = "hi"


class Fault(enum.Enum):
    TRANSLATION = "translation"
    PERMISSION = "permission"
    ACCESS_FLAG = "access-flag"
    WALK = "walk"  # the stage-1 walk's table frame faults at stage 2 (S1PTW)
    PAN = "pan"  # an EL1 access to user pages with PSTATE.PAN = 1


# SCTLR_EL1 as Linux sets it with the MMU on (arch/arm64/include/asm/sysreg.h INIT_SCTLR_EL1_MMU_ON),
# less what the CPU feature set leaves out: M, C, SA, SA0, I, DZE (EL0 may DC ZVA), UCT, nTWE,
# UCI (EL0 may clean/invalidate by VA), SPAN, and the RES1 bits 11, 20, 22, 28, 29. A = 0.
SCTLR_M, SCTLR_A, SCTLR_C, SCTLR_SA, SCTLR_SA0 = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4
SCTLR_I, SCTLR_DZE, SCTLR_UCT, SCTLR_NTWE, SCTLR_SPAN, SCTLR_UCI = 1 << 12, 1 << 14, 1 << 15, 1 << 18, 1 << 23, 1 << 26
SCTLR_RES1 = (1 << 11) | (1 << 20) | (1 << 22) | (1 << 28) | (1 << 29)
SCTLR_LINUX = (SCTLR_M | SCTLR_C | SCTLR_SA | SCTLR_SA0 | SCTLR_I | SCTLR_DZE | SCTLR_UCT | SCTLR_NTWE
               | SCTLR_SPAN | SCTLR_UCI | SCTLR_RES1)


@dataclass(frozen=True)
class Case:
    family: str
    form: Form
    el: int
    stage: int  # where the fault is placed: 1 or 2
    fault: Fault
    page: Page
    x0: int
    s1: tuple[S1, S1]  # (LO, HI) stage-1 entries
    s2: tuple[S2, S2]  # (LO, HI) stage-2 entries
    sctlr: int = SCTLR_LINUX
    s2_walk: S2 = S2.RW  # stage-2 entry of the frame holding the data pages' stage-1 level-3 table
    pan: bool = False  # PSTATE.PAN at EL1

    @property
    def address(self) -> int:
        """The lowest byte the form accesses (for DC/prefetch: the operand plus disp)."""
        return self.x0 + self.form.disp

    @property
    def offset(self) -> int:
        """How far below the boundary the access starts (negative: above it)."""
        return BOUNDARY_VA - self.address

    @property
    def id(self) -> str:
        return f"{self.form.name}/el{self.el}/s{self.stage}-{self.fault.value}/{self.page.value}/{self.offset:+d}"


@dataclass(frozen=True)
class Family:
    name: str
    doc: str
    cases: Callable[[], Iterator[Case]]
    gap: str | None = None  # why our machine cannot agree yet (an issue item), or None
    # For a gap family: the Arm ARM's outcome, checked on QEMU's observation (so a gap is only
    # counted as one while QEMU shows what the architecture requires).
    architectural: Callable[[Case, Observation], bool] | None = None


def _entries(form: Form, el: int, stage: int, fault: Fault, page: Page) -> tuple[tuple[S1, S1], tuple[S2, S2]]:
    user = el == 0 or form.cls is FormClass.UNPRIV  # LDTR/STTR at EL1 are checked with EL0 permissions
    ok1, ro1, old1 = (S1.USER_RW, S1.USER_RO, S1.USER_RW_OLD) if user else (S1.KERNEL_RW, S1.KERNEL_RO, S1.KERNEL_RW_OLD)
    bad1 = {Fault.TRANSLATION: S1.INVALID, Fault.PERMISSION: ro1, Fault.ACCESS_FLAG: old1}.get(fault, ok1)
    bad2 = {Fault.TRANSLATION: S2.INVALID, Fault.PERMISSION: S2.RO, Fault.ACCESS_FLAG: S2.OLD}.get(fault, S2.RW)
    s1 = [ok1, ok1]
    s2 = [S2.RW, S2.RW]
    i = 0 if page is Page.LO else 1
    if stage == 1:
        s1[i] = bad1
    else:
        s2[i] = bad2
    return (s1[0], s1[1]), (s2[0], s2[1])


def _case(family: str, form: Form, el: int, stage: int, fault: Fault, page: Page, address: int) -> Case:
    s1, s2 = _entries(form, el, stage, fault, page)
    walk = S2.INVALID if fault is Fault.WALK else S2.RW
    return Case(family, form, el, stage, fault, page, address - form.disp, s1, s2, s2_walk=walk)


def _els(form: Form) -> tuple[int, ...]:
    return (0, 1) if form.el0 else (1,)


def _offsets(form: Form, page: Page, *, straddling_only: bool = False) -> range:
    """Offsets below the boundary: HI faulting: 0 (wholly in HI) .. size-1; LO faulting: 1 .. size-1."""
    first = 1 if (page is Page.LO or straddling_only) else 0
    return range(first, form.size)


def _boundary_cases(family: str, fault: Fault, want: Callable[[Form], bool], stages=(1, 2)) -> Iterator[Case]:
    for form in FORMS:
        if form.operand or not want(form):
            continue
        for el in _els(form):
            for stage in stages:
                for page in (Page.HI, Page.LO):
                    # Aligned-only classes straddle only by being misaligned: that is the alignment family.
                    offsets = range(0, 1) if form.aligned else _offsets(form, page)
                    for off in offsets:
                        if page is Page.LO and off == 0:
                            continue
                        yield _case(family, form, el, stage, fault, page, BOUNDARY_VA - off)


def straddle_cases() -> Iterator[Case]:
    return _boundary_cases("straddle", Fault.TRANSLATION, lambda f: True)


def permission_cases() -> Iterator[Case]:
    return _boundary_cases("permission", Fault.PERMISSION, lambda f: f.writes)


def access_flag_cases() -> Iterator[Case]:
    """Stage-1 entries with AF = 0 (hardware AF update off): an Access flag fault at stage 1."""
    return _boundary_cases("access-flag", Fault.ACCESS_FLAG, lambda f: not f.store_exclusive, stages=(1,))


def access_flag_s2_cases() -> Iterator[Case]:
    """Stage-2 entries with AF = 0 (VTCR_EL2.HA = 0): an Access flag fault at stage 2."""
    return _boundary_cases("access-flag-s2", Fault.ACCESS_FLAG, lambda f: not f.store_exclusive, stages=(2,))


def s1ptw_cases() -> Iterator[Case]:
    """The data pages' stage-1 level-3 table sits in a frame stage 2 refuses: the walk faults (S1PTW)."""
    for form in FORMS:
        if (form.operand and form.cls is not FormClass.DC_ZVA) or form.store_exclusive:
            continue
        offsets = (0,) if (form.aligned or form.operand or form.size < 2) else (0, 1)
        for el in _els(form):
            for off in offsets:
                yield _case("s1ptw", form, el, 2, Fault.WALK, Page.LO if off else Page.HI, BOUNDARY_VA - off)


def pan_cases() -> Iterator[Case]:
    """Every form at EL1 with PSTATE.PAN = 1 on user pages: a permission fault on the first byte, except
    for LDTR/STTR (PAN does not apply to unprivileged accesses) and DC/IC by VA and prefetch (not data
    accesses PAN restricts; DC ZVA is one)."""
    for form in FORMS:
        offsets = (0,) if (form.operand or form.aligned or form.size < 2) else sorted({0, 1, form.size // 2})
        for off in offsets:
            address = BOUNDARY_VA - off
            yield Case("pan", form, 1, 1, Fault.PAN, Page.LO if off else Page.HI, address - form.disp,
                       (S1.USER_RW, S1.USER_RW), (S2.RW, S2.RW), pan=True)


def maintenance_cases() -> Iterator[Case]:
    """DC ZVA, DC/IC by VA and prefetch with the operand anywhere in a faulting page."""
    for form in FORMS:
        if not form.operand:
            continue
        faults = (Fault.TRANSLATION, Fault.PERMISSION) if form.writes else (Fault.TRANSLATION,)
        for el in _els(form):
            for stage in (1, 2):
                for fault in faults:
                    for k in (0, 1, 8, 63, PAGE - 8):
                        yield _case("maintenance", form, el, stage, fault, Page.HI, BOUNDARY_VA + k)


def alignment_cases() -> Iterator[Case]:
    """Exclusives, atomics and acquire/release straddling the boundary: an Alignment fault first."""
    for form in FORMS:
        if not form.aligned or form.size < 2:
            continue
        for el in _els(form):
            for stage in (1, 2):
                for off in _offsets(form, Page.HI, straddling_only=True):
                    yield _case("alignment", form, el, stage, Fault.TRANSLATION, Page.HI, BOUNDARY_VA - off)


def alignment_fault(case: Case, obs: Observation) -> bool:
    """Arm ARM AArch64.UnalignedAccessFaults / AArch64.AlignmentFault: taken to EL1 before any translation,
    EC 0x24 (from EL0) or 0x25, DFSC 0x21, FAR = the access address, no memory or register effect."""
    return (
        obs.taken is Taken.EL1 and obs.ec == (0x24 if case.el == 0 else 0x25) and obs.dfsc == 0x21
        and obs.far == case.address and obs.elr_offset == 0 and obs.regs[:1] == (case.x0,)
        and obs.window == window_pattern() and not obs.esr & (1 << 24)
    )


def _first_faulting_byte(case: Case) -> int:
    return case.address if case.page is Page.LO else max(case.address, BOUNDARY_VA)


def access_flag_fault(case: Case, obs: Observation) -> bool:
    """Arm ARM: an Access flag fault at stage 1 (DFSC 0x08 + level, here level 3 = 0x0B), taken to EL1,
    FAR = the first byte accessed in the faulting page, no instruction syndrome."""
    return (
        obs.taken is Taken.EL1 and obs.ec == (0x24 if case.el == 0 else 0x25) and obs.dfsc == 0x0B
        and obs.far == _first_faulting_byte(case) and obs.elr_offset == 0 and not obs.esr & (1 << 24)
    )


def s1ptw_fault(case: Case, obs: Observation) -> bool:
    """Arm ARM: a stage-2 fault on the stage-1 walk: ESR_EL2 EC 0x24, S1PTW = 1, DFSC = the stage-2 fault
    (translation, level 3 = 0x07), ISV = 0, FAR = the VA being translated, HPFAR = the table frame's IPA."""
    far = case.x0 if case.form.operand else case.address
    return (
        obs.taken is Taken.EL2 and obs.ec == 0x24 and bool(obs.esr & (1 << 7)) and obs.dfsc == 0x07
        and not obs.esr & (1 << 24) and obs.far == far and obs.hpfar == S1_DATA_L3_PA >> 8
        and obs.elr_offset == 0 and obs.window == window_pattern()
    )


FAMILIES: tuple[Family, ...] = (
    Family("straddle", "every form at every offset across the boundary, translation fault on either page", straddle_cases),
    Family("permission", "the writing forms with a read-only page at stage 1 or stage 2", permission_cases),
    Family("maintenance", "DC ZVA, DC/IC by VA and prefetch on a faulting page", maintenance_cases),
    Family("pan", "every form at EL1 on user pages with PSTATE.PAN = 1", pan_cases),
    Family("access-flag-s2", "every form across the boundary, a stage-2 entry with AF = 0", access_flag_s2_cases),
    # The last three were machine gaps until issue 14 (stage-1 AF, tables in frames, alignment):
    # their `architectural` checks stay, for QEMU's observations.
    Family("access-flag", "every form across the boundary, a stage-1 entry with AF = 0", access_flag_cases,
           architectural=access_flag_fault),
    Family("s1ptw", "the stage-1 walk reads a table frame stage 2 refuses (S1PTW)", s1ptw_cases,
           architectural=s1ptw_fault),
    Family("alignment", "exclusives, atomics, acquire/release straddling: Alignment fault (DFSC 0x21)",
           alignment_cases, architectural=alignment_fault),
)
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}


def all_cases(families: tuple[Family, ...] = FAMILIES) -> list[Case]:
    return [case for family in families for case in family.cases()]
