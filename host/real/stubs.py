"""The behaviour of each boundary kind of `boundaries.py`, as exit handlers at the functions' entries.

Every stub records a machine event with its arguments, then either returns to
the caller (x0 = its answer, PC = x30) or ends the run with an outcome.
"""
from __future__ import annotations

from typing import Callable, Protocol

from emu.machine import Machine
from emu.memory import AccessType, WalkFault
from emu.outcome import Outcome, OutcomeKind
from kimage.loaded import LoadedKernel

from host.results import Die, Signal

from host.real.boot import TaskContext
from host.real.boundaries import Boundary, Kind, boundaries_in
from host.real.layout import KernelLayout
from host.real.printk import read_cstring, strip_level, vsprintf

CANNOT_RUN = OutcomeKind.CANNOT_RUN
VM_READ, VM_WRITE, VM_EXEC = 0x1, 0x2, 0x4
VM_FAULT_SIGSEGV = 0x2
FAULT_FLAG_WRITE = 0x1
FAULT_FLAG_INSTRUCTION = 0x100


def _ret(machine: Machine, value: int) -> None:
    machine.cpu.set_x(0, value)
    machine.cpu.pc = machine.cpu.x(30)


def _args(machine: Machine, first: int) -> Callable[[int], int]:
    """The n-th variadic argument after `first` named ones: x(first+n) up to x7, then the stack."""
    cpu = machine.cpu

    def arg(n: int) -> int:
        i = first + n
        if i < 8:
            return cpu.x(i)
        return machine.read_u64(cpu.sp + 8 * (i - 8))

    return arg


class StubHost(Protocol):
    """What the stubs need from the host that installs them (`RealHost`); a protocol, so this
    module does not import handler.py, which imports it."""

    machine: Machine
    loaded: LoadedKernel
    layout: KernelLayout
    task_context: TaskContext

    def printed(self, name: str, text: str, level: str | None) -> None: ...

    def queue_signal(self, sig: Signal) -> None: ...

    def regs_user_mode(self, regs_va: int) -> bool: ...

    def die_outcome(self, fallback: str, name: str) -> Outcome: ...


