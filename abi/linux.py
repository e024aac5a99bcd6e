"""Linux's user-visible numbers: errno, signals and their si_codes (include/uapi/asm-generic/*.h).

Errno is an IntEnum of *negated* values, as kernel functions and pKVM's
hypercalls return them, so a trace prints -EPERM and still compares equal to
the raw int a register holds.
"""
from __future__ import annotations

import enum


class Errno(enum.IntEnum):
    """A result: SUCCESS or a negated Linux errno (include/uapi/asm-generic/errno-base.h, errno.h)."""

    SUCCESS = 0
    EPERM = -1
    ENOENT = -2
    E2BIG = -7
    EAGAIN = -11
    ENOMEM = -12
    EFAULT = -14
    EBUSY = -16
    EEXIST = -17
    EINVAL = -22
    ERANGE = -34
    ENOSYS = -38
    EOPNOTSUPP = -95
    # errno.h: 133; get_valid_guest_pte() returns it for a poisoned guest entry.
    EHWPOISON = -133

    def __str__(self) -> str:
        return "0" if self is Errno.SUCCESS else f"-{self.name}"

    @property
    def ok(self) -> bool:
        return self is Errno.SUCCESS


class Sig(enum.IntEnum):
    """Signal numbers (include/uapi/asm-generic/signal.h)."""

    SIGILL = 4
    SIGTRAP = 5
    SIGBUS = 7
    SIGKILL = 9
    SIGSEGV = 11


# si_code values (include/uapi/asm-generic/siginfo.h)
SEGV_MAPERR, SEGV_ACCERR, SEGV_MTESERR = 1, 2, 9
BUS_ADRALN, BUS_OBJERR = 1, 3
TRAP_BRKPT = 1
ILL_ILLOPC = 1
SI_KERNEL = 0x80

# arm64 syscall numbers (include/uapi/asm-generic/unistd.h)
NR_EXIT = 93
NR_RT_SIGACTION = 134
NR_RT_SIGRETURN = 139


def signal_name(signo: int) -> str:
    try:
        return Sig(signo).name
    except ValueError:
        return f"signal {signo}"


def signal_number(name: str) -> int | None:
    """SIGSEGV -> 11; None for a name this project does not know."""
    member = Sig.__members__.get(name)
    return None if member is None else int(member)
