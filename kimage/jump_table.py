"""`__jump_table`: the static-key branch sites of a kernel image, read from its bytes.

include/linux/jump_label.h `struct jump_entry` (arm64 uses the relative form):
s32 code, s32 target, long key, each relative to its own field; key bit 0 is
the branch's default direction, bit 1 marks a site in init text. Used by the
loader to patch keys (`kimage.loaded`) and by the kernel profiles to find
which functions test a key (`kimage.profiles`).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from abi.arch import MASK64

if TYPE_CHECKING:
    from kimage.elf import Vmlinux

_JUMP_ENTRY = struct.Struct("<iiq")


@dataclass(frozen=True)
class JumpSite:
    """One `__jump_table` entry, resolved to absolute addresses."""

    code: int
    target: int
    key: int
    branch: bool  # key bit 0: the site was compiled as a branch by default (static_branch_likely style)


def jump_sites(read: Callable[[int, int], bytes], start: int, stop: int, key: int) -> list[JumpSite]:
    """The entries in [start, stop) of the key at `key`; `read(addr, size)` reads the relocated image."""
    return _sites_by_key(read, start, stop).get(key, [])


def _sites_by_key(read: Callable[[int, int], bytes], start: int, stop: int) -> dict[int, list[JumpSite]]:
    table = read(start, stop - start)
    by_key: dict[int, list[JumpSite]] = {}
    for off in range(0, len(table) - _JUMP_ENTRY.size + 1, _JUMP_ENTRY.size):
        code, target, key_off = _JUMP_ENTRY.unpack_from(table, off)
        entry = start + off
        key_field = (entry + 8 + key_off) & MASK64
        key = key_field & ~3
        by_key.setdefault(key, []).append(JumpSite(entry + code, entry + 4 + target, key, bool(key_field & 1)))
    return by_key


def image_jump_sites(vm: "Vmlinux", key: int) -> list[JumpSite]:
    """The sites of the key at `key` in the image's own `__jump_table` (as linked: the kernel patches
    the code at the sites, never the table), the whole table parsed once per image (Vmlinux.derived)."""
    by_key = vm.derived("jump-table", lambda v: _sites_by_key(v.read, v.address("__start___jump_table"), v.address("__stop___jump_table")))
    return list(by_key.get(key, ()))
