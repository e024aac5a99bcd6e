"""A run leaves no reference cycles behind: what it allocated is freed by reference counting.

Why it matters: a refused translation ends Unicorn's emu_start with a UcError. Kept in the run
loop's frame together with its traceback (which holds that frame), it made a cycle that held every
caller's frame - a sweep case's windows and images included - until the collector found it: ~54
tracked objects per sweep case, and the collector's passes over them (docs/performance.md).
"""
from __future__ import annotations

import gc

from faultlab.lab import Lab
from guest_asm import source_path


def _garbage_after(fn) -> int:
    """How many unreachable objects a collection finds after `fn()`, with automatic collection off."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        fn()
        return gc.collect()
    finally:
        if was:
            gc.enable()


def test_protected_aborts_and_idmaps_leave_no_cycles():
    lab = Lab("inject")
    lab.load_asm(source_path("fault_paths"))
    pages = lab.alloc("pages", 4)
    guest = lab.alloc("guest", 1)
    lab.donate(guest.pfns[0])
    snap = lab.snapshot()

    def run():
        lab.restore(snap)
        for pfn in pages.pfns:
            lab.hyp.stage2.split(pfn)  # page-granular: every first touch is an idmap abort
        assert lab.call("touch_pages", pages.va, 4).returned
        result = lab.call("touch_again", guest.va, 5)
        assert result.returned and len(result.events_of("inject")) == 5
        assert result.x0 == (-14) & ((1 << 64) - 1)  # the extable fixup's -EFAULT

    run()  # first-use caches (translated blocks, decoders) are not the runs' garbage
    assert _garbage_after(run) == 0
