"""`Access`: one instruction's memory access, with the facts a data-abort syndrome is made of.

The fault path needs the access an instruction made (start, size, register, direction,
acquire/release, whether it may carry an instruction syndrome) to build the ESR and FAR the
hardware would report; emu/access_decoder.py produces it from the instruction word, and
emu.syndrome turns it into an ESR. This module is only the description and the two page-level
facts read off it (which byte FAR names, which pages it touches).

Sources: Arm ARM (DDI 0487) D24.2.45 ESR ISS fields, D24.2.48 FAR_EL1, J1.1 AArch64.Mem
(byte order of split accesses).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class AccessKind(enum.Enum):
    """What an instruction does to memory, as far as fault reporting cares."""

    READ = "read"
    WRITE = "write"
    RMW = "rmw"  # LSE atomics, SWP, CAS, CASP (exclusives are a READ or a WRITE)
    PREFETCH = "prefetch"  # PRFM/PRFUM: never generates an abort
    CACHE_MAINT = "cache-maint"  # DC/IC by VA (CM = 1, WnR = 1)
    DC_ZVA = "dc-zva"  # a write of a whole DCZID block, not cache maintenance (CM = 0)


class UnsupportedInstruction(ValueError):
    """A memory instruction this decoder does not model (SVE, MTE tags, MOPS, LD64B, PAC loads).

    Raised rather than returning None: on the fault path a silent "not a memory access" would
    turn into a wrong syndrome.
    """


@dataclass(frozen=True)
class Access:
    """One instruction's memory access, with the facts a data-abort syndrome is made of.

    address: lowest byte accessed, computed from register values before any writeback (for
        DC ZVA / DC by VA: the block or line the operation covers, aligned down).
    size: total bytes accessed (ldp x = 16, ld1 {v0.16b, v1.16b} = 32, prefetch = 0).
    element_size: bytes of one register transfer (ldp x = 8, ld1 {v0.16b, ...} = 16).
    srt: the Rt field (instruction bits[4:0]); 31 is XZR/WZR for a general register.
    sse/sf/ar: the values ESR.{SSE,SF,AR} take when the syndrome is valid.
    isv_eligible: a single general-register load/store without writeback, not exclusive and
        not atomic (Arm ARM D24.2.45, ISV); LDTR/STTR, LDAR/STLR, LDAPR and literal loads are.
    esize: for LD1..LD4/ST1..ST4, the element size of the arrangement (0 otherwise): these
        access memory one element at a time, so alignment is checked per element.
    operand_address: for DC/IC by VA, the register operand, which is what FAR reports
        (D24.2.48: "this field holds the address specified in the register argument").
    """

    mnemonic: str
    kind: AccessKind
    size: int
    element_size: int
    address: int
    writeback: bool = False
    pair: bool = False
    exclusive: bool = False
    atomic: bool = False
    acquire_release: bool = False
    unprivileged: bool = False
    simd: bool = False
    srt: int = 0
    sse: bool = False
    sf: bool = False
    ar: bool = False
    isv_eligible: bool = False
    operand_address: int | None = None
    esize: int = 0  # structure loads/stores (LD1..LD4/ST1..ST4): bytes of one element, what alignment checks

    @property
    def is_write(self) -> bool:
        """ESR.WnR for a fault a read would have taken too (translation, access flag...).

        Arm ARM D24.2.45 WnR: for an atomic that both reads and writes, WnR is 0 "if a read of
        the address specified by the instruction would have generated the fault which is being
        reported, otherwise it is set to 1" -- so an RMW reports 0 here; use `wnr()` for a
        permission fault where only the write is refused. Cache maintenance reports 1.
        (QEMU, hence Unicorn, looks up an atomic's page for writing first and reports 1.)
        """
        return self.kind in (AccessKind.WRITE, AccessKind.DC_ZVA, AccessKind.CACHE_MAINT)

    def wnr(self, *, read_would_fault: bool = True) -> bool:
        """ESR.WnR for a fault on this access; `read_would_fault` matters only for an RMW."""
        if self.kind is AccessKind.RMW:
            return not read_would_fault
        return self.is_write

    @property
    def cm(self) -> bool:
        """ESR.CM: DC/IC by VA; DC ZVA is explicitly not cache maintenance (D24.2.45 CM)."""
        return self.kind is AccessKind.CACHE_MAINT

    @property
    def end(self) -> int:
        """One past the last byte accessed."""
        return self.address + self.size


def fault_address(access: Access, fault_page_va: int, page_size: int = 4096) -> int:
    """FAR for a fault of `access` on the page containing `fault_page_va`.

    Bytes are accessed in ascending order (AArch64.Mem splits a misaligned access into bytes,
    lowest first), so the faulting byte is the first one of the access in that page: the access
    start when it begins in that page, else the page start. DC/IC by VA report the register
    operand instead (D24.2.48).
    """
    if access.operand_address is not None:
        return access.operand_address
    if access.size == 0:
        raise ValueError(f"{access.mnemonic} accesses no memory and cannot fault")
    page = fault_page_va & ~(page_size - 1)
    if page <= access.address < page + page_size:
        return access.address
    if access.address < page < access.end:
        return page
    raise ValueError(f"{access.mnemonic} at {access.address:#x}+{access.size} does not touch "
                     f"page {page:#x}")


def pages_touched(access: Access, page_size: int = 4096) -> list[int]:
    """Start addresses of the pages the access touches, lowest first (none for a prefetch)."""
    if access.size == 0:
        return []
    first = access.address & ~(page_size - 1)
    last = (access.end - 1) & ~(page_size - 1)
    return list(range(first, last + page_size, page_size))
