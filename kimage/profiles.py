"""Kernel versions as data: one `KernelProfile` per supported host kernel.

A profile says what this project relies on about one kernel: the Debian suite
that ships it, its Linux version, its exception-table type numbering, the oops
text generation it prints, the host features of its `arch/arm64/mm/fault.c`
(does it recognise pKVM's injected-abort marker? can it ask EL2 to
force-reclaim a guest page, and with which hypercall id?) and the documented
ways its routines are looser than our reference models.

Adding a kernel is one profile here (the fetcher reads its suite from
`PROFILES`). A real image is matched to its profile by `profile_for(vmlinux)`,
which checks every claimed host feature against the image's own symbols and
tables and refuses a mismatch: a profile can never silently describe a
different kernel than the one being run. `MODEL_DEFAULT` is the profile the
Python host model follows for our own guest_asm snippets (the newest kernel).

Only profiled kernels are fetchable: trixie (Linux 6.12) and experimental
are left out, since an image without a profile is refused by the loader
rather than run with guessed host features.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.syndrome import OopsStyle
from kimage.extable_format import NUMBERING_V6_1, NUMBERING_V7, TypeNumbering
from kimage.jump_table import image_jump_sites

if TYPE_CHECKING:
    from kimage.elf import KernelVersion, Vmlinux

# The static key behind is_pkvm_initialized() (asm/virt.h); fault.c's is_pkvm_stage2_abort() tests it.
PKVM_STATIC_KEY = "kvm_protected_mode_initialized"
# arch/arm64/kvm/pkvm.c (pKVM guest-memory series): the host side of the force-reclaim call.
FORCE_RECLAIM_CALLER = "pkvm_force_reclaim_guest_page"
# hyp-main.c: the EL2 handler the host hypercall table points at, nVHE symbols prefixed `__kvm_nvhe_`.
FORCE_RECLAIM_HANDLER = "__kvm_nvhe_handle___pkvm_force_reclaim_guest_page"
HOST_HCALL_TABLE = "__kvm_nvhe_host_hcall"
SMCCC_FAST_64_VENDOR_HYP = 0xC600_0000


class ProfileError(ValueError):
    """No profile for this kernel, or a profile's claim disagrees with the image (one line)."""


class Looseness(enum.Enum):
    """A documented way a real routine is looser than our reference model (pinned by tests)."""

    COPY_TO_USER_BLOCK_PROGRESS = (
        "__arch_copy_to_user",
        "counts progress in 16-byte blocks: reports up to 15 bytes fewer copied than it stored before the fault",
    )
    NOFAULT_STORES_ZEROED_CHUNK = (
        "copy_from_kernel_nofault",
        "stores the faulting chunk to dst as zeros (the fixup zeroes the data register, the store follows)",
    )
    STRSCPY_NUL_BEFORE_LAST_READ = (
        "strscpy",
        "writes the terminating NUL at dst[count-1] before reading src[count-1]",
    )

    @property
    def routine(self) -> str:
        return self.value[0]

    @property
    def what(self) -> str:
        return self.value[1]


@dataclass(frozen=True)
class HostFeatures:
    """What the kernel's fault.c does with an abort pKVM injected.

    `pkvm_marker`: is_pkvm_stage2_abort() exists (ESR.S1PTW on an injected abort
    means "pKVM stage-2 abort", once pKVM is initialised): the kernel-fault
    message "access to hypervisor-protected memory" and the EL0 SIGSEGV before
    any VMA lookup. `force_reclaim_hcall`: the SMCCC function id
    pkvm_force_reclaim_guest_page() issues from the spurious-fault check, or
    None when the kernel has no such call.
    """

    pkvm_marker: bool
    force_reclaim_hcall: int | None

    @property
    def force_reclaim(self) -> bool:
        return self.force_reclaim_hcall is not None


@dataclass(frozen=True)
class KernelProfile:
    name: str
    suite: str
    version: tuple[int, int]
    numbering: TypeNumbering
    oops_style: OopsStyle
    host: HostFeatures
    looseness: frozenset[Looseness]

    def __str__(self) -> str:
        return f"{self.name} (Debian {self.suite}, Linux {self.version[0]}.{self.version[1]})"

    def loose(self, routine: str) -> tuple[Looseness, ...]:
        """This kernel's documented looseness for one routine, in declaration order."""
        return tuple(x for x in Looseness if x in self.looseness and x.routine == routine)


LINUX_6_1 = KernelProfile(
    name="linux-6.1",
    suite="bookworm",
    version=(6, 1),
    numbering=NUMBERING_V6_1,
    oops_style=OopsStyle.V6_1,
    # 6.1's __do_kernel_fault has no is_pkvm_initialized() site and there is no force-reclaim call:
    # an injected abort with a valid stage-1 mapping is a "spurious" translation fault to it.
    host=HostFeatures(pkvm_marker=False, force_reclaim_hcall=None),
    looseness=frozenset({Looseness.COPY_TO_USER_BLOCK_PROGRESS, Looseness.NOFAULT_STORES_ZEROED_CHUNK}),
)

