"""The arm64 kernel's data-abort path (arch/arm64/mm/fault.c), modelled in Python.

`do_mem_abort` selects a handler by DFSC as the kernel's `fault_info` table
does; the handlers call each other in the kernel's order, and
`__do_kernel_fault` tries, in order: the exception-table fixup, the spurious
translation-fault check (with pKVM: force-reclaim through `hvc`), MTE
tag-check recovery, then the oops. Each handler returns a `FaultResult`:
resume the interrupted context (fixed up or to be retried), deliver a signal,
or die.

The model sees only what the kernel sees: ESR_EL1, FAR_EL1 and pt_regs, and
talks to the hypervisor only through hypercalls. The table and the handler
order follow the newest fault.c (v6.9+, with the FEAT_LPA2 rows and the pKVM
guest-memory series); where older kernels differ, the host's kernel profile
(`kimage.profiles`) switches the feature off: 6.1 has neither the pKVM
marker check nor the force-reclaim call, and prints pre-LPA2 fault names.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Protocol

from abi.arch import PAGE_SIZE
from abi.linux import BUS_ADRALN, BUS_OBJERR, SEGV_ACCERR, SEGV_MAPERR, SEGV_MTESERR, SI_KERNEL, Errno, Sig
from emu.memory import Pte, WalkFault, is_kernel_va
from emu.syndrome import EC, Esr, OopsStyle, dfsc_is_permission, dfsc_is_translation, kernel_fault_name

from host.extable import Extable, ExtableBug, Fixup
from host.ptregs import PtRegs
from host.results import Die, FaultResult, Resume, Signal

SIGKILL, SIGBUS, SIGSEGV, SIGTRAP, SIGILL = Sig.SIGKILL, Sig.SIGBUS, Sig.SIGSEGV, Sig.SIGTRAP, Sig.SIGILL
EAGAIN = -Errno.EAGAIN
DFSC_TAG_CHECK = 0x11
# An event text recipe (emu/outcome.py Event): formatted only when read.
_SPURIOUS_TEXT = "WARN: Ignoring spurious kernel translation fault at virtual address {:016x}".format




@dataclass(frozen=True)
class FaultInfo:
    """One row of fault.c's fault_info[] table."""

    handler: Callable[["FaultContext"], FaultResult | None]
    sig: int
    code: int
    name: str


class HostServices(Protocol):
    """What fault.c needs from the rest of the host kernel (implemented by `host.kernel.HostKernel`)."""

    extable: Extable
    pkvm_marker: bool  # is_pkvm_stage2_abort() exists in this kernel and pKVM is initialised
    force_reclaim: bool  # this kernel's spurious-fault check calls pkvm_force_reclaim_guest_page()
    oops_style: OopsStyle

    def log(self, kind: str, message: str, **data) -> None: ...
    def fixup_exception(self, regs: PtRegs, wnr: bool) -> Fixup | None: ...
    def at_s1e1r(self, va: int) -> int | WalkFault: ...
    def pkvm_force_reclaim_guest_page(self, phys: int) -> int: ...
    def user_pte(self, va: int) -> Pte | None: ...
    def current_has_mm(self) -> bool: ...


@dataclass
class FaultContext:
    kernel: HostServices
    far: int
    esr: Esr
    regs: PtRegs

    @property
    def user_mode(self) -> bool:
        return self.regs.user_mode

    def die(self, message: str, *, bug: bool = False) -> Die:
        return Die(message, self.esr.value, self.far, self.regs.as_dict(), bug)

    def die_kernel_fault(self, msg: str) -> Die:
        # fault.c die_kernel_fault(): the line every arm64 kernel-fault oops starts with.
        return self.die(f"Unable to handle kernel {msg} at virtual address {self.far:016x}")

    def notify_die(self, info: FaultInfo, addr: int) -> FaultResult:
        """traps.c arm64_notify_die(): a signal for a user context, die() for the kernel."""
        if self.user_mode:
            return Signal(info.sig, info.code, addr, info.name)
        # traps.c die(): "Internal error: %s: %016lx [#%d]"; this model oopses once.
        return self.die(f"Internal error: {info.name}: {self.esr.value:016x} [#1]")


# ----------------------------------------------------------------------- predicates


def is_ttbr0_addr(addr: int) -> bool:
    return not is_kernel_va(addr)


def is_el1_data_abort(esr: Esr) -> bool:
    return esr.ec == EC.DABT_CUR


def is_el1_instruction_abort(esr: Esr) -> bool:
    return esr.ec == EC.IABT_CUR


def is_el1_permission_fault(ctx: FaultContext) -> bool:
    # The TTBR0-PAN (software PAN) leg of the kernel's test does not apply: the model has hardware PAN.
    if is_el1_data_abort(ctx.esr) or is_el1_instruction_abort(ctx.esr):
        return dfsc_is_permission(ctx.esr.fsc)
    return False


