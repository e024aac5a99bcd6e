"""Reference models of the guest_asm routines: what each one promises, in plain Python.

Each model answers, for one case (the routine's arguments, the memory
around its buffers, where the guest-owned page sits, the policy): how the
run must end, the registers it must return, every byte the host may see
afterwards, and whether the guest loses its page. Nothing here imports the
emulator or the code under test; the models are written from the kernel's
documented contracts:

* raw_copy_{from,to}_user (include/linux/uaccess.h): return the bytes not
  copied; the reported prefix is copied; "nothing copied" only when nothing
  could be; arm64's fixup retries a single byte to guarantee that.
* clear_user: bytes not cleared. get_user/put_user: -EFAULT and a zeroed
  value. copy_*_kernel_nofault (mm/maccess.c): 0 or -EFAULT, chunks of
  8/4/2/1 bytes. strncpy_from_user / strnlen_user (lib/): length, count,
  count + 1, -EFAULT / 0; a word that faults is retried byte by byte.
* load_unaligned_zeropad (arm64 extable.c): the bytes before the fault,
  then zeros; a fault on the first byte's aligned word is a fault in the
  fault handler. Its users (fs/namei.c, fs/dcache.c, strscpy) read whole
  words, so their access pattern is part of the contract and is modelled.
* The EL0 VMM (guest_asm/vmm.S): skip and count the accesses that fault.

Copies promise a range rather than one value (the kernel allows reporting
fewer bytes copied than were), so their models check ranges; everything
else is exact. What a protected access does is the policy's business
(`fate`): EL2 panics, reclaims (the page comes back scrubbed and the access
retries) or injects an abort, which the host fixes up, oopses on, reclaims
on (inject-reclaim, kernel accesses without a fixup) or turns into a
signal (EL0). An RME GPF injected by EL3 has a fault code the host does not
know: fatal at EL1 and SIGKILL at EL0.

Stores that straddle into the guest page: whether the bytes before the
boundary are written before the fault is IMPLEMENTATION DEFINED (Arm ARM
B2.2.1, "single-copy atomicity" of misaligned accesses); the models accept
both (the "alt" image below).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Mapping

MASK64 = (1 << 64) - 1
PAGE_SIZE = 4096
EFAULT = 14
EAGAIN = 11
E2BIG = 7
SIGSEGV = 11

RETURNED = "returned"
HYP_PANIC = "hyp-panic"
HOST_OOPS = "host-oops"
TASK_KILLED = "task-killed"

GOLDEN_RATIO_64 = 0x61C8864680B583EB  # include/linux/hash.h


def neg(errno: int) -> int:
    """-errno as a 64-bit register value."""
    return -errno & MASK64


# =========================================================================== policies


@dataclass(frozen=True)
class PolicyTraits:
    """What the models need to know about a policy: EL2's decision and how the host copes."""

    name: str
    decision: str  # "panic" | "inject" | "reclaim"
    fatal_syndrome: bool = False  # the injected fault code is one the host does not handle (RME GPF)
    force_reclaim: bool = False  # the host's __do_kernel_fault asks EL2 to reclaim when no fixup exists

    def __post_init__(self) -> None:
        if self.decision not in ("panic", "inject", "reclaim"):
            raise ValueError(f"unknown decision {self.decision!r}")


class Access(enum.Enum):
    """How the faulting instruction is annotated, which decides what the host can do with an injected abort."""

    FIXUP = "EL1 access with an exception-table entry"
    PLAIN = "EL1 access without an exception-table entry"
    USER = "EL0 access"


class Fate(enum.Enum):
    FIXUP = "the exception-table fixup runs"
    RECLAIM = "the page is reclaimed (scrubbed) and the access retried"
    SIGNAL = "SIGSEGV is delivered to the task"
    PANIC = HYP_PANIC
    OOPS = HOST_OOPS
    KILL = TASK_KILLED


