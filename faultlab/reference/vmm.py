"""Reference models of the EL0 VMM (guest_asm/vmm.S): skip and count the accesses that fault.

Its SIGSEGV handler looks the faulting PC up in the vmm_fixups table and
resumes after the access, recording (fault count, last si_addr); so a
model walks the same 8-byte-then-byte steps and carries on past a fault.
"""
from __future__ import annotations

from faultlab.reference.model import AccessFault, Expected, RefCase, RefMemory, simulate
from faultlab.reference.policy import Access


def vmm_pattern(offset: int) -> int:
    """The byte vmm_write stores at guest_mem[offset]."""
    return 0x40 | ((offset >> 3) & 0x3F)


def _vmm_steps(length: int) -> list[tuple[int, int]]:
    steps = [(pos, 8) for pos in range(0, length - length % 8, 8)]
    return steps + [(pos, 1) for pos in range(length - length % 8, length)]


def vmm_main(case: RefCase) -> Expected:
    """Bytes read and faults; out[] gets every access that did not fault; the record sits at out - 16."""
    guest, length, out = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        mem.write(out - 16, bytes(16), Access.USER)
        done = faults = 0
        for pos, size in _vmm_steps(length):
            try:
                data = mem.read(guest + pos, size, Access.USER)
            except AccessFault as fault:
                faults += 1
                mem.write(out - 16, faults.to_bytes(8, "little") + fault.addr.to_bytes(8, "little"), Access.USER)
                continue
            mem.write(out + pos, data, Access.USER)
            done += size
        return {"x0": done, "x1": faults}

    return simulate(mem, body)


def vmm_write(case: RefCase) -> Expected:
    """Bytes written and faults; the pattern lands on every store that did not fault; the record at rec."""
    guest, length, rec = case.args
    mem = RefMemory(case)

    def body() -> dict[str, int]:
        mem.write(rec, bytes(16), Access.USER)
        done = faults = 0
        for pos, size in _vmm_steps(length):
            data = bytes([vmm_pattern(pos)] * size)
            try:
                mem.write(guest + pos, data, Access.USER)
            except AccessFault as fault:
                faults += 1
                mem.write(rec, faults.to_bytes(8, "little") + fault.addr.to_bytes(8, "little"), Access.USER)
                continue
            done += size
        return {"x0": done, "x1": faults}

    return simulate(mem, body)
