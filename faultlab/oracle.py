"""The oracle: judges every run the same way, whatever the scenario expects.

Four questions, each answered from the machine's final state and event log:
what happened to the host (returned, fixed up, signalled, oopsed, the
hypervisor panicked, ran away); did the guest keep its pages and their
contents; did any byte of the guest's data reach host-visible state; and was
every syndrome injected into the host one the hardware could have produced.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from emu.outcome import OutcomeKind, RunResult
from abi.linux import signal_name
from hyp.ownership import PageState

from faultlab import leak
from faultlab.lab import Lab



@dataclass
class Snapshot:
    """Host-owned memory before a run, to find what the run wrote."""

    frames: dict[int, bytes]
    injections: int
    fixups: int
    signals: int


class GuestIntegrity(enum.StrEnum):
    """What the protected guest kept: its pages and their contents."""

    INTACT = "intact"
    RECLAIMED = "reclaimed"  # at least one page taken back (poisoned or gone)
    CHANGED = "changed"  # pages still the guest's, but their contents differ
    NOT_APPLICABLE = "n/a"  # the scenario gave the guest no page


class Confidentiality(enum.StrEnum):
    OK = "ok"
    LEAK = "leak"


class Architectural(enum.StrEnum):
    """Whether every syndrome injected into the host is one the hardware could have produced."""

    YES = "yes"
    NO = "no"
    NOT_APPLICABLE = "n/a"  # nothing was injected


@dataclass(frozen=True)
class Verdict:
    """The oracle's four answers as structured fields (JSON: `as_dict`; no field is ever parsed back)."""

    outcome: OutcomeKind
    detail: str
    x0: int | None
    fixups: tuple[str, ...]
    signals: tuple[tuple[int, int, int], ...]
    guest: GuestIntegrity
    guest_pages_lost: int
    guest_pages_changed: int
    confidentiality: Confidentiality
    leak_where: str | None  # e.g. "x3=0x..." or "host frame 0x4000e": only with a leak
    architectural: Architectural
    non_architectural: tuple[str, ...]  # ESR fields no hardware would produce, only when NO
    reclaims: int
    regs: dict[str, int] = field(compare=False, default_factory=dict)

    @property
    def leaked(self) -> bool:
        return self.confidentiality is Confidentiality.LEAK

    def guest_text(self) -> str:
        """For people: `reclaimed (1 page lost)`."""
        if self.guest is GuestIntegrity.RECLAIMED:
            return f"reclaimed ({self.guest_pages_lost} page(s) lost)"
        if self.guest is GuestIntegrity.CHANGED:
            return f"changed ({self.guest_pages_changed} page(s))"
        return str(self.guest)

    def confidentiality_text(self) -> str:
        return f"leak: guest data in {self.leak_where}" if self.leaked else str(self.confidentiality)

    def architectural_text(self) -> str:
        return f"no ({', '.join(self.non_architectural)})" if self.architectural is Architectural.NO else str(self.architectural)

    def as_dict(self) -> dict:
        return {
            "outcome": str(self.outcome),
            "detail": self.detail,
            "x0": self.x0,
            "fixups": list(self.fixups),
            "signals": [{"signo": s, "name": signal_name(s), "code": c, "addr": a} for s, c, a in self.signals],
            "guest_integrity": str(self.guest),
            "guest_pages_lost": self.guest_pages_lost,
            "guest_pages_changed": self.guest_pages_changed,
            "confidentiality": str(self.confidentiality),
            "leak_where": self.leak_where,
            "architectural": str(self.architectural),
            "non_architectural": list(self.non_architectural),
            "reclaims": self.reclaims,
        }


def snapshot(lab: Lab) -> Snapshot:
    frames = {pfn: lab.machine.phys.read(pfn << 12, 4096) for r in lab.regions.values() for pfn in r.pfns if lab.hyp.ownership.host_may_access(pfn)}
    return Snapshot(frames, len(lab.hyp.injections), len(lab.kernel.fixups), len(lab.kernel.task.delivered))


def judge(lab: Lab, result: RunResult, before: Snapshot) -> Verdict:
    fixups = tuple(f"{f.kind.value}@{f.entry.insn:#x}" for f in lab.kernel.fixups[before.fixups :])
    delivered = lab.kernel.task.delivered[before.signals :]
    signals = tuple((d.signo, d.code, d.addr) for d in delivered)
    reclaims = sum(1 for e in result.events if e.kind == "reclaim" and e.data.get("result") == 0)
    outcome, detail = _outcome(result, fixups, signals)
    lost, changed, integrity = _integrity(lab)
    leak_where = _leak(lab, result, before)
    non_arch = _non_architectural(lab, before)
    return Verdict(
        outcome=outcome,
        detail=detail,
        x0=result.regs.get("x0") if result.returned else None,
        fixups=fixups,
        signals=signals,
        guest=integrity,
        guest_pages_lost=lost,
        guest_pages_changed=changed,
        confidentiality=Confidentiality.OK if leak_where is None else Confidentiality.LEAK,
        leak_where=leak_where,
        architectural=Architectural.NOT_APPLICABLE if non_arch is None else Architectural.NO if non_arch else Architectural.YES,
        non_architectural=non_arch or (),
        reclaims=reclaims,
        regs=result.regs,
    )


def _outcome(result: RunResult, fixups, signals) -> tuple[OutcomeKind, str]:
    kind = result.outcome.kind
    if kind == OutcomeKind.RETURNED:
        x0 = result.regs["x0"]
        if signals:
            s = signals[-1]
            return OutcomeKind.SIGNAL, f"{signal_name(s[0])} code={s[1]} addr={s[2]:#x} handled; x0={x0:#x}"
        if fixups:
            return OutcomeKind.FIXED_UP, f"{', '.join(fixups)}; x0={x0:#x}"
        return OutcomeKind.RETURNED, f"x0={x0:#x}"
    return kind, result.outcome.message


def _integrity(lab: Lab) -> tuple[int, int, GuestIntegrity]:
    if not lab.guest_pages:
        return 0, 0, GuestIntegrity.NOT_APPLICABLE
    own = lab.hyp.ownership
    lost = changed = 0
    for page in lab.guest_pages:
        state = own.guest_state(lab.guest, page.gfn)
        if state is PageState.POISON or state is None:
            lost += 1
        elif lab.machine.phys.read(page.pfn << 12, 4096) != page.secret:
            changed += 1
    if lost:
        return lost, changed, GuestIntegrity.RECLAIMED
    if changed:
        return lost, changed, GuestIntegrity.CHANGED
    return 0, 0, GuestIntegrity.INTACT


def _leak(lab: Lab, result: RunResult, before: Snapshot) -> str | None:
    """Where guest data reached host-visible state (faultlab/leak.py's rule), or None."""
    private = [leak.grams(p.secret) for p in lab.guest_pages if not p.shared_back]
    if not private:
        return None
    for reg, value in leak.in_registers(result.regs, private)[:1]:
        return f"{reg}={value:#018x}"
    for pfn, old in before.frames.items():
        if leak.new_in_memory(old, lab.machine.phys.read(pfn << 12, 4096), private):
            return f"host frame {pfn:#x}"
    return None


def _non_architectural(lab: Lab, before: Snapshot) -> tuple[str, ...] | None:
    """The ESR fields of the injected syndromes no hardware would produce; None when nothing was injected."""
    injections = lab.hyp.injections[before.injections :]
    if not injections:
        return None
    return tuple(sorted({r for inj in injections for r in inj.non_architectural}))
