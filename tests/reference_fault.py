"""Independent references for the hyp/ and host/ tests, and the rig those tests run on.

The references are written from the sources named beside each one (fault.c's
fault_info[] table and handlers, extable.c's handlers, hyp-main.c's
inject_host_exception(), the Arm ARM ESR layout) as plain data and small pure
functions. They never call hyp/ or host/: a test compares what the emulated
system did with what these say it should do.

The rig (`System`, `make_system`, `enter_sync`, `injection_machine`) only wires
the layers together the way a scenario runner would; it decides nothing a test checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from conftest import CODE_VA, DATA_VA, assemble
from kimage.extable_format import NUMBERING_V7, ExtableEntry, TypeNumbering
from emu.machine import Machine
from emu.memory import PAGE_SIZE
from emu.outcome import Outcome

MASK64 = (1 << 64) - 1

# --------------------------------------------------------------------------------------------
# Linux ABI numbers (include/uapi/asm-generic/errno-base.h, signal.h, siginfo.h)
# --------------------------------------------------------------------------------------------
EFAULT = 14
EAGAIN = 11
SIGILL, SIGTRAP, SIGBUS, SIGKILL, SIGSEGV = 4, 5, 7, 9, 11
SEGV_MAPERR, SEGV_ACCERR, SEGV_MTESERR = 1, 2, 9
BUS_ADRALN, BUS_OBJERR = 1, 3
ILL_ILLOPC = 1
SI_KERNEL = 0x80

# SMCCC (ARM DEN 0028): fast call, SMC64, owner 6 (vendor hypervisor); status -1 = not supported.
SMCCC_VENDOR_HYP_FAST64 = 0xC600_0000
SMCCC_NOT_SUPPORTED = MASK64

# ESR (Arm ARM D24.2.45 ESR_ELx, data abort ISS)
EC_UNKNOWN, EC_DABT_LOW, EC_DABT_CUR, EC_IABT_LOW, EC_IABT_CUR = 0x00, 0x24, 0x25, 0x20, 0x21
ESR_IL = 1 << 25
ESR_ISV = 1 << 24
ESR_S1PTW = 1 << 7
ESR_WNR = 1 << 6
ESR_FNV = 1 << 10

# PSTATE / SPSR (Arm ARM C5.2.19)
PSTATE_EL1H = 0b0101
PSTATE_DAIF = 0xF << 6
PSTATE_PAN = 1 << 22
PSTATE_NZCV_SHIFT = 28
SCTLR_SPAN = 1 << 23

VBAR_CURRENT_SPX, VBAR_LOWER_A64 = 0x200, 0x400

GUEST_PATTERN = 0xA5


def u64(value: int) -> int:
    return value & MASK64


def neg(errno: int) -> int:
    """-errno as the 64-bit register value the host sees."""
    return u64(-errno)


# --------------------------------------------------------------------------------------------
# fault.c fault_info[] (newest layout, with the FEAT_LPA2 names): DFSC -> handler, signal, code, name
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultRow:
    handler: str  # "bad" | "translation" | "page" | "sea" | "tag" | "alignment"
    sig: int
    code: int
    name: str


def _fault_rows() -> dict[int, FaultRow]:
    rows = {dfsc: FaultRow("bad", SIGKILL, SI_KERNEL, f"unknown {dfsc}") for dfsc in range(64)}
    rows[0] = FaultRow("bad", SIGKILL, SI_KERNEL, "ttbr address size fault")
    for lvl in (1, 2, 3):
        rows[lvl] = FaultRow("bad", SIGKILL, SI_KERNEL, f"level {lvl} address size fault")
    for lvl in (0, 1, 2, 3):
        rows[0x04 + lvl] = FaultRow("translation", SIGSEGV, SEGV_MAPERR, f"level {lvl} translation fault")
        rows[0x08 + lvl] = FaultRow("page", SIGSEGV, SEGV_ACCERR, f"level {lvl} access flag fault")
        rows[0x0C + lvl] = FaultRow("page", SIGSEGV, SEGV_ACCERR, f"level {lvl} permission fault")
        rows[0x14 + lvl] = FaultRow("sea", SIGKILL, SI_KERNEL, f"level {lvl} (translation table walk)")
        rows[0x1C + lvl] = FaultRow(
            "sea", SIGKILL, SI_KERNEL, f"level {lvl} synchronous parity error (translation table walk)"
        )
    rows[0x10] = FaultRow("sea", SIGBUS, BUS_OBJERR, "synchronous external abort")
    rows[0x11] = FaultRow("tag", SIGSEGV, SEGV_MTESERR, "synchronous tag check fault")
    rows[0x13] = FaultRow("sea", SIGKILL, SI_KERNEL, "level -1 (translation table walk)")
    rows[0x18] = FaultRow("sea", SIGBUS, BUS_OBJERR, "synchronous parity or ECC error")
    rows[0x1B] = FaultRow("sea", SIGKILL, SI_KERNEL, "level -1 synchronous parity error (translation table walk)")
    rows[0x21] = FaultRow("alignment", SIGBUS, BUS_ADRALN, "alignment fault")
    rows[0x29] = FaultRow("bad", SIGKILL, SI_KERNEL, "level -1 address size fault")
    rows[0x2B] = FaultRow("translation", SIGSEGV, SEGV_MAPERR, "level -1 translation fault")
    rows[0x30] = FaultRow("bad", SIGKILL, SI_KERNEL, "TLB conflict abort")
    rows[0x31] = FaultRow("bad", SIGKILL, SI_KERNEL, "Unsupported atomic hardware update fault")
    rows[0x34] = FaultRow("bad", SIGKILL, SI_KERNEL, "implementation fault (lockdown abort)")
    rows[0x35] = FaultRow("bad", SIGBUS, BUS_OBJERR, "implementation fault (unsupported exclusive)")
    rows[0x3D] = FaultRow("bad", SIGKILL, SI_KERNEL, "section domain fault")
    rows[0x3E] = FaultRow("bad", SIGKILL, SI_KERNEL, "page domain fault")
    return rows


FAULT_INFO = _fault_rows()


@dataclass(frozen=True)
class Expect:
    """What the host kernel does with one abort: resume (retry), fix up, signal, or die with a line."""

    kind: str  # "retry" | "fixup" | "signal" | "oops"
    line: str = ""
    signo: int = 0
    code: int = 0
    addr: int = 0


def oops_line(message: str, far: int) -> str:
    """fault.c die_kernel_fault(): the first line of every arm64 kernel-fault oops."""
    return f"Unable to handle kernel {message} at virtual address {far:016x}"


def die_line(name: str, esr: int) -> str:
    """traps.c die() via arm64_notify_die(): 'Internal error: <str>: <err> [#1]'."""
    return f"Internal error: {name}: {esr:016x} [#1]"


def expected_el1_synthetic(dfsc: int, far: int, esr: int, *, has_fixup: bool) -> Expect:
    """An EL1 data abort (WnR=0, no S1PTW) on an unmapped kernel address `far`, as fault.c handles it.

    do_mem_abort() -> fault_info[dfsc].fn: do_bad fails -> die_kernel_fault(name);
    do_sea -> arm64_notify_die -> die(name), never a fixup; the others reach
    __do_kernel_fault(): fixup, then the spurious check (AT fails: translation,
    not spurious), then MTE tag-check recovery (resume), then the message.
    """
    row = FAULT_INFO[dfsc]
    if row.handler == "bad":
        return Expect("oops", oops_line(row.name, far))
    if row.handler == "sea":
        return Expect("oops", die_line(row.name, esr))
    if has_fixup:
        return Expect("fixup")
    if row.handler == "tag":
        return Expect("retry")
    if 0x0C <= dfsc <= 0x0F:
        message = "read from unreadable memory"
    elif far < PAGE_SIZE:
        message = "NULL pointer dereference"
    else:
        message = "paging request"
    return Expect("oops", oops_line(message, far))


def expected_el0_synthetic(dfsc: int, far: int, *, fnv: bool = False) -> Expect:
    """An EL0 data abort on an unmapped user address (no VMA there): the signal fault.c sends."""
    row = FAULT_INFO[dfsc]
    if row.handler in ("translation", "page"):
        # do_page_fault(): no VMA -> bad_area with SEGV_MAPERR, whatever the table's code says.
        return Expect("signal", signo=SIGSEGV, code=SEGV_MAPERR, addr=far)
    if row.handler == "sea":
        return Expect("signal", signo=row.sig, code=row.code, addr=0 if fnv else far)
    return Expect("signal", signo=row.sig, code=row.code, addr=far)


# --------------------------------------------------------------------------------------------
# extable.c handlers
# --------------------------------------------------------------------------------------------


def zeropad_reference(memory: bytes, base_va: int, addr: int, boundary: int) -> int:
    """load_unaligned_zeropad(addr): the 8 bytes at addr that lie before `boundary`, then zeros (LE).

    `memory` holds the bytes from base_va up to boundary. Bytes at or past the
    boundary (the protected page) never reach the result.
    """
    start = addr - base_va
    end = min(addr + 8, boundary) - base_va
    data = memory[start:end] + bytes(8 - (end - start))
    return int.from_bytes(data, "little")


def err_zero_reference(before: list[int], reg_err: int, reg_zero: int) -> list[int]:
    """ex_handler_uaccess_err_zero(): x[err] = -EFAULT, then x[zero] = 0; register 31 is XZR (no write)."""
    after = list(before)
    if reg_err != 31:
        after[reg_err] = neg(EFAULT)
    if reg_zero != 31:
        after[reg_zero] = 0
    return after


# --------------------------------------------------------------------------------------------
# hyp-main.c inject_host_exception()
# --------------------------------------------------------------------------------------------


def injected_esr(esr_el2: int, *, from_el: int) -> int:
    """ESR_EL2 with S1PTW set; EC repainted to the current-EL class when the host was at EL1."""
    esr = esr_el2 | ESR_S1PTW
    if from_el == 1:
        ec = (esr >> 26) & 0x3F
        cur = {EC_DABT_LOW: EC_DABT_CUR, EC_IABT_LOW: EC_IABT_CUR}[ec]
        esr = (esr & ~(0x3F << 26)) | (cur << 26)
    return esr


# (text, ISS of the stage-2 abort reported in ESR_EL2 for a level-3 translation fault; from the Arm ARM
#  data abort ISS: ISV 24, SAS 23:22, SSE 21, SRT 20:16, SF 15, AR 14, WnR 6, DFSC 5:0)
STAGE2_DABT_ISS = {
    "ldr-x1": ("ldr x1, [x0]", (1 << 24) | (3 << 22) | (1 << 16) | (1 << 15) | 0x07),
    "ldrb-w3": ("ldrb w3, [x0]", (1 << 24) | (0 << 22) | (3 << 16) | 0x07),
    "ldrsh-x4": ("ldrsh x4, [x0]", (1 << 24) | (1 << 22) | (1 << 21) | (4 << 16) | (1 << 15) | 0x07),
    "str-w5": ("str w5, [x0]", (1 << 24) | (2 << 22) | (5 << 16) | (1 << 6) | 0x07),
    "ldar-x6": ("ldar x6, [x0]", (1 << 24) | (3 << 22) | (6 << 16) | (1 << 15) | (1 << 14) | 0x07),
    "ldp": ("ldp x1, x2, [x0]", 0x07),
    "stp": ("stp x1, x2, [x0]", (1 << 6) | 0x07),
    "ldr-post-index": ("ldr x1, [x0], #8", 0x07),
}


def entry_pstate(interrupted: int, *, span: bool) -> int:
    """PSTATE after injection: NZCV, DIT, PAN kept; EL1h; DAIF masked; PAN forced when SPAN == 0."""
    kept = interrupted & ((0xF << PSTATE_NZCV_SHIFT) | (1 << 24) | PSTATE_PAN)
    pstate = kept | PSTATE_DAIF | PSTATE_EL1H
    if not span:
        pstate |= PSTATE_PAN
    return pstate


# --------------------------------------------------------------------------------------------
# The rig
# --------------------------------------------------------------------------------------------


@dataclass
class System:
    """One machine with the pKVM model at EL2 and the host kernel model at EL1, plus one protected guest."""

    machine: Machine
    hyp: "object"
    kernel: "object"
    guest: int
    data_pfns: list[int] = field(default_factory=list)

    @property
    def own(self):
        return self.hyp.ownership

    def load(self, text: str, va: int = CODE_VA, perms: str = "rx") -> int:
        self.machine.load(va, assemble(text, va), perms)
        return va

    def fill(self, pfn: int, byte: int = GUEST_PATTERN) -> None:
        self.machine.phys.write(pfn << 12, bytes([byte]) * PAGE_SIZE)

    def frame(self, pfn: int) -> bytes:
        return self.machine.phys.read(pfn << 12, PAGE_SIZE)

    def donate(self, pfn: int, gfn: int = 0x10, pattern: int = GUEST_PATTERN) -> None:
        """Give a frame to the guest the way the host would (the guest's data is in it)."""
        self.fill(pfn, pattern)
        assert self.own.host_donate_guest(pfn, self.guest, gfn) == 0

    def add_extable(self, insn: int, fixup: int, kind, data: int, numbering: TypeNumbering | None = None) -> None:
        numbering = numbering or self.kernel.config.numbering
        self.kernel.add_extable([ExtableEntry(insn, fixup, numbering.number(kind), data)], numbering)


VBAR = 0xFFFF_8000_0900_0000


def injection_machine(span: bool):
    """Machine + Hyp(inject) + recording vectors; SCTLR_EL1.SPAN as asked, DSSBS off (SSBS stays clear)."""
    from hyp.pkvm import Hyp

    m = Machine(phys_size=16 << 20)
    hyp = Hyp(m, "inject")
    pfn = m.alloc_frame()
    guest = hyp.ownership.create_guest()
    sctlr = m.cpu.read_sysreg("SCTLR_EL1") & ~(SCTLR_SPAN | (1 << 44))
    m.cpu.write_sysreg("SCTLR_EL1", sctlr | (SCTLR_SPAN if span else 0))
    seen: list = []
    recording_vectors(m, seen)
    return m, hyp, pfn, guest, seen


def recording_vectors(m: Machine, seen: list) -> None:
    """A vector table whose sync entries read the EL1 registers with real `mrs`, then hand over to Python."""
    body = (
        "mrs x10, esr_el1; mrs x11, far_el1; mrs x12, elr_el1; mrs x13, spsr_el1; "
        "mrs x14, CurrentEL; mrs x15, daif; mrs x16, nzcv; mrs x17, s3_0_c4_c2_3"
    )  # s3_0_c4_c2_3 is PAN (op0=3 op1=0 CRn=4 CRm=2 op2=3), which keystone cannot name
    table = bytearray(0x800)
    for off in (VBAR_CURRENT_SPX, VBAR_LOWER_A64):
        code = assemble(body, VBAR + off)
        table[off : off + len(code)] = code
    m.load(VBAR, bytes(table), "rx")
    m.cpu.write_sysreg("VBAR_EL1", VBAR)
    for off in range(0, 0x800, 0x80):
        def handover(machine, off=off):
            seen.append((off, machine.cpu.pstate, machine.cpu.snapshot()))
            return Outcome("vector", f"vector +{off:#x}")

        m.add_exit(VBAR + off + (32 if off in (VBAR_CURRENT_SPX, VBAR_LOWER_A64) else 0), handover)


def make_system(policy: str = "inject-reclaim", numbering: TypeNumbering = NUMBERING_V7, *, hyp: bool = True,
                force_reclaim: bool = True) -> System:
    """Machine + Hyp(policy) + HostKernel wired by faultlab.stack.compose: pKVM initialised as the policy
    says; the host is the model's default kernel (7.x), or with force_reclaim=False the same fault path
    without the force-reclaim call (a pKVM host from before the series, e.g. Android's)."""
    import dataclasses

    from faultlab.stack import compose
    from host.kernel import KernelConfig
    from hyp.policies import policy as policy_by_name
    from kimage.profiles import model_profile

    m = Machine(phys_size=16 << 20)
    pfns = m.map_new(DATA_VA, 2, "rw")
    pol = policy_by_name(policy) if hyp else None
    profile = model_profile(numbering)
    if not force_reclaim:
        profile = dataclasses.replace(profile, host=dataclasses.replace(profile.host, force_reclaim_hcall=None))
    config = KernelConfig(profile=profile, pkvm_initialised=pol.pkvm_initialised if pol else False)
    stack = compose(m, pol, config, numbering=numbering)
    guest = stack.hyp.ownership.create_guest(protected=True) if hyp else 0
    return System(m, stack.hyp, stack.host, guest, pfns)


def enter_sync(system: System, *, el: int, esr: int, far: int, pc: int, pan: bool = True):
    """Take a synchronous exception to EL1 as if the instruction at `pc` had faulted, and run on.

    The interrupted context is set up exactly as Machine.call() would have it
    (stack, x30 = the return sentinel of that EL), so a handler that resumes
    the context makes the code at `pc` run and return normally.
    """
    m = system.machine
    cpu = m.cpu
    for i in range(31):
        cpu.set_x(i, 0)
    if el == 1:
        cpu.set_pstate(PSTATE_EL1H | PSTATE_DAIF | (PSTATE_PAN if pan else 0))
        cpu.sp = m.kernel_stack_top
        cpu.sp_el0 = m.task
        cpu.set_x(30, m.return_sentinel)
    else:
        cpu.set_pstate(0)
        cpu.sp_el0 = m.user_stack_top
        cpu.sp_el1 = m.kernel_stack_top
        cpu.set_x(30, m.user_return_sentinel)
    assert cpu.el == el, "the interrupted context is not at the EL the test asked for"
    entry = cpu.take_exception(esr=esr, far=far, return_pc=pc)
    return m.run(entry.vector)
