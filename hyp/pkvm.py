"""`Hyp`: the pKVM model at EL2 for one machine - ownership, host stage 2, hypercalls, policy.

It implements the EL2 services of hyp/el2.py that policies compose. Host
hypercalls are numbered as the host kernel numbers them (`abi`: the model's
own numbering unless the lab around a vmlinux passes the image's table).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from abi.linux import Errno
from emu.outcome import Outcome, OutcomeKind

from hyp.abort import handle_host_mem_abort
from hyp.el2 import Decision, ProtectedAccess, Syndrome
from hyp.hypercalls import MODEL_ABI, SMCCC_RET_NOT_SUPPORTED, Answer, HostAbi, Refusal, dispatch
from hyp.inject import Injection, inject_host_abort
from hyp.ownership import Ownership
from hyp.policies import Policy, policy as policy_by_name
from hyp.stage2 import HostStage2

if TYPE_CHECKING:
    from emu.abort import MemoryAbort
    from emu.machine import Machine


class Hyp:
    """Installs itself as the machine's stage 2 and EL2 handler.

    With ``check_invariants`` (faultlab.lab.Lab turns it on), the ownership
    invariants (hyp/invariants.py) are checked after every hypercall and host
    abort EL2 handles, and the first breakage ends the run with an
    ``invariant-broken`` outcome naming it: a policy or model bug shows at the
    event that caused it, not at the end of a test.
    """

    def __init__(
        self, machine: "Machine", policy: Policy | str = "inject-reclaim", abi: HostAbi = MODEL_ABI, *, check_invariants: bool = False
    ) -> None:
        self.machine = machine
        self.check_invariants = check_invariants
        self.policy = policy_by_name(policy) if isinstance(policy, str) else policy
        self.abi = abi
        self.stage2 = HostStage2(machine.stage2_changed, machine.phys.first_pfn, machine.phys.first_pfn + machine.phys.nr_frames)
        self.ownership = Ownership(
            machine.phys.first_pfn,
            machine.phys.nr_frames,
            on_host_stage2_change=self.stage2.on_ownership_change,
            zero_frame=machine.phys.zero,
        )
        self.injections: list[Injection] = []
        self._logged_transitions = 0
        self._loop_marks = (0, 0)  # len(injections) at the two latest loop_state() calls (emu/loop_replay.py)
        machine.stage2 = self.stage2
        machine.el2 = self
        machine.stage2_changed()  # translations filled under a previous stage 2 must not survive

    # EL2 entry points ---------------------------------------------------
    def handle_abort(self, machine: "Machine", abort: "MemoryAbort") -> Outcome | None:
        self.forget_setup()
        try:
            outcome = handle_host_mem_abort(self, self.policy, abort)
        finally:
            self._log_transitions()
        return outcome or self._invariants_after(f"the host abort at pc={abort.pc:#x}")

    def resolves_by_idmap(self, pfn: int) -> bool:
        """A host stage-2 abort on `pfn` is only a lazy idmap (hyp/abort.py): the machine may take it in its fill hook."""
        return self.ownership.host_may_access(pfn)

    def handle_hvc(self, machine: "Machine", imm: int) -> Outcome | None:
        self.forget_setup()
        cpu = machine.cpu
        regs = [cpu.x(i) for i in range(8)]
        if imm != 0:
            answer = Answer(regs[0], None, SMCCC_RET_NOT_SUPPORTED, refused=Refusal.NONZERO_IMM)
        else:
            answer = dispatch(self, self.policy, regs, self.abi)
        cpu.set_x(0, answer.status)
        for i, value in enumerate(answer.results, start=1):
            cpu.set_x(i, value)
        label = f"hvc #{imm}" if imm else answer.label(self.policy.name)
        self._log_call(answer, regs, label)
        self._log_transitions()
        return self._invariants_after(f"hypercall {label}")

    def _invariants_after(self, event: str) -> Outcome | None:
        """With check_invariants: an invariant-broken outcome if the ownership invariants fail now."""
        if not self.check_invariants:
            return None
        problems = self.ownership.check_invariants()
        if not problems:
            return None
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        message = f"ownership invariant broken after {event}: {problems[0]}{more}"
        self.machine.log("invariant-broken", message, invariants=problems, after=event)
        return Outcome(OutcomeKind.INVARIANT_BROKEN, message, {"invariants": problems, "after": event})

    def handle_smc(self, machine: "Machine", imm: int) -> Outcome | None:
        """A host SMC trapped by HCR_EL2.TSC: no SMCCC service is modelled, so every function is
        SMCCC_RET_NOT_SUPPORTED and the host resumes past the smc (hyp-main.c handle_host_smc())."""
        machine.cpu.set_x(0, SMCCC_RET_NOT_SUPPORTED)
        return None

    def _log_call(self, answer: Answer, regs: list[int], label: str) -> None:
        """The `hypercall` event: `name` is the call as the host's numbering names it (None: no such id)."""
        shown = ", ".join(f"{_signed(r)}" for r in answer.results)
        self.machine.log(
            "hypercall",
            f"{label}({', '.join(hex(a) for a in regs[1:4])}) -> x0={_signed(answer.status)} [{shown}]",
            name=answer.name,
            fid=answer.fid,
            status=answer.status,
            results=list(answer.results),
            refused=None if answer.refused is None else answer.refused.value,
            numbering=self.abi.origin,
        )

    # a run repeating one abort (emu/loop_replay.py) -----------------------
    def loop_state(self) -> tuple:
        """What handling a repeated abort reads here besides the abort itself: the ownership (it
        changes only through logged transitions), the host stage 2 (a lazy idmap only adds to it:
        an iteration that mapped a frame is no repeat, the next one finds it mapped), the policy
        (policies keep no state: hyp/policies.py) and the checks."""
        self._loop_marks = (self._loop_marks[1], len(self.injections))
        return (len(self.ownership.transitions), self._logged_transitions, len(self.stage2.mapped), self.policy.name, self.check_invariants)

    def steady_iterations(self) -> int:
        return 1 << 30  # the same state and abort: the same decision, however often

    def replay_iterations(self, n: int) -> None:
        """n more iterations, each injecting what the last one did."""
        start, end = self._loop_marks
        self.injections.extend(self.injections[start:end] * n)
        self._loop_marks = (start, len(self.injections))

    # services policies compose (hyp/el2.py) ------------------------------
    def _decide(self, decision: Decision, access: ProtectedAccess) -> None:
        name = self.policy.name
        pc, el = _at_abort(self.machine, access.abort)
        self.machine.log("decision", (_DECISION_TEXT, name, decision.value), pc=pc, el=el, policy=name, decision=decision.value)

    def panic(self, access: ProtectedAccess, why: str) -> Outcome:
        self._decide(Decision.PANIC, access)
        return Outcome(OutcomeKind.HYP_PANIC, f"hypervisor BUG: {why} at pc={access.abort.pc:#x}", access.abort)

    def reclaim(self, access: ProtectedAccess) -> Errno:
        self._decide(Decision.RECLAIM, access)
        return self.force_reclaim(access.pfn, requested_by="el2")

    def inject(self, access: ProtectedAccess, syndrome: Syndrome) -> Outcome | None:
        self._decide(Decision.INJECT, access)
        injection, outcome = inject_host_abort(self.machine, access.abort, syndrome)
        self.injections.append(injection)
        return outcome

    def force_reclaim(self, pfn: int, *, requested_by: str) -> Errno:
        result = self.ownership.host_force_reclaim_guest_page(pfn)
        self._log_transitions()  # the transition first: the reclaim event summarises its effect
        self.machine.log("reclaim", f"force-reclaim pfn {pfn:#x} requested by {requested_by}: {result}", pfn=pfn, result=int(result), by=requested_by)
        return result

    def call(self, name: str, *args: int) -> tuple[int, list[int]]:
        """Issue a hypercall from Python (scenario setup) as the host would: its id in the host's numbering.

        A call the host kernel has no id for is refused like an unknown id.
        """
        fid = self.abi.id_of(name)
        self.forget_setup()
        if fid is None:
            answer = Answer(0, None, SMCCC_RET_NOT_SUPPORTED, refused=Refusal.UNKNOWN_ID)
        else:
            answer = dispatch(self, self.policy, [fid, *args], self.abi)
        self._log_transitions()
        return answer.status, list(answer.results)

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


_DECISION_TEXT = "policy {}: {}".format  # an event text recipe (emu/outcome.py Event)

def _at_abort(machine: "Machine", abort: "MemoryAbort") -> tuple[int | None, int | None]:
    """Where an event of EL2's handling of `abort` happens: the CPU still stands at the faulting
    instruction in the aborting EL (two register reads saved per event); with a debugger attached,
    which may have moved them at an earlier event, None: read them as usual."""
    return (abort.pc, abort.el) if machine.debugger is None else (None, None)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value
