"""The policies under debate: what EL2 does when the host touches a page it does not own.

Each policy is one small object with the one decision it makes, plus the two
facts the host kernel side depends on (which kernel the host is running):
whether pKVM is initialised (so ESR.S1PTW marks an injected stage-2 abort) and
whether the host has the force-reclaim path in `__do_kernel_fault`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Decision(enum.Enum):
    PANIC = "panic"  # hypervisor BUG: the machine is gone
    INJECT = "inject"  # inject a data abort into the host
    RECLAIM = "reclaim"  # force-reclaim the page from its guest, then retry the access


class FaultShape(enum.Enum):
    """How the protection is enforced, which decides the syndrome the host finally sees."""

    STAGE2 = "stage2"  # pKVM: host stage-2 abort to EL2, injected with the S1PTW marker
    GPC = "gpc"  # RME: granule-protection fault taken to EL3


@dataclass(frozen=True)
class Policy:
    name: str
    summary: str
    decision: Decision
    host_pkvm_initialised: bool
    host_force_reclaim: bool
    shape: FaultShape = FaultShape.STAGE2
    inject_on_failed_reclaim: bool = True
    # EL2 serves the host's force-reclaim hypercall (__pkvm_force_reclaim_guest_page): only an EL2
    # with the 2026 series has it; a pre-patch EL2 answers SMCCC NOT_SUPPORTED.
    serves_force_reclaim: bool = False

    def decide(self) -> Decision:
        """The one decision: made without looking at the faulting code, as EL2 cannot see it."""
        return self.decision


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy(
            "panic",
            "hypervisor BUG on any host access to a page it does not own (pKVM before injection)",
            Decision.PANIC,
            host_pkvm_initialised=False,
            host_force_reclaim=False,
        ),
        Policy(
            "inject",
            "inject a data abort; the host fixes up through its exception table or dies",
            Decision.INJECT,
            host_pkvm_initialised=True,
            host_force_reclaim=False,
        ),
        Policy(
            "inject-reclaim",
            "inject; a host kernel access with no fixup asks EL2 to force-reclaim the page and retries",
            Decision.INJECT,
            host_pkvm_initialised=True,
            host_force_reclaim=True,
            serves_force_reclaim=True,
        ),
        Policy(
            "reclaim",
            "EL2 force-reclaims the page on the fault and retries; injects only if reclaim fails",
            Decision.RECLAIM,
            host_pkvm_initialised=True,
            host_force_reclaim=False,
            serves_force_reclaim=True,
        ),
        Policy(
            "rme-gpc-reclaim",
            "RME: the granule-protection fault goes to EL3, a realm-world EL2 reclaims the granule and retries",
            Decision.RECLAIM,
            host_pkvm_initialised=False,
            host_force_reclaim=False,
            shape=FaultShape.GPC,
        ),
        Policy(
            "rme-gpc-el3-inject",
            "RME: EL3 injects the granule-protection fault into the host; no pKVM marker in the syndrome",
            Decision.INJECT,
            host_pkvm_initialised=False,
            host_force_reclaim=False,
            shape=FaultShape.GPC,
        ),
    )
}


class UnknownPolicy(ValueError):
    pass


def policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise UnknownPolicy(f"unknown policy {name!r} (known: {', '.join(POLICIES)})") from None
