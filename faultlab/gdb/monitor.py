"""`monitor` commands: what gdb cannot see by itself - the run's events and the state at EL2.

gdb debugs the host at EL1/EL0; the hypervisor that decides the fate of a
faulting access lives in Python and has no registers gdb could read. These
commands show it: the events so far (aborts, EL2's decision, injections,
fixups, erets, hypercalls), the last stage-2 abort as EL2 saw it (ESR_EL2, FAR,
HPFAR), who owns the frame behind an address, a syndrome decoded field by
field, and which events stop the machine.
"""
from __future__ import annotations

import re
import shlex
from typing import Callable

from abi.arch import MASK64
from emu.address_space import MachineError
from emu.outcome import Event

from faultlab.cli.explain import explain
from faultlab.gdb.control import Control, StopOn
from faultlab.gdb.registers import REGISTERS
from faultlab.lab import Lab
from faultlab.runner import RunError, evaluate

HOUSEKEEPING = frozenset({"idmap", "static-key", "alternatives"})  # hidden unless `events all`


def housekeeping(events: list[Event], i: int) -> bool:
    """Lazy stage-2 idmaps (the abort and EL2's idmap that answered it) and setup: not the run's news."""
    e = events[i]
    return e.kind in HOUSEKEEPING or (e.kind == "abort" and i + 1 < len(events) and events[i + 1].kind == "idmap")

HELP = """\
faultlab monitor commands:
  events [all|N]        the run's events so far (the last N; `all` includes idmap housekeeping)
  el2                   EL2's view: the policy, the last stage-2 abort (ESR_EL2, FAR, HPFAR), the last injection
  el1                   EL1's exception registers now (ESR_EL1, FAR_EL1, ELR_EL1, SPSR_EL1, VBAR_EL1), EL and PAN
  owner ADDR            the frame behind a virtual address: stage-1 mapping, host/hyp/guest state, host stage 2
  explain ESR [2]       a syndrome field by field (2: as ESR_EL2)
  guest                 the protected guest's pages and their states
  stop-on [KIND...]     show or set the events that stop the machine: {kinds}, all, none
ADDR: a number, a register ($x1, pc), `fault` (the last abort's FAR), a buffer (buf, buf.user, buf+4096) or a symbol."""