def is_write_abort(esr: Esr) -> bool:
    # fault.c is_write_abort(): a cache-maintenance fault reports WnR = 1 but is not a write.
    return esr.wnr and not esr.cm


def is_pkvm_stage2_abort(ctx: FaultContext) -> bool:
    """pKVM marks the aborts it injects with ESR.S1PTW; only kernels with the check (7.x), once pKVM is initialised.

    Any S1PTW in ESR_EL1 is the marker, as in fault.c: the hardware reports S1PTW only for a
    stage-2 fault, which goes to EL2, never to EL1. A real stage-2 fault on a stage-1 walk
    (emu/stage1_tables.py) is seen by EL2 with ESR_EL2.S1PTW = 1; if pKVM injects it, the
    host cannot tell it from the marker and does not try (tests/test_s1ptw_host.py).
    """
    return ctx.kernel.pkvm_marker and ctx.esr.s1ptw


# ----------------------------------------------------------------------- kernel faults


def __do_kernel_fault(ctx: FaultContext) -> FaultResult:
    """fault.c __do_kernel_fault(): fixup, spurious/reclaim, MTE recovery, then die."""
    kernel = ctx.kernel
    esr = ctx.esr
    if not is_el1_instruction_abort(esr):
        try:
            fixup = kernel.fixup_exception(ctx.regs, esr.wnr)
        except ExtableBug as exc:
            return ctx.die(f"kernel BUG at arch/arm64/mm/extable.c: {exc}", bug=True)
        if fixup is not None:
            return Resume(f"fixup {fixup.kind.value}: {fixup.detail}")
    spurious = is_spurious_el1_translation_fault(ctx)
    if spurious is not None:
        return spurious
    if is_el1_data_abort(esr) and esr.fsc == DFSC_TAG_CHECK:
        # do_tag_recovery(): report to KASAN, turn tag checking off on this CPU, carry on.
        kernel.log("warn", f"MTE tag check fault at {ctx.far:#x}: tag checking disabled on this CPU")
        return Resume("MTE tag-check recovery")
    if is_el1_permission_fault(ctx):
        if esr.wnr:
            msg = "write to read-only memory"
        elif is_el1_instruction_abort(esr):
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
    is a pKVM stage-2 abort, which only a force-reclaim of the page resolves. If
    AT reports a fault other than a translation fault, the fault is spurious too.
    Kernels with the marker but without the force-reclaim call give up on pKVM
    aborts at once. Kernels without the marker (6.1) see a valid stage-1
    mapping and call the fault spurious: WARN and retry (`HostKernel` ends the
    resulting endless re-fault as a livelock). Returns Resume (retry) or None
    (not spurious).
    """
    esr = ctx.esr
    if not is_el1_data_abort(esr) or not dfsc_is_translation(esr.fsc):
        return None
    kernel = ctx.kernel
    pkvm = is_pkvm_stage2_abort(ctx)
    if pkvm and not kernel.force_reclaim:
        return None
    par = kernel.at_s1e1r(ctx.far)
    if isinstance(par, WalkFault):
        if par.kind == "translation":
            return None
        why = f"AT S1E1R reports a {par.kind} fault"
    elif pkvm:
        phys = par & ~(PAGE_SIZE - 1)
        ret = kernel.pkvm_force_reclaim_guest_page(phys)
        # pkvm.c pkvm_force_reclaim_guest_page(): 0 and -EAGAIN both mean "the host may retry";
        # anything else (an error, or NOT_SUPPORTED from a pre-patch EL2) falls through to die.
        if ret in (0, -EAGAIN):
            return Resume(f"pKVM force-reclaim of PA {phys:#x} returned {ret}: retry")
        return None
    else:
        why = "stage 1 translates it now"
    if not pkvm:
        kernel.log("warn", (_SPURIOUS_TEXT, ctx.far))
    return Resume(f"spurious translation fault: {why}")


# ----------------------------------------------------------------------- fault_info handlers


def do_bad(ctx: FaultContext) -> FaultResult | None:
    return None  # "unknown" rows: do_mem_abort dies (kernel) or signals (user) with the row


def do_bad_area(ctx: FaultContext) -> FaultResult:
    if ctx.user_mode:
        info = fault_info(ctx.esr.fsc, ctx.kernel.oops_style)
        return Signal(info.sig, info.code, ctx.far, info.name)
    return __do_kernel_fault(ctx)


def do_translation_fault(ctx: FaultContext) -> FaultResult | None:
    if is_ttbr0_addr(ctx.far):
        return do_page_fault(ctx)
    return do_bad_area(ctx)


def do_page_fault(ctx: FaultContext) -> FaultResult | None:
    """User-address faults and permission/access-flag faults, in fault.c's order."""
    kernel = ctx.kernel
    esr = ctx.esr
    # fault.c: "If we're in an interrupt or have no user context, we must not take the
    # fault": a kernel thread (no mm) goes straight to no_context (__do_kernel_fault).
    if not (ctx.user_mode or kernel.current_has_mm()):
        return __do_kernel_fault(ctx)
    if is_ttbr0_addr(ctx.far) and is_el1_permission_fault(ctx):
        if is_el1_instruction_abort(esr):
            return ctx.die_kernel_fault("execution of user memory")
        if not kernel.extable.may_access_user(ctx.regs.pc, esr.wnr):
            return ctx.die_kernel_fault("access to user memory outside uaccess routines")
    if is_pkvm_stage2_abort(ctx):
        # Checked before any VMA lookup: stage 1 maps the page, the hypervisor refused it.
        if not ctx.user_mode:
            return __do_kernel_fault(ctx)
        return Signal(SIGSEGV, SEGV_ACCERR, ctx.far, "stage-2 fault")
    code = _vma_check(ctx)
    if code is None:
        return Resume("handle_mm_fault: the mapping allows this access: retry")
    if ctx.user_mode:
        return Signal(SIGSEGV, code, ctx.far, fault_info(esr.fsc).name)
    return __do_kernel_fault(ctx)


