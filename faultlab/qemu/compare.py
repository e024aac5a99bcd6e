"""Classify every case of a run: agree, a known QEMU departure, a named machine gap, or unexplained.

Fields compared: where the exception went, ESR, FAR (aborts), HPFAR (stage-2 aborts), the
faulting PC (as an offset from the stub), x0-x7 afterwards and the 128-byte window. A gap
family's case counts as a gap only while QEMU shows the architectural outcome the family
names; a departure only while its predicate matches the difference exactly.
"""
from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from faultlab.qemu.cases import FAMILY_BY_NAME, Case
from faultlab.qemu.departures import DEPARTURES, Departure, explain
from faultlab.qemu.observation import Observation

FIELDS = ("taken", "esr", "far", "hpfar", "elr_offset", "regs", "window")


class Verdict(enum.StrEnum):
    AGREE = "agree"
    DEPARTURE = "qemu-departure"
    GAP = "machine-gap"
    UNEXPLAINED = "unexplained"


@dataclass(frozen=True)
class CaseResult:
    case: Case
    qemu: Observation
    machine: Observation
    verdict: Verdict
    fields: tuple[str, ...]  # the fields that differ
    departure: Departure | None = None


def differing(q: Observation, m: Observation) -> tuple[str, ...]:
    return tuple(name for name in FIELDS if getattr(q, name) != getattr(m, name))


def classify(version: str, case: Case, q: Observation, m: Observation) -> CaseResult:
    fields = differing(q, m)
    family = FAMILY_BY_NAME[case.family]
    # Departures are checked even when both sides agree: QEMU and our machine (Unicorn is QEMU TCG
    # underneath) can depart from the Arm ARM together, and that must not read as agreement.
    departure = explain(version, case, q, m)
    if departure is not None:
        return CaseResult(case, q, m, Verdict.DEPARTURE, fields, departure)
    if family.gap is not None:
        if family.architectural is not None and not family.architectural(case, q):
            return CaseResult(case, q, m, Verdict.UNEXPLAINED, fields or ("qemu-not-architectural",))
        return CaseResult(case, q, m, Verdict.GAP if fields else Verdict.AGREE, fields)
    return CaseResult(case, q, m, Verdict.UNEXPLAINED if fields else Verdict.AGREE, fields)


@dataclass
class Report:
    version: str  # QEMU major.minor
    version_text: str
    results: list[CaseResult] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for r in self.results if r.verdict is verdict)

    @property
    def unexplained(self) -> list[CaseResult]:
        return [r for r in self.results if r.verdict is Verdict.UNEXPLAINED]

    def by_family(self) -> dict[str, Counter]:
        out: dict[str, Counter] = {}
        for r in self.results:
            out.setdefault(r.case.family, Counter())[r.verdict] += 1
        return out

    def by_class(self) -> dict[str, Counter]:
        """Verdicts per access class (forms.FormClass), the decoder's vocabulary."""
        out: dict[str, Counter] = {}
        for r in self.results:
            out.setdefault(r.case.form.cls.value, Counter())[r.verdict] += 1
        return out

    def departures_seen(self) -> Counter:
        return Counter(r.departure.id for r in self.results if r.departure is not None)

    def stale_departures(self) -> list[Departure]:
        """Departures listed for this version that no case showed (QEMU fixed, or the cases changed)."""
        seen = self.departures_seen()
        return [d for d in DEPARTURES if self.version in d.versions and not seen[d.id]]

    def closed_gaps(self) -> list[str]:
        """Gap families none of whose cases differ any more: their gap mark can go."""
        fams = self.by_family()
        return [name for name, c in fams.items() if FAMILY_BY_NAME[name].gap and not c[Verdict.GAP]
                and not c[Verdict.UNEXPLAINED]]

    def summary(self) -> str:
        n = len(self.results)
        return (
            f"qemu-differential: {self.version_text}: {n} cases: {self.count(Verdict.AGREE)} agree, "
            f"{self.count(Verdict.DEPARTURE)} known QEMU departures ({len(self.departures_seen())} kinds), "
            f"{self.count(Verdict.GAP)} machine gap, {self.count(Verdict.UNEXPLAINED)} unexplained"
        )
