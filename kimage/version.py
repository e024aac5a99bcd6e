"""Which Linux an image is (`KernelVersion`, from `linux_banner`) and the one error the image parsers raise.

Both sit below every other kimage module: the ELF reader, the symbol table, the relocation
pass and the exception-table numbering all refuse an unusable image with `VmlinuxError`, and
the numbering is decided partly from the version.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


class VmlinuxError(ValueError):
    """The file is not a vmlinux this loader can use; the message says why, in one line."""


@dataclass(frozen=True)
class KernelVersion:
    major: int
    minor: int
    patch: int
    release: str

    @classmethod
    def from_banner(cls, banner: str) -> "KernelVersion":
        # init/version.c: "Linux version <UTS_RELEASE> (<builder>) ..."
        m = re.match(r"Linux version (\S+)", banner)
        if not m:
            raise VmlinuxError(f"linux_banner does not start with 'Linux version': {banner[:60]!r}")
        release = m.group(1)
        nums = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
        if not nums:
            raise VmlinuxError(f"cannot read a version number from release {release!r}")
        return cls(int(nums.group(1)), int(nums.group(2)), int(nums.group(3) or 0), release)

    @property
    def tuple(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __str__(self) -> str:
        return self.release
