"""The bare-metal harness QEMU boots, as kasm source: EL2 owns stage 2 and runs every case.

What it does, case by case (the case table is data in RAM, see harness.py):
  1. write the case's translation-table entries (saving the old values), TLBI VMALLS12E1IS;
  2. fill the 128-byte window around the page boundary with the pattern, load x1-x7 and v0-v7;
  3. SCTLR_EL1 of the case, ELR_EL2 = the stub, SPSR_EL2 = EL0t or EL1h (DAIF masked), eret;
  4. the stub is the instruction under test and then `hvc #2` (EL1) or `svc #0` (EL0);
  5. whatever comes back lands in the EL2 vector: a stage-2 abort directly (ESR/FAR/HPFAR/ELR_EL2),
     an exception taken to EL1 through the EL1 vector, which passes ESR/FAR/ELR_EL1 in x20-x22
     and issues `hvc #1`; the record also keeps x0-x7 and the window;
  6. put the entries back and go on. At the end: "done" on the PL011 and PSCI SYSTEM_OFF (SMC:
     QEMU's PSCI conduit when EL2 is the highest EL).
The test code never uses x20-x28: x20-x22 carry the EL1 report, x24-x27 are the loop's state.
EL2 runs with its MMU off (SCTLR_EL2 at reset), so every EL2 access here is aligned (Device memory).

Sources: Arm ARM D1.10 (exception entry, vector offsets), D13.2 (HCR_EL2, VTCR_EL2, CPTR_EL2),
D8 (translation), the SMC Calling Convention / PSCI SYSTEM_OFF = 0x8400_0008.
"""
from __future__ import annotations

from faultlab.qemu.layout import CASE_BYTES, RESULT_BYTES, WINDOW_BYTES

UART_PA = 0x0900_0000  # QEMU virt PL011 data register
PSCI_SYSTEM_OFF = 0x8400_0008

# Record kinds (result offset 0).
KIND_EL1 = 1  # an exception taken to EL1 (hvc #1 from the EL1 vector)
KIND_DONE_EL1 = 2  # the EL1 stub completed (hvc #2)
KIND_EL1_OTHER = 3  # an EL1 vector other than synchronous
KIND_EL2 = 4  # an exception taken to EL2 other than those hvcs (a stage-2 abort)

# Config block (offsets from the `config` label), filled by harness.py.
CFG = {name: 8 * i for i, name in enumerate((
    "hcr", "vtcr", "vttbr", "tcr", "mair", "ttbr0", "cptr", "cpacr", "sp_el1", "sp_el0",
    "ncases", "cases", "results", "window", "done", "fatal_slot", "fatal_esr", "fatal_elr", "fatal_far",
))}
CFG_PATTERN = 8 * len(CFG)  # WINDOW_BYTES of pattern
CFG_XREGS = CFG_PATTERN + WINDOW_BYTES  # x1..x7 (x0 slot unused)
CFG_VREGS = CFG_XREGS + 64  # v0..v7, 16 bytes each
CFG_SAVE = CFG_VREGS + 128  # saved entries of the current case (MAX_PATCHES slots)
MAX_PATCHES = 5
CFG_BYTES = CFG_SAVE + 8 * MAX_PATCHES
DONE_MAGIC = 0xFA17_AB00_D0E5

# Case record: elr, spsr, x0, sctlr, npatches, then (address, value) pairs.
C_ELR, C_SPSR, C_X0, C_SCTLR, C_NPATCH, C_PATCHES = 0, 8, 16, 24, 32, 40
# Result record: kind, esr, far, hpfar, elr, x0..x7 (40..103), window at 128.
R_KIND, R_ESR, R_FAR, R_HPFAR, R_ELR, R_REGS, R_WINDOW = 0, 8, 16, 24, 32, 40, 128

assert C_PATCHES + 16 * MAX_PATCHES <= CASE_BYTES and R_WINDOW + WINDOW_BYTES <= RESULT_BYTES


