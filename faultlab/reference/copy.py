"""Reference models of the copies: raw_copy_{from,to}_user, clear_user and gup's plain memcpy.

Copies promise a range rather than one value: include/linux/uaccess.h lets
raw_copy_{from,to}_user report fewer bytes copied than were, as long as
the reported prefix is copied and "nothing copied" only comes when nothing
could be (arm64's fixup retries a single byte to guarantee that). So these
models give a `ret_check` and images that depend on the returned count.
"""
from __future__ import annotations

from typing import Mapping

from faultlab.reference.model import Expected, RefCase, RefMemory, RegCheck, images_now
from faultlab.reference.policy import RETURNED, Access, Fate, fate

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
        return Expected(f.value, True, frozenset(mem.reclaimed), images_now(mem), why=f"copy hits the guest page at +{off}: {f.value}")
    if n:
        mem.write(to, mem.peek(frm, n), dst_access)
    return Expected(RETURNED, mem.touched, frozenset(mem.reclaimed), images_now(mem), {"x0": 0}, why="whole copy")


def _first_off(mem: RefMemory, va: int, n: int) -> int | None:
    first = mem.first_guest_byte(va, n) if n else None
    return None if first is None else first - va


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


def progress_check(n: int, low: int, off: int, done: str, note: str = "") -> RegCheck:
    """x0 = bytes not done, with between `low` and `off` (the bytes before the fault) reported done."""

    def ret_check(regs: Mapping[str, int]) -> list[str]:
        ret = regs["x0"]
        if ret > n:
            return [f"returned {ret} bytes not {done}, more than n = {n}"]
        k = n - ret
        if not low <= k <= off:
            return [f"reports {k} bytes {done}; must be in [{low}, {off}] (fault at +{off}{note})"]
        return []

    return ret_check


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
            return Expected(f.value, True, frozenset(), images_now(mem), why=f"clear hits the guest page at +{off}: {f.value}")
    if off is None:
        if n:
            mem.write(addr, bytes(n), Access.FIXUP)
        return Expected(RETURNED, mem.touched, frozenset(mem.reclaimed), images_now(mem), {"x0": 0}, why="whole clear")
    low = max(0, off - 7)

    def images(regs: Mapping[str, int]) -> dict[str, tuple[bytes, bytes]]:
        k = n - min(regs["x0"], n)
        return _patched(mem, addr, bytes(k), bytes(max(0, off - k)))

    ret_check = progress_check(n, low, off, "cleared")
    return Expected(RETURNED, True, frozenset(), images, {}, ret_check, f"fixup at +{off}: {low} <= cleared <= {off}")

