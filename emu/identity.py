"""Identity layouts: frames mapped at VA == PA, for bare-metal style code (and the QEMU differential).

Physical memory starts at 0x4000_0000 (Machine's default phys_base, as QEMU's `virt`
board), so an identity VA is a TTBR0 (low-half) address. Mapped with kernel permissions
(no AP[1]): EL1 code and data; EL0 cannot use them. With the MMU off (SCTLR_EL1.M = 0,
emu/sctlr.py) every physical address is its own VA already and nothing needs mapping.

A page is executable at EL0 or at EL1, never both: `Perms.user` decides which (Linux maps
user pages PXN and kernel pages UXN; emu/stage1_tables.py page_descriptor).
"""
from __future__ import annotations

from emu.memory import KERNEL_RW, PAGE_SHIFT, PAGE_SIZE, Perms


def map_identity(space, nr_pages: int = 1, perms: Perms | str = KERNEL_RW) -> int:
    """Allocate `nr_pages` contiguous frames and map each at VA == PA; returns that address.

    `space`: a Machine (any AddressSpace).
    """
    if nr_pages <= 0:
        raise ValueError("nr_pages must be positive")
    first = space.alloc_frame(nr_pages)
    for i in range(nr_pages):
        pfn = first + i
        space.map_page(pfn << PAGE_SHIFT, pfn, perms)
    return first << PAGE_SHIFT


def identity_frames(space, pa: int, size: int, perms: Perms | str = KERNEL_RW) -> None:
    """Map already allocated frames covering [pa, pa + size) at VA == PA."""
    first, end = pa & ~(PAGE_SIZE - 1), pa + size
    for page in range(first, end, PAGE_SIZE):
        space.map_page(page, page >> PAGE_SHIFT, perms)
