"""What every reference model shares: the memory a model sees, how a run can end, and what a run must look like.

`RefMemory` is the host's view of the windows around a routine's buffers
during a modelled run: each access that touches the guest's page goes
through the policy's `fate` (faultlab/reference/policy.py) and either
carries on (reclaim), raises `AccessFault` (the routine's fixup or signal
handler runs) or raises `RunEnds`. `simulate` turns a model's body into
the `Expected` the sweep judges a run by. Nothing here imports the
emulator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from abi.arch import MASK64, PAGE_SIZE
from abi.linux import Errno, Sig
from faultlab.reference.policy import RETURNED, Access, Fate, PolicyTraits, fate

# The ABI's numbers (the contracts are written in them), positive as errno.h spells them.
EFAULT, EAGAIN, E2BIG = -Errno.EFAULT, -Errno.EAGAIN, -Errno.E2BIG
SIGSEGV = Sig.SIGSEGV


def neg(errno: int) -> int:
    """-errno as a 64-bit register value."""
    return -errno & MASK64


# =========================================================================== memory seen by a model



@dataclass(frozen=True)
class Window:
    """Bytes around one buffer, as they were before the run, at the VAs the routine uses.

    `guest` is the VA range [lo, hi) of the guest-owned page inside the window
    (its bytes in `data` are the guest's), or None.
    """

    name: str
    va: int
    data: bytes
    guest: tuple[int, int] | None = None

    @property
    def end(self) -> int:
        return self.va + len(self.data)


@dataclass(frozen=True)
class RefCase:
    """One call of a routine: its arguments, the memory around its buffers, the policy."""

    args: tuple[int, ...]
    windows: Mapping[str, Window]
    traits: PolicyTraits
    sizes: tuple[int, ...] = ()


class RunEnds(Exception):
    """The access ended the run (hyp panic, host oops, task killed)."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind = kind
        self.why = why


class AccessFault(Exception):
    """The access faulted and the routine's own fault path (fixup or signal handler) runs."""

    def __init__(self, addr: int) -> None:
        super().__init__(f"fault at {addr:#x}")
        self.addr = addr


class ModelError(AssertionError):
    """A model touched memory outside every window: the spec's windows are too small."""


class RefMemory:
    """The host's view of the windows during a modelled run.

    `want` is the exact image; `alt` differs only where a faulting store may
    or may not have written bytes before the guest page (both are accepted).
    """

    def __init__(self, case: RefCase) -> None:
        self.traits = case.traits
        self.windows = dict(case.windows)
        self.want = {n: bytearray(w.data) for n, w in self.windows.items()}
        self.alt = {n: bytearray(w.data) for n, w in self.windows.items()}
        self.guest = {n: w.guest for n, w in self.windows.items() if w.guest is not None}
        self.reclaimed: set[str] = set()
        self.touched = False
        self.log: list[str] = []
        # (name, va, end) per window, in order. A model walks a buffer chunk by chunk, so the window
        # of the last access is asked first - only when no two windows overlap (then it is the
        # only window that can hold the access, as the in-order search would find).
        self._spans = [(name, w.va, w.end) for name, w in self.windows.items()]
        ordered = sorted(self._spans, key=lambda span: span[1])
        self._disjoint = all(a[2] <= b[1] for a, b in zip(ordered, ordered[1:]))
        self._last = self._spans[0] if self._spans and self._disjoint else None

    def _window(self, va: int, n: int) -> tuple[str, int]:
        last = self._last
        if last is not None and last[1] <= va and va + n <= last[2]:
            return last[0], va - last[1]
        for span in self._spans:
            name, lo, hi = span
            if lo <= va and va + n <= hi:
                if self._disjoint:
                    self._last = span
                return name, va - lo
        raise ModelError(f"access [{va:#x}, {va + n:#x}) is outside every window")

    def first_guest_byte(self, va: int, n: int) -> int | None:
        """The first address of [va, va + n) on a page the guest still owns."""
        for name, (lo, hi) in self.guest.items():
            if va < hi and lo < va + n and name not in self.reclaimed:
                return max(va, lo)
        return None

    def check_guest(self, va: int, n: int, access: Access, what: str) -> None:
        """Apply the policy to an access that may touch the guest page: reclaim, or raise."""
        first = self.first_guest_byte(va, n)
        if first is None:
            return
        self.touched = True
        f = fate(self.traits, access)
        self.log.append(f"{what} [{va:#x}+{n}] hits the guest page at {first:#x}: {f.value}")
        if f is Fate.RECLAIM:
            name, _ = self._window(first, 1)
            self._reclaim(name)
            return
        if f in (Fate.FIXUP, Fate.SIGNAL):
            raise AccessFault(first)
        raise RunEnds(f.value, self.log[-1])

    def _reclaim(self, name: str) -> None:
        lo, hi = self.guest[name]
        w = self.windows[name]
        for image in (self.want, self.alt):
            image[name][lo - w.va : hi - w.va] = bytes(hi - lo)  # scrubbed by EL2
        self.reclaimed.add(name)

    def peek(self, va: int, n: int) -> bytes:
        """The bytes as they are now, without an access (for building expectations)."""
        name, off = self._window(va, n)
        return bytes(self.want[name][off : off + n])

    def read(self, va: int, n: int, access: Access) -> bytes:
        name, off = self._window(va, n)
        self.check_guest(va, n, access, "read")
        return bytes(self.want[name][off : off + n])  # as peek(), after a reclaim scrubbed it

    def write(self, va: int, data: bytes, access: Access) -> None:
        name, off = self._window(va, len(data))
        try:
            self.check_guest(va, len(data), access, "write")
        except (AccessFault, RunEnds):
            first = self.first_guest_byte(va, len(data))
            if first is not None and first > va:
                self.alt[name][off : off + first - va] = data[: first - va]  # the straddling part may land
            raise
        self.want[name][off : off + len(data)] = data
        self.alt[name][off : off + len(data)] = data

    def tolerate(self, va: int, data: bytes) -> None:
        """Bytes a routine may or may not have stored (progress it does not report)."""
        name, off = self._window(va, len(data))
        self.alt[name][off : off + len(data)] = data

    def load_zeropad(self, addr: int) -> int:
        """load_unaligned_zeropad: 8 bytes at addr, the ones past a fault as zero."""
        try:
            return int.from_bytes(self.read(addr, 8, Access.FIXUP), "little")
        except AccessFault:
            # extable.c: re-read the aligned word holding addr and shift; this read has no fixup
            # of its own, so a fault on it is handled like any kernel access without one.
            word = int.from_bytes(self.read(addr & ~7, 8, Access.PLAIN), "little")
            return word >> (8 * (addr & 7))

    def images(self) -> dict[str, tuple[bytes, bytes]]:
        return {n: (bytes(self.want[n]), bytes(self.alt[n])) for n in self.windows}


# =========================================================================== expectations

RegCheck = Callable[[Mapping[str, int]], list[str]]
ImageFn = Callable[[Mapping[str, int]], dict[str, tuple[bytes, bytes]]]


@dataclass
class Expected:
    """What a run must look like.

    `regs` are exact values, `ret_check` range contracts (both only when the
    run returns); `images(regs)` gives, per window, the exact image and the
    alternative one (a byte must equal one of the two).
    """

    outcome: str
    touched: bool
    reclaimed: frozenset[str]
    images: ImageFn
    regs: dict[str, int] = field(default_factory=dict)
    ret_check: RegCheck | None = None
    why: str = ""


def images_now(mem: RefMemory) -> ImageFn:
    """mem's images as they are now, whatever the registers say (for models that promise exact memory)."""
    images = mem.images()
    return lambda _regs: images


def _simulated(mem: RefMemory, outcome: str, regs: dict[str, int], why: str = "") -> Expected:
    if not why:
        why = "; ".join(mem.log[:2]) + (f"; and {len(mem.log) - 2} more" if len(mem.log) > 2 else "")
    return Expected(outcome, mem.touched, frozenset(mem.reclaimed), images_now(mem), regs, None, why or "no guest page in the way")


def simulate(mem: RefMemory, body: Callable[[], dict[str, int]]) -> Expected:
    """Run a simulated model; an access that ends the run gives that outcome and the memory so far."""
    try:
        regs = body()
    except RunEnds as end:
        return _simulated(mem, end.kind, {}, end.why)
    return _simulated(mem, RETURNED, regs)

