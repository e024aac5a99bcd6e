"""A booted-like host for the real fault path: system registers, boot variables and `current`'s context.

Only what the fault path reads, set as Linux sets it at boot, everything
located through the image's symbols and BTF:
- TCR_EL1 with T0SZ = T1SZ = 16 (48-bit VAs), 4 KiB granules, 48-bit IPS:
  7.2 derives `vabits_actual` from T1SZ, and with Unicorn's TCR_EL1 = 0 the
  shift in `do_translation_fault` is by 64 (a UBSAN report). TBI0 is left
  clear: Linux sets it, but nothing on the fault path depends on it and
  Unicorn would apply it to our software-MMU addresses.
- `memstart_addr` = 0 (our linear map is PAGE_OFFSET + PA) and
  `kimage_voffset` = the loader's image offset, for __pa()/__va().
- `current`'s preempt word = PREEMPT_ENABLED (count 0, no reschedule
  pending: arm64 keeps need_resched inverted, so a zeroed word would make
  every preempt_enable() call the scheduler);
- `current->stack` = a 16 KiB stack in a 32 KiB-aligned slot (the machine's
  kernel stack; the kernel's overflow check in its entry code relies on that
  alignment), re-applied after every reset of `current`.
- the task context, following the host's `Task.mm` (the scenario's
  `[routine] task`, the same flag the Python model reads): a user task's
  `current->mm` and `active_mm` point at a zeroed `mm_struct` with an empty
  pgd, so user-address faults go to the mm layer (our stubs, which answer
  VMA lookups from the user stage-1 mappings) instead of straight to
  `no_context`; a kernel thread has mm NULL, active_mm = &init_mm.
`init_mm.pgd` = `swapper_pg_dir`, as paging_init() leaves it (show_pte() walks it).
The pKVM static key is the rig's business (it follows the policy: set iff the
host boots with pKVM initialised).
"""
from __future__ import annotations

from typing import Callable

from emu.memory import KERNEL_RW, PAGE_SIZE
from kimage.loaded import LoadedKernel

from host.real.layout import KernelLayout

TCR_T0SZ = 16
TCR_T1SZ = 16 << 16
TCR_TG1_4K = 2 << 30
TCR_IPS_48 = 5 << 32
TCR_INNER_SHAREABLE_WBWA = (1 << 8) | (1 << 10) | (3 << 12) | (1 << 24) | (1 << 26) | (3 << 28)
TCR_AS = 1 << 36  # 16-bit ASIDs
LINUX_TCR_EL1 = TCR_T0SZ | TCR_T1SZ | TCR_TG1_4K | TCR_IPS_48 | TCR_INNER_SHAREABLE_WBWA | TCR_AS

PREEMPT_ENABLED = 1 << 32
THREAD_SIZE = 16 << 10
THREAD_ALIGN = 2 * THREAD_SIZE  # arm64 with VMAP_STACK: stacks are THREAD_SIZE-aligned x2 for the overflow check


class TaskContext:
    """`current` as the fault path expects it: a real stack, and (for a user task) an mm.

    `user_task()` says which, asked at every reset of `current` and at every
    fault entry (`sync_mm`): it is the host's `Task.mm`, so the real host and
    the Python model read one flag. The mm_struct, its pgd page and the VMA
    the stubs hand out are allocated at the first user-task use, after the
    scenario's buffers, so both hosts lay the buffers out alike.
    """

    def __init__(self, kernel: LoadedKernel, layout: KernelLayout, *, user_task: Callable[[], bool]) -> None:
        self.kernel = kernel
        self.layout = layout
        self.user_task = user_task
        machine = kernel.machine
        self.stack_top = machine.kernel_stack_top
        self.stack_base = self.stack_top - THREAD_SIZE
        if self.stack_base % THREAD_ALIGN:
            raise ValueError(f"the kernel stack at {self.stack_base:#x} is not in a {THREAD_ALIGN >> 10} KiB-aligned slot")
        self.mm = 0
        self.pgd = 0
        self.vma = 0
        self.installed: bool | None = None  # which context `current` holds now (None: not yet set)
        kernel.on_reset_task.append(self.apply)
        self.apply()

    def _allocate(self) -> None:
        if not self.mm:
            self.mm = self.kernel.alloc_buffer(-(-self.layout.mm_struct_size // PAGE_SIZE) * PAGE_SIZE)
            self.pgd = self.kernel.alloc_buffer(PAGE_SIZE)
            self.vma = self.kernel.alloc_buffer(PAGE_SIZE)

    def apply(self) -> None:
        m = self.kernel.machine
        task = self.kernel.task
        m.write_u64(task + self.layout.task_stack, self.stack_base)
        preempt = self.kernel.vmlinux.task_layout.preempt_count if self.kernel.vmlinux.task_layout else None
        if preempt is not None:
            # arm64 preempt.h: the high word is need_resched *inverted*; a running task with nothing
            # pending has count 0 and need_resched 1 (PREEMPT_ENABLED). Zero would mean "reschedule now".
            m.write_u64(task + preempt, PREEMPT_ENABLED)
        self.installed = None
        self.sync_mm()

    def sync_mm(self) -> None:
        """Make `current->mm`/`active_mm` match `user_task()` (a no-op when they already do)."""
        user = self.user_task()
        if self.installed is user:
            return
        m = self.kernel.machine
        task = self.kernel.task
        if user:
            self._allocate()
            m.write(self.mm, bytes(self.layout.mm_struct_size))
            m.write_u64(self.mm + self.layout.mm_pgd, self.pgd)
            m.write_u64(task + self.layout.task_mm, self.mm)
            m.write_u64(task + self.layout.task_active_mm, self.mm)
        else:
            m.write_u64(task + self.layout.task_mm, 0)
            if "init_mm" in self.kernel.symbols:
                # A kernel thread has no mm and borrows init_mm as its active_mm (show_pte() reads it).
                m.write_u64(task + self.layout.task_active_mm, self.kernel.resolve("init_mm"))
        self.installed = user


def boot_state(kernel: LoadedKernel, layout: KernelLayout) -> list[str]:
    """Set the system registers and boot variables; returns what was set (for the event log)."""
    m = kernel.machine
    done = []
    m.cpu.write_sysreg("TCR_EL1", LINUX_TCR_EL1)
    done.append(f"TCR_EL1={LINUX_TCR_EL1:#x}")
    for name, value in (("memstart_addr", 0), ("kimage_voffset", kernel.kimage_voffset)):
        if name in kernel.symbols:
            m.write_u64(kernel.resolve(name), value)
            done.append(f"{name}={value:#x}")
    # show_pte() walks init_mm.pgd before die(). At link time 6.1's init_mm.pgd is init_pg_dir (a
    # boot-only table past the loaded sections); paging_init() switches it to swapper_pg_dir. Do the
    # same; swapper_pg_dir is empty here, so the walk prints "pgd=0000000000000000" and stops.
    pgd, init_mm = kernel.symbols.get("swapper_pg_dir"), kernel.symbols.get("init_mm")
    if pgd is not None and init_mm is not None:
        if m.stage1.lookup(pgd.addr) is None:
            m.map_new(pgd.addr & ~(PAGE_SIZE - 1), 1, KERNEL_RW)
        m.write_u64(init_mm.addr + layout.mm_pgd, pgd.addr)
        done.append(f"init_mm.pgd=swapper_pg_dir ({pgd.addr:#x})")
    return done
