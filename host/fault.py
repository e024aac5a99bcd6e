"""The arm64 kernel's data-abort path (arch/arm64/mm/fault.c), modelled in Python.

`do_mem_abort` selects a handler by DFSC as the kernel's `fault_info` table
does; the handlers call each other in the kernel's order, and
`__do_kernel_fault` tries, in order: the exception-table fixup, the spurious
translation-fault check (with pKVM: force-reclaim through `hvc`), then the
oops. Each handler returns a `FaultResult`: resume the interrupted context
(fixed up or to be retried), deliver a signal, or die.

The model sees only what the kernel sees: ESR_EL1, FAR_EL1 and pt_regs, and
talks to the hypervisor only through hypercalls.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from emu.memory import AccessType, WalkFault, is_kernel_va
from emu.syndrome import EC, Esr, dfsc_is_permission, dfsc_is_translation, kernel_fault_name

from .extable import ExtableBug, FixupFault
from .ptregs import PtRegs

if TYPE_CHECKING:
    from .kernel import HostKernel

PAGE_SIZE = 4096

SIGKILL, SIGBUS, SIGSEGV, SIGTRAP, SIGILL = 9, 7, 11, 5, 4
SEGV_MAPERR, SEGV_ACCERR = 1, 2
BUS_ADRALN, BUS_OBJERR = 1, 3
SI_KERNEL = 0x80


@dataclass(frozen=True)
class Resume:
    """Return to the (possibly fixed-up) interrupted context."""

    why: str


@dataclass(frozen=True)
class Signal:
    signo: int
    code: int
    addr: int
    why: str


@dataclass(frozen=True)
class Die:
    """die(): the host kernel oopses. `message` is the kernel's line."""

    message: str
    esr: int
    far: int | None
    regs: dict[str, int]
    bug: bool = False

    def report(self) -> str:
        lines = [self.message]
        if self.esr is not None:
            lines.append("Mem abort info:" if Esr(self.esr).is_data_abort or Esr(self.esr).is_instruction_abort else "Syndrome:")
            lines += ["  " + ln for ln in str(Esr(self.esr)).splitlines()]
        lines.append(f"pc : {self.regs.get('pc', 0):016x}")
        lines.append(f"sp : {self.regs.get('sp', 0):016x}")
        for i in range(0, 31, 2):
            pair = [f"x{j:<2}: {self.regs.get(f'x{j}', 0):016x}" for j in (i + 1, i) if j < 31]
            lines.append(" ".join(pair))
        return "\n".join(lines)


FaultResult = Resume | Signal | Die


@dataclass(frozen=True)
class FaultInfo:
    """One row of fault.c's fault_info[] table."""

    handler: Callable[["FaultContext"], FaultResult | None]
    sig: int
    code: int
    name: str


@dataclass
class FaultContext:
    kernel: "HostKernel"
    far: int
    esr: Esr
    regs: PtRegs

    @property
    def user_mode(self) -> bool:
        return self.regs.user_mode

    def die(self, message: str, *, bug: bool = False) -> Die:
        return Die(message, self.esr.value, self.far, self.regs.as_dict(), bug)

    def die_kernel_fault(self, msg: str) -> Die:
        # fault.c die_kernel_fault(): the line every arm64 oops starts with.
        return self.die(f"Unable to handle kernel {msg} at virtual address {self.far:016x}")


# ----------------------------------------------------------------------- predicates


def is_ttbr0_addr(addr: int) -> bool:
    return not is_kernel_va(addr)


def is_el1_data_abort(esr: Esr) -> bool:
    return esr.ec == EC.DABT_CUR


def is_el1_instruction_abort(esr: Esr) -> bool:
    return esr.ec == EC.IABT_CUR


def is_el1_permission_fault(ctx: FaultContext) -> bool:
    if is_el1_data_abort(ctx.esr) or is_el1_instruction_abort(ctx.esr):
        return dfsc_is_permission(ctx.esr.fsc)
    return False


def is_pkvm_stage2_abort(ctx: FaultContext) -> bool:
    """pKVM marks the aborts it injects with ESR.S1PTW; only meaningful once pKVM is initialised."""
    return ctx.kernel.config.pkvm_initialised and ctx.esr.s1ptw


# ----------------------------------------------------------------------- kernel faults


def __do_kernel_fault(ctx: FaultContext) -> FaultResult:
    """fault.c __do_kernel_fault(): fixup, then spurious/reclaim, then die."""
    kernel = ctx.kernel
    if not is_el1_instruction_abort(ctx.esr):
        try:
            fixup = kernel.fixup_exception(ctx.regs, ctx.esr.wnr)
        except ExtableBug as exc:
            return ctx.die(f"kernel BUG at arch/arm64/mm/extable.c: {exc}", bug=True)
        except FixupFault as exc:
            raise exc
        if fixup is not None:
            return Resume(f"fixup {fixup.kind.value}: {fixup.detail}")
    spurious = is_spurious_el1_translation_fault(ctx)
    if spurious is not None:
        return spurious
    if is_el1_permission_fault(ctx):
        if ctx.esr.wnr:
            msg = "write to read-only memory"
        elif is_el1_instruction_abort(ctx.esr):
            msg = "execute from non-executable memory"
        else:
            msg = "read from unreadable memory"
    elif ctx.far < PAGE_SIZE:
        msg = "NULL pointer dereference"
    elif is_pkvm_stage2_abort(ctx):
        msg = "access to hypervisor-protected memory"
    else:
        msg = "paging request"
    return ctx.die_kernel_fault(msg)


