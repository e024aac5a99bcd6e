"""SCTLR_EL1: the value Linux runs with, and the bits the machine itself acts on.

Unicorn resets SCTLR_EL1 to 0xc50838 (DZE = 0, UCT = 0, UCI = 0: EL0 may not use DC ZVA
nor read CTR_EL0; SPAN = 1), which is no Linux system. The machine starts from what an
arm64 kernel leaves in SCTLR_EL1 after boot instead: INIT_SCTLR_EL1_MMU_ON
(arch/arm64/include/asm/sysreg.h, v6.1 .. v7.x), with the two runtime adjustments of our
one CPU (abi/cpu.py FEATURES):
- FEAT_PAN: cpu_enable_pan() (arch/arm64/kernel/cpufeature.c) clears SPAN, so PSTATE.PAN is
  set on every exception entry to EL1;
- no FEAT_PAN3: EPAN is RES0 without it (reads as 0), so it is left clear here;
- no FEAT_MTE: ATA/ATA0/TCF are not set (the kernel sets them only with MTE).

Bits the machine acts on (everything else is stored for the guest to read back):
- M (0): off = "MMU off": our translation is the identity map and data accesses are
  Device-nGnRnE (emu/alignment.py checks every access for alignment);
- A (1): every unaligned data access takes an Alignment fault;
- SPAN (23): PAN on exception entry (emu/cpu.py take_exception);
- DZE (14), UCT (15), UCI (26): EL0 use of DC ZVA, CTR_EL0, cache maintenance; with the bit
  clear the instruction traps to EL1 with EC 0x18 (emu/sysreg_trap.py).
"""
from __future__ import annotations

import enum


class SctlrBit(enum.IntFlag):
    """SCTLR_EL1 bits by their Arm ARM names (D19.2 SCTLR_EL1)."""

    M = 1 << 0
    A = 1 << 1
    C = 1 << 2
    SA = 1 << 3
    SA0 = 1 << 4
    SED = 1 << 8
    EOS = 1 << 11
    I = 1 << 12  # noqa: E741 (the architecture's name)
    DZE = 1 << 14
    UCT = 1 << 15
    NTWI = 1 << 16
    NTWE = 1 << 18
    TSCXT = 1 << 20
    IESB = 1 << 21
    EIS = 1 << 22
    SPAN = 1 << 23
    UCI = 1 << 26
    NTLSMD = 1 << 28
    LSMAOE = 1 << 29
    ITFSB = 1 << 37
    DSSBS = 1 << 44
    EPAN = 1 << 57


INIT_SCTLR_EL1_MMU_ON = (
    SctlrBit.M | SctlrBit.C | SctlrBit.SA | SctlrBit.SA0 | SctlrBit.SED | SctlrBit.I | SctlrBit.DZE
    | SctlrBit.UCT | SctlrBit.NTWE | SctlrBit.IESB | SctlrBit.SPAN | SctlrBit.ITFSB | SctlrBit.UCI
    | SctlrBit.EPAN | SctlrBit.LSMAOE | SctlrBit.NTLSMD | SctlrBit.EIS | SctlrBit.TSCXT | SctlrBit.EOS
)
"""The kernel's boot value (little-endian kernel: ENDIAN_SET_EL1 = 0)."""

LINUX_SCTLR_EL1 = int(INIT_SCTLR_EL1_MMU_ON & ~SctlrBit.SPAN & ~SctlrBit.EPAN)
"""What SCTLR_EL1 holds once Linux has run on our CPU: PAN clears SPAN; EPAN is RES0 without PAN3."""

UNICORN_RESET_SCTLR_EL1 = 0xC50838  # measured, unicorn 2.1.4 (kept for tests that compare)


def describe(value: int) -> str:
    """'M C SA ...': the named bits set in `value`, lowest first."""
    return " ".join(bit.name for bit in SctlrBit if value & bit and bit.name)


def follow_sctlr(space) -> None:
    """Make the machine's own modes follow every SCTLR_EL1 write made through `space.cpu`
    (`Machine.set_sctlr`, `Cpu.write_sysreg`, a checkpoint's restore). `space`: an AddressSpace.

    A guest `msr sctlr_el1` changes the register Unicorn holds but not these modes (host
    kernel code does not turn its MMU off or set A); the next write from Python re-syncs.
    """
    space.cpu.on_sctlr_write = lambda value: sync_modes(space, value)


def sync_modes(space, value: int) -> None:
    """M = 0: the MMU-off mode of our translation; A = 1: strict alignment. Nothing to do when
    neither changes (Cpu.set_pstate rewrites SCTLR_EL1 unchanged on every PSTATE write)."""
    mmu_off = not value & SctlrBit.M
    strict = bool(value & SctlrBit.A)
    if space.stage1.disabled == mmu_off and space.alignment.strict == strict:
        return
    space.stage1.disabled = mmu_off
    space.alignment.set_modes(strict=strict, device=mmu_off)
    space.flush_tlb()
