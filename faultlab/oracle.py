"""The oracle: judges every run the same way, whatever the scenario expects.

Four questions, each answered from the machine's final state and event log:
what happened to the host (returned, fixed up, signalled, oopsed, the
hypervisor panicked, ran away); did the guest keep its pages and their
contents; did any byte of the guest's data reach host-visible state; and was
every syndrome injected into the host one the hardware could have produced.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from emu.outcome import OutcomeKind, RunResult
from host.tasks import signal_name
from hyp.ownership import PageState

from faultlab.lab import Lab

WINDOW = 4  # bytes of guest data that count as a leak when found together


@dataclass
class Snapshot:
    """Host-owned memory before a run, to find what the run wrote."""

    frames: dict[int, bytes]
    injections: int
    fixups: int
    signals: int


@dataclass(frozen=True)
class Verdict:
    outcome: str
    detail: str
    x0: int | None
    fixups: tuple[str, ...]
    signals: tuple[tuple[int, int, int], ...]
    guest_integrity: str
    guest_pages_lost: int
    guest_pages_changed: int
    confidentiality: str
    architectural: str
    reclaims: int
    regs: dict[str, int] = field(compare=False, default_factory=dict)

    @property
    def leaked(self) -> bool:
        return self.confidentiality != "ok"

    def as_dict(self) -> dict:
        return {
            "outcome": self.outcome,
            "detail": self.detail,
            "x0": self.x0,
            "fixups": list(self.fixups),
            "signals": [{"signo": s, "code": c, "addr": a} for s, c, a in self.signals],
            "guest_integrity": self.guest_integrity,
            "guest_pages_lost": self.guest_pages_lost,
            "guest_pages_changed": self.guest_pages_changed,
            "confidentiality": self.confidentiality,
            "architectural": self.architectural,
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
    return Verdict(
        outcome=outcome,
        detail=detail,
        x0=result.regs.get("x0") if result.returned else None,
        fixups=fixups,
        signals=signals,
        guest_integrity=integrity,
        guest_pages_lost=lost,
        guest_pages_changed=changed,
        confidentiality=_confidentiality(lab, result, before),
        architectural=_architectural(lab, before),
        reclaims=reclaims,
        regs=result.regs,
    )


def _outcome(result: RunResult, fixups, signals) -> tuple[str, str]:
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


def _integrity(lab: Lab) -> tuple[int, int, str]:
    if not lab.guest_pages:
        return 0, 0, "n/a"
    own = lab.hyp.ownership
    lost = changed = 0
    for page in lab.guest_pages:
        state = own.guest_state(lab.guest, page.gfn)
        if state is PageState.POISON or state is None:
            lost += 1
        elif lab.machine.phys.read(page.pfn << 12, 4096) != page.secret:
            changed += 1
    if lost:
        return lost, changed, f"reclaimed: {lost} page(s) lost"
    if changed:
        return lost, changed, f"changed: {changed} page(s)"
    return 0, 0, "intact"


def _windows(data: bytes) -> set[bytes]:
    return {data[i : i + WINDOW] for i in range(len(data) - WINDOW + 1)}


def _confidentiality(lab: Lab, result: RunResult, before: Snapshot) -> str:
    private = [p for p in lab.guest_pages if not p.shared_back]
    if not private:
        return "ok"
    secret: set[bytes] = set()
    for page in private:
        secret |= _windows(page.secret)
    for name, value in result.regs.items():
        if name.startswith("x") and _windows(value.to_bytes(8, "little")) & secret:
            return f"leak: guest data in {name}={value:#018x}"
    for pfn, old in before.frames.items():
        new = lab.machine.phys.read(pfn << 12, 4096)
        if new != old and _windows(new) & (secret - _windows(old)):
            return f"leak: guest data written to host frame {pfn:#x}"
    return "ok"


def _architectural(lab: Lab, before: Snapshot) -> str:
    injections = lab.hyp.injections[before.injections :]
    if not injections:
        return "n/a"
    reasons = sorted({r for inj in injections for r in inj.non_architectural})
    return "yes" if not reasons else "no: " + ", ".join(reasons)
