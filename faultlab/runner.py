"""Run one scenario under one policy: set the lab up, call the routine, judge, compare."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from abi.arch import MASK64
from emu.run_limits import DEFAULT_MAX_TRACE
from kasm import AsmError
from kimage.elf import VmlinuxError
from emu.outcome import RunResult
from hyp.policies import Policy
from guest_asm import SOURCE_DIR
from abi.linux import signal_name

from faultlab.kernel.lab import VmlinuxShelf
from faultlab.kernel.fetch import KernelFetchError
from faultlab.lab import Lab, LabError
from faultlab.oracle import Verdict, judge, snapshot
from faultlab.oracle import GuestIntegrity
from faultlab.scenario import Expectation, Scenario, ScenarioError, TaskKind
from faultlab.snapshot import LabPool


class RunError(ValueError):
    """A scenario that cannot be set up (bad routine file, unknown symbol, bad expression)."""


@dataclass
class RunRecord:
    scenario: Scenario
    policy: str
    verdict: Verdict
    failures: list[str]
    result: RunResult
    lab: Lab = field(repr=False)

    @property
    def judged(self) -> bool:
        """The scenario states an expectation for this policy (else the run is reported as unjudged)."""
        return self.scenario.judged(self.policy)

    @property
    def passed(self) -> bool:
        """Judged and as expected: an unjudged run never passes."""
        return self.judged and not self.failures

    @property
    def unexpected(self) -> bool:
        return bool(self.failures)

    def expected_summary(self) -> dict:
        exp = self.scenario.expectation(self.policy)
        out = {k: str(getattr(exp, k)) if k == "outcome" else getattr(exp, k) for k in ("outcome", "x0", "guest", "signal", "message", "confidentiality") if getattr(exp, k) is not None}
        if exp.regs:
            out["regs"] = dict(exp.regs)
        return out

    def as_dict(self) -> dict:
        """One JSON record: the verdict's structured fields, what was expected and how it compared."""
        return {
            "scenario": self.scenario.name,
            "policy": self.policy,
            **self.verdict.as_dict(),
            "expected": self.expected_summary(),
            "judged": self.judged,
            "passed": self.passed,
            "failures": self.failures,
        }


_TERM = re.compile(r"\s*([+-]?)\s*([A-Za-z_]\w*(?:\.(?:user|alias))?|0[xX][0-9a-fA-F]+|\d+)\s*")


def evaluate(expr: str | int, lab: Lab, names: Mapping[str, int] | None = None) -> int:
    """The one address-expression parser (scenario args and memory, `faultlab kernel call`'s ADDR arguments).

    Terms joined by + and -: integers, `buf` (a buffer's linear-map address),
    `buf.user`, `buf.alias`, extra `names` (e.g. the kernel CLI's `ubuf`),
    and symbols (assembled snippets, then the lab's vmlinux).
    """
    if isinstance(expr, int):
        return _u64(expr, repr(expr))
    pos, total = 0, 0
    text = expr.strip()
    if not text:
        raise RunError("empty argument expression")
    while pos < len(text):
        m = _TERM.match(text, pos)
        if not m or (pos and not m.group(1)):
            raise RunError(f"not an integer or address expression: {expr!r} (at {text[pos:]!r})")
        sign = -1 if m.group(1) == "-" else 1
        total += sign * _term(m.group(2), lab, expr, names or {})
        pos = m.end()
    return total & MASK64


def _u64(value: int, expr: str) -> int:
    """An integer as a 64-bit register holds it; a value no register can hold is bad input, not truncated."""
    if not -(1 << 63) <= value <= MASK64:
        raise RunError(f"{value:#x} does not fit in 64 bits (in {expr!r})")
    return value & MASK64


