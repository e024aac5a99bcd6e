"""The policy "fate" table of the reference models: what one access to a guest-owned page leads to.

EL2's action (panic, reclaim, inject) and, for an injected abort, how
the host copes with it given how the faulting access is annotated. The
models in faultlab/reference/ ask `fate` for every access that
touches the guest page; nothing here knows the emulator or hyp/. The
traits are this module's own table keyed by policy name: a policy it does
not list has no reference, and sweep cases under it are unjudged.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

RETURNED = "returned"
HYP_PANIC = "hyp-panic"
HOST_OOPS = "host-oops"
TASK_KILLED = "task-killed"
LIVELOCK = "livelock"


@dataclass(frozen=True)
class HostTraits:
    """What the host kernel's fault.c does with pKVM's marked abort (docs/facts.md "Host fault path").

    `pkvm_marker`: is_pkvm_stage2_abort() exists (7.x); without it (6.1) an injected
    abort on a page stage 1 maps looks like a spurious translation fault (AT S1E1R
    translates) and is retried forever, and an EL0 one is "handled" by
    handle_mm_fault and retried forever. `force_reclaim`: __do_kernel_fault asks EL2
    to force-reclaim a marked abort with no fixup (7.x). Sweeps run the routine in a
    kernel thread (no mm), so a uaccess fault goes to the exception table at once.
    """

    pkvm_marker: bool = True
    force_reclaim: bool = True


NEWEST_HOST = HostTraits()


class El2Action(enum.Enum):
    """What EL2 does about a host access to a guest's page (before the host sees anything)."""

    PANIC = "panic"  # hypervisor BUG
    INJECT = "inject"  # an abort is injected into the host
    RECLAIM = "reclaim"  # EL2 reclaims the page and the access retries


@dataclass(frozen=True)
class PolicyTraits:
    """What the models need to know about a policy: EL2's action and how the host copes."""

    name: str
    action: El2Action
    fatal_syndrome: bool = False  # the injected fault code is one the host does not handle (RME GPF)
    force_reclaim: bool = False  # EL2 serves the host's force-reclaim call
    host: HostTraits = NEWEST_HOST  # the host kernel the access runs on

    def for_host(self, host: HostTraits) -> "PolicyTraits":
        return self if host == self.host else _with_host(self, host)


@functools.lru_cache(maxsize=None)
def _with_host(traits: PolicyTraits, host: HostTraits) -> PolicyTraits:
    """Memoised (both are frozen values; a sweep asks once per case, `dataclasses.replace` costs microseconds)."""
    return dataclasses.replace(traits, host=host)


# The reference models' own table, written from the contracts (docs/facts.md "pKVM at EL2",
# "Host fault path"; the policy descriptions in the README), not derived from hyp/policies.py.
# The host is the newest kernel (7.x): its __do_kernel_fault asks EL2 to force-reclaim a
# marked abort with no fixup, and only 0 / -EAGAIN from EL2 mean "retry".
_TRAITS = (
    PolicyTraits("panic", El2Action.PANIC),
    # EL2 predates the force-reclaim call: NOT_SUPPORTED, so the host dies.
    PolicyTraits("inject", El2Action.INJECT),
    PolicyTraits("inject-reclaim", El2Action.INJECT, force_reclaim=True),
    PolicyTraits("reclaim", El2Action.RECLAIM),
    PolicyTraits("rme-gpc-reclaim", El2Action.RECLAIM),
    # fault.c fault_info[0x28] "unknown": no fixup is ever tried.
    PolicyTraits("rme-gpc-el3-inject", El2Action.INJECT, fatal_syndrome=True),
    # A realm EL2 injects pKVM's marked translation fault to a pKVM host and serves force-reclaim.
    PolicyTraits("rme-gpc-realm-inject", El2Action.INJECT, force_reclaim=True),
)
REFERENCE_TRAITS: Mapping[str, PolicyTraits] = MappingProxyType({t.name: t for t in _TRAITS})


def reference_traits(name: str) -> PolicyTraits | None:
    """The models' traits for the policy called `name`; None: no reference, so runs under it are unjudged."""
    return REFERENCE_TRAITS.get(name)


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
    LIVELOCK = LIVELOCK


def fate(traits: PolicyTraits, access: Access) -> Fate:
    """What happens to one access to a page the host does not own."""
    if traits.action is El2Action.PANIC:
        return Fate.PANIC
    if traits.action is El2Action.RECLAIM:
        return Fate.RECLAIM
    if traits.fatal_syndrome:
        # fault.c fault_info[]: the GPF codes are "unknown": die at EL1, SIGKILL at EL0, fixups or not.
        return Fate.KILL if access is Access.USER else Fate.OOPS
    if access is Access.FIXUP:
        return Fate.FIXUP  # __do_kernel_fault tries the fixup before anything else
    if not traits.host.pkvm_marker:
        # A host that does not know pKVM's marker sees a fault on a valid stage-1 mapping: the
        # spurious-fault path (EL1) or handle_mm_fault (EL0) says "retry", and it faults again.
        return Fate.LIVELOCK
    if access is Access.USER:
        return Fate.SIGNAL  # do_page_fault: pKVM stage-2 abort from EL0 -> SIGSEGV/SEGV_ACCERR
    # __do_kernel_fault: force-reclaim if the host asks and EL2 serves it; else die.
    return Fate.RECLAIM if traits.force_reclaim and traits.host.force_reclaim else Fate.OOPS