class Stubs:
    """Installs every boundary present in the image on `host.loaded` and implements its kind."""

    def __init__(self, host: StubHost) -> None:
        self.host = host
        self.machine = host.machine
        self.kernel = host.loaded
        self.installed: dict[str, Boundary] = {}
        for boundary, name in boundaries_in(self.kernel.symbols):
            handler = getattr(self, f"_{boundary.kind.name.lower()}")(boundary, name)
            self.kernel.stub_with(name, handler)
            self.installed[name] = boundary

    def _caller(self) -> str:
        return self.kernel.symbolize(self.machine.cpu.x(30))

    # ---------------------------------------------------------------- kinds
    def _console(self, b: Boundary, name: str):
        def printk(m: Machine) -> None:
            fmt = read_cstring(m.read, m.cpu.x(0))
            level, fmt = strip_level(fmt)
            text = fmt if name == "vprintk" else vsprintf(fmt, _args(m, 1), m.read, self.kernel.symbolize)
            text = text.rstrip("\n")
            self.host.printed(name, text, level)
            _ret(m, len(text))

        return printk

    def _returns(self, b: Boundary, name: str):
        def returns(m: Machine) -> None:
            args = tuple(m.cpu.x(i) for i in range(3))
            m.log("stub", f"{name}({', '.join(f'{a:#x}' for a in args)}) from {self._caller()} -> {b.ret:#x}", name=name, args=args)
            _ret(m, b.ret)

        return returns

    def _ubsan(self, b: Boundary, name: str):
        def report(m: Machine) -> None:
            data = m.cpu.x(0)
            where = "?"
            try:  # struct source_location { const char *file_name; u32 line; u32 column; } opens every *_data
                file = read_cstring(m.read, m.read_u64(data))
                line = int.from_bytes(m.read(data + 8, 4), "little")
                where = f"{file}:{line}"
            except Exception:  # noqa: BLE001 - a report we cannot decode is still a report
                pass
            m.log("ubsan", f"UBSAN: {name.removeprefix('__ubsan_handle_')} in {where} (from {self._caller()})", name=name, where=where)
            _ret(m, 0)

        return report

    def _signal(self, b: Boundary, name: str):
        def signal(m: Machine) -> Outcome | None:
            x = [m.cpu.x(i) for i in range(6)]
            if name == "arm64_notify_die":  # (str, regs, signo, sicode, far, err)
                text = read_cstring(m.read, x[0])
                if not self.host.regs_user_mode(x[1]):
                    return self.host.die_outcome(f"Internal error: {text}: {x[5]:016x} [#1]", name)
                sig = Signal(x[2], x[3], x[4], text)
            elif name == "arm64_force_sig_fault":  # (signo, code, far, str)
                sig = Signal(x[0], x[1], x[2], read_cstring(m.read, x[3]) if x[3] else name)
            elif name == "force_sig_fault":  # (sig, code, addr)
                sig = Signal(x[0], x[1], x[2], name)
            else:  # force_sig(sig)
                sig = Signal(x[0], 0, 0, name)
            m.log("signal", f"{name}: signo={sig.signo} code={sig.code} addr={sig.addr:#x} ({sig.why}) from {self._caller()}", signal=sig, name=name)
            self.host.queue_signal(sig)
            _ret(m, 0)
            return None

        return signal

    def _mm(self, b: Boundary, name: str):
        def mm(m: Machine) -> None:
            x = [m.cpu.x(i) for i in range(4)]
            if name == "lock_vma_under_rcu":  # (mm, addr): no per-VMA lock, take the mmap lock path
                ret = 0
            elif name in ("lock_mm_and_find_vma", "find_vma"):  # (mm, addr, ...)
                ret = self._vma_for(x[0], x[1])
            else:  # handle_mm_fault(vma, address, flags, regs)
                ret = self._handle_mm_fault(x[1], x[2])
            m.log("mm", f"{name}({', '.join(hex(v) for v in x[:3])}) from {self._caller()} -> {ret:#x}", name=name, ret=ret, args=tuple(x))
            _ret(m, ret)

        return mm

    def _die(self, b: Boundary, name: str):
        def die(m: Machine) -> Outcome:
            if name == "die":  # die(str, regs, err)
                text = read_cstring(m.read, m.cpu.x(0))
                fallback = f"Internal error: {text}: {m.cpu.x(2):016x} [#1]"
            else:
                fallback = f"{name} called from {self._caller()}"
            return self.host.die_outcome(fallback, name)

        return die

    def _cannot_run(self, b: Boundary, name: str):
        def stop(m: Machine) -> Outcome:
            caller = self._caller()
            m.log("stub", f"{name} called from {caller}: cannot run here ({b.why})", name=name)
            return Outcome(CANNOT_RUN, f"{name} called from {caller}: {b.why}", name)

        return stop

    # ---------------------------------------------------------------- mm answers
    def _vma_for(self, mm: int, addr: int) -> int:
        """A user stage-1 PTE at `addr` stands for a one-page VMA with the PTE's permissions."""
        pte = self.machine.stage1.lookup(addr)
        if pte is None or not pte.perms.user:
            return 0
        lay = self.host.layout
        vma = self.host.task_context.vma
        flags = (VM_READ if pte.perms.read else 0) | (VM_WRITE if pte.perms.write else 0) | (VM_EXEC if pte.perms.exec else 0)
        self.machine.write(vma, bytes(lay.vma_size))
        page = addr & ~0xFFF
        self.machine.write_u64(vma + lay.vma_start, page)
        self.machine.write_u64(vma + lay.vma_end, page + 0x1000)
        self.machine.write_u64(vma + lay.vma_mm, mm)
        self.machine.write_u64(vma + lay.vma_flags, flags)
        return vma

    def _handle_mm_fault(self, addr: int, flags: int) -> int:
        """Present PTE with the permission: nothing to do (0, the access is retried); else SIGSEGV."""
        access = AccessType.WRITE if flags & FAULT_FLAG_WRITE else AccessType.EXEC if flags & FAULT_FLAG_INSTRUCTION else AccessType.READ
        check = self.machine.stage1.check(addr, access, el0=True, pan=False)
        return VM_FAULT_SIGSEGV if isinstance(check, WalkFault) else 0


__all__ = ["Stubs", "CANNOT_RUN", "Die"]
