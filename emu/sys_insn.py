"""One UC_HOOK_INSN on SYS instructions per machine, shared by everyone who needs to see them.

Measured (unicorn 2.1.4): with two SYS hooks installed, only the first one registered
is called, so a second user (TLB maintenance here, AT in host/real/at.py) would silently
never run. `SysInsnHooks` is the one hook; handlers are called in the order added until
one returns True ("handled: skip the instruction").

The hook fires for SYS instructions only (DC, IC, AT, TLBI), so code without them does not pay.
"""
from __future__ import annotations

from typing import Callable

from unicorn import arm64_const as A
from unicorn.unicorn_const import UC_HOOK_INSN

SysHandler = Callable[[object, int, object], bool]  # (uc, Xt register id, cp fields) -> handled


class SysInsnHooks:
    def __init__(self, uc) -> None:
        self._handlers: list[SysHandler] = []
        uc.hook_add(UC_HOOK_INSN, self._on_sys, None, 1, 0, A.UC_ARM64_INS_SYS)

    def add(self, handler: SysHandler) -> None:
        self._handlers.append(handler)

    def _on_sys(self, uc, reg: int, cp, _user) -> int:
        for handler in self._handlers:
            if handler(uc, reg, cp):
                return 1
        return 0


def is_tlbi(cp) -> bool:
    """TLBI <op>: SYS #op1, C8, Cm, #op2 (Arm ARM C5.5, op0 = 0b01, CRn = 0b1000)."""
    return cp.op0 == 1 and cp.crn == 8
