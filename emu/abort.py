"""`MemoryAbort`: a refused access, described the way the architecture reports it.

The TLB-fill hook only knows the page it was asked to fill and why it refused;
the instruction at PC is decoded here to recover the access (its start address,
size, register, direction) so that the syndrome, FAR and HPFAR are the ones the
hardware would produce for that instruction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

from emu.access import Access, UnsupportedInstruction, fault_address
from emu.access_decoder import AccessDecoder
from emu.disasm import Disassembler
from emu.memory import PAGE_MASK, AccessType, WalkFault
from emu.cpu import Cpu
from emu.syndrome import EC, Esr, data_abort_esr, hpfar_from_ipa
from emu.syndrome.bits import EC_SHIFT, IL, S1PTW


def walk_fault_dfsc(fault: WalkFault) -> int:
    """DFSC/IFSC of a walk fault (Arm ARM D17.2.40): translation 0x04+level (0x2B for level -1), permission 0x0C+level."""
    if fault.kind == "translation":
        return 0x2B if fault.level == -1 else 0x04 + fault.level
    if fault.kind == "permission":
        return 0x0C + fault.level
    if fault.kind == "access-flag":
        return 0x08 + fault.level
    if fault.kind == "address-size":
        return 0x00 + fault.level
    if fault.kind == "alignment":
        return 0x21  # Alignment fault (no level)
    raise ValueError(f"unknown walk fault kind {fault.kind!r}")


# Faults a read of the same address would take as well (an atomic then reports WnR = 0).
_READ_WOULD_FAULT = frozenset({"translation", "access-flag", "alignment"})


class PendingFault(NamedTuple):
    """What the TLB-fill hook saw when it refused. A named tuple: one is made at every refused fill
    and is the key of the abort memo (a frozen dataclass cost ~2 us to make and ~1 us to hash)."""

    stage: int
    addr: int  # the address Unicorn asked to fill (page granular for data, see docs/facts.md)
    access_type: AccessType
    el: int
    unprivileged: bool
    fault: WalkFault
    pfn: int | None  # the frame stage 1 produced, for stage-2 faults (S1PTW: the table frame)
    s1ptw: bool = False  # a stage-2 fault on the stage-1 walk's read of a table
    desc_pa: int | None = None  # S1PTW: the descriptor being read (its IPA goes to HPFAR_EL2)


def pending_for_walk_fault(fault: WalkFault, addr: int, access: AccessType, el: int, unprivileged: bool) -> PendingFault:
    """The fill hook's record of a refused stage-1 walk: a stage-1 fault, or a stage-2 fault on a table read."""
    table_pfn = getattr(fault, "table_pfn", None)
    if table_pfn is None:
        return PendingFault(1, addr, access, el, unprivileged, fault, None)
    plain = WalkFault(fault.kind, fault.level)
    return PendingFault(2, addr, access, el, unprivileged, plain, table_pfn, True, fault.desc_pa)


@dataclass(frozen=True)
class MemoryAbort:
    """One data or instruction abort, with the registers the taking EL would see.

    `esr` is the syndrome for the EL that takes the abort: ESR_EL1 for stage-1
    faults (EC from current/lower EL), ESR_EL2 for stage-2 faults (EC from a lower EL).
    """

    stage: int
    pc: int
    el: int
    access_type: AccessType
    va: int
    far: int
    size: int
    pa: int | None
    ipa: int | None
    esr: Esr
    hpfar: int | None
    fault: WalkFault
    unprivileged: bool
    insn: Access | None
    text: str

    @property
    def is_write(self) -> bool:
        return self.access_type is AccessType.WRITE

    def summary(self) -> str:
        where = f"VA {self.far:#x}" + (f" IPA {self.ipa:#x}" if self.ipa is not None else "")
        level = "" if self.fault.kind == "alignment" else f" (level {self.fault.level})"
        return (
            f"stage-{self.stage} {self.fault.kind} fault{level} on "
            f"{self.access_type.value} of {self.size} at {where} by '{self.text}' from EL{self.el}, ESR={self.esr.value:#x}"
        )


_ABORT_FIELDS = frozenset(MemoryAbort.__dataclass_fields__)


def _new_abort(**fields) -> MemoryAbort:
    """A `MemoryAbort` with exactly these fields, made without the frozen dataclass's __init__.

    Every abort builds one (an idmap's as well); the generated __init__ sets its 15 fields
    one `object.__setattr__` at a time (~3.8 us here). The instance is the same: the
    fields in its __dict__, equality, hash and repr as the dataclass defines them.
    """
    if fields.keys() != _ABORT_FIELDS:
        raise TypeError(f"MemoryAbort fields: {sorted(_ABORT_FIELDS ^ fields.keys())}")
    abort = object.__new__(MemoryAbort)
    abort.__dict__.update(fields)
    return abort