def fate(traits: PolicyTraits, access: Access) -> Fate:
    """What happens to one access to a page the host does not own."""
    if traits.decision == "panic":
        return Fate.PANIC
    if traits.decision == "reclaim":
        return Fate.RECLAIM
    if traits.fatal_syndrome:
        # fault.c fault_info[]: the GPF codes are "unknown": die at EL1, SIGKILL at EL0, fixups or not.
        return Fate.KILL if access is Access.USER else Fate.OOPS
    if access is Access.USER:
        return Fate.SIGNAL  # do_page_fault: pKVM stage-2 abort from EL0 -> SIGSEGV/SEGV_ACCERR
    if access is Access.FIXUP:
        return Fate.FIXUP  # __do_kernel_fault tries the fixup before anything else
    return Fate.RECLAIM if traits.force_reclaim else Fate.OOPS


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

    def _window(self, va: int, n: int) -> tuple[str, int]:
        for name, w in self.windows.items():
            if w.va <= va and va + n <= w.end:
                return name, va - w.va
        raise ModelError(f"access [{va:#x}, {va + n:#x}) is outside every window")

    def first_guest_byte(self, va: int, n: int) -> int | None:
        """The first address of [va, va + n) on a page the guest still owns."""
        for name, (lo, hi) in self.guest.items():
            if name not in self.reclaimed and va < hi and lo < va + n:
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
        self._window(va, n)
        self.check_guest(va, n, access, "read")
        return self.peek(va, n)

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


def _simulated(mem: RefMemory, outcome: str, regs: dict[str, int], why: str = "") -> Expected:
    images = mem.images()
    if not why:
        why = "; ".join(mem.log[:2]) + (f"; and {len(mem.log) - 2} more" if len(mem.log) > 2 else "")
    return Expected(outcome, mem.touched, frozenset(mem.reclaimed), lambda _regs: images, regs, None, why or "no guest page in the way")


def _run(mem: RefMemory, body: Callable[[], dict[str, int]]) -> Expected:
    """Run a simulated model; an access that ends the run gives that outcome and the memory so far."""
    try:
        regs = body()
    except RunEnds as end:
        return _simulated(mem, end.kind, {}, end.why)
    return _simulated(mem, RETURNED, regs)


# =========================================================================== copies


def _copy_contract(
    case: RefCase,
    *,
    to: int,
    frm: int,
    n: int,
    src_access: Access,
    dst_access: Access,
    slack: int,
    retry_byte: bool,
) -> Expected:
    """raw_copy_{from,to}_user-style copies: ret = bytes not copied, a range contract.

    A copy must touch every byte of both buffers and nothing else, so the
    first guest byte on either side is where it faults (a load before the
    store of the same byte). With a fixup, k = n - ret bytes are reported
    copied: k <= the bytes before the fault, k >= those bytes - `slack` (how
    coarse our routine's progress is), and k >= 1 when the first byte could
    be copied (`retry_byte`: arm64's one-byte retry). Reclaim retries the
    access, so the copy goes on past a reclaimed page.
    """
    mem = RefMemory(case)
    while n:
        sides = [(_first_off(mem, va, n), order, va, access) for order, (va, access) in enumerate(((frm, src_access), (to, dst_access)))]
        hits = [h for h in sides if h[0] is not None]
        if not hits:
            break
        off, _, base, access = min(hits)
        f = fate(case.traits, access)
        if f is Fate.RECLAIM:
            mem.check_guest(base + off, 1, access, "copy")
            continue
        mem.touched = True
        if f is Fate.FIXUP:
            return _copy_partial(mem, to=to, frm=frm, n=n, off=off, slack=slack, retry_byte=retry_byte)
        mem.tolerate(to, mem.peek(frm, off))  # what was copied before the fault may be there
        return Expected(f.value, True, frozenset(mem.reclaimed), _const_images(mem), why=f"copy hits the guest page at +{off}: {f.value}")
    if n:
        mem.write(to, mem.peek(frm, n), dst_access)
    return Expected(RETURNED, mem.touched, frozenset(mem.reclaimed), _const_images(mem), {"x0": 0}, why="whole copy")


def _first_off(mem: RefMemory, va: int, n: int) -> int | None:
    first = mem.first_guest_byte(va, n) if n else None
    return None if first is None else first - va


