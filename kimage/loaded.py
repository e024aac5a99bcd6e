"""`LoadedKernel`: a real vmlinux placed in a `Machine`, ready to have its functions called.

The image goes into physical frames at one constant offset from its link
addresses (as `kimage_voffset` makes it on hardware) and is mapped at stage 1
in the kernel regime with per-section permissions. A call sets up what a
kernel routine reads from its surroundings and nothing more:
- `current`: SP_EL0 points at a zeroed `task_struct` (sized from BTF) whose
  thread flags and preempt count are 0 and whose `stack_canary` holds a fixed
  value (arm64 builds the per-task stack protector as
  `-mstack-protector-guard=sysreg -mstack-protector-guard-reg=sp_el0
  -mstack-protector-guard-offset=TSK_STACK_CANARY`, arch/arm64/Makefile);
- per-CPU data: TPIDR_EL1 = 0, so `this_cpu_ptr()` lands in the image's own
  `.data..percpu` template (CPU 0's copy, as far as the routine can tell);
- callees that must not run are stubbed: a hand-over point at their entry logs
  a "stub" event, returns 0 in x0 and goes back to x30; `__stack_chk_fail` and
  `panic` end the run instead;
- static keys keep their link-time default unless `set_static_key` patches
  their jump-table sites as the kernel's jump-label code would.

Buffers: `alloc_buffer` gives kernel memory at its linear-map address
(PAGE_OFFSET + PA), `map_user` gives user pages (EL0-accessible, so PAN and
ldtr/sttr apply to them as on hardware).
"""
from __future__ import annotations

import re
from typing import Callable

from kimage.elf import Vmlinux, VmlinuxError
from kimage.jump_table import JumpSite, image_jump_sites
from emu.machine import DEFAULT_BUDGET, DEFAULT_TIMEOUT, TASK_VA, Machine
from emu.run_limits import DEFAULT_MAX_TRACE
from emu.memory import KERNEL_RW, PAGE_MASK, PAGE_SIZE, USER_RW, Perms
from emu.outcome import Outcome, OutcomeKind, RunResult

# PAGE_OFFSET for 48-bit VAs (arch/arm64/include/asm/memory.h); here PHYS_OFFSET = 0, so VA = PAGE_OFFSET + PA.
LINEAR_MAP_BASE = 0xFFFF_0000_0000_0000
USER_BUFFER_BASE = 0x0000_0000_1000_0000
STACK_CANARY = 0x00C0_FFEE_5AFE_C0DE  # any value: the routine only compares it with itself
DEFAULT_EXTRA_MEMORY = 64 << 20

# Callees that only check or report (might_sleep debugging, hardened usercopy, printk): they return.
DEFAULT_STUBS = (
    "__might_fault",
    "__might_sleep",
    "__might_resched",
    "__check_object_size",
    "_printk",
    "__warn_printk",
    "printk",
)
# Callees that mean the routine has gone wrong: the run ends there.
FATAL_STUBS = ("__stack_chk_fail", "panic")
FATAL_CALL = OutcomeKind.FATAL_CALL

_NOP = 0xD503201F


def branch_insn(pc: int, target: int) -> int:
    """`b target` at `pc` (Arm ARM C6.2.26: imm26 word offset, +-128 MiB)."""
    offset = target - pc
    if offset % 4 or not -(1 << 27) <= offset < (1 << 27):
        raise VmlinuxError(f"cannot branch from {pc:#x} to {target:#x}")
    return 0x14000000 | ((offset >> 2) & 0x3FFFFFF)


