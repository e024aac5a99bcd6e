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

import ctypes

import numpy as np
from unicorn import UC_HOOK_CODE, UcError
from unicorn.unicorn_py3.unicorn import uc_hook_h
from unicorn.unicorn_py3.unicorn import uclib as _uclib

from abi.cpu import FEATURES
from emu.abort import PendingFault
from emu.access import Access, AccessKind, UnsupportedInstruction
from emu.access_decoder import AccessDecoder
from emu.memory import PAGE_SIZE, AccessType, WalkFault

ALIGNMENT_FAULT = WalkFault("alignment", 0)
VERDICTS_PER_PC = 256  # register values remembered per watched instruction (AlignmentWatch._check_one)
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
# "Load/store exclusive / ordered": size 001000 o2 L o1 Rs o0 Rt2 Rn Rt, o2 = bit 23, L = bit 22,
# o1 = bit 21. LDAR/STLR/LDLAR/STLLR: o2 = 1, o1 = 0. Stores-exclusive: o2 = 0, L = 0, except
# CASP (o1 = 1 with bit 31 = 0). Loads-exclusive, CAS and CASP are Unicorn's own (intno 4).
_EXCL_MASK, _EXCL_BITS = 0x3F000000, 0x08000000
_O2, _L, _O1, _BIT31 = 1 << 23, 1 << 22, 1 << 21, 1 << 31
# LDAPR*: size 111000 1 0 1 11111 1 100 00 Rn Rt
_LDAPR_MASK, _LDAPR_BITS = 0x3FFFFC00, 0x38BFC000
# LDAPUR*/STLUR* (FEAT_LRCPC2): size 011001 opc 0 imm9 00 Rn Rt
_RCPC2_MASK, _RCPC2_BITS = 0x3F200C00, 0x19000000


def watched_offsets(frame: bytes) -> list[int]:
    """Byte offsets, in one code frame, of the instructions whose alignment Unicorn leaves to us."""
    words = np.frombuffer(frame, dtype="<u4")
    group = (words & _EXCL_MASK) == _EXCL_BITS
    ordered = group & ((words & (_O2 | _O1)) == _O2)
    store_exclusive = group & ((words & (_O2 | _L)) == 0) & ~(((words & _O1) != 0) & ((words & _BIT31) == 0))
    hit = ordered | store_exclusive | ((words & _LDAPR_MASK) == _LDAPR_BITS)
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
        # VA of a watched instruction -> (the registers its address is made of, {their values: faults?}):
        # whether an access faults for alignment is a pure function of the word, the PC and those
        # values (AccessDecoder.inputs), and a spinlock's ldar/stlr runs over the same few addresses.
        self._verdicts: dict[int, tuple[tuple[int, ...], dict[tuple[int, ...], bool]]] = {}
        self._pages_done: set[tuple[int, int]] = set()  # (page VA, pfn)
        self.strict = False  # SCTLR_EL1.A
        self.device = False  # MMU off: data accesses are Device-nGnRnE
        self._strict_hook = None
        self._fptr = None  # the ctypes callback every bounded hook shares

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
                self._hook_at(at)

    def _hook_at(self, address: int) -> None:
        """A code hook bounded to `address`, all sharing one callback pointer.

        The binding's hook_add wraps a new ctypes callback per call (~16 us, measured); after
        the first, uc_hook_add is called directly with the same pointer (unicorn 2.1.x
        internals: `_uch`, `_callbacks`; the version is pinned, tests/test_alignment.py runs it).
        """
        uc = self._uc
        if self._fptr is None:
            handle = uc.hook_add(UC_HOOK_CODE, self._check_one, None, address, address)
            self._fptr = uc._callbacks[handle]
            return
        handle = uc_hook_h()
        status = _uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_CODE, self._fptr,
                                    ctypes.c_void_p(0), ctypes.c_uint64(address), ctypes.c_uint64(address))
        if status:
            raise UcError(status)

    def code_changed(self) -> None:
        """Text was written from Python: rescan frames when next executed."""
        self._scanned.clear()
        self._pages_done.clear()
        self._words.clear()
        self._verdicts.clear()

    # ------------------------------------------------------------------ hooks
    def _check_one(self, uc, address: int, size: int, _user) -> None:
        if self.strict or self.device:
            return  # the unbounded hook checks every instruction then
        known = self._verdicts.get(address)
        if known is None:
            known = self._verdicts[address] = (self._access_decoder().inputs(self._word(address).to_bytes(4, "little")), {})
        regs, verdicts = known
        base_reg = self._cpu.base_reg
        values = tuple([base_reg(r) for r in regs])
        faults = verdicts.get(values)
        if faults is None:
            if len(verdicts) >= VERDICTS_PER_PC:
                verdicts.clear()  # a bounded cache
            access = self._decode(address)
            faults = verdicts[values] = access is not None and unaligned_access_faults(access, strict=False, device=False)
        if faults:
            self._check(address)  # decodes again and raises the fault

    def _check_every(self, uc, address: int, size: int, _user) -> None:
        self._check(address)

    def _check(self, pc: int) -> None:
        access = self._decode(pc)
        if access is not None and unaligned_access_faults(access, strict=self.strict, device=self.device):
            self._raise(pending_alignment_fault(access, self._cpu.el))
            self._uc.emu_stop()

    def _word(self, pc: int) -> int:
        word = self._words.get(pc)
        if word is None:
            word = self._words[pc] = self._insn_word(pc)
        return word

    def _access_decoder(self) -> AccessDecoder:
        if self._decoder is None:
            self._decoder = AccessDecoder()
        return self._decoder

    def _decode(self, pc: int) -> Access | None:
        try:
            return self._access_decoder().decode(self._word(pc).to_bytes(4, "little"), pc, self._cpu.base_reg)
        except UnsupportedInstruction:
            return None

    # -------------------------------------------------------------- intno 4
    def abort_for_intno4(self, pc: int) -> PendingFault | None:
        """Unicorn's own alignment data abort (intno 4): the pending fault from our decode, or None."""
        access = self._decode(pc)
        if access is None or access.size == 0:
            return None
        return pending_alignment_fault(access, self._cpu.el)