def _mov64(reg: str, value: int) -> str:
    parts = [f"movz {reg}, #{value & 0xFFFF:#x}"]
    for shift in (16, 32, 48):
        chunk = (value >> shift) & 0xFFFF
        if chunk:
            parts.append(f"movk {reg}, #{chunk:#x}, lsl #{shift}")
    return "\n    ".join(parts)


def _el2_vectors() -> str:
    slots = []
    for slot in range(16):
        body = "b el2_lower_sync" if slot == 8 else f"mov x9, #{slot}\n    b el2_fatal"
        slots.append(f"    .balign 0x80\n    {body}")
    return "    .balign 2048\nel2_vectors:\n" + "\n".join(slots) + "\n    .balign 0x80\n"


def _el1_vectors() -> str:
    slots = []
    for slot in range(16):
        if slot in (0, 4, 8):  # synchronous: current EL SP0, current EL SPx, lower EL AArch64
            body = "mrs x20, esr_el1\n    mrs x21, far_el1\n    mrs x22, elr_el1\n    hvc #1"
        else:
            body = f"mov x20, #{slot}\n    hvc #3"
        slots.append(f"    .balign 0x80\n    {body}")
    return "    .balign 2048\nel1_vectors:\n" + "\n".join(slots) + "\n    .balign 0x80\n"


