"""handle_host_mem_abort: what EL2 does with a host stage-2 abort.

Order (mem_protect.c: handle_host_mem_abort): recover the IPA from HPFAR_EL2
(plus FAR's page offset), and if the host may access the frame (it owns or
shares it) install the identity mapping and retry. Otherwise the frame belongs
to the hypervisor or to a guest, and the active policy decides.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from emu.outcome import Outcome, OutcomeKind
from emu.syndrome import ipa_from_hpfar

from abi.linux import Errno
from hyp.inject import inject_host_abort
from hyp.policies import Decision, FaultShape

if TYPE_CHECKING:
    from emu.abort import MemoryAbort
    from emu.machine import Machine

    from hyp.pkvm import Hyp



def handle_host_mem_abort(hyp: "Hyp", machine: "Machine", abort: "MemoryAbort") -> Outcome | None:
    ipa = ipa_from_hpfar(abort.hpfar) | (abort.far & 0xFFF)
    pfn = ipa >> 12
    own = hyp.ownership
    if own.host_may_access(pfn):
        hyp.stage2.idmap(pfn)
        machine.log("idmap", f"host stage-2 idmap pfn {pfn:#x}", pfn=pfn)
        return None
    policy = hyp.policy
    owner = own.owner(pfn)
    machine.log(
        "protected-access",
        f"host {abort.access_type.value} of IPA {ipa:#x} owned by {owner} ({'GPF' if policy.shape is FaultShape.GPC else 'stage-2 abort'})",
        pfn=pfn,
        owner=str(owner),
        abort=abort,
    )
    decision = policy.decide()
    machine.log("decision", f"policy {policy.name}: {decision.value}", policy=policy.name, decision=decision.value)
    if decision is Decision.PANIC:
        return Outcome(OutcomeKind.HYP_PANIC, f"hypervisor BUG: host access to {ipa:#x} owned by {owner} at pc={abort.pc:#x}", abort)
    if decision is Decision.RECLAIM:
        result = hyp.force_reclaim(pfn, requested_by="el2")
        if result is Errno.SUCCESS:
            return None  # the frame is the host's again: the access retries and succeeds
        if not policy.inject_on_failed_reclaim:
            return Outcome(OutcomeKind.HYP_PANIC, f"reclaim of pfn {pfn:#x} failed ({result}) at pc={abort.pc:#x}", abort)
    gpf = policy.shape is FaultShape.GPC
    injection, outcome = inject_host_abort(machine, abort, marker=not gpf, gpf=gpf)
    hyp.injections.append(injection)
    return outcome
