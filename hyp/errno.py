"""Linux errno values as EL2 returns them: negative ints, with names.

pKVM's transition functions return 0 or ``-E...``; the hypercall layer hands
that int to the host in x1 (and SMCCC success in x0). Keeping the values as an
IntEnum lets a trace print ``-EPERM`` instead of ``-1`` while still comparing
equal to the raw int the host side sees.
"""
from __future__ import annotations

import enum


class Errno(enum.IntEnum):
    """A transition's result: SUCCESS or a negated Linux errno (include/uapi/asm-generic/errno*.h)."""

    SUCCESS = 0
    EPERM = -1
    ENOENT = -2
    EAGAIN = -11
    ENOMEM = -12
    EFAULT = -14
    EBUSY = -16
    EEXIST = -17
    EINVAL = -22
    ERANGE = -34
    # errno.h: 133; get_valid_guest_pte() returns it for a poisoned guest entry.
    EHWPOISON = -133

    def __str__(self) -> str:
        return "0" if self is Errno.SUCCESS else f"-{self.name}"

    @property
    def ok(self) -> bool:
        return self is Errno.SUCCESS