def is_spurious_el1_translation_fault(ctx: FaultContext) -> FaultResult | None:
    """The spurious-fault check; with the pKVM guest-memory series, the force-reclaim of a guest page.

    The kernel runs `AT S1E1R` on the address: if stage 1 now translates it, the
    translation fault was spurious (a race with a page-table update) - unless it
    is a pKVM stage-2 abort, which only a force-reclaim of the page can resolve.
    """
    esr = ctx.esr
    if esr.ec != EC.DABT_CUR or not dfsc_is_translation(esr.fsc):
        return None
    kernel = ctx.kernel
    par = kernel.at_s1e1r(ctx.far)
    if is_pkvm_stage2_abort(ctx):
        if not kernel.config.force_reclaim or par is None:
            return None
        ret = kernel.pkvm_force_reclaim_guest_page(par & ~(PAGE_SIZE - 1))
        if isinstance(ret, Die):
            return ret
        if ret in (0, -11):  # 0 or -EAGAIN: the page is the host's now (or already was)
            return Resume(f"pKVM force-reclaim of PA {par & ~(PAGE_SIZE - 1):#x} returned {ret}: retry")
        return None
    if par is None:
        return None
    kernel.log("warn", f"WARN: spurious translation fault at {ctx.far:#x}: retrying")
    return Resume("spurious translation fault")


# ----------------------------------------------------------------------- fault_info handlers


def do_bad(ctx: FaultContext) -> FaultResult | None:
    return None  # "unknown" rows: the caller dies (kernel) or signals (user)


def do_bad_area(ctx: FaultContext, info: FaultInfo) -> FaultResult:
    if ctx.user_mode:
        return Signal(info.sig, info.code, ctx.far, info.name)
    return __do_kernel_fault(ctx)


def do_translation_fault(ctx: FaultContext) -> FaultResult | None:
    if is_ttbr0_addr(ctx.far):
        return do_page_fault(ctx)
    return do_bad_area(ctx, fault_info(ctx.esr.fsc))


def do_page_fault(ctx: FaultContext) -> FaultResult | None:
    """User-address faults and permission faults: VMA lookup, or the kernel paths."""
    kernel = ctx.kernel
    if is_pkvm_stage2_abort(ctx):
        # Checked before any VMA lookup: the page is mapped at stage 1, it is the hypervisor that refused.
        if ctx.user_mode:
            return Signal(SIGSEGV, SEGV_ACCERR, ctx.far, "access to hypervisor-protected memory")
        return __do_kernel_fault(ctx)
    if not ctx.user_mode and is_ttbr0_addr(ctx.far) and is_el1_permission_fault(ctx):
        if kernel.extable.search(ctx.regs.pc) is None:
            return ctx.die_kernel_fault("access to user memory outside uaccess routines")
    # VMA lookup: a user mapping at stage 1 stands for the VMA.
    pte = kernel.machine.stage1.lookup(ctx.far)
    if pte is None or not pte.perms.user:
        code = SEGV_MAPERR
    else:
        wanted = AccessType.EXEC if ctx.esr.is_instruction_abort else AccessType.WRITE if ctx.esr.wnr else AccessType.READ
        check = kernel.machine.stage1.check(ctx.far, wanted, el0=True, pan=False)
        if not isinstance(check, WalkFault):
            return Resume("fault on a valid user mapping: retry")
        code = SEGV_ACCERR
    if ctx.user_mode:
        return Signal(SIGSEGV, code, ctx.far, "user fault")
    return __do_kernel_fault(ctx)


def do_alignment_fault(ctx: FaultContext) -> FaultResult | None:
    if ctx.user_mode:
        return Signal(SIGBUS, BUS_ADRALN, ctx.far, "alignment fault")
    return __do_kernel_fault(ctx)


def do_sea(ctx: FaultContext) -> FaultResult | None:
    if ctx.user_mode:
        return Signal(SIGBUS, BUS_OBJERR, ctx.far, "synchronous external abort")
    return ctx.die(f"Internal error: synchronous external abort: {ctx.esr.value:08x}")


def fault_info(dfsc: int) -> FaultInfo:
    """fault.c fault_info[dfsc]: handler, signal, si_code, name."""
    name = kernel_fault_name(dfsc)
    if 0x04 <= dfsc <= 0x07 or dfsc == 0x2B:
        return FaultInfo(do_translation_fault, SIGSEGV, SEGV_MAPERR, name)
    if 0x09 <= dfsc <= 0x0B or 0x0D <= dfsc <= 0x0F:
        return FaultInfo(do_page_fault, SIGSEGV, SEGV_ACCERR, name)
    if dfsc == 0x21:
        return FaultInfo(do_alignment_fault, SIGBUS, BUS_ADRALN, name)
    if dfsc == 0x10:
        return FaultInfo(do_sea, SIGBUS, BUS_OBJERR, name)
    # Everything else, the RME granule-protection codes 0x23-0x28 included, is "unknown" and fatal.
    return FaultInfo(do_bad, SIGKILL, SI_KERNEL, name)


def do_mem_abort(ctx: FaultContext) -> FaultResult:
    info = fault_info(ctx.esr.fsc)
    result = info.handler(ctx)
    if result is not None:
        return result
    if not ctx.user_mode:
        return ctx.die_kernel_fault(info.name)
    return Signal(info.sig, info.code, ctx.far, info.name)
