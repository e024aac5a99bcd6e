"""Real kernels in the lab: `KernelRig` (`faultlab kernel call`'s view of a lab) and `VmlinuxShelf`.

A lab around a real kernel is a `Lab` like any other (`Lab.with_vmlinux`,
wired by faultlab/stack.py `boot_vmlinux`): the same buffers, the same guest
donations, the same oracle; `call` runs the vmlinux's own symbols.
`KernelRig` adds what the command line shows: the pages it protected and a
one-line report on each after the call.

`VmlinuxShelf` opens each vmlinux once per owner (a test session, a CLI
command): a parsed-and-relocated image costs ~0.3 s, a boot from it 0.07 s
(model host) to 0.3 s (real host). It boots once per (vmlinux, policy) and
snapshots the boot (faultlab/snapshot.py): every later lab is that boot
restored, at the cost of what the previous user changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emu.memory import PAGE_MASK, PAGE_SIZE
from emu.outcome import RunResult
from host.kernel import HostKernel, KernelConfig
from hyp.pkvm import Hyp
from hyp.policies import Policy
from kimage.elf import Vmlinux
from kimage.loaded import LoadedKernel

from faultlab.kernel.fetch import SUITES, KernelFetchError, find_cached
from faultlab.lab import Lab, LabError
from faultlab.snapshot import LabPool
from faultlab.stack import HOSTS


class KernelUsageError(ValueError):
    """Bad input on the kernel command line or in a kernel scenario (one line)."""


@dataclass(frozen=True)
class Protected:
    """A page donated to the guest, with its contents at donation time (for the integrity check)."""

    va: int
    pfn: int
    handle: int
    gfn: int
    before: bytes


@dataclass
class KernelRig:
    """A `Lab` holding a booted vmlinux, with the pages `protect` gave to the guest."""

    lab: Lab
    protected: list[Protected] = field(default_factory=list)

    @classmethod
    def boot(
        cls,
        vmlinux: Vmlinux,
        policy: str | Policy = "inject-reclaim",
        host_config: KernelConfig | None = None,
        *,
        host: str = "model",
        user_mm: bool = False,
    ) -> "KernelRig":
        """`host="model"`: injected aborts go to the Python fault.c (host/fault.py);
        `host="real"`: to the image's own do_mem_abort (host/real; `user_mm` gives `current` an mm)."""
        if host not in HOSTS:
            raise KernelUsageError(f"unknown host {host!r} (model or real)")
        return cls(Lab.with_vmlinux(vmlinux, policy, host_config, host=host, user_mm=user_mm))

    @property
    def kernel(self) -> LoadedKernel:
        return self.lab.image

    @property
    def machine(self):
        return self.lab.machine

    @property
    def hyp(self) -> Hyp:
        return self.lab.hyp

    @property
    def host(self) -> HostKernel:
        return self.lab.kernel

    def protect(self, va: int) -> Protected:
        """Donate the frame behind `va` to the guest, contents kept (Lab.donate: the one donation path)."""
        pfn = self.kernel.pfn_of(va & PAGE_MASK)
        try:
            page = self.lab.donate(pfn, keep_contents=True)
        except LabError as exc:
            raise KernelUsageError(f"cannot donate the page at {va:#x}: {exc}") from None
        prot = Protected(va & PAGE_MASK, pfn, self.lab.guest, page.gfn, page.secret)
        self.protected.append(prot)
        return prot

    def guest_page_report(self, prot: Protected) -> str:
        state = self.hyp.ownership.guest_state(prot.handle, prot.gfn)
        now = self.machine.phys.read(prot.pfn << 12, PAGE_SIZE)
        if now == prot.before:
            contents = "contents unchanged"
        elif not any(now):
            contents = "contents scrubbed (zeroed)"
        else:
            contents = "contents CHANGED"
        return f"guest {prot.handle:#x} gfn {prot.gfn:#x} (pfn {prot.pfn:#x}): {state}, {contents}"

    def call(self, target: str | int, *args: int, **kwargs) -> RunResult:
        return self.lab.call(target, *args, **kwargs)


class VmlinuxShelf:
    """Opened vmlinux files by resolved path: each is parsed and relocated once per shelf.

    A spec is a suite name (bookworm, sid, ...: the cached download; never
    fetched from here) or a path. `missing(spec)` says why a spec cannot be
    used, in one line, without raising: the pytest plugin skips with it.
    """

    def __init__(self, host: str = "model", *, max_booted: int = 16) -> None:
        self._open: dict[Path, Vmlinux] = {}
        self.host = host  # which host fault path the labs it makes run: "model" (host/fault.py) or "real"
        # One boot per (vmlinux, policy), snapshotted; `lab` restores it (faultlab/snapshot.py).
        self._booted = LabPool(max_booted)

    @staticmethod
    def locate(spec: str, relative_to: Path | None = None) -> Path:
        if spec in SUITES:
            found = find_cached(spec)
            if found is None:
                raise KernelFetchError(f"vmlinux {spec!r} not found: run `faultlab kernel fetch {spec}`")
            return found
        path = Path(spec).expanduser()
        if not path.is_absolute() and relative_to is not None and (relative_to / path).is_file():
            path = relative_to / path
        if not path.is_file():
            raise KernelFetchError(f"vmlinux {spec!r} not found: no such file (or a suite: {', '.join(SUITES)})")
        return path

    def missing(self, spec: str, relative_to: Path | None = None) -> str | None:
        try:
            self.locate(spec, relative_to)
        except KernelFetchError as exc:
            return str(exc)
        return None

    def open(self, spec: str | Path, relative_to: Path | None = None) -> Vmlinux:
        path = self.locate(str(spec), relative_to).resolve()
        if path not in self._open:
            self._open[path] = Vmlinux.open(path)
        return self._open[path]

    def lab(self, spec: str | Path, policy: str | Policy, relative_to: Path | None = None) -> Lab:
        """A booted lab: the first for a (vmlinux, policy) boots, later ones are that boot restored.

        The lab handed out is the same object each time: valid until the next `lab`
        call for the same vmlinux and policy. `boot` gives one of the caller's own.
        """
        vm = self.open(spec, relative_to)
        key = (vm.path, policy if isinstance(policy, str) else id(policy))
        return self._booted.get(key, lambda: Lab.with_vmlinux(vm, policy, host=self.host), refs=policy)

    def boot(self, spec: str | Path, policy: str | Policy, relative_to: Path | None = None) -> Lab:
        """A freshly booted lab of the caller's own (never handed out again)."""
        return Lab.with_vmlinux(self.open(spec, relative_to), policy, host=self.host)
