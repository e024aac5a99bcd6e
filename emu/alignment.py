"""Alignment faults: which accesses the architecture refuses for alignment, and where the machine checks.

The rule is the Arm ARM's (DDI 0487 K.a, AArch64.UnalignedAccessFaults, called from Mem[],
AArch64.MemAtomic and AArch64.ExclusiveMonitorsPass *before* the address is translated, so
an Alignment fault wins over every stage-1 and stage-2 fault of the same access), plus the
Device-memory rule of the translation (AArch64.S1DisabledOutput: with the stage-1 MMU off,
data accesses are Device-nGnRnE and an unaligned one faults; that check follows the stage-1
walk, which cannot fault with the MMU off, and precedes stage 2). Alignment faults are
stage-1 faults: DFSC 0x21, taken to EL1, FAR = the access address, ISV = 0.

With FEAT_LSE2 off (abi/cpu.py FEATURES, see docs/facts.md "Architectural choices"):
exclusives (LDXR, STXR, LDXP, ...), LSE atomics (LDADD, SWP, CAS, CASP, ...) and the ordered
accesses (LDAR, STLR, LDAPR, LDAPUR, STLUR, LDLAR, STLLR) fault on any misalignment;
SCTLR_EL1.A = 1 makes every unaligned data access fault; prefetches and cache maintenance
by VA never do, DC ZVA does on Device memory.

Where the machine checks (so fault-free code keeps its speed):
- Unicorn itself raises its data-abort interrupt (QEMU's EXCP_DATA_ABORT, intno 4) for a
  misaligned load-exclusive, LSE atomic or CASP before any TLB fill; `abort_for_intno4`
  rebuilds the access from our decode.
- Unicorn checks neither the ordered accesses nor a store-exclusive whose monitor is not
  held (QEMU compares the monitor first): when a code page is filled for execution, its
  words are scanned once for those encodings and each gets a code hook bounded to its own
  address (`AlignmentWatch.exec_page_filled`), so only those instructions pay.
- SCTLR_EL1.A = 1 and the MMU-off mode check every instruction through one unbounded code
  hook, installed only while one of them is on.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from unicorn import UC_HOOK_CODE

from abi.cpu import FEATURES
from emu.abort import PendingFault
from emu.access import Access, AccessKind, UnsupportedInstruction
from emu.access_decoder import AccessDecoder
from emu.memory import PAGE_SIZE, AccessType, WalkFault

ALIGNMENT_FAULT = WalkFault("alignment", 0)
LSE2_QUANTITY = 16  # FEAT_LSE2: bytes of the aligned block an access must stay inside


def check_size(access: Access) -> int:
    """The size the address must be aligned to, as the Arm ARM's Mem[] callers pass it.

    Exclusives, atomics and ordered accesses check their whole access (LDXP/CASP: the
    pair); other pairs are two accesses of one register each; a 128-bit SIMD&FP register is
    two 64-bit accesses (Mem[]: "128-bit SIMD&FP loads are treated as a pair of 64-bit
    single-copy atomic accesses"); a structure load/store accesses one element at a time.
    """
    if access.exclusive or access.atomic or access.acquire_release:
        return access.size
    if access.esize:
        return access.esize
    if access.pair:
        return access.element_size
    if access.simd and access.size == 16:
        return 8
    return access.size


def _crosses(address: int, size: int, quantity: int) -> bool:
    return address // quantity != (address + size - 1) // quantity


def unaligned_access_faults(access: Access, *, strict: bool, device: bool, lse2: bool = FEATURES.lse2,
                            naa: bool = False) -> bool:
    """Does this access take an Alignment fault?

    strict: SCTLR_EL1.A (AlignmentEnforced()); device: the data access is to Device memory
    (the MMU-off mode); naa: SCTLR_EL1.nAA (FEAT_LSE2 only; Linux leaves it 0).
    """
    if access.kind in (AccessKind.PREFETCH, AccessKind.CACHE_MAINT):
        return False  # hints never fault; DC/IC by VA name a line, not an aligned datum
    if access.kind is AccessKind.DC_ZVA:
        return device  # "DC ZVA ... to any type of Device memory generates an Alignment fault"
    size = check_size(access)
    if access.address % size == 0:
        return False
    if strict:
        return True
    if access.exclusive or access.atomic:
        return not lse2 or _crosses(access.address, access.size, LSE2_QUANTITY)
    if access.acquire_release:
        return not lse2 or (not naa and _crosses(access.address, access.size, LSE2_QUANTITY))
    return device


def pending_alignment_fault(access: Access, el: int) -> PendingFault:
    """The fill-hook record of an Alignment fault: stage 1, reported at the access address.

    An atomic is reported as a read: WnR is 0 when "a read of the address specified by the
    instruction would have generated the fault", true of an alignment fault.
    """
    access_type = AccessType.WRITE if access.kind in (AccessKind.WRITE, AccessKind.DC_ZVA) else AccessType.READ
    return PendingFault(1, access.address, access_type, el, access.unprivileged, ALIGNMENT_FAULT, None)


# Encodings Unicorn does not check (Arm ARM C4.1 load/store encoding tables):
# "Load/store exclusive / ordered": size 001000 o2 L o1 Rs o0 Rt2 Rn Rt. Stores-exclusive
# (o2 = 0, L = 0) and LDAR/STLR/LDLAR/STLLR (o2 = 1, o1 = 0); CAS/CASP and loads-exclusive
# are Unicorn's own (intno 4), but checking them first is harmless and keeps one mask.
_EXCL_MASK, _EXCL_BITS = 0x3F000000, 0x08000000
# LDAPR*: size 111000 1 0 1 11111 1 100 00 Rn Rt
_LDAPR_MASK, _LDAPR_BITS = 0x3FFFFC00, 0x38BFC000
# LDAPUR*/STLUR* (FEAT_LRCPC2): size 011001 opc 0 imm9 00 Rn Rt
_RCPC2_MASK, _RCPC2_BITS = 0x3F200C00, 0x19000000


def watched_offsets(frame: bytes) -> list[int]:
    """Byte offsets, in one code frame, of the instructions whose alignment Unicorn leaves to us."""
    words = np.frombuffer(frame, dtype="<u4")
    hit = ((words & _EXCL_MASK) == _EXCL_BITS) | ((words & _LDAPR_MASK) == _LDAPR_BITS)
    hit |= (words & _RCPC2_MASK) == _RCPC2_BITS
    return [int(i) * 4 for i in np.flatnonzero(hit)]


class AlignmentWatch:
    """The machine's alignment checks: Unicorn's intno 4, bounded hooks, and the strict mode.

    `raise_fault(pending)` records the fault and stops the engine before the instruction
    executes (a code hook that stops Unicorn runs before its instruction: measured).
    """

    def __init__(self, uc, cpu, read_frame: Callable[[int], bytes], raise_fault: Callable[[PendingFault], None],
                 insn_word: Callable[[int], int]) -> None:
        self._uc = uc
        self._cpu = cpu
        self._read_frame = read_frame
        self._raise = raise_fault
        self._insn_word = insn_word
        self._decoder: AccessDecoder | None = None  # made on first use: most runs never need one
        self._scanned: dict[int, tuple[int, ...]] = {}  # pfn -> watched offsets
        self._hooked: set[int] = set()  # VAs with a bounded hook
        self._words: dict[int, int] = {}  # VA -> instruction word, cleared when text changes
        self._pages_done: set[tuple[int, int]] = set()  # (page VA, pfn)
        self.strict = False  # SCTLR_EL1.A
        self.device = False  # MMU off: data accesses are Device-nGnRnE
        self._strict_hook = None

    # ------------------------------------------------------------------ modes
    def set_modes(self, *, strict: bool, device: bool) -> None:
        """SCTLR_EL1.A and the MMU-off mode; called between runs (never from a hook)."""
        self.strict, self.device = strict, device
        want = strict or device
        if want and self._strict_hook is None:
            self._strict_hook = self._uc.hook_add(UC_HOOK_CODE, self._check_every)
            self._uc.ctl_flush_tb()  # blocks translated before the hook carry no call to it
        elif not want and self._strict_hook is not None:
            self._uc.hook_del(self._strict_hook)
            self._strict_hook = None
            self._uc.ctl_flush_tb()

    # --------------------------------------------------------- fill-time scan
    def exec_page_filled(self, va: int, pfn: int) -> None:
        """A code page was filled for execution: hook its watched instructions (once per VA page and frame)."""
        page = va & ~(PAGE_SIZE - 1)
        key = (page, pfn)
        if key in self._pages_done:
            return
        self._pages_done.add(key)
        offsets = self._scanned.get(pfn)
        if offsets is None:
            offsets = self._scanned[pfn] = tuple(watched_offsets(self._read_frame(pfn)))
        for off in offsets:
            at = page + off
            if at not in self._hooked:
                self._hooked.add(at)
                self._uc.hook_add(UC_HOOK_CODE, self._check_one, None, at, at)

    def code_changed(self) -> None:
        """Text was written from Python: rescan frames when next executed."""
        self._scanned.clear()
        self._pages_done.clear()
        self._words.clear()

    # ------------------------------------------------------------------ hooks
    def _check_one(self, uc, address: int, size: int, _user) -> None:
        if not (self.strict or self.device):
            self._check(address)

    def _check_every(self, uc, address: int, size: int, _user) -> None:
        self._check(address)

    def _check(self, pc: int) -> None:
        access = self._decode(pc)
        if access is not None and unaligned_access_faults(access, strict=self.strict, device=self.device):
            self._raise(pending_alignment_fault(access, self._cpu.el))
            self._uc.emu_stop()

    def _decode(self, pc: int) -> Access | None:
        word = self._words.get(pc)
        if word is None:
            word = self._words[pc] = self._insn_word(pc)
        if self._decoder is None:
            self._decoder = AccessDecoder()
        try:
            return self._decoder.decode(word.to_bytes(4, "little"), pc, self._cpu.base_reg)
        except UnsupportedInstruction:
            return None

    # -------------------------------------------------------------- intno 4
    def abort_for_intno4(self, pc: int) -> PendingFault | None:
        """Unicorn's own alignment data abort (intno 4): the pending fault from our decode, or None."""
        access = self._decode(pc)
        if access is None or access.size == 0:
            return None
        return pending_alignment_fault(access, self._cpu.el)