def _const_images(mem: RefMemory) -> ImageFn:
    images = mem.images()
    return lambda _regs: images


def _patched(mem: RefMemory, va: int, want: bytes, alt: bytes) -> dict[str, tuple[bytes, bytes]]:
    """mem's images with `want` stored at va and `alt` accepted after it."""
    images = {}
    for name, w in mem.windows.items():
        a, b = bytearray(mem.want[name]), bytearray(mem.alt[name])
        if w.va <= va < w.end:
            o = va - w.va
            a[o : o + len(want)] = want
            b[o : o + len(want)] = want
            b[o + len(want) : o + len(want) + len(alt)] = alt
        images[name] = (bytes(a), bytes(b))
    return images


def _copy_partial(mem: RefMemory, *, to: int, frm: int, n: int, off: int, slack: int, retry_byte: bool) -> Expected:
    src = mem.peek(frm, n)
    low = max(0, off - slack)
    if retry_byte and off >= 1:
        low = max(low, 1)

    def ret_check(regs: Mapping[str, int]) -> list[str]:
        ret = regs["x0"]
        if ret > n:
            return [f"returned {ret} bytes not copied, more than n = {n}"]
        k = n - ret
        if k > off:
            return [f"reports {k} bytes copied but only {off} could be"]
        if k < low:
            return [f"reports {k} bytes copied; at least {low} must be (fault at +{off}, slack {slack})"]
        return []

    def images(regs: Mapping[str, int]) -> dict[str, tuple[bytes, bytes]]:
        k = n - min(regs["x0"], n)
        # bytes stored but not reported (by an earlier store of the same step, or by the
        # part of a straddling store) are accepted, never past the fault
        return _patched(mem, to, src[:k], src[k:off] if k < off else b"")

    return Expected(RETURNED, True, frozenset(mem.reclaimed), images, {}, ret_check, f"fixup at +{off}: {low} <= copied <= {off}")


def copy_from_user(case: RefCase) -> Expected:
    to, frm, n = case.args
    return _copy_contract(case, to=to, frm=frm, n=n, src_access=Access.FIXUP, dst_access=Access.PLAIN, slack=48, retry_byte=True)


def copy_to_user(case: RefCase) -> Expected:
    to, frm, n = case.args
    return _copy_contract(case, to=to, frm=frm, n=n, src_access=Access.PLAIN, dst_access=Access.FIXUP, slack=7, retry_byte=True)


def gup_kernel_copy(case: RefCase) -> Expected:
    """A plain memcpy: no fixup on either side; returns dst."""
    to, frm, n = case.args
    exp = _copy_contract(case, to=to, frm=frm, n=n, src_access=Access.PLAIN, dst_access=Access.PLAIN, slack=0, retry_byte=False)
    if exp.outcome == RETURNED:
        exp.regs = {"x0": to}
    return exp


def clear_user(case: RefCase) -> Expected:
    """__arch_clear_user: ret = bytes not cleared; [0, n - ret) zero; never reports more than it cleared.

    Our routine's progress is exact except for its short path (under 16
    bytes, unaligned stores): k >= the bytes before the fault - 7.
    """
    addr, n = case.args
    mem = RefMemory(case)
    off = _first_off(mem, addr, n)
    if off is not None:
        f = fate(case.traits, Access.FIXUP)
        mem.touched = True
        if f is Fate.RECLAIM:
            mem.check_guest(addr + off, 1, Access.FIXUP, "clear")
            off = None
        elif f is not Fate.FIXUP:
            mem.tolerate(addr, bytes(off))
            return Expected(f.value, True, frozenset(), _const_images(mem), why=f"clear hits the guest page at +{off}: {f.value}")
    if off is None:
        if n:
            mem.write(addr, bytes(n), Access.FIXUP)
        return Expected(RETURNED, mem.touched, frozenset(mem.reclaimed), _const_images(mem), {"x0": 0}, why="whole clear")
    low = max(0, off - 7)

    def ret_check(regs: Mapping[str, int]) -> list[str]:
        ret = regs["x0"]
        if ret > n:
            return [f"returned {ret} bytes not cleared, more than n = {n}"]
        k = n - ret
        if not low <= k <= off:
            return [f"reports {k} bytes cleared; must be in [{low}, {off}] (fault at +{off})"]
        return []

    def images(regs: Mapping[str, int]) -> dict[str, tuple[bytes, bytes]]:
        k = n - min(regs["x0"], n)
        return _patched(mem, addr, bytes(k), bytes(max(0, off - k)))

    return Expected(RETURNED, True, frozenset(), images, {}, ret_check, f"fixup at +{off}: {low} <= cleared <= {off}")