class AbortBuilder:
    """Turns a `PendingFault` into a `MemoryAbort`, decoding the faulting instruction.

    `insn_word(va)` fetches the instruction word at a VA the way the machine
    sees its own text (the builder needs no more of the machine than that).
    """

    def __init__(self, cpu: Cpu, insn_word: Callable[[int], int]) -> None:
        self._cpu = cpu
        self._insn_word = insn_word
        self._decoder = AccessDecoder()
        self._dis = Disassembler()
        # (pending, pc, word) -> (registers the decode reads, {their values: the abort}). An abort is a
        # pure function of those: a loop that faults at the same instruction on the same address
        # (a sweep's retries, a fixed-up uaccess in a loop) builds its abort once. Aborts are frozen,
        # so sharing one between events is sharing a value. Bounded: emptied when full.
        self._memo: dict[tuple, tuple[tuple[int, ...], dict[tuple[int, ...], MemoryAbort]]] = {}

    MEMO_MAX = 4096

    def build(self, pending: PendingFault) -> MemoryAbort:
        cpu = self._cpu
        pc = cpu.pc
        word = self._insn_word(pc)
        key = (pending, pc, word)
        known = self._memo.get(key)
        if known is None:
            regs = () if pending.access_type is AccessType.EXEC else self._inputs(word)
            if len(self._memo) >= self.MEMO_MAX:
                self._memo.clear()
            known = self._memo[key] = (regs, {})
        regs, by_value = known
        values = tuple(cpu.base_reg(r) for r in regs)
        abort = by_value.get(values)
        if abort is None:
            abort = by_value[values] = self._build(pending, pc, word)
        return abort

    def _inputs(self, word: int) -> tuple[int, ...]:
        try:
            return self._decoder.inputs(word.to_bytes(4, "little"))
        except UnsupportedInstruction:
            return ()

    def _build(self, pending: PendingFault, pc: int, word: int) -> MemoryAbort:
        cpu = self._cpu
        text = self._dis.text(word, pc)
        dfsc = walk_fault_dfsc(pending.fault)
        if pending.access_type is AccessType.EXEC:
            # An instruction abort: FAR is the address of the instruction that could not be fetched.
            va = far = pc
            size = 4
            insn = None
            from_lower = pending.el == 0
            ec = EC.IABT_LOW if (pending.stage == 2 or from_lower) else EC.IABT_CUR
            esr = Esr((ec << EC_SHIFT) | IL | dfsc | (S1PTW if pending.s1ptw else 0))
        else:
            try:
                insn = self._decoder.decode(word.to_bytes(4, "little"), pc, cpu.base_reg)
            except UnsupportedInstruction:
                insn = None
            if insn is None or insn.size == 0:
                va, size, far = pending.addr, 1, pending.addr
                wnr = pending.access_type is AccessType.WRITE
            else:
                va, size = insn.address, insn.size
                far = fault_address(insn, pending.addr & PAGE_MASK)
                # An atomic reports WnR = 0 when a read would have faulted as well (Arm ARM WnR).
                read_would_fault = pending.access_type is AccessType.READ or pending.fault.kind in _READ_WOULD_FAULT
                wnr = insn.wnr(read_would_fault=read_would_fault)
            # S1PTW: WnR is still the access's direction (the ASL passes the access's fault record,
            # write included, to the walk's stage-2 translation; QEMU 7.2 agrees).
            esr = data_abort_esr(
                from_lower_el=pending.stage == 2 or pending.el == 0,
                dfsc=dfsc,
                access=insn,
                wnr=wnr,
                isv_allowed=pending.stage == 2,
                lowest_address=insn is None or far == insn.address,
                s1ptw=pending.s1ptw,
            )
        pa = ipa = hpfar = None
        if pending.s1ptw:
            pa = ipa = pending.desc_pa  # the descriptor the walk read (identity stage 2: IPA == PA)
            hpfar = hpfar_from_ipa(ipa)
        elif pending.pfn is not None:
            pa = (pending.pfn << 12) | (far & 0xFFF)
            ipa = pa  # the host's stage 2 is an identity map: IPA == PA
            hpfar = hpfar_from_ipa(ipa)
        return _new_abort(
            stage=pending.stage,
            pc=pc,
            el=pending.el,
            access_type=pending.access_type,
            va=va,
            far=far,
            size=size,
            pa=pa,
            ipa=ipa,
            esr=esr,
            hpfar=hpfar,
            fault=pending.fault,
            unprivileged=pending.unprivileged,
            insn=insn,
            text=text,
        )