class LoadedKernel:
    """A vmlinux image in a machine's memory, with `current`, stubs and static-key patching."""

    def __init__(
        self,
        vmlinux: Vmlinux,
        machine: Machine | None = None,
        *,
        extra_memory: int = DEFAULT_EXTRA_MEMORY,
        stubs: tuple[str, ...] = DEFAULT_STUBS,
    ) -> None:
        self.vmlinux = vmlinux
        self.symbols = vmlinux.symbols
        perms = vmlinux.page_perms()
        self._first_va = min(perms)
        nr_pages = (max(perms) - self._first_va) // PAGE_SIZE + 1
        if machine is None:
            machine = Machine(phys_size=nr_pages * PAGE_SIZE + extra_memory)
        self.machine = machine
        try:
            self._first_pfn = machine.phys.alloc(nr_pages)
        except MemoryError:
            raise VmlinuxError(
                f"the image needs {nr_pages * PAGE_SIZE >> 20} MiB of frames; the machine has {machine.phys.size >> 20} MiB"
            ) from None
        self.image_pages = nr_pages
        self.kimage_voffset = self._first_va - (self._first_pfn << 12)
        machine.stage1.map_many((va, self._image_pfn(va), perm) for va, perm in perms.items())
        for vaddr, data in vmlinux.image():
            machine.phys.write(vaddr - self.kimage_voffset, data)
        machine.flush_tlb()
        self._next_user = USER_BUFFER_BASE
        self.stubs: dict[str, int] = {}
        # Run after every reset of `current` (a host that gives the task a stack or an mm re-applies it).
        self.on_reset_task: list[Callable[[], None]] = []
        self._setup_task()
        for name in stubs:
            if name in self.symbols:
                self.stub(name)
        for name in FATAL_STUBS:
            if name in self.symbols:
                self.stub_fatal(name)

    # ------------------------------------------------------------ addresses
    def _image_pfn(self, va: int) -> int:
        return self._first_pfn + ((va & PAGE_MASK) - self._first_va) // PAGE_SIZE

    def in_image(self, va: int) -> bool:
        return self._first_va <= va < self._first_va + self.image_pages * PAGE_SIZE

    def resolve(self, target: str | int) -> int:
        """A symbol, 'symbol+offset', or a number (int or '0x...' text) -> address."""
        if isinstance(target, int):
            return target
        m = re.fullmatch(r"\s*([A-Za-z_.$][\w.$]*)?\s*(?:\+\s*(0x[0-9a-fA-F]+|\d+))?\s*", target)
        if m and m.group(1):
            return self.symbols.lookup(m.group(1)).addr + (int(m.group(2), 0) if m.group(2) else 0)
        try:
            return int(target, 0)
        except ValueError:
            raise VmlinuxError(f"not a symbol or an address: {target!r}") from None

    def symbolize(self, addr: int) -> str:
        return self.symbols.symbolize(addr)

    def owns(self, va: int) -> bool:
        """`va` is image code or data still mapped to the image's own frame."""
        if not self.in_image(va):
            return False
        pte = self.machine.stage1.lookup(va)
        return pte is not None and pte.pfn == self._image_pfn(va)

    def check_intact(self, addr: int, size: int = 4) -> None:
        """Refuse to run code whose image pages were remapped by someone else (e.g. a vector page)."""
        for va in range(addr & PAGE_MASK, addr + max(size, 1), PAGE_SIZE):
            if self.in_image(va) and not self.owns(va):
                raise VmlinuxError(
                    f"kernel page {va:#x} ({self.symbolize(va)}) is no longer the image's: something mapped over it"
                )

    # ------------------------------------------------------------ current
    def _setup_task(self) -> None:
        layout = self.vmlinux.task_layout
        size = layout.task_struct_size if layout else PAGE_SIZE
        extra = -(-size // PAGE_SIZE) - 1
        if extra > 0:
            self.machine.map_new(TASK_VA + PAGE_SIZE, extra, KERNEL_RW)
        self.task = TASK_VA
        self.reset_task()

    def reset_task(self) -> None:
        """Zero `current` and set what routines read: thread flags 0, preempt count 0, the canary."""
        layout = self.vmlinux.task_layout
        size = layout.task_struct_size if layout else PAGE_SIZE
        self.machine.write(self.task, bytes(size))
        if layout and layout.stack_canary is not None:
            self.machine.write_u64(self.task + layout.stack_canary, STACK_CANARY)
        for hook in self.on_reset_task:
            hook()

    # ------------------------------------------------------------ stubs
    def stub(self, name: str, ret: int = 0) -> int:
        """Make `name` return `ret` at once; each call is logged as a "stub" event."""
        addr = self.resolve(name)

        def returns(machine: Machine) -> None:
            cpu = machine.cpu
            args = ", ".join(f"{cpu.x(i):#x}" for i in range(3))
            machine.log("stub", f"{name}({args}, ...) from {self.symbolize(cpu.x(30))} -> {ret:#x}", name=name)
            cpu.set_x(0, ret)
            cpu.pc = cpu.x(30)

        self.machine.add_exit(addr, returns)
        self.stubs[name] = addr
        return addr

    def stub_fatal(self, name: str) -> int:
        """A callee that means the routine failed: the run ends with a FATAL_CALL outcome."""
        addr = self.resolve(name)

        def ends(machine: Machine) -> Outcome:
            caller = self.symbolize(machine.cpu.x(30))
            machine.log("stub", f"{name} called from {caller}", name=name)
            return Outcome(FATAL_CALL, f"{name} called from {caller}")

        self.machine.add_exit(addr, ends)
        self.stubs[name] = addr
        return addr

    def stub_with(self, name: str, handler: Callable[[Machine], Outcome | None]) -> int:
        """A stub with custom behaviour (the handler must set PC or end the run)."""
        addr = self.resolve(name)
        self.machine.add_exit(addr, handler)
        self.stubs[name] = addr
        return addr

    # ------------------------------------------------------------ static keys
    def jump_sites(self, key_name: str) -> list[JumpSite]:
        """The `__jump_table` entries of one static key (the table as linked: patching a key changes
        the code at its sites, never the table, so it is parsed once per image)."""
        return image_jump_sites(self.vmlinux, self.resolve(key_name))

    def set_static_key(self, key_name: str, enabled: bool = True) -> int:
        """Patch every site of a static key as static_key_enable()/disable() would; returns the site count.

        jump_label.c: a site's type is (key enabled) XOR (entry branch bit); arm64's
        arch_jump_label_transform writes `b target` for JUMP_LABEL_JMP and `nop` otherwise.
        The key's `enabled` count (atomic_t at offset 0 of struct static_key) is set too,
        so C code that reads static_key_enabled() agrees with the patched branches.
        """
        sites = self.jump_sites(key_name)
        if not sites:
            raise VmlinuxError(f"{key_name} has no jump-table sites")
        for site in sites:
            jump = enabled != site.branch
            word = branch_insn(site.code, site.target) if jump else _NOP
            self.machine.write(site.code, word.to_bytes(4, "little"))
        self.machine.write(self.resolve(key_name), (1 if enabled else 0).to_bytes(4, "little"))
        self.machine.log("static-key", f"{key_name} {'enabled' if enabled else 'disabled'}: {len(sites)} sites patched")
        return len(sites)

    def enable_static_key(self, key_name: str) -> int:
        return self.set_static_key(key_name, True)

    # ------------------------------------------------------------ buffers
    def alloc_buffer(self, size: int, perms: Perms | str = KERNEL_RW) -> int:
        """Fresh physically contiguous frames at their linear-map address; returns the VA."""
        nr = max(1, -(-size // PAGE_SIZE))
        pfn = self.machine.phys.alloc(nr)
        va = LINEAR_MAP_BASE + (pfn << 12)
        for i in range(nr):
            self.machine.map_page(va + i * PAGE_SIZE, pfn + i, perms)
        return va

    def map_user(self, size: int, perms: Perms | str = USER_RW) -> int:
        """Fresh user pages (EL0-accessible) at the next free user address, with an unmapped guard page after."""
        nr = max(1, -(-size // PAGE_SIZE))
        va = self._next_user
        self.machine.map_new(va, nr, perms)
        self._next_user = va + (nr + 1) * PAGE_SIZE
        return va

    def pfn_of(self, va: int) -> int:
        return self.machine.translate(va) >> 12

    # ------------------------------------------------------------ calls
    def call(
        self,
        target: str | int,
        *args: int,
        el: int = 1,
        pan: bool = True,
        budget: int = DEFAULT_BUDGET,
        timeout: float = DEFAULT_TIMEOUT,
        trace: bool = False,
        max_trace: int = DEFAULT_MAX_TRACE,
    ) -> RunResult:
        """Call a kernel function by symbol with x0..x7 = args; `current` is reset first.

        PAN is set by default: kernel code runs with PAN on and reaches user memory only
        through ldtr/sttr (uaccess routines) or an explicit uaccess_enable.
        """
        addr = self.resolve(target)
        if self.in_image(addr):
            sym = self.symbols.function_at(addr)
            self.check_intact(addr, sym.size if sym else 4)
        self.reset_task()
        return self.machine.call(addr, *args, el=el, pan=pan, budget=budget, timeout=timeout, trace=trace, max_trace=max_trace)
