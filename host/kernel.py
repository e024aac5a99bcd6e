"""`HostKernel`: the Linux arm64 host at EL1, as far as faults are concerned.

It writes a real 16-entry vector table at VBAR_EL1. Every vector entry is an
exit address of the machine: when the CPU arrives there, the entry "hands over"
to Python, which saves pt_regs, routes the exception as the kernel does, and
returns through a real `eret` that the CPU executes. When the model needs real
instructions in the middle of its handling - the `hvc` of the force-reclaim
call, the aligned re-read of a zeropad fixup - it runs them nested, so they can
trap to EL2 or fault like the real kernel's would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Hashable

from abi.linux import Sig, signal_name
from emu.cpu import VectorKind, VectorOffset
from emu.memory import PAGE_SIZE, AccessType, Pte, WalkFault
from emu.outcome import Outcome, OutcomeKind
from emu.syndrome import EC, Esr, OopsStyle, ec_kernel_name
from kimage.extable_format import TypeNumbering
from kimage.profiles import MODEL_DEFAULT, KernelProfile

from host.extable import Extable, Fixup, FixupFault
from host.fault import FaultContext, do_mem_abort
from host.ptregs import PtRegs
from host.results import LIVELOCK_AFTER, Die, Resume, Signal, livelock_message
from host.tasks import Task

if TYPE_CHECKING:
    from emu.machine import Machine

# Above every kernel image link range (6.1 text starts at 0xffff800008000000, 7.x at 0xffff800080000000).
VECTORS_VA = 0xFFFF_FFFF_FF80_0000
HOST_STUBS_VA = VECTORS_VA + 0x800

MAX_NESTED_EXCEPTIONS = 4
BUG_BRK_IMM = 0x800  # asm/brk-imm.h: BUG() is brk #0x800

# Event texts as (format, *values) recipes (emu/outcome.py Event): formatted only when read.
_ABORT_TEXT = "{} abort: ESR={:#x} FAR={:#x} pc={:#x}".format
RESUME_TEXT = "{}; eret to {:#x}".format  # the resume event's text, both hosts (host/real/handler.py)


def _fixup_text(fixup: Fixup) -> str:
    return f"{fixup.kind.value} at {fixup.entry.insn:#x} -> {fixup.entry.fixup:#x}: {fixup.detail}"


@dataclass(frozen=True)
class KernelConfig:
    """Which host kernel runs (its profile) and one fact of its boot.

    `pkvm_initialised` comes from EL2 (the policy): whether the host booted with
    pKVM initialised, so that is_pkvm_initialized() is true. Everything else is
    the kernel's own: what its fault.c can do is its profile's host features.
    """

    profile: KernelProfile = MODEL_DEFAULT
    pkvm_initialised: bool = True

    @property
    def numbering(self) -> TypeNumbering:
        return self.profile.numbering


@dataclass
class _Stubs:
    eret: int
    hvc: int
    reread: int
    sigreturn: int


@dataclass
class HostKernel:
    machine: "Machine"
    config: KernelConfig = field(default_factory=KernelConfig)

    def __post_init__(self) -> None:
        self.extable = Extable()
        self.task = Task()
        self.fixups: list[Fixup] = []
        self._depth = 0
        # While a vector's handler runs, PC stands at the vector in EL1 (`_here`) until something
        # moves it: a nested run (a fixup's re-read, an hvc) or the exit to the eret stub. Events
        # logged meanwhile take PC/EL from here (two register reads saved per event).
        self._here: int | None = None
        self._here_nested = 0
        self._refault: tuple[int, int] | None = None  # (PC, FAR) of the last abort handled as "retry"
        self._refaults = 0
        self._refault_run: list | None = None  # the run (its event list) the count belongs to
        self._retry_logged = -1  # len(machine.events) right after the latest retry's `resume` event
        self._install()
        self.machine.add_loop_participant(self)

    # ------------------------------------------------------------ the profile, as fault.c sees it
    @property
    def pkvm_marker(self) -> bool:
        """is_pkvm_stage2_abort() can be true: the kernel has the check and pKVM is initialised."""
        return self.config.profile.host.pkvm_marker and self.config.pkvm_initialised

    @property
    def force_reclaim(self) -> bool:
        return self.config.profile.host.force_reclaim

    @property
    def oops_style(self) -> OopsStyle:
        return self.config.profile.oops_style

    # ------------------------------------------------------------ setup
    def _install(self) -> None:
        m = self.machine
        brk = lambda imm: (0xD4200000 | (imm << 5)).to_bytes(4, "little")  # noqa: E731
        table = bytearray()
        for i in range(16):
            # Each entry starts with a brk the CPU never reaches (the entry is an exit address).
            entry = brk(0x800 + i) + bytes(0x80 - 4)
            table += entry
        eret = (0xD69F03E0).to_bytes(4, "little")
        hvc0 = (0xD4000002).to_bytes(4, "little")
        ldr_x1_x0 = (0xF9400001).to_bytes(4, "little")  # ldr x1, [x0]
        stubs = eret + hvc0 + brk(0x900) + ldr_x1_x0 + brk(0x901)
        # EL0 signal restorer: mov x8, #139 (rt_sigreturn); svc #0
        restorer = (0xD2801168).to_bytes(4, "little") + (0xD4000001).to_bytes(4, "little")
        m.load(VECTORS_VA, bytes(table) + stubs, "rx")
        self.stubs = _Stubs(eret=HOST_STUBS_VA, hvc=HOST_STUBS_VA + 4, reread=HOST_STUBS_VA + 12, sigreturn=0)
        self.sigreturn_va = m.user_return_sentinel + 0x100
        m.write(self.sigreturn_va, restorer)
        m.cpu.write_sysreg("VBAR_EL1", VECTORS_VA)
        for group in VectorOffset:
            for kind in VectorKind:
                m.add_exit(VECTORS_VA + group + kind, self._vector(group, kind))

    def add_extable(self, entries, numbering: TypeNumbering | None = None) -> None:
        self.extable.add(entries, numbering or self.config.numbering)

    def log(self, kind: str, message: "str | Callable[[], str] | tuple", **data) -> None:
        here = self._here
        if here is not None and self.machine.nested_runs == self._here_nested and "pc" not in data:
            self.machine.log(kind, message, pc=here, el=1, **data)
        else:
            self.machine.log(kind, message, **data)

    # ------------------------------------------------------------ vectors
    def _vector(self, group: VectorOffset, kind: VectorKind):
        def enter(machine: "Machine") -> Outcome | None:
            if kind is not VectorKind.SYNC or group in (VectorOffset.CURRENT_SP0, VectorOffset.LOWER_A32):
                return Outcome(OutcomeKind.UNEXPECTED_VECTOR, f"unexpected exception vector {group.name}/{kind.name} at {machine.cpu.pc:#x}")
            # The entry's events happen at the vector in EL1 until something moves PC (two register
            # reads saved per event); with a debugger attached (it may move PC) they are read.
            here = VECTORS_VA + group + kind if machine.debugger is None else None
            return self._el_sync(from_el0=group is VectorOffset.LOWER_A64, here=here)

        return enter

    def _el_sync(self, *, from_el0: bool, here: int | None = None) -> Outcome | None:
        cpu = self.machine.cpu
        regs, esr_value, far = PtRegs.save_with_syndrome(cpu)
        esr = Esr(esr_value)
        if self._depth >= MAX_NESTED_EXCEPTIONS:
            # Exception entry is re-entrant in the kernel; only the stack ends an endless recursion.
            return self._die_outcome(Die("kernel stack overflow", esr.value, far, regs.as_dict()))
        # A fault taken inside the fault path (a fixup's re-read) is handled like any other
        # kernel fault, at the PC of the handler's own access, which has no fixup of its own.
        self._depth += 1
        outer = self._here, self._here_nested
        self._here, self._here_nested = here, self.machine.nested_runs
        try:
            try:
                result = self._route(esr, far, regs, from_el0)
            except FixupFault as nested:
                return nested.outcome
            finally:
                self._depth -= 1
            return self._finish(result, regs)
        finally:
            self._here, self._here_nested = outer

    def _route(self, esr: Esr, far: int, regs: PtRegs, from_el0: bool):
        ec = esr.ec
        ctx = FaultContext(self, far, esr, regs)
        if ec in (EC.DABT_CUR, EC.DABT_LOW, EC.IABT_CUR, EC.IABT_LOW):
            pc = regs.pc
            self.log("do_mem_abort", (_ABORT_TEXT, "EL0" if from_el0 else "EL1", esr.value, far, pc), esr=esr.value, far=far)
            result = do_mem_abort(ctx)
            return self._count_refault(pc, far, result, retried=isinstance(result, Resume) and regs.pc == pc)
        self._refault, self._refaults = None, 0
        if from_el0:
            if ec == EC.SVC64:
                    return self.task.syscall(regs)
            if ec == EC.BRK64:
                return Signal(Sig.SIGTRAP, 1, regs.pc, "brk")
            return Signal(Sig.SIGILL, 1, regs.pc, "undefined instruction")
        # traps.c: die(str, regs, esr) prints "Internal error: <str>: <esr> [#1]".
        if ec == EC.BRK64:
            if esr.iss & 0xFFFF == BUG_BRK_IMM:
                return ctx.die(f"Internal error: Oops - BUG: {esr.value:016x} [#1]", bug=True)
            return ctx.die(f"Internal error: Oops - BRK: {esr.value:016x} [#1]")
        # entry-common.c el1h_64_sync_handler(): UNKNOWN/SYS64 -> do_el1_undef(); PC_ALIGN -> do_sp_pc_abort()
        # (arm64_notify_die); any other class (svc, PSTATE.IL, ...) -> __panic_unhandled().
        if ec in (EC.UNKNOWN, EC.SYS64):
            return ctx.die(f"Internal error: Oops - Undefined instruction: {esr.value:016x} [#1]")
        if ec == EC.PC_ALIGN:
            return ctx.die(f"Internal error: SP/PC alignment exception: {esr.value:016x} [#1]")
        return ctx.die(f"Unhandled 64-bit el1h sync exception on CPU0, ESR {esr.value:#018x} -- {ec_kernel_name(ec)}")

    def _count_refault(self, pc: int, far: int, result, *, retried: bool):
        """The same abort handled as "retry" LIVELOCK_AFTER times in a row is a livelock outcome.

        In a row within one run: a lab reused across runs (sweep benches) meets the same abort once
        per run, and that is no livelock (Machine.run starts a new event list per run, as RealHost keys it).
        """
        if self._refault_run is not self.machine.events:
            self._refault, self._refaults, self._refault_run = None, 0, self.machine.events
        if not retried:
            self._refault, self._refaults = None, 0
            return result
        if self._refault == (pc, far):
            self._refaults += 1
        else:
            self._refault, self._refaults = (pc, far), 1
        if self._refaults >= LIVELOCK_AFTER:
            message = livelock_message(pc, far, self._refaults)
            self.log("livelock", f"{message} ({result.why})", pc=pc, far=far, count=self._refaults)
            return Outcome(OutcomeKind.LIVELOCK, message, {"pc": pc, "far": far, "count": self._refaults})
        return result

    # ------------------------------------------------------------ a run repeating one abort (emu/loop_replay.py)
    def loop_state(self) -> Hashable | None:
        return (self._refault, self._refault_run is self.machine.events, self._depth, len(self.fixups), self.task.loop_state())

    def steady_iterations(self) -> int:
        """Iterations still handled as the last one: retries of the same abort, short of the livelock
        threshold (the iteration that reaches it ends the run, and is run, not copied).

        Only when this host handled the last iteration and nothing but its eret and the retried
        access ran since: its retry's `resume` is the run's latest event, and VBAR_EL1 is its own
        vector table (an exception entry lands on its handler, no code of anyone else's runs first).
        """
        machine = self.machine
        if self._refault is None or self._refault_run is not machine.events or self._retry_logged != len(machine.events):
            return 0
        if machine.cpu.read_sysreg("VBAR_EL1") != VECTORS_VA:
            return 0
        return max(0, LIVELOCK_AFTER - 1 - self._refaults)

    def replay_iterations(self, n: int) -> None:
        self._refaults += n
        self._retry_logged = len(self.machine.events)  # the copies end with its retry's `resume` too

    def _finish(self, result, regs: PtRegs) -> Outcome | None:
        if isinstance(result, Outcome):
            return result
        if isinstance(result, Die):
            return self._die_outcome(result)
        if isinstance(result, Signal):
            self.log("signal", f"{signal_name(result.signo)} code={result.code} addr={result.addr:#x} ({result.why})", signal=result)
            outcome = self.task.deliver(regs, result, self.sigreturn_va)
            if outcome is not None:
                return outcome
        elif isinstance(result, Resume):
            self.log("resume", (RESUME_TEXT, result.why, regs.pc))
            self._retry_logged = len(self.machine.events) if self._refault is not None else -1
        regs.restore(self.machine.cpu, resume_at=self.stubs.eret)
        return None

    def _die_outcome(self, die: Die) -> Outcome:
        self.log("oops", die.message)
        return Outcome(OutcomeKind.HOST_BUG if die.bug else OutcomeKind.HOST_OOPS, die.message, die)

    # ------------------------------------------------------------ services for fault.c
    def fixup_exception(self, regs: PtRegs, wnr: bool) -> Fixup | None:
        fixup = self.extable.fixup_exception(regs, wnr, self._reread_u64)
        if fixup is not None:
            self.fixups.append(fixup)
            self.log("fixup", (_fixup_text, fixup), fixup=fixup)
        return fixup

    def _reread_u64(self, va: int) -> int:
        """The zeropad fixup's aligned load, executed for real: it may trap to EL2 or fault (nested)."""
        cpu = self.machine.cpu
        cpu.set_x(0, va)
        outcome = self.machine.run_nested(self.stubs.reread, self.stubs.reread + 4)
        if outcome is not None:
            raise FixupFault(outcome)
        return cpu.x(1)

    def at_s1e1r(self, va: int) -> int | WalkFault:
        """AT S1E1R: a stage-1 EL1 read translation (PAN not applied). The PA, or the fault PAR.FST names."""
        check = self.machine.stage1.check(va, AccessType.READ, el0=False, pan=False)
        if isinstance(check, WalkFault):
            return check
        return (check.pfn << 12) | (va & (PAGE_SIZE - 1))

    def current_has_mm(self) -> bool:
        return self.task.mm

    def user_pte(self, va: int) -> Pte | None:
        """The stage-1 entry standing for the VMA lookup of a user address."""
        return self.machine.stage1.lookup(va)

    def pkvm_force_reclaim_guest_page(self, phys: int) -> int:
        """The hypercall, issued with a real `hvc #0` and the profile's function id. Returns x1, signed.

        kvm_host.h kvm_call_hyp_nvhe(): WARN_ON(x0 != SMCCC_RET_SUCCESS), then the
        result is x1 whatever x0 said. An EL2 that does not serve the call (SMCCC
        NOT_SUPPORTED) leaves x1 = the argument, which is neither 0 nor -EAGAIN,
        so the caller falls through to die.
        """
        hcall = self.config.profile.host.force_reclaim_hcall
        if hcall is None:
            raise RuntimeError(f"{self.config.profile} has no force-reclaim hypercall")
        cpu = self.machine.cpu
        cpu.set_x(0, hcall)
        cpu.set_x(1, phys)
        outcome = self.machine.run_nested(self.stubs.hvc, self.stubs.hvc + 4)
        if outcome is not None:
            raise FixupFault(outcome)
        status, ret = cpu.x(0), cpu.x(1)
        if status != 0:
            shown = status - (1 << 64) if status >> 63 else status
            self.log("warn", f"WARN: kvm_call_hyp_nvhe({hcall:#x}) failed: x0={shown}", hcall=hcall, status=status)
        return ret - (1 << 64) if ret >> 63 else ret
