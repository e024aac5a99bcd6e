"""Scenario files (TOML): parsing and validation, with file:line:field errors.

The format is documented in docs/scenarios.md. tomllib reports syntax errors
with a line number but forgets positions once parsed, so schema errors are
located by scanning the source for the table and key they concern.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from abi.linux import signal_number
from emu.outcome import OutcomeKind
from hyp.policies import known as known_policies

from faultlab.scenario_model import (  # noqa: F401 (the model is importable from here too)
    Buffer,
    EXPECT_KEYS,
    Expectation,
    GUEST_STATES,
    MAX_SCENARIO_BYTES,
    MemoryExpectation,
    OUTCOMES,
    ROUTINE_KINDS,
    Routine,
    Scenario,
    ScenarioError,
    TaskKind,
    check_u64,
)


def _bad_number(expr: str) -> str | None:
    """The first numeric literal of an address expression that Python's int(x, 0) refuses ("0056", "12ab"), if any."""
    for token in re.findall(r"(?<![\w.])\d\w*", expr):
        try:
            int(token, 0)
        except ValueError:
            return token
    return None

class _Locator:
    """Finds the line of `[table]` / `key =` in TOML source, for error messages."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def line(self, table: str | None, key: str | None = None, index: int = 0) -> int:
        current: str | None = None
        seen = -1
        header_line = 1
        for n, raw in enumerate(self.lines, start=1):
            s = raw.strip()
            m = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", s)
            if m:
                current = m.group(1).replace('"', "")
                if current == table:
                    seen += 1
                    header_line = n
                continue
            if (current or None) == table and (table is None or seen == index):
                if key is None:
                    return header_line
                if re.match(rf"^\"?{re.escape(key)}\"?\s*=", s):
                    return n
        return header_line if table else 1


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file: too large, not UTF-8 or not TOML is a ScenarioError naming the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SCENARIO_BYTES + 1)  # bounded: /dev/zero or a disk image must not fill memory
    except OSError as exc:
        raise ScenarioError(str(path), 0, "file", exc.strerror or str(exc)) from None
    if len(raw) > MAX_SCENARIO_BYTES:
        raise ScenarioError(str(path), 0, "file", f"larger than {MAX_SCENARIO_BYTES} bytes: not a scenario file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ScenarioError(str(path), line, "file", f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})") from None
    return parse(text, str(path))


def parse(text: str, filename: str = "<scenario>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ScenarioError(filename, int(m.group(1)) if m else 1, "syntax", str(exc)) from None
    return _Validator(filename, _Locator(text)).scenario(data)


class _Validator:
    def __init__(self, filename: str, loc: _Locator) -> None:
        self.file = filename
        self.loc = loc

    def fail(self, table: str | None, key: str | None, message: str, index: int = 0) -> ScenarioError:
        name = ".".join(x for x in (table, key) if x)
        return ScenarioError(self.file, self.loc.line(table, key, index), name or "scenario", message)

    def typed(self, table: dict, tname: str | None, key: str, types, default=None, required=False, index: int = 0):
        if key not in table:
            if required:
                raise self.fail(tname, None, f"missing required field '{key}'", index)
            return default
        value = table[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.fail(tname, key, f"expected {_tname(types)}, got a boolean", index)
        if not isinstance(value, types):
            raise self.fail(tname, key, f"expected {_tname(types)}, got {type(value).__name__}", index)
        return value

    def unknown(self, table: dict, tname: str | None, allowed: set[str], index: int = 0) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(tname, key, f"unknown field (allowed: {', '.join(sorted(allowed))})", index)

    def scenario(self, data: dict) -> Scenario:
        self.unknown(data, None, {"name", "description", "policies", "routine", "buffer", "expect"})
        name = self.typed(data, None, "name", str, required=True)
        description = self.typed(data, None, "description", str, "")
        policies = self.typed(data, None, "policies", list, list(known_policies()))
        if not policies:
            raise self.fail(None, "policies", "empty: name at least one policy, or leave the field out for all")
        for p in policies:
            if p not in known_policies():
                raise self.fail(None, "policies", f"unknown policy {p!r} (known: {', '.join(known_policies())})")
        routine = self.routine(self.typed(data, None, "routine", dict, required=True))
        raw_buffers = self.typed(data, None, "buffer", list, [])
        buffers = tuple(self.buffer(b, i) for i, b in enumerate(raw_buffers))
        if "task" not in data["routine"]:
            routine = dataclasses.replace(routine, task=TaskKind.default_for(routine.el, buffers))
        names = [b.name for b in buffers]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise self.fail("buffer", "name", f"buffer '{n}' defined twice", i)
        expect = self.typed(data, None, "expect", dict, {})
        # [expect.<policy>] tables are the dict values that are not expectation keys (regs is a table too).
        per_policy = {k: v for k, v in expect.items() if isinstance(v, dict) and k not in EXPECT_KEYS}
        common = {k: v for k, v in expect.items() if k not in per_policy}
        for p in per_policy:
            if p not in known_policies():
                raise self.fail(f"expect.{p}", None, f"unknown policy {p!r} (known: {', '.join(known_policies())})")
        kernels = self.kernels(data["routine"])
        # [expect.<policy>.<kernel>]: the dict values of a policy table that are not expectation keys.
        by_kernel: dict[tuple[str, str], Expectation] = {}
        for p, table in per_policy.items():
            for k in [k for k, v in table.items() if isinstance(v, dict) and k not in EXPECT_KEYS]:
                if k not in kernels:
                    raise self.fail(f"expect.{p}.{k}", None, f"{k!r} is not one of the scenario's kernels (vmlinux = {list(kernels)})")
                by_kernel[(p, k)] = self.expectation(table.pop(k), f"expect.{p}.{k}", names)
        return Scenario(
            name=name,
            description=description,
            path=self.file,
            policies=tuple(policies),
            routine=routine,
            buffers=buffers,
            expect_all=self.expectation(common, "expect", names),
            expect_by_policy={p: self.expectation(v, f"expect.{p}", names) for p, v in per_policy.items()},
            kernels=kernels,
            expect_by_kernel=by_kernel,
        )

    def kernels(self, t: dict) -> tuple[str, ...]:
        """`vmlinux = ["bookworm", "sid"]`: the kernels a scenario runs on (empty for one string or no vmlinux)."""
        value = t.get("vmlinux")
        if not isinstance(value, list):
            return ()
        if not value or not all(isinstance(k, str) and k for k in value) or len(set(value)) != len(value):
            raise self.fail("routine", "vmlinux", "a suite or path, or a list of distinct ones")
        return tuple(value)

    def routine(self, t: dict) -> Routine:
        self.unknown(t, "routine", {*ROUTINE_KINDS, "symbol", "el", "args", "pan", "budget", "task"})
        kinds = [k for k in ROUTINE_KINDS if k in t]
        if len(kinds) != 1:
            raise self.fail("routine", None, f"give exactly one of {', '.join(ROUTINE_KINDS)}")
        kind = kinds[0]
        el = self.typed(t, "routine", "el", int, 1)
        if el not in (0, 1):
            raise self.fail("routine", "el", f"EL must be 0 or 1, not {el}")
        args = self.typed(t, "routine", "args", list, [])
        if len(args) > 8:
            raise self.fail("routine", "args", "at most 8 register arguments")
        for a in args:
            if isinstance(a, bool) or not isinstance(a, (int, str)):
                raise self.fail("routine", "args", f"an argument is an integer or an expression string, not {a!r}")
            if isinstance(a, int) and check_u64(a) is None:
                raise self.fail("routine", "args", f"{a:#x} does not fit in 64 bits")
            if isinstance(a, str) and (bad := _bad_number(a)) is not None:
                raise self.fail("routine", "args", f"bad number {bad!r} in {a!r} (decimal without leading zeros, or 0x/0o/0b)")
        budget = self.typed(t, "routine", "budget", int, 1_000_000)
        if budget <= 0:
            raise self.fail("routine", "budget", "must be positive")
        task = self.typed(t, "routine", "task", str, TaskKind.KTHREAD.value)  # absent: scenario() derives it
        if task not in TaskKind.__members__.values():
            raise self.fail("routine", "task", f"unknown task {task!r} (user or kthread)")
        if el == 0 and "task" in t and task != TaskKind.USER:
            raise self.fail("routine", "task", "EL0 code always runs in a user task")
        return Routine(
            kind=kind,
            source=self._source(t, kind),
            symbol=self.typed(t, "routine", "symbol", str, required=True),
            el=el,
            args=tuple(args),
            pan=self.typed(t, "routine", "pan", bool, True),
            budget=budget,
            task=TaskKind(task),
            line=self.loc.line("routine", kind) + self.is_block("routine", kind),
            block=bool(self.is_block("routine", kind)),
        )

    def _source(self, t: dict, kind: str) -> str:
        """The routine's file, text or vmlinux; of a vmlinux list the first (`kernels` checks the list)."""
        if kind == "vmlinux" and isinstance(t[kind], list):
            return t[kind][0] if t[kind] and isinstance(t[kind][0], str) else ""
        return self.typed(t, "routine", kind, str)

    def is_block(self, table: str, key: str) -> int:
        """1 when the value starts a multi-line string block (its text begins on the next line)."""
        n = self.loc.line(table, key)
        text = self.loc.lines[n - 1] if 0 < n <= len(self.loc.lines) else ""
        return int(text.rstrip().endswith(('"""', "'''")))

    def buffer(self, t: dict, i: int) -> Buffer:
        if not isinstance(t, dict):
            raise self.fail("buffer", None, "each [[buffer]] is a table", i)
        self.unknown(t, "buffer", {"name", "pages", "user", "alias", "fill", "text", "at", "protect", "share"}, i)
        name = self.typed(t, "buffer", "name", str, required=True, index=i)
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise self.fail("buffer", "name", f"{name!r} is not an identifier", i)
        pages = self.typed(t, "buffer", "pages", int, 1, index=i)
        if not 1 <= pages <= 256:
            raise self.fail("buffer", "pages", "between 1 and 256 pages", i)
        if "fill" in t and "text" in t:
            raise self.fail("buffer", "text", "give fill or text, not both", i)
        fill = b""
        if "text" in t:
            fill = self.typed(t, "buffer", "text", str, index=i).encode()
        elif "fill" in t:
            raw = self.typed(t, "buffer", "fill", str, index=i)
            try:
                fill = bytes.fromhex(raw.removeprefix("hex:").replace(" ", ""))
            except ValueError:
                raise self.fail("buffer", "fill", f"not hex bytes: {raw!r}", i) from None
        at = self.typed(t, "buffer", "at", int, 0, index=i)
        if at < 0 or at + len(fill) > pages * 4096:
            raise self.fail("buffer", "at", f"contents at {at} ({len(fill)} bytes) do not fit in {pages} page(s)", i)
        pages_list = {}
        for key in ("protect", "share"):
            idx = self.typed(t, "buffer", key, list, [], index=i)
            for p in idx:
                if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < pages:
                    raise self.fail("buffer", key, f"page index {p!r} is not in 0..{pages - 1}", i)
            pages_list[key] = tuple(idx)
        if set(pages_list["protect"]) & set(pages_list["share"]):
            raise self.fail("buffer", "share", "a page cannot be both protected and shared back", i)
        return Buffer(name, pages, self.typed(t, "buffer", "user", bool, False, index=i), self.typed(t, "buffer", "alias", bool, False, index=i), fill, at, pages_list["protect"], pages_list["share"])

    def expectation(self, t: dict, tname: str, buffers: list[str]) -> Expectation:
        self.unknown(t, tname, set(EXPECT_KEYS))
        outcome = self.typed(t, tname, "outcome", str)
        if outcome is not None and outcome not in OUTCOMES:
            raise self.fail(tname, "outcome", f"unknown outcome {outcome!r} (known: {', '.join(OUTCOMES)})")
        signal = self.typed(t, tname, "signal", str)
        if signal is not None and signal != "none" and signal_number(signal) is None:
            raise self.fail(tname, "signal", f"unknown signal {signal!r} (a name such as SIGSEGV, or none)")
        guest = self.typed(t, tname, "guest", str)
        if guest is not None and guest not in GUEST_STATES:
            raise self.fail(tname, "guest", f"unknown guest state {guest!r} (known: {', '.join(GUEST_STATES)})")
        regs = self.typed(t, tname, "regs", dict, {})
        for r, v in regs.items():
            if not re.fullmatch(r"x([0-9]|[12][0-9]|30)", r) or isinstance(v, bool) or not isinstance(v, int):
                raise self.fail(tname, "regs", f"{r} = {v!r}: expected x0..x30 = integer")
            if check_u64(v) is None:
                raise self.fail(tname, "regs", f"{r} = {v:#x} does not fit in 64 bits")
        memory: list[MemoryExpectation] = []
        memory_line = self.loc.line(tname, "memory")
        memory_given = "memory" in t
        for m in self.typed(t, tname, "memory", list, []):
            if not isinstance(m, dict) or set(m) != {"at", "hex"} or not all(isinstance(m[k], str) for k in m):
                raise self.fail(tname, "memory", "each entry is { at = \"buf + N\", hex = \"...\" }")
            try:
                memory.append(MemoryExpectation(m["at"], bytes.fromhex(m["hex"].replace(" ", "")), memory_line))
            except ValueError:
                raise self.fail(tname, "memory", f"not hex bytes: {m['hex']!r}") from None
            if (bad := _bad_number(m["at"])) is not None:
                raise self.fail(tname, "memory", f"bad number {bad!r} in {m['at']!r} (decimal without leading zeros, or 0x/0o/0b)")
            for name in re.findall(r"(?<![\w.])[A-Za-z_]\w*", m["at"]):  # memory is read in the scenario's buffers
                if name not in buffers:
                    raise self.fail(tname, "memory", f"{m['at']!r} names {name!r}, which is not a buffer (buffers: {', '.join(buffers) or 'none'})")
        conf = self.typed(t, tname, "confidentiality", str)
        if conf not in (None, "ok", "leak"):
            raise self.fail(tname, "confidentiality", "ok or leak")
        x0 = self.typed(t, tname, "x0", int)
        if x0 is not None and check_u64(x0) is None:
            raise self.fail(tname, "x0", f"{x0:#x} does not fit in 64 bits")
        return Expectation(
            None if outcome is None else OutcomeKind(outcome), None if x0 is None else x0 & ((1 << 64) - 1), regs, guest, signal, self.typed(t, tname, "message", str), tuple(memory) if memory_given else None, conf
        )


def _tname(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {str: "a string", int: "an integer", bool: "true/false", list: "a list", dict: "a table"}
    return " or ".join(names.get(t, t.__name__) for t in types)
