"""The host's exception table: lookup by faulting PC, one small handler per entry type.

Follows arch/arm64/mm/extable.c: `fixup_exception()` finds the entry for
regs->pc and switches on its type; each handler reads the entry's data field
and writes registers in `pt_regs`. The type numbers differ between kernel
versions, so entries keep their raw number and the registry decodes it with
the numbering of the image they came from. An unknown type is a kernel BUG.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from kimage.extable_format import ExtableEntry, ExType, TypeNumbering, UnknownExtableType

from host.ptregs import PtRegs

from abi.linux import Errno

EFAULT = -Errno.EFAULT


class ExtableBug(Exception):
    """An entry whose type this kernel does not know: extable.c BUG()s."""


class FixupFault(Exception):
    """Instructions the kernel model ran nested (a fixup's re-read, a hypercall) ended the whole run.

    `outcome` is how the run ended, e.g. the oops of a fault taken inside the fixup.
    """

    def __init__(self, outcome) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


@dataclass(frozen=True)
class Fixup:
    """What a handler did, for the event log and the oracle."""

    entry: ExtableEntry
    kind: ExType
    detail: str


# A memory reader for handlers that re-read memory: (va) -> 8 bytes, raising FixupFault.
ReadU64 = Callable[[int], int]


def _err_zero(entry: ExtableEntry, regs: PtRegs) -> str:
    # extable.c ex_handler_uaccess_err_zero: err register <- -EFAULT, zero register <- 0.
    regs.set_reg(entry.reg_err, -EFAULT)
    regs.set_reg(entry.reg_zero, 0)
    regs.pc = entry.fixup
    return f"x{entry.reg_err}=-EFAULT x{entry.reg_zero}=0"


def _zeropad(entry: ExtableEntry, regs: PtRegs, read_u64: ReadU64) -> str:
    # extable.c ex_handler_load_unaligned_zeropad: re-read the aligned word that holds the
    # first byte and shift it so the bytes past the end come back as zero (little-endian).
    addr = regs.reg(entry.reg_addr)
    offset = addr & 7
    data = read_u64(addr & ~7) >> (8 * offset)
    regs.set_reg(entry.reg_data, data)
    regs.pc = entry.fixup
    return f"x{entry.reg_data}={data:#x} (aligned re-read at {addr & ~7:#x}, shift {8 * offset})"


def _uaccess_cpy(entry: ExtableEntry, regs: PtRegs, wnr: bool) -> str | None:
    # Fix up only a fault on the user side of the copy: data bit 0 says whether that side writes.
    if entry.uaccess_is_write != wnr:
        return None
    regs.pc = entry.fixup
    return "user-side fault"


class Extable:
    """Every exception-table entry the host kernel knows, from assembled snippets or a vmlinux."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[ExtableEntry, TypeNumbering]] = {}

    def add(self, entries: Iterable[ExtableEntry], numbering: TypeNumbering) -> None:
        for entry in entries:
            self._entries[entry.insn] = (entry, numbering)

    def __len__(self) -> int:
        return len(self._entries)

    def search(self, pc: int) -> tuple[ExtableEntry, TypeNumbering] | None:
        """search_exception_tables(): exact match on the faulting instruction's address."""
        return self._entries.get(pc)

    def may_access_user(self, pc: int, wnr: bool) -> bool:
        """extable.c insn_may_access_user(): any entry at pc passes, except a UACCESS_CPY entry
        for the kernel side of the copy (data bit 0 != ESR.WnR)."""
        found = self.search(pc)
        if found is None:
            return False
        entry, numbering = found
        try:
            kind = numbering.kind(entry.type)
        except UnknownExtableType:
            return True
        if kind is ExType.UACCESS_CPY:
            return entry.uaccess_is_write == wnr
        return True

    def fixup_exception(self, regs: PtRegs, wnr: bool, read_u64: ReadU64) -> Fixup | None:
        """Apply the fixup for regs.pc, if any. Raises ExtableBug for an unknown type, FixupFault if it faults."""
        found = self.search(regs.pc)
        if found is None:
            return None
        entry, numbering = found
        try:
            kind = numbering.kind(entry.type)
        except UnknownExtableType as exc:
            raise ExtableBug(str(exc)) from None
        if kind in (ExType.UACCESS_ERR_ZERO, ExType.KACCESS_ERR_ZERO):
            detail = _err_zero(entry, regs)
        elif kind is ExType.LOAD_UNALIGNED_ZEROPAD:
            detail = _zeropad(entry, regs, read_u64)
        elif kind is ExType.UACCESS_CPY:
            detail = _uaccess_cpy(entry, regs, wnr)
        else:
            # EX_TYPE_BPF needs a BPF JIT image, and NONE is never emitted: the kernel BUG()s on both here.
            raise ExtableBug(f"extable type {kind.value} at {entry.insn:#x} is not handled by this model")
        return None if detail is None else Fixup(entry, kind, detail)
