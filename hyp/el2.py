"""What a policy may ask of EL2: the protected access it is shown, and the services it composes.

`handle_host_mem_abort` (hyp/abort.py) hands a policy a `ProtectedAccess` and an
`El2`; the policy answers with what the machine does next. The services are the
building blocks every proposal in the debate is made of: a hypervisor BUG, a
force-reclaim of the guest's page, an injection of a composed syndrome into the
host. `hyp.pkvm.Hyp` implements them. This module depends on nothing else in
hyp/, so abort.py, hypercalls.py and policies.py can name EL2 without importing
pkvm.py (which imports them).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from abi.linux import Errno
from emu.outcome import Outcome
from emu.syndrome import Esr

if TYPE_CHECKING:
    from emu.abort import MemoryAbort
    from emu.machine import Machine

    from hyp.ownership import Ownership
    from hyp.stage2 import HostStage2


class Decision(enum.StrEnum):
    """What EL2 did about a protected access; the `decision` event names it."""

    PANIC = "panic"  # hypervisor BUG: the machine is gone
    INJECT = "inject"  # an abort injected into the host
    RECLAIM = "reclaim"  # the page force-reclaimed from its guest, the access retried


class Trap(enum.StrEnum):
    """Where the protected access traps, which is what the protection mechanism is."""

    STAGE2 = "stage-2 abort"  # pKVM: the host stage 2 has no mapping, EL2 takes the abort
    GPF = "GPF"  # RME: the granule protection check fails, EL3 takes the fault


@dataclass(frozen=True)
class ProtectedAccess:
    """A host access to a frame the host may not touch (owned by EL2 or by a guest)."""

    abort: "MemoryAbort"
    ipa: int
    owner: str  # "hyp", "guest 0x...": as Ownership.owner() prints it

    @property
    def pfn(self) -> int:
        return self.ipa >> 12


@dataclass(frozen=True)
class Syndrome:
    """An ESR_EL1 composed for injection, and who composed it (for the non-architectural record)."""

    esr: Esr
    marker: bool  # carries pKVM's S1PTW marker
    notes: tuple[str, ...] = ()  # reasons beyond the field judge's why hardware never reports this


class El2(Protocol):
    """The EL2 services a policy composes (implemented by hyp.pkvm.Hyp)."""

    machine: "Machine"
    ownership: "Ownership"
    stage2: "HostStage2"

    def panic(self, access: ProtectedAccess, why: str) -> Outcome:
        """Hypervisor BUG: the machine stops with a hyp-panic outcome."""
        ...

    def reclaim(self, access: ProtectedAccess) -> Errno:
        """Force-reclaim the page from its guest on EL2's own initiative (as the hypercall would)."""
        ...

    def force_reclaim(self, pfn: int, *, requested_by: str) -> Errno:
        """mem_protect.c __pkvm_host_force_reclaim_page_guest(), logged with who asked."""
        ...

    def inject(self, access: ProtectedAccess, syndrome: Syndrome) -> Outcome | None:
        """Inject an abort with `syndrome` into the host; None: the host runs on."""
        ...