class Monitor:
    def __init__(self, lab: Lab, control: Control, symbolize: Callable[[int], str]) -> None:
        self.lab = lab
        self.control = control
        self.symbolize = symbolize

    def __call__(self, line: str) -> str:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return f"monitor: {exc}\n"
        if not words or words[0] == "help":
            return HELP.format(kinds=", ".join(k.value for k in StopOn)) + "\n"
        command, args = words[0], words[1:]
        handler = {
            "events": self.events,
            "el2": self.el2,
            "el1": self.el1,
            "owner": self.owner,
            "ownership": self.owner,
            "explain": self.explain,
            "guest": self.guest,
            "stop-on": self.stop_on,
        }.get(command)
        if handler is None:
            return f"monitor: unknown command {command!r} (monitor help)\n"
        try:
            return handler(args).rstrip("\n") + "\n"
        except (ValueError, RunError, MachineError) as exc:
            return f"monitor {command}: {exc}\n"

    # -------------------------------------------------------------- events
    def _event_line(self, event: Event) -> str:
        where = self.symbolize(event.pc)
        return f"{event}" + (f" <{where}>" if where else "")

    def events(self, args: list[str]) -> str:
        every = "all" in args
        numbers = [a for a in args if a != "all"]
        events = self.lab.machine.events
        shown = [e for i, e in enumerate(events) if every or not housekeeping(events, i)]
        if numbers:
            shown = shown[-int(numbers[0], 0) :] if int(numbers[0], 0) > 0 else []
        if not shown:
            return "no events yet"
        return "\n".join(self._event_line(e) for e in shown)

    # ----------------------------------------------------------------- EL2
    def el2(self, _args: list[str]) -> str:
        events = self.lab.machine.events
        out = [f"policy {self.lab.hyp.policy.name}: {self.lab.hyp.policy.summary}"]
        aborts = [e for e in events if e.kind == "abort" and e.data.get("abort") is not None and e.data["abort"].stage == 2]
        if aborts:
            a = aborts[-1].data["abort"]
            out.append(f"last stage-2 abort [{aborts[-1].seq}] at pc={a.pc:#x} <{self.symbolize(a.pc)}>: {a.summary()}")
            out.append(f"  ESR_EL2={a.esr.value:#x} FAR_EL2={a.far:#x} HPFAR_EL2={a.hpfar or 0:#x} IPA={a.ipa or 0:#x}")
        else:
            out.append("no stage-2 abort yet")
        decided = [e for e in events if e.kind in ("protected-access", "decision", "reclaim", "inject", "hypercall")]
        for e in decided[-4:]:
            out.append(f"[{e.seq}] {e.kind}: {e.message}")
        return "\n".join(out)

    def el1(self, _args: list[str]) -> str:
        cpu = self.lab.machine.cpu
        regs = " ".join(f"{n}={cpu.read_sysreg(n):#x}" for n in ("ESR_EL1", "FAR_EL1", "ELR_EL1", "SPSR_EL1", "VBAR_EL1"))
        return f"EL{cpu.el} PAN={int(cpu.pan)} pc={cpu.pc:#x} <{self.symbolize(cpu.pc)}>\n{regs}"

    def explain(self, args: list[str]) -> str:
        if not args:
            raise ValueError("explain ESR [1|2]")
        el = int(args[1]) if len(args) > 1 else 1
        if el not in (1, 2):
            raise ValueError("the EL is 1 or 2")
        return explain(self._address(args[0]), el=el)

    # ----------------------------------------------------------- ownership
    def _address(self, text: str) -> int:
        name = text.lstrip("$").lower()
        for reg in REGISTERS:
            if reg.name == name:
                return reg.read(self.lab.machine.cpu) & MASK64
        if name == "fault":
            events = self.lab.machine.events
            aborts = [e.data["abort"] for i, e in enumerate(events) if e.kind == "abort" and "abort" in e.data and not housekeeping(events, i)]
            if not aborts:
                raise ValueError("no abort yet")
            return aborts[-1].far
        if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", text):
            return int(text, 0) & MASK64
        return evaluate(text, self.lab)

    def owner(self, args: list[str]) -> str:
        if len(args) != 1:
            raise ValueError("owner ADDR")
        va = self._address(args[0])
        machine, hyp = self.lab.machine, self.lab.hyp
        pte = machine.stage1.lookup(va)
        if pte is None:
            return f"VA {va:#x}: not mapped at stage 1"
        pfn = pte.pfn
        pa = (pfn << 12) | (va & 0xFFF)
        out = [f"VA {va:#x} -> PA {pa:#x} (pfn {pfn:#x}), stage 1 {pte.perms}"]
        own = hyp.ownership
        owner = own.owner(pfn)
        out.append(f"  owner {owner if owner is not None else 'none (not memory)'}; host {own.host_state(pfn).name}, hyp {own.hyp_state(pfn).name}")
        annotation = own.annotation(pfn)
        if annotation is not None:
            handle, gfn = annotation
            out.append(f"  guest {handle:#x} gfn {gfn:#x}: {own.guest_state(handle, gfn).name}")
        out.append(f"  host stage 2: {'mapped (identity)' if pfn in hyp.stage2.mapped else 'not mapped: a host access traps to EL2'}")
        return "\n".join(out)

    def guest(self, _args: list[str]) -> str:
        if not self.lab.guest_pages:
            return "no guest pages"
        own = self.lab.hyp.ownership
        out = []
        for page in self.lab.guest_pages:
            state = own.guest_state(self.lab.guest, page.gfn)
            shared = ", shared back" if page.shared_back else ""
            out.append(f"gfn {page.gfn:#x} pfn {page.pfn:#x}: {state.name if state is not None else '?'}{shared}; host {own.host_state(page.pfn).name}")
        return "\n".join(out)

    # -------------------------------------------------------------- stops
    def stop_on(self, args: list[str]) -> str:
        if args:
            kinds: set[StopOn] = set()
            for word in (w for a in args for w in a.split(",") if w):
                if word == "all":
                    kinds |= set(StopOn)
                elif word != "none":
                    try:
                        kinds.add(StopOn(word))
                    except ValueError:
                        raise ValueError(f"unknown event kind {word!r} (known: {', '.join(k.value for k in StopOn)}, all, none)") from None
            self.control.stop_on = kinds
        chosen = [k.value for k in StopOn if k in self.control.stop_on]
        return f"stop on: {', '.join(chosen) or 'none'} (a run that does not return always stops at its end)"
