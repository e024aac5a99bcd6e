"""Checkpoints of a `Machine`: take one after an expensive setup, rewind to it before every run.

What a machine's state is made of, and how each part comes back:
- the CPU (registers, system registers): Unicorn's own context save/restore;
  Unicorn caches the EL in its translation flags, so a rewrite of SCTLR_EL1
  makes it rebuild them (the trick `Cpu.set_pstate` uses);
- physical frames: copy on write. `PhysicalMemory` keeps a frame's contents
  just before its first write since the checkpoint, whether from Python or
  from the CPU (the TLB-fill hook sees every writable entry it hands out, and
  the TLB is flushed at the checkpoint and at every rewind, so no writable
  entry predates the epoch). A rewind writes back only those frames, so it
  costs what the run touched, not the size of memory;
- translated code: Unicorn does not notice frames written from Python, so a
  rewind that puts back a frame ever mapped executable flushes its
  translation cache (an exit's brk put and removed again leaves the frame as
  it was: nothing to put back, nothing to flush);
- the machine's Python state: stage 1 (its record of mappings and its table
  builder's roots and frames; the table descriptors themselves are frames like
  any other, written through `PhysicalMemory.write`), both ends of the frame
  allocator, exit addresses, the EL2 handler and stage-2 callback. Caches
  derived from memory (stage-1 walks, the alignment watch's scans) are dropped.

One checkpoint per machine is live: taking a new one starts a new epoch and
makes the older one unusable (rewinding to it raises).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emu.address_space import MachineError

if TYPE_CHECKING:
    from emu.machine import Machine


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A machine's state at one moment (valid while it is the machine's latest checkpoint)."""

    context: Any  # unicorn.UcContext
    ptes: dict
    tables: dict[int, dict[int, int]]
    exec_frames: frozenset[int]
    builder: Any  # the stage-1 table builder's state(), or None without tables
    next_pfn: int
    top_pfn: int
    exits: dict
    exit_saved: dict[int, bytes]
    el2: Any
    stage2: Any
    vbar: int
    stats: "RewindStats" = field(default_factory=lambda: RewindStats())


@dataclass
class RewindStats:
    """What rewinds put back (for benchmarks and the memory check: nothing here grows per run)."""

    rewinds: int = 0
    frames_restored: int = 0
    code_flushes: int = 0


def take(machine: "Machine") -> Checkpoint:
    if machine._limits is not None:
        raise MachineError("cannot take a checkpoint while the machine runs")
    machine.flush_tlb()  # no writable TLB entry may outlive the start of the epoch
    s1 = machine.stage1
    cp = Checkpoint(
        context=machine.uc.context_save(),
        ptes=dict(s1.ptes),
        tables={level: dict(counts) for level, counts in s1._tables.items()},
        exec_frames=frozenset(s1.exec_frames),
        builder=None if s1.builder is None else s1.builder.state(),
        next_pfn=machine.phys._next,
        top_pfn=machine.phys._top,
        exits=dict(machine._exits),
        exit_saved=dict(machine._exit_saved),
        el2=machine.el2,
        stage2=machine.stage2,
        vbar=machine.cpu.read_sysreg("VBAR_EL1"),
    )
    machine.phys.track_writes()
    machine._checkpoint = cp
    return cp


def rewind(machine: "Machine", cp: Checkpoint) -> None:
    if machine._checkpoint is not cp:
        raise MachineError("this checkpoint is not the machine's latest: a later one replaced it")
    if machine._limits is not None:
        raise MachineError("cannot rewind while the machine runs")
    s1 = machine.stage1
    changed = machine.phys.rewind()
    if changed and any(pfn in s1.exec_frames for pfn in changed):
        machine.uc.ctl_flush_tb()
        machine.alignment.code_changed()
        cp.stats.code_flushes += 1
    machine.uc.context_restore(cp.context)
    # Rebuild Unicorn's cached translation flags (EL, PAN...) from the restored registers.
    cpu = machine.cpu
    cpu.write_sysreg("SCTLR_EL1", cpu.read_sysreg("SCTLR_EL1"))
    if s1.ptes != cp.ptes:  # equal Pte values are frozen: equality is enough here
        s1.ptes.clear()
        s1.ptes.update(cp.ptes)
        for level, counts in cp.tables.items():
            s1._tables[level] = dict(counts)
    if len(s1.exec_frames) != len(cp.exec_frames):
        s1.exec_frames = set(cp.exec_frames)
    if cp.builder is not None:
        s1.builder.restore(cp.builder)
    machine.phys._next, machine.phys._top = cp.next_pfn, cp.top_pfn
    if machine._exits != cp.exits:
        machine._exits = dict(cp.exits)
        machine._exit_saved = dict(cp.exit_saved)
    machine.el2 = cp.el2
    machine.stage2 = cp.stage2
    machine._events = []
    machine.flush_tlb()
    cp.stats.rewinds += 1
    cp.stats.frames_restored += len(changed)
