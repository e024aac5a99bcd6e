"""Where the real fault path stops being run: every stubbed kernel function, as data, with why.

The kernel's own instructions run from `do_mem_abort` down to the decision
(fixup, spurious-fault retry, force-reclaim `hvc`, signal, oops). A function
is a boundary only where the fault path leaves for machinery this testbed does
not have (a console, a scheduler, other CPUs, a populated mm). Each entry's
`why` says which. `stubs.py` implements the kinds; nothing else lists names.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    CONSOLE = "console"  # render the message (format + args) as an event, return
    RETURNS = "returns"  # record the call and its arguments, return `ret`
    UBSAN = "ubsan"  # a sanitizer report: record it, return (the kernel carries on after reporting)
    SIGNAL = "signal"  # record signo/code/addr, deliver through our task model after do_mem_abort returns
    MM = "mm"  # answered from our stage-1 state (a present user PTE stands for the VMA and the page)
    DIE = "die"  # the run ends as a host oops carrying what the kernel printed before
    CANNOT_RUN = "cannot-run"  # needs machinery we do not have: the run ends naming the function


@dataclass(frozen=True)
class Boundary:
    name: str
    kind: Kind
    why: str
    ret: int = 0
    prefix: bool = False  # `name` is a prefix (a family of functions)


BOUNDARIES: tuple[Boundary, ...] = (
    # console
    Boundary("_printk", Kind.CONSOLE, "the console: the message is the kernel's own account, recorded as text"),
    Boundary("printk", Kind.CONSOLE, "older name of _printk"),
    Boundary("__warn_printk", Kind.CONSOLE, "WARN()'s message; the WARN itself is the brk #0x800 that follows"),
    Boundary("vprintk", Kind.CONSOLE, "console (va_list variant: recorded by format only)"),
    Boundary("_printk_deferred", Kind.CONSOLE, "console from scheduler context"),
    # debug-only checks and hardening hooks that only report
    Boundary("__might_fault", Kind.RETURNS, "might_sleep() debugging: reports, never changes the path"),
    Boundary("__might_sleep", Kind.RETURNS, "might_sleep() debugging"),
    Boundary("__might_resched", Kind.RETURNS, "might_sleep() debugging"),
    Boundary("__check_object_size", Kind.RETURNS, "hardened usercopy bounds report"),
    Boundary("__ubsan_handle_", Kind.UBSAN, "UBSAN report: printed, then execution continues", prefix=True),
    # locking, RCU, lockdep, context tracking, kprobes, perf: one CPU, nothing to wait for
    Boundary("_raw_spin_lock", Kind.RETURNS, "one CPU and no contention: the lock is ours"),
    Boundary("_raw_spin_lock_irqsave", Kind.RETURNS, "one CPU; returns the saved flags (DAIF masked)", ret=0xC0),
    Boundary("_raw_spin_unlock", Kind.RETURNS, "one CPU"),
    Boundary("_raw_spin_unlock_irqrestore", Kind.RETURNS, "one CPU"),
    Boundary("_raw_spin_trylock", Kind.RETURNS, "one CPU: the trylock succeeds", ret=1),
    Boundary("down_read", Kind.RETURNS, "mmap lock: uncontended on one task"),
    Boundary("down_read_trylock", Kind.RETURNS, "mmap lock: the trylock succeeds", ret=1),
    Boundary("down_read_killable", Kind.RETURNS, "mmap lock: uncontended"),
    Boundary("up_read", Kind.RETURNS, "mmap lock release (our mm's rwsem was never really taken)"),
    Boundary("__rcu_read_lock", Kind.RETURNS, "RCU reader: no grace period runs here"),
    Boundary("__rcu_read_unlock", Kind.RETURNS, "RCU reader"),
    Boundary("rcu_read_unlock_strict", Kind.RETURNS, "RCU reader"),
    Boundary("lockdep_hardirqs_on", Kind.RETURNS, "lockdep bookkeeping"),
    Boundary("lockdep_hardirqs_off", Kind.RETURNS, "lockdep bookkeeping"),
    Boundary("trace_hardirqs_on", Kind.RETURNS, "irq tracing"),
    Boundary("trace_hardirqs_off", Kind.RETURNS, "irq tracing"),
    Boundary("ct_irq_enter", Kind.RETURNS, "context tracking"),
    Boundary("ct_irq_exit", Kind.RETURNS, "context tracking"),
    Boundary("kprobe_fault_handler", Kind.RETURNS, "no kprobe is armed"),
    Boundary("__perf_sw_event", Kind.RETURNS, "perf software event counting"),
    Boundary("___perf_sw_event", Kind.RETURNS, "perf software event counting"),
    Boundary("__cond_resched", Kind.RETURNS, "nothing else to run: no reschedule", ret=0),
    Boundary("add_taint", Kind.RETURNS, "taint flag bookkeeping"),
    Boundary("debug_locks_off", Kind.RETURNS, "lockdep bookkeeping"),
    # signals
    Boundary("arm64_force_sig_fault", Kind.SIGNAL, "signal machinery: recorded, delivered by our task model"),
    Boundary("force_sig_fault", Kind.SIGNAL, "signal machinery"),
    Boundary("arm64_notify_die", Kind.SIGNAL, "user: a signal; kernel: die (decided from pt_regs, as traps.c does)"),
    Boundary("force_sig", Kind.SIGNAL, "signal machinery"),
    # mm layer for user addresses
    Boundary("lock_vma_under_rcu", Kind.MM, "per-VMA lock fast path: we answer NULL, so the path takes the mmap lock"),
    Boundary("lock_mm_and_find_vma", Kind.MM, "VMA lookup: a user stage-1 PTE stands for the VMA"),
    Boundary("find_vma", Kind.MM, "VMA lookup: a user stage-1 PTE stands for the VMA"),
    Boundary("handle_mm_fault", Kind.MM, "page-table population: a present PTE with the permission means nothing to do"),
    # the end of the host
    Boundary("die", Kind.DIE, "oops: registers and backtrace printing, then make_task_dead"),
    Boundary("make_task_dead", Kind.DIE, "the task dies: do_exit and the scheduler"),
    Boundary("panic", Kind.DIE, "the host is gone"),
    Boundary("__stack_chk_fail", Kind.DIE, "stack protector tripped: a corrupted frame"),
    Boundary("do_exit", Kind.DIE, "the task exits"),
    # cannot work here
    Boundary("schedule", Kind.CANNOT_RUN, "no scheduler: nothing else to run, and sleeping never ends"),
    Boundary("__schedule", Kind.CANNOT_RUN, "no scheduler"),
    Boundary("preempt_schedule", Kind.CANNOT_RUN, "no scheduler"),
    Boundary("preempt_schedule_notrace", Kind.CANNOT_RUN, "no scheduler"),
    Boundary("schedule_timeout", Kind.CANNOT_RUN, "no scheduler, no timers"),
    Boundary("msleep", Kind.CANNOT_RUN, "no timers"),
    Boundary("smp_call_function", Kind.CANNOT_RUN, "one CPU, no IPIs"),
)


def boundaries_in(symbols) -> list[tuple[Boundary, str]]:
    """(boundary, symbol name) for every entry present in an image; a prefix expands to every match."""
    found: list[tuple[Boundary, str]] = []
    for b in BOUNDARIES:
        if b.prefix:
            found += [(b, n) for n in sorted({n for n in symbols.names if n.startswith(b.name)})]
        elif b.name in symbols:
            found.append((b, b.name))
    return found