# =========================================================================== single accesses


def get_user(size: int) -> Callable[[RefCase], Expected]:
    def model(case: RefCase) -> Expected:
        (uaddr,) = case.args
        mem = RefMemory(case)

        def body() -> dict[str, int]:
            try:
                value = int.from_bytes(mem.read(uaddr, size, Access.FIXUP), "little")
            except AccessFault:
                return {"x0": neg(EFAULT), "x1": 0}
            return {"x0": 0, "x1": value}

        return _run(mem, body)

    return model


def put_user(size: int) -> Callable[[RefCase], Expected]:
    def model(case: RefCase) -> Expected:
        value, uaddr = case.args
        mem = RefMemory(case)

        def body() -> dict[str, int]:
            try:
                mem.write(uaddr, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"), Access.FIXUP)
            except AccessFault:
                return {"x0": neg(EFAULT)}
            return {"x0": 0}

        return _run(mem, body)

    return model


def _nofault_chunks(n: int) -> list[tuple[int, int]]:
    """mm/maccess.c: 8-byte chunks while 8 or more remain, then one each of 4, 2, 1 as needed."""
    chunks, pos = [], 0
    while n - pos >= 8:
        chunks.append((pos, 8))
        pos += 8
    for size in (4, 2, 1):
        if n - pos >= size:
            chunks.append((pos, size))
            pos += size
    return chunks


def _nofault(case: RefCase, *, bad_is_src: bool) -> Expected:
    dst, src, n = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        for pos, size in _nofault_chunks(n):
            try:
                data = mem.read(src + pos, size, Access.FIXUP if bad_is_src else Access.PLAIN)
                mem.write(dst + pos, data, Access.PLAIN if bad_is_src else Access.FIXUP)
            except AccessFault:
                return {"x0": neg(EFAULT)}
        return {"x0": 0}

    return _run(mem, body)


def copy_from_kernel_nofault(case: RefCase) -> Expected:
    return _nofault(case, bad_is_src=True)


def copy_to_kernel_nofault(case: RefCase) -> Expected:
    return _nofault(case, bad_is_src=False)


def futex_atomic_add(case: RefCase) -> Expected:
    """*uaddr += inc atomically; x0 = 0 or -EFAULT, x1 = the old value (0 after a fault)."""
    uaddr, inc = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        try:
            old = int.from_bytes(mem.read(uaddr, 4, Access.FIXUP), "little")
            mem.write(uaddr, ((old + inc) & 0xFFFF_FFFF).to_bytes(4, "little"), Access.FIXUP)
        except AccessFault:
            return {"x0": neg(EFAULT), "x1": 0}
        return {"x0": 0, "x1": old}

    return _run(mem, body)


# =========================================================================== user strings


def _first_zero(word: bytes) -> int | None:
    i = word.find(0)
    return None if i < 0 else i


def strncpy_from_user(case: RefCase) -> Expected:
    """Length if the NUL is within count, count if not, -EFAULT if a needed byte faulted.

    Words while 8 or more bytes remain; a word that faults switches to one
    byte at a time from the same position for the rest. The word that holds
    the NUL is stored with zeros after it.
    """
    dst, src, count = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        res = 0
        while count - res >= 8:
            try:
                word = mem.read(src + res, 8, Access.FIXUP)
            except AccessFault:
                break
            z = _first_zero(word)
            if z is not None:
                mem.write(dst + res, word[:z] + bytes(8 - z), Access.PLAIN)
                return {"x0": res + z}
            mem.write(dst + res, word, Access.PLAIN)
            res += 8
        while res < count:
            try:
                c = mem.read(src + res, 1, Access.FIXUP)
            except AccessFault:
                return {"x0": neg(EFAULT)}
            mem.write(dst + res, c, Access.PLAIN)
            if c == b"\0":
                return {"x0": res}
            res += 1
        return {"x0": res}

    return _run(mem, body)


def strnlen_user(case: RefCase) -> Expected:
    """strlen + 1 if the NUL is in the first count bytes, count + 1 if not, 0 on a fault or count <= 0.

    Aligned words from src & ~7 up to the word holding src[count - 1] or the NUL.
    """
    src, count = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        if count <= 0 or count >> 63:
            return {"x0": 0}
        base = src & ~7
        align = src - base
        word_va = base
        while True:
            try:
                word = bytearray(mem.read(word_va, 8, Access.FIXUP))
            except AccessFault:
                return {"x0": 0}
            if word_va == base:
                word[:align] = b"\xff" * align
            z = _first_zero(bytes(word))
            if z is not None:
                length = word_va - src + z
                return {"x0": length + 1 if length < count else count + 1}
            word_va += 8
            if word_va >= src + count:
                return {"x0": count + 1}

    return _run(mem, body)


# =========================================================================== load_unaligned_zeropad users


def _rol64(v: int, s: int) -> int:
    return ((v << s) | (v >> (64 - s))) & MASK64


def hash_mix(x: int, y: int, a: int) -> tuple[int, int]:
    """fs/namei.c HASH_MIX, 64-bit."""
    x ^= a
    y ^= x
    x = _rol64(x, 12)
    x = (x + y) & MASK64
    y = _rol64(y, 45)
    y = (y * 9) & MASK64
    return x, y


def fold_hash(x: int, y: int) -> int:
    y ^= (x * GOLDEN_RATIO_64) & MASK64
    y = (y * GOLDEN_RATIO_64) & MASK64
    return y >> 32


def name_hash(salt: int, name: bytes) -> int:
    """full_name_hash of a name held in memory that reads as it is: whole words, then the last part."""
    x, y = 0, salt & MASK64
    pos = 0
    while len(name) - pos >= 8:
        x, y = hash_mix(x, y, int.from_bytes(name[pos : pos + 8], "little"))
        pos += 8
    if pos < len(name):
        x ^= int.from_bytes(name[pos:], "little")
    return fold_hash(x, y)


def load_unaligned_zeropad(case: RefCase) -> Expected:
    (addr,) = case.args
    mem = RefMemory(case)
    return _run(mem, lambda: {"x0": mem.load_zeropad(addr)})


def full_name_hash(case: RefCase) -> Expected:
    salt, name, length = case.args
    length &= 0xFFFF_FFFF
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        seen = bytearray()
        pos = 0
        while length - pos > 0:
            word = mem.load_zeropad(name + pos).to_bytes(8, "little")
            take = min(8, length - pos)
            seen += word[:take]
            pos += take
        return {"x0": name_hash(salt, bytes(seen))}

    return _run(mem, body)


def hashlen_string(case: RefCase) -> Expected:
    salt, name = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        seen = bytearray()
        while True:
            word = mem.load_zeropad(name + len(seen)).to_bytes(8, "little")
            z = _first_zero(word)
            if z is not None:
                seen += word[:z]
                return {"x0": (len(seen) << 32) | name_hash(salt, bytes(seen))}
            seen += word

    return _run(mem, body)


def dentry_name_cmp(case: RefCase) -> Expected:
    """0 if cs[0..tcount) == ct[0..tcount) (ct as load_unaligned_zeropad sees it), 1 otherwise."""
    cs, ct, tcount = case.args
    tcount &= 0xFFFF_FFFF
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        pos = 0
        while True:
            a = mem.read(cs + pos, 8, Access.PLAIN)
            b = mem.load_zeropad(ct + pos).to_bytes(8, "little")
            left = tcount - pos
            if left < 8:
                return {"x0": int(a[:left] != b[:left])}
            if a != b:
                return {"x0": 1}
            pos += 8
            if pos == tcount:
                return {"x0": 0}

    return _run(mem, body)


def strscpy(case: RefCase) -> Expected:
    """Length copied, or -E2BIG (count 0, or no NUL in the first count bytes: dst gets count-1 bytes and a NUL)."""
    dst, src, count = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        if count == 0:
            return {"x0": neg(E2BIG)}
        res = 0
        while count - res >= 8:
            word = mem.load_zeropad(src + res).to_bytes(8, "little")
            z = _first_zero(word)
            if z is not None:
                mem.write(dst + res, word[:z] + bytes(8 - z), Access.PLAIN)
                return {"x0": res + z}
            mem.write(dst + res, word, Access.PLAIN)
            res += 8
        while res < count:
            c = mem.read(src + res, 1, Access.PLAIN)
            mem.write(dst + res, c, Access.PLAIN)
            if c == b"\0":
                return {"x0": res}
            res += 1
        mem.write(dst + count - 1, b"\0", Access.PLAIN)
        return {"x0": neg(E2BIG)}

    return _run(mem, body)


# =========================================================================== the EL0 VMM


def vmm_pattern(offset: int) -> int:
    """The byte vmm_write stores at guest_mem[offset]."""
    return 0x40 | ((offset >> 3) & 0x3F)


def _vmm_steps(length: int) -> list[tuple[int, int]]:
    steps = [(pos, 8) for pos in range(0, length - length % 8, 8)]
    return steps + [(pos, 1) for pos in range(length - length % 8, length)]


def vmm_main(case: RefCase) -> Expected:
    """Bytes read and faults; out[] gets every access that did not fault; the record sits at out - 16."""
    guest, length, out = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        mem.write(out - 16, bytes(16), Access.USER)
        done = faults = 0
        for pos, size in _vmm_steps(length):
            try:
                data = mem.read(guest + pos, size, Access.USER)
            except AccessFault as fault:
                faults += 1
                mem.write(out - 16, faults.to_bytes(8, "little") + fault.addr.to_bytes(8, "little"), Access.USER)
                continue
            mem.write(out + pos, data, Access.USER)
            done += size
        return {"x0": done, "x1": faults}

    return _run(mem, body)


def vmm_write(case: RefCase) -> Expected:
    """Bytes written and faults; the pattern lands on every store that did not fault; the record at rec."""
    guest, length, rec = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        mem.write(rec, bytes(16), Access.USER)
        done = faults = 0
        for pos, size in _vmm_steps(length):
            data = bytes([vmm_pattern(pos)] * size)
            try:
                mem.write(guest + pos, data, Access.USER)
            except AccessFault as fault:
                faults += 1
                mem.write(rec, faults.to_bytes(8, "little") + fault.addr.to_bytes(8, "little"), Access.USER)
                continue
            done += size
        return {"x0": done, "x1": faults}

    return _run(mem, body)


# =========================================================================== registry

REFERENCES: dict[str, Callable[[RefCase], Expected]] = {
    "load_unaligned_zeropad": load_unaligned_zeropad,
    "full_name_hash": full_name_hash,
    "hashlen_string": hashlen_string,
    "dentry_name_cmp": dentry_name_cmp,
    "strscpy": strscpy,
    "__arch_copy_from_user": copy_from_user,
    "__arch_copy_to_user": copy_to_user,
    "__arch_clear_user": clear_user,
    **{f"get_user_{n}": get_user(n) for n in (1, 2, 4, 8)},
    **{f"put_user_{n}": put_user(n) for n in (1, 2, 4, 8)},
    "copy_from_kernel_nofault": copy_from_kernel_nofault,
    "copy_to_kernel_nofault": copy_to_kernel_nofault,
    "strncpy_from_user": strncpy_from_user,
    "strnlen_user": strnlen_user,
    "futex_atomic_add_lse": futex_atomic_add,
    "futex_atomic_add_llsc": futex_atomic_add,
    "gup_kernel_copy": gup_kernel_copy,
    "vmm_main": vmm_main,
    "vmm_write": vmm_write,
}
