"""What `faultlab run --gdb` and `faultlab kernel call --gdb` call: listen, attach at the call, finish.

The listening socket opens when the command starts (a bad address or a busy
port is a one-line error before anything runs); symbol files are written when
the lab is ready, and gdb is awaited at the routine's entry.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TextIO

from emu.outcome import RunResult

from faultlab.gdb.session import Address, GdbSession, GdbUsageError, Listener
from faultlab.gdb.symbols import symbol_files, symbolizer
from faultlab.lab import Lab


def connect_command(files: list[Path], address: Address) -> str:
    """The gdb-multiarch command line that loads `files` and connects."""
    words = ["gdb-multiarch", "-q"]
    for i, path in enumerate(files):
        words += ["-ex", f"{'file' if i == 0 else 'add-symbol-file'} {path}"]
    words += ["-ex", f"target remote {address}"]
    return " ".join(shlex.quote(w) for w in words)


class GdbAttach:
    """One `--gdb [HOST:]PORT` of a command: at most one run is debugged."""

    def __init__(self, spec: str, *, name: str, out: TextIO | None = None, timeout: float | None = None, symbols_dir: Path | None = None) -> None:
        self.listener = Listener(Address.parse(spec))
        self.name = name
        self.symbols_dir = symbols_dir
        self.out = out if out is not None else sys.stderr  # looked up now: tests capture the current stderr
        self.timeout = timeout
        self.session: GdbSession | None = None
        self.files: list[Path] = []

    def attach(self, lab: Lab, entry: int) -> GdbSession:
        """Called with the lab ready and the routine's address: write symbols, say how to connect, attach."""
        self.files = symbol_files(lab, self.name, entry, self.symbols_dir)
        for path in self.files:
            print(f"gdb: symbols: {path}", file=self.out)
        print(f"gdb: connect: {connect_command(self.files, self.listener.address)}", file=self.out, flush=True)
        self.session = GdbSession(self.listener, lab, entry, symbolize=symbolizer(lab), out=self.out, timeout=self.timeout)
        self.session.attach()
        return self.session

    def finish(self, result: RunResult) -> None:
        if self.session is not None:
            self.session.finish(result)
        else:
            self.listener.close()


def attach_one(spec: str, name: str, runs: list[str]) -> GdbAttach:
    """`faultlab run --gdb`: `runs` names the runs the command asks for (a variant per policy); gdb debugs one."""
    if len(runs) != 1:
        variants = sorted(set(runs))
        hint = (
            "choose one policy with --policy"
            if len(variants) == 1
            else f"the scenario runs once per kernel ({', '.join(variants)}): debug one kernel's function with `faultlab kernel call ... --gdb`"
        )
        raise GdbUsageError(f"--gdb debugs one run, this asks for {len(runs)}: {hint}")
    return GdbAttach(spec, name=name)
