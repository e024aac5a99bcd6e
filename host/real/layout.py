"""`KernelLayout`: the few structure layouts the real fault path is handed, read from the image's BTF.

The kernel's entry code builds a `struct pt_regs` on the task stack and the
mm layer hands the fault path a `struct vm_area_struct`; we build both in
emulated memory, so their sizes and member offsets must be the image's own
(they differ between 6.1 and 7.2: pt_regs is 336 bytes on 6.1, 320 on 7.2).
The `.BTF` section is part of the loaded image (`__start_BTF`..`__stop_BTF`),
so it is read from the relocated image bytes the loader copies into the
machine (`Vmlinux.btf`), not from the ELF file. The layout is a pure function
of the image: read once per image (`Vmlinux.derived`), not per boot.
"""
from __future__ import annotations

from dataclasses import dataclass

from kimage.btf import BtfError
from kimage.elf import Vmlinux
from kimage.loaded import LoadedKernel

# arch/arm64/include/asm/ptrace.h: x0..x30, then sp, pc, pstate (fixed by the ABI of the entry code).
PT_REGS_SP = 0xF8
PT_REGS_PC = 0x100
PT_REGS_PSTATE = 0x108
NO_SYSCALL = -1


@dataclass(frozen=True)
class KernelLayout:
    """Sizes and offsets of the structures we build for the kernel, from its own BTF."""

    pt_regs_size: int
    pt_regs_syscallno: int | None
    pt_regs_stackframe: int | None
    task_stack: int
    task_mm: int
    task_active_mm: int
    mm_struct_size: int
    mm_pgd: int
    vma_size: int
    vma_start: int
    vma_end: int
    vma_mm: int
    vma_flags: int
    bug_entry_size: int

    @classmethod
    def read(cls, kernel: LoadedKernel) -> "KernelLayout":
        return kernel.vmlinux.derived("kernel-layout", cls.of_image)

    @classmethod
    def of_image(cls, vmlinux: Vmlinux) -> "KernelLayout":
        btf = vmlinux.btf()

        def optional(struct: str, path: str) -> int | None:
            try:
                return btf.offsetof(struct, path)
            except BtfError:
                return None

        return cls(
            pt_regs_size=btf.sizeof("pt_regs"),
            pt_regs_syscallno=optional("pt_regs", "syscallno"),
            pt_regs_stackframe=optional("pt_regs", "stackframe"),
            task_stack=btf.offsetof("task_struct", "stack"),
            task_mm=btf.offsetof("task_struct", "mm"),
            task_active_mm=btf.offsetof("task_struct", "active_mm"),
            mm_struct_size=btf.sizeof("mm_struct"),
            mm_pgd=btf.offsetof("mm_struct", "pgd"),
            vma_size=btf.sizeof("vm_area_struct"),
            vma_start=btf.offsetof("vm_area_struct", "vm_start"),
            vma_end=btf.offsetof("vm_area_struct", "vm_end"),
            vma_mm=btf.offsetof("vm_area_struct", "vm_mm"),
            vma_flags=btf.offsetof("vm_area_struct", "vm_flags"),
            bug_entry_size=btf.sizeof("bug_entry"),
        )
