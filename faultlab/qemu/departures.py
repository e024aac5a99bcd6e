"""Known departures of QEMU TCG from the Arm ARM, keyed by QEMU version, each with the text that decides it.

A departure explains a difference only if its predicate matches the difference exactly (the
QEMU observation equals the machine's except in the fields the departure names, changed the way
it names), so an unrelated difference in the same case stays unexplained. Our machine follows
the Arm ARM in the syndrome departures (pinned by tests/test_qemu_differential.py); the two alignment
departures wait for the machine's alignment faults (issue 14 item 1), as `machine` says.

Measured: QEMU 7.2 (Debian 12 `qemu-system-arm` 1:7.2+dfsg-7+deb12u18, the version CI's `qemu`
job installs in a debian:12 container). Other versions have no measured list: a run on one says
so instead of assuming 7.2's list.

Spec text: Arm ARM DDI 0487 (K.a and later), ESR_ELx "ISS encoding for an exception from a Data
Abort" (D24.2.45 in the L/M issues), FAR_ELx (D24.2.48), AArch64.UnalignedAccessFaults (J1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from faultlab.qemu.cases import Case, alignment_fault
from faultlab.qemu.layout import BOUNDARY_VA, window_pattern
from faultlab.qemu.observation import Observation, Taken

ISV = 1 << 24
SYNDROME = 0x7FF << 14  # ISV, SAS, SSE, SRT, SF, AR: bits [24:14]
AR = 1 << 14
CM = 1 << 8
WNR = 1 << 6
ALIGNMENT_DFSC = 0x21

Predicate = Callable[[Case, Observation, Observation], bool]


@dataclass(frozen=True)
class Departure:
    id: str
    versions: frozenset[str]  # QEMU major.minor where measured
    title: str
    qemu: str  # what QEMU does
    arm: str  # what the Arm ARM requires (and our machine does)
    spec: str  # where, with the deciding text
    applies: Predicate
    machine: str = "follows the Arm ARM (pinned in tests/test_qemu_differential.py)"

    def explains(self, version: str, case: Case, q: Observation, m: Observation) -> bool:
        return version in self.versions and self.applies(case, q, m)


def _same_except_esr_and_far(q: Observation, m: Observation) -> bool:
    return (q.taken, q.hpfar, q.elr_offset, q.regs, q.window) == (m.taken, m.hpfar, m.elr_offset, m.regs, m.window)


def _isv_on_later_page(case: Case, q: Observation, m: Observation) -> bool:
    return (
        q.taken is Taken.EL2 and _same_except_esr_and_far(q, m) and q.far == m.far
        and q.far != case.address  # the faulting byte is not the lowest one accessed
        and bool(q.esr & ISV) and not m.esr & ISV and q.esr & ~SYNDROME == m.esr
    )


def _ar_for_lorder(case: Case, q: Observation, m: Observation) -> bool:
    return (
        case.form.text.split()[0] in ("ldlar", "ldlarb", "ldlarh", "stllr", "stllrb", "stllrh")
        and q.taken is Taken.EL2 and _same_except_esr_and_far(q, m) and q.far == m.far
        and bool(m.esr & ISV and m.esr & AR) and q.esr == m.esr & ~AR
    )


def _dc_cvap(case: Case, q: Observation, m: Observation) -> bool:
    return (
        case.form.name == "dc-cvap" and q.taken in (Taken.EL1, Taken.EL2) and _same_except_esr_and_far(q, m)
        and q.esr == m.esr & ~(CM | WNR) and m.far is not None and q.far == m.far & ~63
    )


def _ldapr_unchecked(case: Case, q: Observation, m: Observation) -> bool:
    return (
        case.family == "alignment" and case.form.text.split()[0] in ("ldapr", "ldaprb", "ldaprh")
        and q.taken in (Taken.EL1, Taken.EL2) and q.dfsc != ALIGNMENT_DFSC
        and q.far == BOUNDARY_VA  # a translation or permission fault at the page boundary instead
        and (m == q or _same_but_isv(case, q, m) or alignment_fault(case, m))  # the machine: QEMU's (gap) or the Arm ARM's
    )


def _same_but_isv(case: Case, q: Observation, m: Observation) -> bool:
    return _isv_on_later_page(case, q, m)


def _stxr_unaligned(case: Case, q: Observation, m: Observation) -> bool:
    return (
        case.family == "alignment" and case.form.text.split()[0] in ("stxr", "stlxr", "stxp", "stlxp")
        and q.taken is Taken.COMPLETED and q.regs[3] == 1  # status register w3: the store failed
        and q.regs[0] == case.x0 and q.window == window_pattern()
        and (m == q or alignment_fault(case, m))  # the machine: QEMU's (gap) or the Arm ARM's
    )


_CMO_BY_VA = frozenset({"dc-civac", "dc-cvac", "dc-cvau", "dc-ivac", "ic-ivau"})


def _cmo_as_nop(case: Case, q: Observation, m: Observation) -> bool:
    """QEMU completes; the machine either completes too (the shared gap) or takes the architectural abort."""
    if not (case.form.name in _CMO_BY_VA and case.fault.value == "translation" and q.taken is Taken.COMPLETED):
        return False
    if m.taken is Taken.COMPLETED:
        return q == m
    return (m.esr is not None and bool(m.esr & CM and m.esr & WNR) and m.dfsc == 0x07 and m.far == case.x0
            and m.elr_offset == 0)


QEMU_7_2 = frozenset({"7.2"})

DEPARTURES: tuple[Departure, ...] = (
    Departure(
        "isv-on-later-page", QEMU_7_2,
        "instruction syndrome for a stage-2 fault that is not on the access's lowest address",
        "ISV = 1 with SAS/SSE/SRT/SF/AR when a page-straddling single-register access faults at stage 2 "
        "on its second page",
        "ISV = 0: the syndrome describes the access from its lowest address; a fault on a later byte of a "
        "split access carries none",
        "DDI 0487 ESR_ELx ISS (Data Abort), ISV: 'For other faults reported in ESR_EL2, ISV is 0 except for "
        "the following stage 2 aborts: AArch64 loads and stores of a single general-purpose register ...'; "
        "DDI 0487 M.a pseudocode: AArch64.InstructionSyndromeValid is FALSE when the fault is not on the "
        "access's lowest address (docs/facts.md, Architecture: ISV)",
        _isv_on_later_page,
    ),
    Departure(
        "ar-for-lorder", QEMU_7_2,
        "AR for LDLAR/STLLR",
        "AR = 0 in the instruction syndrome of LDLAR*/STLLR*",
        "AR = 1: LoadLOAcquire/StoreLORelease are acquire/release instructions (outside any LORegion they "
        "order as LDAR/STLR)",
        "DDI 0487 ESR_ELx ISS (Data Abort), AR: '0b1 Instruction did have acquire/release semantics'; "
        "C6.2 LDLAR/STLLR: 'The instruction also has memory ordering semantics as described in Load "
        "LOAcquire, Store LORelease'",
        _ar_for_lorder,
    ),
    Departure(
        "dc-cvap-syndrome", QEMU_7_2,
        "DC CVAP's syndrome and FAR",
        "CM = 0, WnR = 0, FAR = the cache line's first byte",
        "CM = 1 and WnR = 1 (a cache maintenance instruction), FAR = the address in the register operand",
        "DDI 0487 ESR_ELx ISS (Data Abort), CM: '0b1 The Data Abort was generated by either the execution of "
        "a cache maintenance instruction ...'; WnR: 'For faults on cache maintenance and address translation "
        "instructions, this bit always returns a value of 1'; FAR_ELx: for a cache maintenance instruction "
        "by VA, FAR holds the address specified in the register argument",
        _dc_cvap,
    ),
    Departure(
        "ldapr-alignment", QEMU_7_2,
        "no alignment check for LDAPR (FEAT_LRCPC)",
        "a misaligned LDAPR*/LDAPRH that crosses 16 bytes performs the access (faulting at the page boundary "
        "like a plain LDR)",
        "Alignment fault (DFSC 0x21, FAR = the access address), as for LDAR: it is an ordered access",
        "DDI 0487 J1 AArch64.UnalignedAccessFaults: accesses with acquire (RCpc included) semantics fault "
        "when unaligned without FEAT_LSE2, and with FEAT_LSE2 when not all in one aligned 16-byte quantity "
        "(QEMU 7.2's -cpu max has no FEAT_LSE2); QEMU checks LDAPUR/STLUR and LDAR but not LDAPR",
        _ldapr_unchecked,
        machine="follows the Arm ARM: an Alignment fault (emu/alignment.py; tests/test_alignment.py)",
    ),
    Departure(
        "stxr-alignment", QEMU_7_2,
        "no alignment check for a store-exclusive whose monitor is not held",
        "a misaligned STXR/STLXP without the exclusive monitor completes with status 1 and no access",
        "Alignment fault: the alignment check comes before the monitor check (only memory aborts may be "
        "detected after it, IMPLEMENTATION DEFINED)",
        "DDI 0487 J1 AArch64.ExclusiveMonitorsPass: the access is checked for alignment (an Alignment fault "
        "is taken) before the local monitor is consulted; its comment: 'It is IMPLEMENTATION DEFINED whether "
        "the detection of memory aborts happens before or after the check on the local Exclusive monitor'",
        _stxr_unaligned,
        machine="follows the Arm ARM: an Alignment fault before the monitor (emu/alignment.py; tests/test_alignment.py)",
    ),
    Departure(
        "cmo-by-va-no-translation", QEMU_7_2,
        "DC CIVAC/CVAC/CVAU/IVAC and IC IVAU are not translated",
        "they complete as NOPs on a VA whose stage-1 or stage-2 entry is invalid",
        "a Data Abort (translation fault, CM = 1, WnR = 1, FAR = the register operand): Linux's "
        "caches_clean_inval_user_pou wraps `dc cvau`/`ic ivau` on user addresses in exception-table "
        "entries because they fault",
        "DDI 0487 C5.3 (DC CIVAC and the other DC/IC by VA): 'Execution of this instruction might require "
        "an address translation from VA to PA, and that translation might fault'; ESR_ELx ISS CM/WnR as in "
        "dc-cvap-syndrome",
        _cmo_as_nop,
        machine="same as QEMU (Unicorn is QEMU TCG): a machine gap outside issue 14's items - host code's "
                "cache maintenance on a guest page cannot trap to EL2",
    ),
)
BY_ID = {d.id: d for d in DEPARTURES}


def measured_versions() -> frozenset[str]:
    return frozenset().union(*(d.versions for d in DEPARTURES))


def explain(version: str, case: Case, q: Observation, m: Observation) -> Departure | None:
    for departure in DEPARTURES:
        if departure.explains(version, case, q, m):
            return departure
    return None

