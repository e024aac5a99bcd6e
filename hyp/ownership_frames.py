"""FrameTable: the per-frame records of a machine, stored only where a frame left its boot state.

After pKVM init every frame of memory is host OWNED, hyp NOPAGE, unannotated,
with no counts (docs/facts.md, "pKVM at EL2"); that is FrameRecord(). Building
one record per frame made creating a Hyp cost O(frames) and dominated a small
scenario run (issue 12), so the table keeps only the exceptions: a frame with
no stored record is in the boot state.

Two ways in: ``table[pfn]`` returns the frame's record, storing a fresh one
first if there was none, because transitions change the record they get;
``table.peek(pfn)`` only reads and returns a shared read-only stand-in for an
unstored frame. A stored record that returns to the boot state may stay
stored; ``changed()`` therefore skips records equal to the boot state, so
snapshots do not depend on which frames were once looked at.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

from hyp.page_checks import is_int
from hyp.page_state import FrameRecord


class _BootFrame:
    """A frame nobody has changed: FrameRecord()'s values, with every attribute read-only."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other == FrameRecord() if isinstance(other, FrameRecord) else isinstance(other, _BootFrame)

    __hash__ = object.__hash__


for _f in dataclasses.fields(FrameRecord):
    setattr(_BootFrame, _f.name, _f.default)

BOOT_FRAME = _BootFrame()


class FrameTable:
    """Frames [first_pfn, first_pfn + nr_pages): records only for those not in the boot state."""

    def __init__(self, first_pfn: int, nr_pages: int) -> None:
        self.first_pfn = first_pfn
        self.end_pfn = first_pfn + nr_pages
        self._records: dict[int, FrameRecord] = {}

    def __contains__(self, pfn: object) -> bool:
        """Whether pfn is a frame of memory (stored or not)."""
        return is_int(pfn) and self.first_pfn <= pfn < self.end_pfn

    def __getitem__(self, pfn: int) -> FrameRecord:
        """The frame's record, to read or change; stored from now on. KeyError outside memory."""
        record = self._records.get(pfn)
        if record is None:
            if pfn not in self:
                raise KeyError(pfn)
            record = self._records[pfn] = FrameRecord()
        return record

    def get(self, pfn: object, default: FrameRecord | None = None) -> FrameRecord | None:
        """Mapping.get(): the (possibly new) record of a frame of memory, else default."""
        return self[pfn] if pfn in self else default

    def peek(self, pfn: int) -> FrameRecord | _BootFrame | None:
        """The frame's record for reading only: BOOT_FRAME when unstored, None outside memory."""
        record = self._records.get(pfn)
        if record is not None:
            return record
        return BOOT_FRAME if pfn in self else None

    def changed(self) -> Iterator[tuple[int, FrameRecord]]:
        """(pfn, record) of every frame not in the boot state, by pfn: all the state there is."""
        boot = FrameRecord()
        for pfn in sorted(self._records):
            record = self._records[pfn]
            if record != boot:
                yield pfn, record

    def stored(self) -> int:
        """How many records exist (bench and tests: creation must not build one per frame)."""
        return len(self._records)