def harness_source(el1_stubs: list[str]) -> str:
    """The harness: EL2 code, both vector tables, the EL1 stubs (label stub_<i>) and the config block."""
    stubs = "\n".join(f"    .balign 8\nstub_{i}:\n    {text}\n    hvc #2" for i, text in enumerate(el1_stubs))
    c = CFG
    return f"""
    .text
_start:
    adr x24, config
    adr x0, el2_vectors
    msr vbar_el2, x0
    adr x0, el1_vectors
    msr vbar_el1, x0
    ldr x0, [x24, #{c['cptr']}]
    msr cptr_el2, x0
    ldr x0, [x24, #{c['cpacr']}]
    msr cpacr_el1, x0
    ldr x0, [x24, #{c['mair']}]
    msr mair_el1, x0
    ldr x0, [x24, #{c['tcr']}]
    msr tcr_el1, x0
    ldr x0, [x24, #{c['ttbr0']}]
    msr ttbr0_el1, x0
    ldr x0, [x24, #{c['vtcr']}]
    msr vtcr_el2, x0
    ldr x0, [x24, #{c['vttbr']}]
    msr vttbr_el2, x0
    ldr x0, [x24, #{c['hcr']}]
    msr hcr_el2, x0
    ldr x0, [x24, #{c['sp_el1']}]
    msr sp_el1, x0
    ldr x0, [x24, #{c['sp_el0']}]
    msr sp_el0, x0
    isb
    tlbi alle1
    dsb ish
    isb
    ldr x27, [x24, #{c['ncases']}]
    ldr x26, [x24, #{c['cases']}]
    ldr x25, [x24, #{c['results']}]

next_case:
    cbz x27, all_done
    // 1. the case's entries, old values saved
    ldr x9, [x26, #{C_NPATCH}]
    add x10, x26, #{C_PATCHES}
    add x11, x24, #{CFG_SAVE}
1:  cbz x9, 2f
    ldp x12, x13, [x10], #16
    ldr x14, [x12]
    str x14, [x11], #8
    str x13, [x12]
    sub x9, x9, #1
    b 1b
2:  dsb ish
    tlbi vmalls12e1is
    dsb ish
    isb
    // 2. the window pattern, registers
    ldr x10, [x24, #{c['window']}]
    add x11, x24, #{CFG_PATTERN}
    mov x9, #{WINDOW_BYTES // 16}
3:  ldp x12, x13, [x11], #16
    stp x12, x13, [x10], #16
    subs x9, x9, #1
    b.ne 3b
    dsb ish
    add x11, x24, #{CFG_VREGS}
    ldp q0, q1, [x11]
    ldp q2, q3, [x11, #32]
    ldp q4, q5, [x11, #64]
    ldp q6, q7, [x11, #96]
    // 3. enter the stub
    ldr x9, [x26, #{C_SCTLR}]
    msr sctlr_el1, x9
    ldr x9, [x26, #{C_SPSR}]
    msr spsr_el2, x9
    ldr x9, [x26, #{C_ELR}]
    msr elr_el2, x9
    isb
    add x11, x24, #{CFG_XREGS}
    ldp x0, x1, [x11]
    ldp x2, x3, [x11, #16]
    ldp x4, x5, [x11, #32]
    ldp x6, x7, [x11, #48]
    ldr x0, [x26, #{C_X0}]
    eret

el2_lower_sync:
    stp x0, x1, [x25, #{R_REGS}]
    stp x2, x3, [x25, #{R_REGS + 16}]
    stp x4, x5, [x25, #{R_REGS + 32}]
    stp x6, x7, [x25, #{R_REGS + 48}]
    mrs x9, esr_el2
    mrs x10, elr_el2
    ubfx x11, x9, #26, #6
    cmp x11, #0x16
    b.ne el2_trap
    and x12, x9, #0xffff
    str x12, [x25, #{R_KIND}]
    cmp x12, #{KIND_EL1}
    b.ne 4f
    str x20, [x25, #{R_ESR}]
    str x21, [x25, #{R_FAR}]
    str xzr, [x25, #{R_HPFAR}]
    str x22, [x25, #{R_ELR}]
    b record_window
4:  str x9, [x25, #{R_ESR}]
    str x20, [x25, #{R_FAR}]
    str xzr, [x25, #{R_HPFAR}]
    str x10, [x25, #{R_ELR}]
    b record_window
el2_trap:
    mov x12, #{KIND_EL2}
    str x12, [x25, #{R_KIND}]
    str x9, [x25, #{R_ESR}]
    mrs x12, far_el2
    str x12, [x25, #{R_FAR}]
    mrs x12, hpfar_el2
    str x12, [x25, #{R_HPFAR}]
    str x10, [x25, #{R_ELR}]
record_window:
    dsb ish
    ldr x10, [x24, #{c['window']}]
    add x11, x25, #{R_WINDOW}
    mov x9, #{WINDOW_BYTES // 16}
5:  ldp x12, x13, [x10], #16
    stp x12, x13, [x11], #16
    subs x9, x9, #1
    b.ne 5b
    // 6. entries back, in reverse order
    ldr x9, [x26, #{C_NPATCH}]
    add x10, x26, #{C_PATCHES}
    add x11, x24, #{CFG_SAVE}
6:  cbz x9, 7f
    sub x9, x9, #1
    lsl x13, x9, #4
    ldr x12, [x10, x13]
    ldr x14, [x11, x9, lsl #3]
    str x14, [x12]
    b 6b
7:  dsb ish
    tlbi vmalls12e1is
    dsb ish
    isb
    add x26, x26, #{CASE_BYTES}
    add x25, x25, #{RESULT_BYTES}
    sub x27, x27, #1
    b next_case

el2_fatal:
    str x9, [x24, #{c['fatal_slot']}]
    mrs x10, esr_el2
    str x10, [x24, #{c['fatal_esr']}]
    mrs x10, elr_el2
    str x10, [x24, #{c['fatal_elr']}]
    mrs x10, far_el2
    str x10, [x24, #{c['fatal_far']}]
    adr x1, msg_fatal
    b finish

all_done:
    {_mov64('x9', DONE_MAGIC)}
    str x9, [x24, #{c['done']}]
    adr x1, msg_done
finish:
    dsb sy
    {_mov64('x2', UART_PA)}
8:  ldrb w3, [x1], #1
    cbz w3, 9f
    strb w3, [x2]
    b 8b
9:  {_mov64('x0', PSCI_SYSTEM_OFF)}
    smc #0
    b .

msg_done:
    .asciz "faultlab-harness: done\\n"
msg_fatal:
    .asciz "faultlab-harness: unexpected exception at EL2\\n"

{_el2_vectors()}
{_el1_vectors()}
    .balign 8
{stubs}

    .balign 64
config:
    .zero {CFG_BYTES}
"""
