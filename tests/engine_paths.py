"""Helpers for tests that run the same thing on the machine's fast fault path and on the engine's path."""
from __future__ import annotations

import pytest

from emu.machine import Machine


def engine_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every machine made from now on stops the engine at every fault."""
    init = Machine.__init__

    def engine_only_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.fast_fault_path = False

    monkeypatch.setattr(Machine, "__init__", engine_only_init)


def record_of(result) -> tuple:
    events = [(e.seq, e.kind, e.pc, e.el, e.message, sorted(e.data)) for e in result.events]
    data = [repr(e.data) for e in result.events]
    return (result.outcome.kind, result.outcome.message, events, data, result.regs, result.segments)
