"""`RealHost`: an injected abort is handled by the vmlinux's own `do_mem_abort`.

Entry choice: a direct call of `do_mem_abort(far, esr, regs)`, not the
kernel's `el1h_64_sync` entry. The vector entry hands over to Python (as
HostKernel's does), which does what the entry macro `kernel_entry` does that
the fault path depends on: it builds a real `struct pt_regs` (the image's
size, from BTF) on the task's real stack below the interrupted SP, points
SP_EL0 at `current`, links x29 to `pt_regs->stackframe`, and calls the
kernel's C handler with x30 = a return hand-over point. When `do_mem_abort`
returns, the registers are reloaded from that pt_regs memory (the fixup moved
pc and wrote x-registers there; a signal may edit it) and a real `eret` resumes.
Why not the entry code itself: `el1h_64_sync` and its exit path run
alternatives (SSBD/mitigation callbacks), per-CPU entry bookkeeping, irq-flag
tracing and `ret_to_user` work loops that need a booted per-CPU area and
patched alternatives; none of that changes the fault verdict, and a direct
call keeps every instruction that does (do_mem_abort and below) real.

Everything the model decided in Python is here an observation of what the
kernel did: a fixup is "pt_regs->pc moved to the extable entry's fixup", a
reclaim is the hyp's hypercall event, an oops is `die()` reached with the
message the kernel printed. Non-abort exceptions from EL0 (svc) still go to
the task model of HostKernel; a `brk #0x800` at EL1 is WARN (event, continue)
or BUG (outcome) according to the image's `__bug_table`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu.cpu import VectorKind, VectorOffset
from emu.outcome import Outcome, OutcomeKind
from emu.syndrome import EC, Esr
from kimage.alternatives import apply as apply_alternatives
from kimage.hcalls import TABLE_SYMBOL as HCALL_TABLE, HcallTable
from kimage.loaded import LoadedKernel

from host.extable import Fixup
from host.results import LIVELOCK_AFTER, Die, Signal, livelock_message
from host.kernel import HOST_STUBS_VA, RESUME_TEXT, KernelConfig, HostKernel
from host.ptregs import PtRegs
from host.tasks import signal_name

from host.real.at import install_at_hook
from host.real.boot import TaskContext, boot_state
from host.real.bugs import BUG_BRK_IMM, BugTable
from host.real.layout import NO_SYSCALL, PT_REGS_PC, KernelLayout
from host.real.stubs import Stubs

# struct pt_regs' first 34 words: regs[0..30], sp, pc, pstate (arch/arm64/include/asm/ptrace.h).
_PT_REGS_WORDS = struct.Struct("<34Q")

if TYPE_CHECKING:
    from emu.machine import Machine

LIVELOCK = OutcomeKind.LIVELOCK
# Event texts as (format, *values) recipes (emu/outcome.py Event): formatted only when read.
_ABORT_TEXT = "{} abort: ESR={:#x} FAR={:#x} pc={:#x}: calling the kernel's do_mem_abort, pt_regs at {:#x}".format
MAX_FRAMES = 8
RETURN_VA = HOST_STUBS_VA + 0x400  # in HostKernel's vector page: do_mem_abort returns here
_ABORTS = (EC.DABT_CUR, EC.DABT_LOW, EC.IABT_CUR, EC.IABT_LOW)


@dataclass
class _Frame:
    """One exception being handled by the kernel: where its pt_regs live and what it interrupted."""

    regs_va: int
    pc: int
    far: int
    esr: int
    from_el0: bool
    signals: list[Signal] = field(default_factory=list)


class RealHost(HostKernel):
    """HostKernel's vectors and task model, with aborts handled by the image's own fault path."""

    def __init__(self, machine: "Machine", loaded: LoadedKernel, config: KernelConfig, *, user_mm: bool = False) -> None:
        self.loaded = loaded
        HostKernel.__init__(self, machine, config)
        self.layout = KernelLayout.read(loaded)
        self.bugs = BugTable(loaded, self.layout.bug_entry_size)
        # The task context is the host's Task.mm (user_mm: a user task from the start; the scenario
        # runner sets it per scenario); `current` follows it at every reset and fault entry.
        self.task.mm = self.task.mm or user_mm
        self.task_context = TaskContext(loaded, self.layout, user_task=lambda: self.task.mm)
        self.booted = boot_state(loaded, self.layout)
        # [booted-like image, issue 10 build 3/6] alternatives patched for abi/cpu.py FEATURES (+ protected-mode
        # KVM iff pKVM boots), and the image's host hypercall table for EL2 to serve ids by name.
        self.alternatives = apply_alternatives(loaded, protected=config.pkvm_initialised)
        self.booted.append(self.alternatives.summary())
        self.hcalls = HcallTable.read(loaded.vmlinux) if HCALL_TABLE in loaded.symbols else None
        self.do_mem_abort = loaded.resolve("do_mem_abort")
        self._run = None
        self._frames: list[_Frame] = []
        self._repeat: tuple[tuple[int, int, int], int] = ((0, 0, 0), 0)
        self.messages: list[str] = []
        self._warn_text = ""
        install_at_hook(machine)
        self.stubs_real = Stubs(self)
        machine.add_exit(RETURN_VA, self._returned)
        base = machine.cpu.read_sysreg("VBAR_EL1")
        machine.add_exit(base + VectorOffset.CURRENT_SPX + VectorKind.SYNC, lambda m: self._sync(from_el0=False))
        machine.add_exit(base + VectorOffset.LOWER_A64 + VectorKind.SYNC, lambda m: self._sync(from_el0=True))

    # ------------------------------------------------------------ per run
    def steady_iterations(self) -> int:
        """Never a proven repeat (emu/loop_replay.py): the kernel's own code runs every iteration, over
        memory (its stack, what a WARN keeps) that no fingerprint here covers."""
        return 0

    def _sync_run(self) -> None:
        """A new run (Machine.run makes a new event list) starts with no frames, messages or repeats."""
        if self._run is not self.machine.events:
            self._run = self.machine.events
            self._frames.clear()
            self._repeat = ((0, 0, 0), 0)
            self.messages = []
            self._warn_text = ""

    def printed(self, name: str, text: str, level: str | None) -> None:
        self._sync_run()
        self.messages.append(text)
        if name == "__warn_printk":
            self._warn_text = text
        self.log("printk", text, name=name, level=level)

    def queue_signal(self, sig: Signal) -> None:
        self._sync_run()
        if self._frames:
            self._frames[-1].signals.append(sig)

    def regs_user_mode(self, regs_va: int) -> bool:
        return (self.machine.read_u64(regs_va + PT_REGS_PC + 8) >> 2) & 3 == 0

    def die_outcome(self, fallback: str, name: str) -> Outcome:
        """The oops carries the kernel's own first line ("Unable to handle kernel ..." when printed)."""
        self._sync_run()
        message = next((t for t in self.messages if t.startswith("Unable to handle kernel")), fallback)
        frame = self._frames[-1] if self._frames else None
        regs = self._read_regs(frame.regs_va).as_dict() if frame else {}
        self.log("oops", f"{message} (the kernel called {name})", name=name)
        die = Die(message, frame.esr if frame else 0, frame.far if frame else None, regs)
        return Outcome(OutcomeKind.HOST_OOPS, message, die)

    # ------------------------------------------------------------ vectors
    def _sync(self, *, from_el0: bool) -> Outcome | None:
        self._sync_run()
        cpu = self.machine.cpu
        esr = Esr(cpu.read_sysreg("ESR_EL1"))
        if esr.ec in _ABORTS:
            regs, _, far = PtRegs.save_with_syndrome(cpu)  # kernel_entry's frame and FAR_EL1: one batch
            return self._enter(esr, far, from_el0, regs)
        if not from_el0 and esr.ec == EC.BRK64:
            return self._brk(esr)
        return self._el_sync(from_el0=from_el0)  # svc, undefined...: HostKernel's task model

    def _enter(self, esr: Esr, far: int, from_el0: bool, regs: PtRegs) -> Outcome | None:
        cpu = self.machine.cpu
        # Keyed by depth: a fault taken again inside its own handling (nesting) is recursion, not a retry.
        key = (len(self._frames), regs.pc, far)
        count = self._repeat[1] + 1 if self._repeat[0] == key else 1
        self._repeat = (key, count)
        if count >= LIVELOCK_AFTER:
            msg = livelock_message(regs.pc, far, count)
            self.log(LIVELOCK, f"{msg} (at {self.loaded.symbolize(regs.pc)})")
            return Outcome(LIVELOCK, msg, key)
        if len(self._frames) >= MAX_FRAMES:
            self.log("recursive-fault", f"fault at pc={regs.pc:#x} ({self.loaded.symbolize(regs.pc)}) FAR={far:#x} while handling {len(self._frames)} nested faults")
            return self.die_outcome("recursive faults in the fault path (the kernel would overflow its stack)", "entry")
        ctx = self.task_context
        ctx.sync_mm()  # EL0 code is entered without a reset of `current`: the task context is set here too
        # kernel_entry: from EL0 the frame starts at the top of the task stack, from EL1 below the interrupted SP.
        top = ctx.stack_top if from_el0 else regs.sp
        regs_va = (top - self.layout.pt_regs_size) & ~0xF
        if not ctx.stack_base <= regs_va < ctx.stack_top:
            return self.die_outcome(f"kernel stack overflow: pt_regs at {regs_va:#x} outside the task stack", "entry")
        self._write_regs(regs_va, regs)
        self._frames.append(_Frame(regs_va, regs.pc, far, esr.value, from_el0))
        pc, value = regs.pc, esr.value
        self.log("do_mem_abort", (_ABORT_TEXT, "EL0" if from_el0 else "EL1", value, far, pc, regs_va), esr=value, far=far)
        if from_el0:
            cpu.sp_el0 = self.loaded.task
        # do_mem_abort(far, esr, regs) on the frame's stack, returning to RETURN_VA: one register batch
        writes = (("sp", regs_va), ("x0", far), ("x1", value), ("x2", regs_va))
        if self.layout.pt_regs_stackframe is not None:
            writes += (("x29", regs_va + self.layout.pt_regs_stackframe),)
        cpu.write_regs((*writes, ("x30", RETURN_VA), ("pc", self.do_mem_abort)))
        return None

    def _returned(self, machine: "Machine") -> Outcome | None:
        """do_mem_abort returned: kernel_exit from the pt_regs the kernel may have changed, then eret."""
        self._sync_run()
        if not self._frames:
            return Outcome(OutcomeKind.EMULATOR_ERROR, "do_mem_abort returned with no exception frame")
        frame = self._frames.pop()
        regs = self._read_regs(frame.regs_va)
        why = "do_mem_abort returned"
        if regs.pc != frame.pc:
            why += self._note_fixup(frame, regs)
        else:
            why += ": retry the access"
        for sig in frame.signals:
            self.log("signal", f"{signal_name(sig.signo)} code={sig.code} addr={sig.addr:#x} ({sig.why})", signal=sig)
            outcome = self.task.deliver(regs, sig, self.sigreturn_va)
            if outcome is not None:
                return outcome
        self.log("resume", (RESUME_TEXT, why, regs.pc))
        regs.restore(machine.cpu, resume_at=self.stubs.eret)
        return None

    def _note_fixup(self, frame: _Frame, regs: PtRegs) -> str:
        found = self.extable.search(frame.pc)
        if found is None:
            self.log("pc-moved", f"pt_regs->pc moved {frame.pc:#x} -> {regs.pc:#x} with no extable entry at the old pc")
            return f": pc moved to {regs.pc:#x}"
        entry, numbering = found
        kind = numbering.kind(entry.type)
        changed = [f"x{i}={v:#x}" for i, v in enumerate(regs.x) if i < 31]
        detail = f"the kernel's fixup_exception: pc -> {regs.pc:#x}" + ("" if regs.pc == entry.fixup else f" (entry says {entry.fixup:#x})")
        fixup = Fixup(entry, kind, detail)
        self.fixups.append(fixup)
        self.log("fixup", f"{kind.value} at {entry.insn:#x} -> {regs.pc:#x}: real fixup (x0={regs.x[0]:#x})", fixup=fixup, regs=changed)
        return f": fixup {kind.value}"

    def _brk(self, esr: Esr) -> Outcome | None:
        cpu = self.machine.cpu
        pc = cpu.read_sysreg("ELR_EL1")
        imm = esr.iss & 0xFFFF
        site = self.bugs.find(pc) if imm == BUG_BRK_IMM else None
        if site is not None and site.warning:
            text = self._warn_text
            self._warn_text = ""
            where, symbolize = site.where, self.loaded.symbolize
            self.log("warn", lambda: f"WARNING: at {where} {symbolize(pc)}" + (f": {text}" if text else ""), where=where, text=text)
            cpu.write_sysreg("ELR_EL1", pc + 4)  # report_bug() returns BUG_TRAP_TYPE_WARN: skip the brk
            cpu.pc = self.stubs.eret
            return None
        if site is not None:
            msg = f"kernel BUG at {site.where}!"
            self.log("oops", msg)
            return Outcome(OutcomeKind.HOST_BUG, msg, site)
        msg = f"Internal error: Oops - BRK: {esr.value:016x} [#1] at {self.loaded.symbolize(pc)}"
        self.log("oops", msg)
        return Outcome(OutcomeKind.HOST_OOPS, msg)

    # ------------------------------------------------------------ pt_regs memory
    def _write_regs(self, va: int, regs: PtRegs) -> None:
        lay = self.layout
        raw = bytearray(lay.pt_regs_size)
        # Register values read from the CPU are 64-bit already (struct refuses anything else).
        _PT_REGS_WORDS.pack_into(raw, 0, *regs.x, regs.sp, regs.pc, regs.pstate)
        if lay.pt_regs_syscallno is not None:
            raw[lay.pt_regs_syscallno : lay.pt_regs_syscallno + 4] = (NO_SYSCALL & 0xFFFFFFFF).to_bytes(4, "little")
        if lay.pt_regs_stackframe is not None:  # the frame record: the interrupted fp and pc, as the entry code links them
            off = lay.pt_regs_stackframe
            raw[off : off + 8] = regs.x[29].to_bytes(8, "little")
            raw[off + 8 : off + 16] = regs.pc.to_bytes(8, "little")
        self.machine.write(va, bytes(raw))

    def _read_regs(self, va: int) -> PtRegs:
        words = _PT_REGS_WORDS.unpack(self.machine.read(va, _PT_REGS_WORDS.size))
        return PtRegs(list(words[:31]), words[31], words[32], words[33])