def _term(term: str, lab: Lab, expr: str, names: Mapping[str, int]) -> int:
    if term[0].isdigit():
        try:
            value = int(term, 0)
        except ValueError:  # "0056": Python's int(x, 0) refuses leading zeros, as it refuses "12ab"
            raise RunError(f"bad number '{term}' in {expr!r} (decimal without leading zeros, or 0x/0o/0b)") from None
        return _u64(value, expr)
    if term in names:
        return names[term]
    name, _, view = term.partition(".")
    if name in lab.regions:
        region = lab.regions[name]
        va = {"": region.va, "user": region.user_va, "alias": region.alias_va}[view]
        if va is None:
            raise RunError(f"buffer '{name}' has no {view} mapping (set {view} = true) in {expr!r}")
        return va
    if not view:
        try:
            return lab.symbol(name)
        except LabError:
            pass
    raise RunError(f"unknown name '{term}' in {expr!r} (buffers: {', '.join([*lab.regions, *names]) or 'none'})")


def routine_path(scenario: Scenario, name: str) -> Path:
    """A routine file: relative to the scenario file, else from the guest_asm library."""
    for candidate in (Path(scenario.path).parent / name, SOURCE_DIR / name):
        if candidate.is_file():
            return candidate
    raise RunError(f"routine file '{name}' not found next to {scenario.path} or in the guest_asm library")


def setup(scenario: Scenario, policy: "str | Policy", *, kernels: VmlinuxShelf | None = None, own: bool = False) -> Lab:
    """The scenario's lab under `policy`: buffers, the routine, then the guest's pages.

    A vmlinux routine runs in a `Lab.with_vmlinux` of the named kernel (a
    suite's cached download or a path, relative to the scenario file);
    `kernels` lets a caller that runs many scenarios open each vmlinux once
    and boot it once per policy (later labs are that boot restored). `own`:
    a lab of its own, booted afresh (one that will be snapshotted itself).
    """
    r = scenario.routine
    lab = _kernel_lab(scenario, policy, kernels or VmlinuxShelf(), own) if r.kind == "vmlinux" else Lab(policy)
    # The task context, for either host: the model's fault.c reads Task.mm; the real host's `current`
    # gets an mm_struct (host/real/boot.py TaskContext follows Task.mm) whose VMA lookups our stubs
    # answer from the user stage-1 mappings of the buffers.
    lab.kernel.task.mm = r.task is TaskKind.USER
    for b in scenario.buffers:
        region = lab.alloc(b.name, b.pages, user=b.user, alias=b.alias)
        if b.fill:
            lab.write(region.va + b.at, b.fill)
    try:
        if r.kind == "file":
            path = routine_path(scenario, r.source)
            (lab.load_user_asm if r.el == 0 else lab.load_asm)(path)
        elif r.kind == "asm":
            (lab.load_user_asm if r.el == 0 else lab.load_asm)(f"{scenario.path}[routine.asm]", text=r.source)
    except AsmError as exc:
        if r.kind == "asm":  # point at the scenario file's own line
            line = r.line + exc.line - 1 if r.block else r.line
            raise RunError(f"{scenario.path}:{line}: routine.asm: {exc.message}") from None
        raise RunError(str(exc)) from None
    # Guest pages last: the host prepared its buffers, then the pages went to the guest.
    for b in scenario.buffers:
        region = lab.regions[b.name]
        for i in b.protect:
            lab.donate(region.pfns[i])
        for i in b.share:
            lab.donate(region.pfns[i], share_back=True)
    return lab


def _kernel_lab(scenario: Scenario, policy: "str | Policy", kernels: VmlinuxShelf, own: bool) -> Lab:
    r = scenario.routine
    if r.el != 1:
        raise RunError(f"{scenario.path}: routine.el: a vmlinux routine runs at EL1, not EL{r.el}")
    try:
        return (kernels.boot if own else kernels.lab)(r.source, policy, relative_to=Path(scenario.path).parent)
    except (KernelFetchError, VmlinuxError) as exc:
        raise RunError(str(exc)) from None


def vmlinux_missing(scenario: Scenario, kernels: VmlinuxShelf | None = None) -> str | None:
    """Why the scenario's vmlinux cannot be found (one line), or None when it can (or none is named)."""
    if scenario.routine.kind != "vmlinux":
        return None
    return (kernels or VmlinuxShelf()).missing(scenario.routine.source, Path(scenario.path).parent)


