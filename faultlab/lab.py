"""`Lab`: one machine with the pKVM model and the host kernel model, under one policy.

This is the piece every user-facing feature builds on (scenarios, sweeps, the
matrix, real-kernel calls): it lays out memory the way an arm64 host does - a
linear map alias for every frame, user mappings in the low half, extra kernel
aliases for kmap/vmap-style views - loads assembled routines with their
exception tables, hands frames to a protected guest, and remembers what the
guest's pages held so the oracle can judge integrity and confidentiality.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from pathlib import Path

from abi.linux import Errno
from emu.machine import Machine
from emu.memory import PAGE_SIZE, Perms
from emu.outcome import RunResult
from host.kernel import HostKernel, KernelConfig
from hyp.pkvm import Hyp
from hyp.policies import Policy, policy as policy_by_name
from kasm import AsmCache, Image
from kasm.cache import user_cache_dir
from kimage.elf import Vmlinux, VmlinuxError
from kimage.extable_format import NUMBERING_V7, TypeNumbering
from kimage.loaded import LoadedKernel

from faultlab import snapshot as lab_snapshot
from faultlab.snapshot import LabSnapshot
from faultlab.stack import Stack, boot_vmlinux, compose

KERNEL_TEXT_BASE = 0xFFFF_8000_0800_0000
TEXT_SLOT = 0x10_0000
LINEAR_BASE = 0xFFFF_0000_0000_0000  # PAGE_OFFSET: linear VA = LINEAR_BASE + PA offset
ALIAS_BASE = 0xFFFF_8000_2000_0000  # vmap/kmap-style second kernel mappings
USER_BASE = 0x0000_0000_1000_0000
GUEST_GFN_BASE = 0x8_0000
# Where a lab around a real kernel assembles extra snippets: clear of both Debian images
# (6.1 links at 0xffff800008000000, 7.x at 0xffff800080000000) and of the alias area.
VMLINUX_LAB_TEXT_BASE = 0xFFFF_8000_4000_0000
# The one assembly memo of this process (bounded, least recently used out): the runner builds
# a fresh Lab per scenario run, so a cache owned by one Lab would never be hit again. Entries
# are validated against their include files and handed out as copies (kasm/cache.py).
# It also keeps images on disk under the user cache dir (kasm/cache.py user_cache_dir), so a new
# process - a CLI command, an xdist worker - does not assemble the same files again.
SHARED_ASM_CACHE = AsmCache(disk=user_cache_dir())


class LabError(ValueError):
    """A setup request that cannot be satisfied (bad symbol, overlapping buffer...)."""


@dataclass
class Region:
    """Consecutive virtual pages backed by the listed frames."""

    name: str
    va: int
    pfns: list[int]
    user_va: int | None = None
    alias_va: int | None = None

    @property
    def size(self) -> int:
        return len(self.pfns) * PAGE_SIZE

    def page_va(self, index: int) -> int:
        return self.va + index * PAGE_SIZE


@dataclass
class GuestPage:
    """A frame given to the protected guest, and what the guest keeps in it."""

    pfn: int
    gfn: int
    secret: bytes
    shared_back: bool = False


@dataclass
class Lab:
    """The machine, pKVM and the host wired by `faultlab.stack.compose`, plus buffers, code and the guest.

    `Lab(policy)` composes a fresh machine; `Lab.with_vmlinux(vm, policy)`
    holds a booted real kernel (`image`), whose symbols `symbol` and `call`
    then resolve and run. `host_config` replaces the host that goes with the
    policy (e.g. a kernel profile's).
    """

    policy: Policy | str
    numbering: TypeNumbering = NUMBERING_V7
    phys_size: int = 64 << 20
    host_config: KernelConfig | None = None
    stack: Stack | None = None  # already composed (a booted vmlinux's); else composed here on a fresh machine
    image: LoadedKernel | None = None  # the real kernel in `stack`'s machine, if any
    text_base: int = KERNEL_TEXT_BASE
    asm_cache: AsmCache = field(default=SHARED_ASM_CACHE, repr=False)  # a fresh AsmCache() per Lab assembles afresh
    check_invariants: bool = True  # EL2 checks the ownership invariants after every hypercall and abort (Hyp)
    machine: Machine = field(init=False)
    hyp: Hyp = field(init=False)
    kernel: HostKernel = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.policy, str):
            self.policy = policy_by_name(self.policy)
        if self.stack is None:
            self.stack = compose(Machine(phys_size=self.phys_size), self.policy, self.host_config, numbering=self.numbering)
        self.machine, self.hyp, self.kernel = self.stack.machine, self.stack.hyp, self.stack.host
        self.hyp.check_invariants = self.check_invariants
        self.phys_size = self.machine.phys.size
        self.symbols: dict[str, int] = {}
        self.images: list[Image] = []
        self.regions: dict[str, Region] = {}
        self.guest_pages: list[GuestPage] = []
        self._guest: int | None = None
        self._next_text = self.text_base
        self._next_user = USER_BASE
        self._next_alias = ALIAS_BASE
        self._next_gfn = GUEST_GFN_BASE

    @classmethod
    def with_vmlinux(
        cls, vmlinux: Vmlinux, policy: str | Policy, host_config: KernelConfig | None = None, *, host: str = "model", user_mm: bool = False
    ) -> "Lab":
        """A lab whose machine holds `vmlinux`, booted and wired by `boot_vmlinux`: `call` runs its own symbols."""
        image, stack = boot_vmlinux(vmlinux, policy, host_config, host=host, user_mm=user_mm)
        return cls(stack.policy, numbering=vmlinux.numbering, stack=stack, image=image, text_base=VMLINUX_LAB_TEXT_BASE)

    @property
    def vmlinux(self) -> Vmlinux | None:
        return None if self.image is None else self.image.vmlinux

    # --------------------------------------------------------------- code
    def load_asm(self, source: str | Path, *, text: str | None = None) -> Image:
        """Assemble a `.S` file (or inline `text`, named `source`) into the kernel text and register its extable."""
        image = self._place(source, text, self._next_text, "rx")
        self._next_text += -(-len(image.data) // TEXT_SLOT) * TEXT_SLOT or TEXT_SLOT
        self.kernel.add_extable(image.extable, image.numbering)
        return image

    def load_user_asm(self, source: str | Path, *, text: str | None = None) -> Image:
        """Assemble EL0 code into user memory (r-x, user)."""
        image = self._place(source, text, self._next_user, "rxu")
        self._next_user += (max(1, -(-len(image.data) // PAGE_SIZE)) + 1) * PAGE_SIZE
        return image

    def _place(self, source: str | Path, text: str | None, base: int, perms: str) -> Image:
        if text is None:
            image = self.asm_cache.assemble_file(Path(source), base, numbering=self.numbering)
        else:
            image = self.asm_cache.assemble(text, base, filename=str(source), numbering=self.numbering)
        self.machine.load(base, image.data, perms)
        self.images.append(image)
        self.symbols.update(image.symbols)
        return image

    def symbol(self, name: str) -> int:
        """Assembled snippets first, then the real kernel's symbols ('name' or 'name+0x10')."""
        if name in self.symbols:
            return self.symbols[name]
        if self.image is not None:
            try:
                return self.image.resolve(name)
            except VmlinuxError as exc:
                vm = self.image.vmlinux
                raise LabError(f"{exc} in {vm.path.name} (Linux {vm.version})") from None
        known = ", ".join(sorted(self.symbols)) or "none"
        raise LabError(f"unknown symbol '{name}' (known: {known})")

    # --------------------------------------------------------------- memory
    def linear_va(self, pfn: int) -> int:
        return LINEAR_BASE + ((pfn << 12) - self.machine.phys.base)

    def alloc(self, name: str, pages: int, *, user: bool = False, alias: bool = False) -> Region:
        """Fresh frames, mapped in the linear map (and at a user VA / a second kernel alias if asked)."""
        if name in self.regions:
            raise LabError(f"buffer '{name}' defined twice")
        if pages < 1:
            raise LabError(f"buffer '{name}' needs at least one page")
        first = self.machine.phys.alloc(pages)
        pfns = list(range(first, first + pages))
        for pfn in pfns:
            self.machine.map_page(self.linear_va(pfn), pfn, "rw")
        region = Region(name, self.linear_va(first), pfns)
        if user:
            region.user_va = self._next_user
            self._next_user += (pages + 1) * PAGE_SIZE
            for i, pfn in enumerate(pfns):
                self.machine.map_page(region.user_va + i * PAGE_SIZE, pfn, Perms.parse("rwu"))
        if alias:
            region.alias_va = self._next_alias
            self._next_alias += (pages + 1) * PAGE_SIZE
            for i, pfn in enumerate(pfns):
                self.machine.map_page(region.alias_va + i * PAGE_SIZE, pfn, "rw")
        self.regions[name] = region
        return region

    def write(self, va: int, data: bytes) -> None:
        self.machine.write(va, data)

    def read(self, va: int, size: int) -> bytes:
        return self.machine.read(va, size)

    # --------------------------------------------------------------- the guest
    @property
    def guest(self) -> int:
        if self._guest is None:
            self._guest = self.hyp.ownership.create_guest(protected=True)
        return self._guest

    def donate(self, pfn: int, *, share_back: bool = False, seed: int = 0, keep_contents: bool = False) -> GuestPage:
        """Give a frame to the protected guest, which fills it with its own data (and may share it back).

        The one donation path of every user. `keep_contents`: the guest keeps
        what the page holds (`faultlab kernel call --protect`, where the
        caller wrote the bytes the routine should meet).
        """
        gfn = self._next_gfn
        self._next_gfn += 1
        result = self.hyp.ownership.host_donate_guest(pfn, self.guest, gfn)
        if result is not Errno.SUCCESS:
            raise LabError(f"cannot donate pfn {pfn:#x} to the guest: {result}")
        if keep_contents:
            secret = self.machine.phys.read(pfn << 12, PAGE_SIZE)
        else:
            secret = guest_secret(pfn, seed)
            self.machine.phys.write(pfn << 12, secret)  # the guest writes its page
        page = GuestPage(pfn, gfn, secret)
        if share_back:
            result = self.hyp.ownership.guest_share_host(self.guest, gfn)
            if result is not Errno.SUCCESS:
                raise LabError(f"guest cannot share gfn {gfn:#x} back: {result}")
            page.shared_back = True
        self.guest_pages.append(page)
        self.hyp.forget_setup()
        return page

    # --------------------------------------------------------------- snapshots
    def snapshot(self) -> "LabSnapshot":
        """Remember this lab as it is now (machine, pKVM, host, buffers, guest): `restore` comes back to it.

        One snapshot per lab is live (taking another replaces it). faultlab/snapshot.py says what is kept and how.
        """
        frozen = () if self.image is None else (self.image.symbols,)
        return lab_snapshot.take(self, frozen=frozen)

    def restore(self, snap: "LabSnapshot") -> None:
        """Back to `snap`, this lab's latest snapshot: a run after it is the run a freshly set-up lab would make."""
        lab_snapshot.restore(self, snap)

    # --------------------------------------------------------------- running
    def call(self, target: str | int, *args: int, el: int = 1, **kw) -> RunResult:
        """Run `target` with x0.. = args; the real kernel's code through `LoadedKernel.call` (which resets `current`)."""
        addr = self.symbol(target) if isinstance(target, str) else target
        self._idmap_page_tables()
        if self.image is not None and self.image.in_image(addr):
            try:
                return self.image.call(addr, *args, el=el, **kw)
            except VmlinuxError as exc:
                raise LabError(str(exc)) from None
        return self.machine.call(addr, *args, el=el, **kw)


    def _idmap_page_tables(self) -> None:
        """The host's stage-1 table frames (emu/stage1_tables.py) are host memory pKVM mapped long
        before any routine runs (host_stage2_idmap maps whole blocks): idmap them up front, as
        stack.boot_vmlinux does for the image, so the event log stays about the routine."""
        if self.hyp is None:
            return
        stage2, ownership = self.hyp.stage2, self.hyp.ownership
        for pfn in self.machine.stage1.builder.frames - stage2.mapped:
            if ownership.host_may_access(pfn):
                stage2.idmap(pfn)


@functools.lru_cache(maxsize=1024)
def guest_secret(pfn: int, seed: int = 0) -> bytes:
    """A page of the guest's data: bytes 0x80-0xff from a per-frame stream, so a leak is recognisable.

    Memoised (bytes are immutable): a frame's page is the same every run that donates it.
    """
    rng = random.Random((seed << 40) ^ pfn ^ 0x5EC2E7)
    return bytes(0x80 | rng.getrandbits(7) for _ in range(PAGE_SIZE))
