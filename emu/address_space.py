"""`AddressSpace`: memory as the emulated CPU reaches it - stage 1, the stage-2 hook, Unicorn's TLB.

Unicorn runs in `UC_TLB_VIRTUAL` mode: each time its TLB misses, the fill hook
here walks `Stage1` for the current regime (EL0, EL1, EL1 with PAN, or an
unprivileged `ldtr`/`sttr` at EL1) and then asks the stage-2 callback about the
frame. A refusal is recorded as `fill_fault` and stops the engine at exactly the
faulting instruction; `Machine` (its subclass) turns that into a `MemoryAbort`.

Why a class of its own: how a VA reaches a frame (and how Python reads, writes
and maps guest memory without the TLB going stale) is one job; running code and
taking exceptions is `Machine`'s.
"""
from __future__ import annotations

import ctypes
from typing import Callable

from unicorn import UC_HOOK_TLB_FILL, Uc
from unicorn.unicorn_py3.unicorn import uclib as _uclib
from unicorn.unicorn_const import (
    UC_CTL_IO_WRITE,
    UC_CTL_TLB_FLUSH,
    UC_MEM_FETCH,
    UC_MEM_WRITE,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
)

from emu.abort import PendingFault, pending_for_walk_fault
from emu.alignment import AlignmentWatch
from emu.stage1_tables import TableBuilder, TableWalker, tlbi_handler
from emu.sys_insn import SysInsnHooks
from emu.cpu import MASK64, PSTATE_PAN, Cpu
from emu.memory import (
    PAGE_MASK,
    PAGE_SIZE,
    AccessType,
    Perms,
    PhysicalMemory,
    Stage1,
    WalkFault,
    allowed_accesses,
    KERNEL_RW,
    KERNEL_RX,
)

# The `until` address of every emu_start: never reached. Unicorn fetches through the 1 KiB page
# holding until - 1 whenever it stops (measured, 2.1.4), in whatever regime is current, so the
# fill hook answers that one page itself, for every regime.
UNTIL_VA = 0x0000_7FFF_0000_0400
_UNTIL_PROBE_PAGE = (UNTIL_VA - 1) & ~0x3FF

# Stage 2's refusal when it names no fault of its own (a frame it does not map); frozen, so shared.
_STAGE2_TRANSLATION = WalkFault("translation", 3)
_PROT = {AccessType.READ: UC_PROT_READ, AccessType.WRITE: UC_PROT_WRITE, AccessType.EXEC: UC_PROT_EXEC}

Stage2Check = Callable[[int, AccessType], "bool | WalkFault"]


class MachineError(RuntimeError):
    """Misuse of the emulator API from Python (not something the guest did)."""


def _is_unprivileged_ldst(word: int) -> bool:
    """LDTR*/STTR* (Arm ARM C4.1.66 'Load/store register (unprivileged)'): size 111 V=0 00, bit21=0, bits[11:10]=10."""
    return (word >> 24) & 0x3F == 0b111000 and not (word >> 21) & 1 and (word >> 10) & 3 == 0b10