def _vma_check(ctx: FaultContext) -> int | None:
    """The VMA lookup, with a user stage-1 mapping standing for the VMA: None (fault can be handled) or si_code."""
    pte = ctx.kernel.user_pte(ctx.far)
    if pte is None or not pte.perms.user:
        return SEGV_MAPERR
    perms = pte.perms
    if ctx.esr.ec == EC.IABT_LOW:
        allowed = perms.exec
    elif is_write_abort(ctx.esr):
        allowed = perms.write
    else:
        allowed = perms.read or perms.write  # fault.c: "Write implies read"
    return None if allowed else SEGV_ACCERR


def do_alignment_fault(ctx: FaultContext) -> FaultResult:
    return do_bad_area(ctx)


def do_tag_check_fault(ctx: FaultContext) -> FaultResult:
    return do_bad_area(ctx)


def do_sea(ctx: FaultContext) -> FaultResult:
    """Synchronous external abort: never fixed up; FAR is not reported when ESR.FnV says it is invalid."""
    addr = 0 if ctx.esr.fnv else ctx.far
    return ctx.notify_die(fault_info(ctx.esr.fsc, ctx.kernel.oops_style), addr)


def _handler_rows() -> dict[int, tuple[Callable, int, int]]:
    """fault.c fault_info[]: the rows that are not do_bad/SIGKILL/SI_KERNEL."""
    rows: dict[int, tuple[Callable, int, int]] = {}
    for dfsc in (0x04, 0x05, 0x06, 0x07, 0x2B):
        rows[dfsc] = (do_translation_fault, SIGSEGV, SEGV_MAPERR)
    for dfsc in range(0x08, 0x10):  # access flag and permission, levels 0-3
        rows[dfsc] = (do_page_fault, SIGSEGV, SEGV_ACCERR)
    rows[0x10] = (do_sea, SIGBUS, BUS_OBJERR)
    rows[DFSC_TAG_CHECK] = (do_tag_check_fault, SIGSEGV, SEGV_MTESERR)
    for dfsc in (*range(0x13, 0x18), *range(0x1B, 0x20)):  # external aborts/parity on a table walk
        rows[dfsc] = (do_sea, SIGKILL, SI_KERNEL)
    rows[0x18] = (do_sea, SIGBUS, BUS_OBJERR)
    rows[0x21] = (do_alignment_fault, SIGBUS, BUS_ADRALN)
    rows[0x35] = (do_bad, SIGBUS, BUS_OBJERR)  # unsupported exclusive
    # Everything else, the RME granule-protection codes 0x23-0x28 included, is "unknown" and fatal.
    return rows


_ROWS = _handler_rows()


@functools.lru_cache(maxsize=256, typed=True)
def fault_info(dfsc: int, style: OopsStyle = OopsStyle.LATEST) -> FaultInfo:
    """fault.c fault_info[dfsc]: handler, signal, si_code, and the name as that kernel generation spells it.

    A table lookup (a pure function of two small values, rows frozen): memoised, as the kernel's is a static array."""
    handler, sig, code = _ROWS.get(dfsc & 0x3F, (do_bad, SIGKILL, SI_KERNEL))
    return FaultInfo(handler, sig, code, kernel_fault_name(dfsc, style))


def do_mem_abort(ctx: FaultContext) -> FaultResult:
    info = fault_info(ctx.esr.fsc, ctx.kernel.oops_style)
    result = info.handler(ctx)
    if result is not None:
        return result
    if not ctx.user_mode:
        return ctx.die_kernel_fault(info.name)
    return Signal(info.sig, info.code, ctx.far, info.name)