LINUX_7_2 = KernelProfile(
    name="linux-7.2",
    suite="sid",
    version=(7, 2),
    numbering=NUMBERING_V7,
    oops_style=OopsStyle.LATEST,
    # hypercall 43 of __kvm_nvhe_host_hcall: pkvm_force_reclaim_guest_page issues x0 = 0xc600002b.
    host=HostFeatures(pkvm_marker=True, force_reclaim_hcall=SMCCC_FAST_64_VENDOR_HYP | 43),
    looseness=frozenset({Looseness.COPY_TO_USER_BLOCK_PROGRESS, Looseness.STRSCPY_NUL_BEFORE_LAST_READ}),
)

PROFILES: tuple[KernelProfile, ...] = (LINUX_6_1, LINUX_7_2)
# The Python host model with our own snippets follows the newest kernel's fault.c.
MODEL_DEFAULT = LINUX_7_2


def profile_for_version(version: "KernelVersion | tuple[int, int]") -> KernelProfile:
    """The profile of a Linux (major, minor); ProfileError when none describes it."""
    key = version if isinstance(version, tuple) else version.tuple
    for p in PROFILES:
        if p.version == key[:2]:
            return p
    known = ", ".join(f"{p.version[0]}.{p.version[1]}" for p in PROFILES)
    raise ProfileError(f"no kernel profile for Linux {key[0]}.{key[1]} (profiles: {known})")


def model_profile(numbering: TypeNumbering | None = None) -> KernelProfile:
    """MODEL_DEFAULT, or its fault path with our snippets' extables in another numbering.

    Our own guest_asm snippets may be assembled in the 6.1 numbering to exercise
    the extable decoder; the host's fault path stays the newest kernel's.
    """
    if numbering is None or numbering is MODEL_DEFAULT.numbering:
        return MODEL_DEFAULT
    return dataclasses.replace(MODEL_DEFAULT, name=f"{MODEL_DEFAULT.name}+{numbering.name}", numbering=numbering)


def host_features_of(vm: "Vmlinux") -> HostFeatures:
    """The host features as the image shows them: symbols, jump-table sites, the hypercall table."""
    return HostFeatures(pkvm_marker=_has_pkvm_marker(vm), force_reclaim_hcall=_force_reclaim_hcall(vm))


def check_profile(profile: KernelProfile, vm: "Vmlinux") -> None:
    """Raise ProfileError unless `vm` is the kernel `profile` describes, feature by feature."""
    problems = []
    if vm.version.tuple != profile.version:
        problems.append(f"version {vm.version.major}.{vm.version.minor}, profile says {profile.version[0]}.{profile.version[1]}")
    if vm.numbering is not profile.numbering:
        problems.append(f"extable numbering {vm.numbering.name}, profile says {profile.numbering.name}")
    found = host_features_of(vm)
    if found.pkvm_marker != profile.host.pkvm_marker:
        problems.append(f"pkvm_marker: image {'has' if found.pkvm_marker else 'lacks'} a {PKVM_STATIC_KEY} site in __do_kernel_fault, profile says {profile.host.pkvm_marker}")
    if found.force_reclaim_hcall != profile.host.force_reclaim_hcall:
        shown = lambda v: "none" if v is None else f"{v:#x}"  # noqa: E731
        problems.append(f"force-reclaim hypercall: image {shown(found.force_reclaim_hcall)}, profile says {shown(profile.host.force_reclaim_hcall)}")
    if problems:
        raise ProfileError(f"{vm.path.name} ({vm.version}) does not match profile {profile.name}: " + "; ".join(problems))


def profile_for(vm: "Vmlinux") -> KernelProfile:
    """The profile for a real image, picked by its version and checked against its contents."""
    profile = profile_for_version(vm.version)
    check_profile(profile, vm)
    return profile


def _has_pkvm_marker(vm: "Vmlinux") -> bool:
    """is_pkvm_stage2_abort() is inlined; its is_pkvm_initialized() leaves a static-key site in __do_kernel_fault."""
    fn = vm.symbols.get("__do_kernel_fault")
    key = vm.symbols.get(PKVM_STATIC_KEY)
    if fn is None or key is None:
        return False
    return any(fn.addr <= s.code < fn.addr + fn.size for s in image_jump_sites(vm, key.addr))


def _force_reclaim_hcall(vm: "Vmlinux") -> int | None:
    """The id whose host_hcall[] slot holds the force-reclaim handler, if the host side calls it."""
    if FORCE_RECLAIM_CALLER not in vm.symbols:
        return None
    table, handler = vm.symbols.get(HOST_HCALL_TABLE), vm.symbols.get(FORCE_RECLAIM_HANDLER)
    if table is None or handler is None:
        raise ProfileError(f"{vm.path.name}: {FORCE_RECLAIM_CALLER} exists but {HOST_HCALL_TABLE} or its handler does not")
    for n in range(table.size // 8):
        if int.from_bytes(vm.read(table.addr + 8 * n, 8), "little") == handler.addr:
            return SMCCC_FAST_64_VENDOR_HYP | n
    raise ProfileError(f"{vm.path.name}: {FORCE_RECLAIM_HANDLER} is not in {HOST_HCALL_TABLE}")