def run(
    scenario: Scenario,
    policy: "str | Policy",
    *,
    trace: bool = False,
    max_trace: int = DEFAULT_MAX_TRACE,
    kernels: VmlinuxShelf | None = None,
    before_call: Callable[[Lab, int], object] | None = None,
    labs: LabPool | None = None,
) -> RunRecord:
    """`policy`: a name, or a Policy object (its name is the key of the scenario's expectations).

    `max_trace` caps a trace (the machine says `trace-truncated` past it): a runaway loop under
    --trace must not print a million lines. `before_call(lab, routine address)` runs with the
    lab set up, just before the call (`faultlab run --gdb` attaches its debugger there).
    `labs`: set each (scenario, policy) up once and restore that lab for every later run
    (faultlab/snapshot.py): the record's lab is then valid until the next run of the same pair.
    """
    name = policy if isinstance(policy, str) else policy.name
    try:
        if labs is None:
            lab = setup(scenario, policy, kernels=kernels)
        else:
            key = (id(scenario), policy if isinstance(policy, str) else id(policy), id(kernels))
            lab = labs.get(key, lambda: setup(scenario, policy, kernels=kernels, own=True), refs=(scenario, policy, kernels))
        args = [evaluate(a, lab) for a in scenario.routine.args]
        lab.symbol(scenario.routine.symbol)
    except (LabError, AsmError) as exc:
        raise RunError(str(exc)) from None
    before = snapshot(lab)
    r = scenario.routine
    if before_call is not None:
        before_call(lab, lab.symbol(r.symbol))
    result = lab.call(r.symbol, *args, el=r.el, pan=r.pan, budget=r.budget, trace=trace, max_trace=max_trace)
    verdict = judge(lab, result, before)
    failures = compare(scenario.expectation(name), verdict, lab, scenario.path)
    return RunRecord(scenario, name, verdict, failures, result, lab)


def compare(exp: Expectation, v: Verdict, lab: Lab, path: str = "<scenario>") -> list[str]:
    """How the verdict differs from the expectation, one line each (empty: as expected).

    An expectation that cannot be evaluated (a memory address that does not
    resolve) is the scenario's error, raised as ScenarioError, not a failure.
    """
    failures = []
    if exp.outcome is not None and exp.outcome != v.outcome:
        failures.append(f"outcome: expected {exp.outcome}, got {v.outcome} ({v.detail})")
    if exp.x0 is not None and v.x0 != exp.x0:
        failures.append(f"x0: expected {exp.x0:#x}, got {'none (did not return)' if v.x0 is None else hex(v.x0)}")
    for reg, want in exp.regs.items():
        got = v.regs.get(reg)
        if got != want & MASK64:
            failures.append(f"{reg}: expected {want & MASK64:#x}, got {got:#x}")
    if exp.guest is not None and v.guest is not GuestIntegrity(exp.guest):
        failures.append(f"guest: expected {exp.guest}, got {v.guest_text()}")
    if exp.signal is not None:
        names = [signal_name(s[0]) for s in v.signals]
        if exp.signal == "none" and names:
            failures.append(f"signal: expected none, got {', '.join(names)}")
        elif exp.signal != "none" and exp.signal not in names:
            failures.append(f"signal: expected {exp.signal}, got {', '.join(names) or 'none'}")
    if exp.message is not None and exp.message not in v.detail:
        failures.append(f"message: expected to contain {exp.message!r}, got {v.detail!r}")
    if exp.confidentiality is not None and (exp.confidentiality == "leak") != v.leaked:
        failures.append(f"confidentiality: expected {exp.confidentiality}, got {v.confidentiality_text()}")
    for m in exp.memory or ():
        try:
            got = lab.read(evaluate(m.at, lab), len(m.data))
        except Exception as exc:  # an unmapped address in an expectation is the scenario's error
            raise ScenarioError(path, m.line, "memory", f"at {m.at!r}: {exc}") from None
        if got != m.data:
            failures.append(f"memory at {m.at}: expected {m.data.hex()}, got {got.hex()}")
    return failures


__all__ = ["RunError", "RunRecord", "ScenarioError", "evaluate", "run", "setup", "vmlinux_missing"]
