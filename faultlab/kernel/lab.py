"""Real kernels in the lab: `KernelRig` (a vmlinux + pKVM + the host fault path) and `KernelLab`.

`KernelRig.boot(vmlinux, policy)` puts a vmlinux in a machine together with
the pKVM model (`hyp.Hyp`) and the host fault path (`host.HostKernel`), with
the kernel's own `__ex_table` in the host's extable, so a real routine's
faults on protected pages take the same path as our own snippets: EL2 policy,
injection, the host's `do_mem_abort`, and the fixup the kernel itself
declared.

`KernelLab` is the one adapter between that rig and everything built on
`Lab` (scenarios, the oracle, the sweep engine): the same buffers (linear map,
user and alias views), the same guest donations, the same `call`, but the
routine named is a symbol of the vmlinux and runs through `LoadedKernel.call`
(which resets `current` and refuses code whose pages were mapped over).

`VmlinuxShelf` opens each vmlinux once per owner (a test session, a CLI
command): a parsed-and-relocated image costs ~0.3 s, a boot from it ~0.1 s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kimage.elf import Vmlinux, VmlinuxError
from emu.memory import PAGE_MASK, PAGE_SIZE
from emu.outcome import RunResult
from kimage.loaded import DEFAULT_EXTRA_MEMORY, LoadedKernel
from host.kernel import HostKernel, KernelConfig
from abi.linux import Errno
from host.real import RealHost
from hyp.pkvm import Hyp
from hyp.policies import Policy, policy as policy_by_name

from faultlab.kernel.fetch import SUITES, KernelFetchError, find_cached
from faultlab.lab import ALIAS_BASE as LAB_ALIAS_BASE
from faultlab.lab import GUEST_GFN_BASE as LAB_GUEST_GFN_BASE
from faultlab.lab import USER_BASE as LAB_USER_BASE
from faultlab.lab import Lab, LabError

PKVM_STATIC_KEY = "kvm_protected_mode_initialized"
GUEST_GFN_BASE = 0x10
# Where a KernelLab assembles extra snippets: clear of both Debian images
# (6.1 links at 0xffff800008000000, 7.x at 0xffff800080000000) and of Lab's alias area.
KERNEL_LAB_TEXT_BASE = 0xFFFF_8000_4000_0000


class KernelUsageError(ValueError):
    """Bad input on the kernel command line or in a kernel scenario (one line)."""


@dataclass(frozen=True)
class Protected:
    """A page donated to a guest, with its contents at donation time (for the integrity check)."""

    va: int
    pfn: int
    handle: int
    gfn: int
    before: bytes


@dataclass
class KernelRig:
    """A real kernel's image + the pKVM model + the host fault path, on one machine."""

    kernel: LoadedKernel
    hyp: Hyp
    host: HostKernel
    protected: list[Protected] = field(default_factory=list)

    @classmethod
    def boot(
        cls,
        vmlinux: Vmlinux,
        policy: str | Policy = "inject-reclaim",
        *,
        extra_memory: int = DEFAULT_EXTRA_MEMORY,
        host: str = "model",
        user_mm: bool = False,
    ) -> "KernelRig":
        """`host="model"`: injected aborts go to the Python fault.c (host/fault.py);
        `host="real"`: to the image's own do_mem_abort (host/real; `user_mm` gives `current` an mm)."""
        kernel = LoadedKernel(vmlinux, extra_memory=extra_memory)
        machine = kernel.machine
        hyp = Hyp(machine, policy)
        config = KernelConfig(
            numbering=vmlinux.numbering,
            pkvm_initialised=hyp.policy.pkvm_initialised,
            # As Lab: the host model has 7.x's force-reclaim path whatever the vmlinux
            # (6.1's fault.c lacks it; kernel profiles will say so, with the reference
            # models told the same - see issue 10). EL2 may refuse the call (policy).
            force_reclaim=True,
        )
        if host == "real":
            host_kernel: HostKernel = RealHost(machine, kernel, config, user_mm=user_mm)
        elif host == "model":
            host_kernel = HostKernel(machine, config)
        else:
            raise KernelUsageError(f"unknown host {host!r} (model or real)")
        host = host_kernel
        host.add_extable(vmlinux.extable, vmlinux.numbering)
        if hyp.policy.pkvm_initialised and PKVM_STATIC_KEY in vmlinux.symbols:
            # is_pkvm_initialized() in the real code agrees with the host model's config.
            kernel.enable_static_key(PKVM_STATIC_KEY)
        # pKVM fills the host stage 2 lazily; pre-filling what is mapped now keeps the
        # event log about the routine (the kernel image alone is ~7-10k frames).
        for pte in list(machine.stage1.ptes.values()):
            if hyp.ownership.host_may_access(pte.pfn):
                hyp.stage2.idmap(pte.pfn)
        return cls(kernel, hyp, host)

    @property
    def machine(self):
        return self.kernel.machine

    def protect(self, va: int) -> Protected:
        """Donate the frame behind `va` to a new protected guest (the host loses access to it)."""
        pfn = self.kernel.pfn_of(va & PAGE_MASK)
        before = self.machine.phys.read(pfn << 12, PAGE_SIZE)
        handle = self.hyp.ownership.create_guest(protected=True)
        gfn = GUEST_GFN_BASE + len(self.protected)
        result = self.hyp.ownership.host_donate_guest(pfn, handle, gfn)
        if result is not Errno.SUCCESS:
            raise KernelUsageError(f"cannot donate the page at {va:#x} (pfn {pfn:#x}) to a guest: {result}")
        self.machine.stage2_changed()
        prot = Protected(va & PAGE_MASK, pfn, handle, gfn, before)
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
        return self.kernel.call(target, *args, **kwargs)


