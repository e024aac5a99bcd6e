"""The host's stage-2 page table: an identity map that pKVM fills lazily.

pKVM does not map all of memory for the host up front: the first host access
to a frame aborts to EL2, which checks the frame's host state and, when the
host owns or shares it, installs an identity mapping and lets the access retry
(mem_protect.c: host_stage2_idmap). Frames the host gave away are never mapped;
taking one away unmaps it at once, and the TLB flush makes that visible to the
very next host instruction.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from emu.memory import AccessType


class HostStage2:
    """A set of identity-mapped frames, consulted by the emulator's TLB fill."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self.mapped: set[int] = set()

    def __call__(self, pfn: int, access: "AccessType") -> bool:
        """The emu stage-2 callback: is `pfn` mapped? Pure: no side effects on the fill path."""
        return pfn in self.mapped

    def idmap(self, pfn: int) -> None:
        self.mapped.add(pfn)

    def unmap(self, pfn: int) -> None:
        if pfn in self.mapped:
            self.mapped.discard(pfn)
            self._flush()

    def on_ownership_change(self, pfn: int, host_may_access: bool) -> None:
        """Ownership's callback: unmap what the host lost; map again what it got back (reclaim)."""
        if host_may_access:
            self.idmap(pfn)
        else:
            self.unmap(pfn)
