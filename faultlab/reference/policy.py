"""The policy "fate" table of the reference models: what one access to a guest-owned page leads to.

EL2's decision (panic, reclaim, inject) and, for an injected abort, how
the host copes with it given how the faulting access is annotated. The
models in faultlab/reference/ ask `fate` for every access that
touches the guest page; nothing here knows the emulator.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

RETURNED = "returned"
HYP_PANIC = "hyp-panic"
HOST_OOPS = "host-oops"
TASK_KILLED = "task-killed"


@dataclass(frozen=True)
class PolicyTraits:
    """What the models need to know about a policy: EL2's decision and how the host copes."""

    name: str
    decision: str  # "panic" | "inject" | "reclaim"
    fatal_syndrome: bool = False  # the injected fault code is one the host does not handle (RME GPF)
    force_reclaim: bool = False  # the host's __do_kernel_fault asks EL2 to reclaim when no fixup exists

    def __post_init__(self) -> None:
        if self.decision not in ("panic", "inject", "reclaim"):
            raise ValueError(f"unknown decision {self.decision!r}")


class Access(enum.Enum):
    """How the faulting instruction is annotated, which decides what the host can do with an injected abort."""

    FIXUP = "EL1 access with an exception-table entry"
    PLAIN = "EL1 access without an exception-table entry"
    USER = "EL0 access"


class Fate(enum.Enum):
    FIXUP = "the exception-table fixup runs"
    RECLAIM = "the page is reclaimed (scrubbed) and the access retried"
    SIGNAL = "SIGSEGV is delivered to the task"
    PANIC = HYP_PANIC
    OOPS = HOST_OOPS
    KILL = TASK_KILLED


def fate(traits: PolicyTraits, access: Access) -> Fate:
    """What happens to one access to a page the host does not own."""
    if traits.decision == "panic":
        return Fate.PANIC
    if traits.decision == "reclaim":
        return Fate.RECLAIM
    if traits.fatal_syndrome:
        # fault.c fault_info[]: the GPF codes are "unknown": die at EL1, SIGKILL at EL0, fixups or not.
        return Fate.KILL if access is Access.USER else Fate.OOPS
    if access is Access.USER:
        return Fate.SIGNAL  # do_page_fault: pKVM stage-2 abort from EL0 -> SIGSEGV/SEGV_ACCERR
    if access is Access.FIXUP:
        return Fate.FIXUP  # __do_kernel_fault tries the fixup before anything else
    return Fate.RECLAIM if traits.force_reclaim else Fate.OOPS


# The reference models' own view of each policy, keyed by name and written out independently of
# hyp/policies.py (a model that derived it from the policy object would agree with any bug there).
REFERENCE_TRAITS: dict[str, PolicyTraits] = {
    t.name: t
    for t in (
        PolicyTraits("panic", "panic"),
        PolicyTraits("inject", "inject"),
        PolicyTraits("inject-reclaim", "inject", force_reclaim=True),
        PolicyTraits("reclaim", "reclaim"),
        PolicyTraits("rme-gpc-reclaim", "reclaim"),
        PolicyTraits("rme-gpc-el3-inject", "inject", fatal_syndrome=True),
    )
}


def reference_traits(name: str) -> PolicyTraits | None:
    """The traits the models predict with, or None: a sweep case under such a policy is unjudged."""
    return REFERENCE_TRAITS.get(name)
