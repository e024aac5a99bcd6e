"""The composition root: one function wires a machine, the pKVM model and the host kernel model.

Every user builds its system here - `Lab` (scenarios, sweeps, the matrix),
a lab around a booted vmlinux (`boot_vmlinux`: real-kernel scenarios, kernel
sweeps, `faultlab kernel call`) and the tests - so a change to how the three
are tied together (a host configuration, a kernel profile) is made once.

The host configuration is passed in: by default it is the kernel's profile
(for our snippets the model's default kernel, for a vmlinux the profile of
its version, checked against the image) booted as the policy says (pKVM
initialised or not). What the host's fault path can do belongs to the
kernel, never to the EL2 policy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from emu.machine import Machine
from host.kernel import HostKernel, KernelConfig
from host.real import RealHost
from hyp.hypercalls import HostAbi
from hyp.pkvm import Hyp
from hyp.policies import Policy, policy as policy_by_name
from kimage.elf import Vmlinux
from kimage.extable_format import NUMBERING_V7, TypeNumbering
from kimage.hcalls import FORCE_RECLAIM, TABLE_SYMBOL as HCALL_TABLE, HcallTable
from kimage.loaded import DEFAULT_EXTRA_MEMORY, LoadedKernel
from kimage.profiles import KernelProfile, model_profile, profile_for

PKVM_STATIC_KEY = "kvm_protected_mode_initialized"


@dataclass(frozen=True)
class Stack:
    """EL2 (the pKVM model) and EL1 (the host's fault path) on one machine."""

    machine: Machine
    hyp: Hyp | None  # None: no hypervisor at all (a bare host, for tests of the host alone)
    host: HostKernel

    @property
    def policy(self) -> Policy:
        assert self.hyp is not None, "a bare host has no policy"
        return self.hyp.policy


def host_config_for(policy: Policy, profile: KernelProfile) -> KernelConfig:
    """The kernel `profile` booted as `policy`'s EL2 boots it: a marker is only understood by a host that expects it."""
    return KernelConfig(profile=profile, pkvm_initialised=policy.pkvm_initialised)


HostFactory = Callable[[Machine, KernelConfig], HostKernel]


def compose(
    machine: Machine,
    policy: str | Policy | None,
    host_config: KernelConfig | None = None,
    *,
    numbering: TypeNumbering = NUMBERING_V7,
    profile: KernelProfile | None = None,
    make_host: HostFactory = HostKernel,
) -> Stack:
    """Wire the pKVM model under `policy` and the host (`host_config`, default: the policy's host) on `machine`.

    `policy=None` wires no hypervisor: a host without pKVM (its default
    configuration neither expects pKVM's marker nor asks for reclaim).
    `make_host` builds the host from the machine and its configuration: the
    Python fault path (HostKernel) unless a real kernel's own is asked for.
    """
    profile = profile if profile is not None else model_profile(numbering)
    if policy is None:
        bare = KernelConfig(profile=profile, pkvm_initialised=False)
        return Stack(machine, None, make_host(machine, host_config if host_config is not None else bare))
    policy = policy_by_name(policy) if isinstance(policy, str) else policy
    hyp = Hyp(machine, policy)
    host = make_host(machine, host_config if host_config is not None else host_config_for(policy, profile))
    return Stack(machine, hyp, host)


HOSTS = ("model", "real")


def boot_vmlinux(
    vmlinux: Vmlinux,
    policy: str | Policy,
    host_config: KernelConfig | None = None,
    *,
    host: str = "model",
    user_mm: bool = False,
    extra_memory: int = DEFAULT_EXTRA_MEMORY,
) -> tuple[LoadedKernel, Stack]:
    """A real kernel's image in a machine, wired like any other: its own `__ex_table` is the host's extable.

    So a real routine's faults on protected pages take the same path as our
    snippets: EL2 policy, injection, the host's do_mem_abort, and the fixup
    the kernel itself declared. `host="model"`: injected aborts go to the
    Python fault.c (host/fault.py); `host="real"`: to the image's own
    do_mem_abort (host/real; `user_mm` gives `current` an mm).
    """
    if host not in HOSTS:
        raise ValueError(f"unknown host {host!r} (model or real)")
    kernel = LoadedKernel(vmlinux, extra_memory=extra_memory)
    make_host: HostFactory = HostKernel
    if host == "real":
        make_host = lambda machine, config: RealHost(machine, kernel, config, user_mm=user_mm)  # noqa: E731
    stack = compose(kernel.machine, policy, host_config, numbering=vmlinux.numbering, profile=profile_for(vmlinux), make_host=make_host)
    # EL2 numbers host hypercalls as this kernel does (its host_hcall[]), for either host. profile_for
    # has checked the profile's force-reclaim id against the same table.
    stack.hyp.abi = host_abi_of(vmlinux)
    asked = stack.host.config.profile.host.force_reclaim_hcall
    if asked is not None and stack.hyp.abi.name_of(asked) != FORCE_RECLAIM:
        # A what-if host_config (another kernel's fault path on this image) brings that kernel's id for the call it issues.
        stack.hyp.abi = stack.hyp.abi.with_call(asked, FORCE_RECLAIM, f"host {stack.host.config.profile.name}")
    stack.host.add_extable(vmlinux.extable, vmlinux.numbering)
    if stack.host.config.pkvm_initialised and PKVM_STATIC_KEY in vmlinux.symbols:
        # is_pkvm_initialized() in the real code (arch/arm64/include/asm/virt.h) agrees with the host model.
        kernel.enable_static_key(PKVM_STATIC_KEY)
    # pKVM fills the host stage 2 lazily; pre-filling what is mapped now keeps the
    # event log about the routine (the kernel image alone is ~7-10k frames).
    # The stage-1 table frames too: the walk reads them through stage 2 (emu/stage1_tables.py).
    frames = [pte.pfn for pte in kernel.machine.stage1.ptes.values()] + sorted(kernel.machine.stage1.builder.frames)
    for pfn in frames:
        if stack.hyp.ownership.host_may_access(pfn):
            stack.hyp.stage2.idmap(pfn)
    return kernel, stack


def host_abi_of(vmlinux: Vmlinux) -> HostAbi:
    """The image's host hypercall numbering (`__kvm_nvhe_host_hcall`); none at all without nVHE hyp code."""
    if HCALL_TABLE not in vmlinux.symbols:
        return HostAbi({}, f"{vmlinux.path.name}: no {HCALL_TABLE}")
    return HostAbi(HcallTable.read(vmlinux).names, f"{vmlinux.path.name} {HCALL_TABLE} (Linux {vmlinux.version.major}.{vmlinux.version.minor})")