class AddressSpace:
    """Physical frames, stage 1, an optional stage-2 check, and the TLB-fill hook that joins them."""

    def __init__(self, uc: Uc, cpu: Cpu, phys: PhysicalMemory) -> None:
        self.uc = uc
        self.cpu = cpu
        self.phys = phys
        self.stage1 = Stage1()
        self.stage1.attach_tables(TableBuilder(phys.read_u64, phys.write_u64, phys.alloc_table, read=phys.read, write=phys.write), TableWalker(phys.read_u64), phys)
        self.stage2: Stage2Check | None = None
        self.fill_fault: PendingFault | None = None  # set by the fill hook when it refuses
        self._unpriv_cache: dict[int, bool] = {}
        # (page, EL) of every instruction fetch the fill hook granted since the engine's TLB was last
        # flushed: a fetch there cannot fault now (Machine hands over at exit addresses without the engine).
        self.fetchable: set[tuple[int, int]] = set()
        self.tlb_flushes = 0  # times the engine's TLB was flushed: a mapping may have changed (emu/loop_replay.py)
        self._probe_frame = phys.alloc()
        # One reusable word for _insn_word's direct uc_mem_read (the binding allocates a buffer per read).
        self._uch = uc._uch
        self._word_buf = ctypes.create_string_buffer(4)
        self.alignment = AlignmentWatch(uc, cpu, lambda pfn: phys.read(pfn << 12, PAGE_SIZE), self._set_fill_fault, self._insn_word)
        uc.hook_add(UC_HOOK_TLB_FILL, self._tlb_fill)
        self.sys_insn = SysInsnHooks(uc)  # the machine's one SYS hook (emu/sys_insn.py)
        # A TLBI the code executes flushes the engine's TLB (QEMU's implementation): what we know of it goes too.
        self.sys_insn.add(tlbi_handler(self.stage1, self._forget_engine_tlb))

    def _set_fill_fault(self, pending: PendingFault) -> None:
        self.fill_fault = pending

    # ------------------------------------------------------------------ memory
    def alloc_frame(self, nr: int = 1) -> int:
        return self.phys.alloc(nr)

    def map_page(self, va: int, pfn: int, perms: Perms | str = KERNEL_RW) -> None:
        if isinstance(perms, str):
            perms = Perms.parse(perms)
        self.stage1.map(va, pfn, perms)
        self.flush_tlb()

    def unmap_page(self, va: int) -> None:
        self.stage1.unmap(va)
        self.flush_tlb()

    def map_new(self, va: int, nr_pages: int = 1, perms: Perms | str = KERNEL_RW) -> list[int]:
        """Allocate fresh frames and map them at consecutive pages from `va`; returns their pfns."""
        pfns = [self.alloc_frame() for _ in range(nr_pages)]
        for i, pfn in enumerate(pfns):
            self.map_page(va + i * PAGE_SIZE, pfn, perms)
        return pfns

    def flush_tlb(self) -> None:
        """Make every mapping change visible to the very next instruction (stage-1 walks included)."""
        self.stage1.flush_walk_cache()
        self._flush_engine_tlb()

    def _flush_engine_tlb(self) -> None:
        self._unpriv_cache.clear()
        self._forget_engine_tlb()
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def _forget_engine_tlb(self) -> None:
        """The engine's TLB is (being) flushed: what we know of its entries goes."""
        self.fetchable.clear()
        self.tlb_flushes += 1

    def stage2_changed(self) -> None:
        """Called by the stage-2 owner after it revokes or grants access to a frame (stage-1 walks stay cached)."""
        self.stage1.stage2_changed()
        self._flush_engine_tlb()

    def translate(self, va: int) -> int:
        """VA -> PA through stage 1 only, ignoring permissions (a debugger's view)."""
        pte = self.stage1.lookup(va)
        if pte is None:
            raise MachineError(f"VA {va:#x} is not mapped at stage 1")
        return (pte.pfn << 12) | (va & (PAGE_SIZE - 1))

    def _runs(self, va: int, size: int) -> tuple[list[tuple[int, int, int]], bool]:
        """[va, va + size) as runs of physically contiguous bytes: (offset, pa, length) each; and
        whether a page of it is executable. Why runs: a sweep window is a few pages that usually
        sit on consecutive frames, and one engine read or write per run costs what one per page did."""
        runs: list[tuple[int, int, int]] = []
        code = False
        lookup = self.stage1.lookup
        offset = 0
        while offset < size:
            chunk = min(size - offset, PAGE_SIZE - (va & (PAGE_SIZE - 1)))
            pte = lookup(va)
            if pte is None:
                raise MachineError(f"VA {va:#x} is not mapped at stage 1")
            code = code or pte.perms.exec
            pa = (pte.pfn << 12) | (va & (PAGE_SIZE - 1))
            if runs and runs[-1][1] + runs[-1][2] == pa:
                start, run_pa, length = runs[-1]
                runs[-1] = (start, run_pa, length + chunk)
            else:
                runs.append((offset, pa, chunk))
            va, offset = va + chunk, offset + chunk
        return runs, code

    def read(self, va: int, size: int) -> bytes:
        """Read through stage 1, bypassing permission and stage-2 checks."""
        runs, _ = self._runs(va, size)
        if len(runs) == 1:
            return self.phys.read(runs[0][1], size)
        return b"".join(self.phys.read(pa, length) for _, pa, length in runs)

    def write(self, va: int, data: bytes) -> None:
        """Write through stage 1, bypassing permissions; code pages drop their translated blocks.

        The LDTR/STTR classification per PC goes with them, and only with them: it must describe
        the instructions the engine executes, which a write to a data page does not change (a sweep
        case writes its windows before every run)."""
        runs, code = self._runs(va, len(data))
        if len(runs) == 1:
            self.phys.write(runs[0][1], data)
        else:
            for offset, pa, length in runs:
                self.phys.write(pa, data[offset : offset + length])
        if code:
            # Measured: a write from Python does not invalidate Unicorn's translation of that code.
            self.uc.ctl_flush_tb()
            self._unpriv_cache.clear()
            self.alignment.code_changed()

    def read_u64(self, va: int) -> int:
        return int.from_bytes(self.read(va, 8), "little")

    def write_u64(self, va: int, value: int) -> None:
        self.write(va, (value & MASK64).to_bytes(8, "little"))

    def load(self, va: int, data: bytes, perms: Perms | str = KERNEL_RX) -> list[int]:
        """Put `data` at `va`: pages already mapped keep their frame (so earlier bytes stay),
        the others get fresh frames mapped with `perms`. Returns the pfns, in order."""
        first = va & PAGE_MASK
        nr = max(1, -(-((va - first) + len(data)) // PAGE_SIZE))
        pfns = []
        for i in range(nr):
            page = first + i * PAGE_SIZE
            pte = self.stage1.lookup(page)
            if pte is None:
                pfns += self.map_new(page, 1, perms)
            else:
                pfns.append(pte.pfn)
        self.write(va, data)
        return pfns

    def _insn_word(self, va: int) -> int:
        """The instruction word at `va` as stage 1 maps it; 0 where nothing is mapped.

        Every abort and trap reads one (~4 us through `read`): an aligned word never
        crosses a page, so it is one cached stage-1 lookup and one 4-byte read.
        """
        if not va & 3:
            pte = self.stage1.lookup(va)
            if pte is None:
                return 0
            if _uclib.uc_mem_read(self._uch, (pte.pfn << 12) | (va & 0xFFF), self._word_buf, 4):
                return int.from_bytes(self.uc.mem_read((pte.pfn << 12) | (va & 0xFFF), 4), "little")  # the binding raises
            return int.from_bytes(self._word_buf.raw, "little")
        try:
            return int.from_bytes(self.read(va, 4), "little")
        except MachineError:
            return 0

    # --------------------------------------------------------------- TLB fill
    def _tlb_fill(self, uc, addr: int, typ: int, entry, _user) -> bool:
        if typ == UC_MEM_FETCH and addr & ~0x3FF == _UNTIL_PROBE_PAGE:
            entry.paddr = self._probe_frame << 12
            entry.perms = UC_PROT_EXEC
            return True
        access = AccessType.EXEC if typ == UC_MEM_FETCH else AccessType.WRITE if typ == UC_MEM_WRITE else AccessType.READ
        pstate = self.cpu.pstate
        el = (pstate >> 2) & 3
        el0 = el == 0
        pan = bool(pstate & PSTATE_PAN)
        unprivileged = False
        if not el0 and access is not AccessType.EXEC:
            # ldtr/sttr at EL1 are checked with EL0 permissions, and PAN does not apply to them.
            unprivileged = el0 = self._unprivileged_at(self.cpu.pc)
        result = self.stage1.check(addr, access, el0=el0, pan=pan, stage2=self.stage2)
        if isinstance(result, WalkFault):
            self.fill_fault = pending_for_walk_fault(result, addr, access, el, unprivileged)
            return False
        pfn = result.pfn
        if self.stage2 is not None:
            verdict = self.stage2(pfn, access)
            while verdict is not True:
                fault = verdict if isinstance(verdict, WalkFault) else _STAGE2_TRANSLATION
                pending = PendingFault(2, addr, access, el, unprivileged, fault, pfn)
                resolved = self._resolve_in_fill(pending)
                if not resolved:
                    if resolved is False:
                        self.fill_fault = pending
                    return False
                verdict = self.stage2(pfn, access)
        perms = _PROT[access]
        for other in allowed_accesses(result.perms, el0=el0, pan=pan):
            if other is not access and (self.stage2 is None or self.stage2(pfn, other) is True):
                perms |= _PROT[other]
        if access is AccessType.EXEC:
            self.alignment.exec_page_filled(addr, pfn)
            self.fetchable.add((addr & PAGE_MASK, el))
        if perms & UC_PROT_WRITE and self.phys.saved is not None:
            # Copy on write for checkpoints: the CPU may now write this frame without another fill.
            self.phys.before_write(pfn)
        entry.paddr = (pfn << 12) | (addr & 0xFFF)
        entry.perms = perms
        return True

    def _resolve_in_fill(self, pending: PendingFault) -> bool | None:
        """A stage-2 refusal: may it be resolved here, without stopping the engine?

        True: resolved, ask stage 2 again; False: stop at the faulting instruction and take
        the abort there; None: stop there, the run is already decided. `Machine` overrides
        this with its lazy-idmap fast path; a bare address space always stops.
        """
        return False

    def _unprivileged_at(self, pc: int) -> bool:
        """Is the instruction at `pc` an LDTR/STTR? Cached per PC; a mapping change or a write to code clears the cache."""
        known = self._unpriv_cache.get(pc)
        if known is None:
            known = self._unpriv_cache[pc] = _is_unprivileged_ldst(self._insn_word(pc))
        return known
