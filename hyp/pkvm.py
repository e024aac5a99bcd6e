"""`Hyp`: the pKVM model at EL2 for one machine - ownership, host stage 2, hypercalls, policy.

It implements the EL2 services of hyp/el2.py that policies compose.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from abi.linux import Errno
from emu.outcome import Outcome, OutcomeKind

from hyp.abort import handle_host_mem_abort
from hyp.el2 import Decision, ProtectedAccess, Syndrome
from hyp.hypercalls import HCALL_BY_NAME, SMCCC_RET_NOT_SUPPORTED, dispatch
from hyp.inject import Injection, inject_host_abort
from hyp.ownership import Ownership
from hyp.policies import Policy, policy as policy_by_name
from hyp.stage2 import HostStage2

if TYPE_CHECKING:
    from emu.abort import MemoryAbort
    from emu.machine import Machine


class Hyp:
    """Installs itself as the machine's stage 2 and EL2 handler."""

    def __init__(self, machine: "Machine", policy: Policy | str = "inject-reclaim") -> None:
        self.machine = machine
        self.policy = policy_by_name(policy) if isinstance(policy, str) else policy
        self.stage2 = HostStage2(machine.stage2_changed)
        self.ownership = Ownership(
            machine.phys.first_pfn,
            machine.phys.nr_frames,
            on_host_stage2_change=self.stage2.on_ownership_change,
            zero_frame=machine.phys.zero,
        )
        self.injections: list[Injection] = []
        self._logged_transitions = 0
        machine.stage2 = self.stage2
        machine.el2 = self
        machine.stage2_changed()  # translations filled under a previous stage 2 must not survive

    # EL2 entry points ---------------------------------------------------
    def handle_abort(self, machine: "Machine", abort: "MemoryAbort") -> Outcome | None:
        self.forget_setup()
        try:
            return handle_host_mem_abort(self, self.policy, abort)
        finally:
            self._log_transitions()

    def handle_hvc(self, machine: "Machine", imm: int) -> Outcome | None:
        self.forget_setup()
        cpu = machine.cpu
        regs = [cpu.x(i) for i in range(8)]
        if imm != 0:
            status, results, name = SMCCC_RET_NOT_SUPPORTED, [], f"hvc #{imm}"
        else:
            status, results, name = dispatch(self, self.policy, regs)
        cpu.set_x(0, status)
        for i, value in enumerate(results, start=1):
            cpu.set_x(i, value)
        shown = ", ".join(f"{_signed(r)}" for r in results)
        machine.log("hypercall", f"{name}({', '.join(hex(a) for a in regs[1:4])}) -> x0={_signed(status)} [{shown}]", name=name, status=status, results=results)
        self._log_transitions()
        return None

    # services policies compose (hyp/el2.py) ------------------------------
    def _decide(self, decision: Decision) -> None:
        self.machine.log("decision", f"policy {self.policy.name}: {decision.value}", policy=self.policy.name, decision=decision.value)

    def panic(self, access: ProtectedAccess, why: str) -> Outcome:
        self._decide(Decision.PANIC)
        return Outcome(OutcomeKind.HYP_PANIC, f"hypervisor BUG: {why} at pc={access.abort.pc:#x}", access.abort)

    def reclaim(self, access: ProtectedAccess) -> Errno:
        self._decide(Decision.RECLAIM)
        return self.force_reclaim(access.pfn, requested_by="el2")

    def inject(self, access: ProtectedAccess, syndrome: Syndrome) -> Outcome | None:
        self._decide(Decision.INJECT)
        injection, outcome = inject_host_abort(self.machine, access.abort, syndrome)
        self.injections.append(injection)
        return outcome

    def force_reclaim(self, pfn: int, *, requested_by: str) -> Errno:
        result = self.ownership.host_force_reclaim_guest_page(pfn)
        self._log_transitions()  # the transition first: the reclaim event summarises its effect
        self.machine.log("reclaim", f"force-reclaim pfn {pfn:#x} requested by {requested_by}: {result}", pfn=pfn, result=int(result), by=requested_by)
        return result

    def call(self, name: str, *args: int) -> tuple[int, list[int]]:
        """Issue a hypercall from Python (scenario setup): same handler as `hvc #0`."""
        hcall = HCALL_BY_NAME[name]
        self.forget_setup()
        status, results, _ = dispatch(self, self.policy, [hcall.function_id, *args])
        self._log_transitions()
        return status, results

    def forget_setup(self) -> None:
        """Transitions made while setting a scenario up are not events of the run that follows.

        Called at every entry to EL2 too: a transition made from Python between two
        runs (directly on `ownership`) would otherwise show up inside the next run.
        """
        self._logged_transitions = len(self.ownership.transitions)

    def _log_transitions(self) -> None:
        for t in self.ownership.transitions[self._logged_transitions :]:
            self.machine.log("transition", str(t), transition=t)
        self._logged_transitions = len(self.ownership.transitions)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value