class KernelLab(Lab):
    """A `Lab` whose machine holds a booted real kernel: `call` runs the vmlinux's own symbols.

    Everything else is Lab's: `alloc` (linear map = PAGE_OFFSET + PA, as
    LoadedKernel's buffers), `donate` (the guest fills its page with its own
    data), `write`/`read`, and the attributes the oracle reads (`kernel` is
    the host fault-path model, `hyp` the pKVM model).
    """

    def __init__(self, vmlinux: Vmlinux, policy: str | Policy, *, host: str = "model", user_mm: bool = False) -> None:
        self.vmlinux = vmlinux
        self.policy = policy_by_name(policy) if isinstance(policy, str) else policy
        self.numbering = vmlinux.numbering
        self.rig = KernelRig.boot(vmlinux, self.policy, host=host, user_mm=user_mm)
        self.phys_size = self.rig.machine.phys.size
        self.__post_init__()

    def __post_init__(self) -> None:
        # Lab's state, on the rig's machine instead of a fresh one.
        self.machine = self.rig.machine
        self.hyp = self.rig.hyp
        self.kernel = self.rig.host
        self.symbols: dict[str, int] = {}
        self.images = []
        self.regions = {}
        self.guest_pages = []
        self._guest = None
        self._next_text = KERNEL_LAB_TEXT_BASE
        self._next_user = LAB_USER_BASE
        self._next_alias = LAB_ALIAS_BASE
        self._next_gfn = LAB_GUEST_GFN_BASE

    @property
    def loaded(self) -> LoadedKernel:
        return self.rig.kernel

    def symbol(self, name: str) -> int:
        """Assembled snippets first, then the vmlinux ('name' or 'name+0x10')."""
        if name in self.symbols:
            return self.symbols[name]
        try:
            return self.loaded.resolve(name)
        except VmlinuxError as exc:
            raise LabError(f"{exc} in {self.vmlinux.path.name} (Linux {self.vmlinux.version})") from None

    def call(self, target: str | int, *args: int, el: int = 1, **kw) -> RunResult:
        addr = self.symbol(target) if isinstance(target, str) else target
        if self.loaded.in_image(addr):
            try:
                return self.loaded.call(addr, *args, el=el, **kw)
            except VmlinuxError as exc:
                raise LabError(str(exc)) from None
        return self.machine.call(addr, *args, el=el, **kw)


class VmlinuxShelf:
    """Opened vmlinux files by resolved path: each is parsed and relocated once per shelf.

    A spec is a suite name (bookworm, sid, ...: the cached download; never
    fetched from here) or a path. `missing(spec)` says why a spec cannot be
    used, in one line, without raising: the pytest plugin skips with it.
    """

    def __init__(self, host: str = "model") -> None:
        self._open: dict[Path, Vmlinux] = {}
        self.host = host  # which host fault path the labs it makes run: "model" (host/fault.py) or "real"

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

    def lab(self, spec: str | Path, policy: str | Policy, relative_to: Path | None = None) -> KernelLab:
        return KernelLab(self.open(spec, relative_to), policy, host=self.host)
