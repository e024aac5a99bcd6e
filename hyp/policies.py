"""The policies under debate: what EL2 does when the host touches a page it does not own.

A policy is one object. Its one method, `on_protected_access`, is what EL2 runs
when the host accesses a page owned by EL2 or a guest (hyp/abort.py calls it after
the lazy identity map has declined); it composes the EL2 services of hyp/el2.py.
Beside it, a policy states facts about EL2 only (never about the host kernel,
whose features belong to the kernel being run):
- `trap`: how the protection is enforced (pKVM's host stage 2, or RME's GPC);
- `pkvm_initialised`: whether the host boots with pKVM initialised, i.e. whether
  fault.c's is_pkvm_stage2_abort() can ever be true (EL2 is pKVM);
- `serves(hcall)`: which host hypercalls EL2 implements.

`POLICIES` is the built-in registry. `known()` is the one every lookup reads
(the CLI, scenarios, sweeps): the built-in one, or, inside `with registered(p):`,
the built-in one plus `p` - so a test or a tool adds a policy in a few lines,
for as long as it needs it, and nothing outlives the `with`. `with_policies(...)`
builds such a mapping without activating it.
"""
from __future__ import annotations

from contextlib import contextmanager
from types import MappingProxyType
from typing import ClassVar, Iterable, Iterator, Mapping

from abi.linux import Errno
from emu.outcome import Outcome

from hyp.el2 import El2, ProtectedAccess, Trap
from hyp.inject import el3_gpf_syndrome, pkvm_syndrome, realm_syndrome

# The pKVM guest-memory series' host hypercall (hyp-main.c host_hcall[]).
FORCE_RECLAIM_HCALL = "__pkvm_force_reclaim_guest_page"


class Policy:
    """One EL2 behaviour. Subclasses set the class attributes and implement `on_protected_access`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    trap: ClassVar[Trap] = Trap.STAGE2
    pkvm_initialised: ClassVar[bool] = True
    # Host hypercalls this EL2 does not implement: the host gets SMCCC NOT_SUPPORTED.
    unserved: ClassVar[frozenset[str]] = frozenset()

    def on_protected_access(self, el2: El2, access: ProtectedAccess) -> Outcome | None:
        """What EL2 does; None: the host runs on (the access retries or the host's vector runs)."""
        raise NotImplementedError

    def serves(self, hcall: str) -> bool:
        return hcall not in self.unserved

    @property
    def serves_force_reclaim(self) -> bool:
        """Whether EL2 has the 2026 series' force-reclaim hypercall (docs/kernels.md names this)."""
        return self.serves(FORCE_RECLAIM_HCALL)

    def __repr__(self) -> str:
        return f"<policy {self.name}>"


class Panic(Policy):
    """pKVM before the injection series: a host access to a page it does not own is a hypervisor BUG.

    The host is still a protected-mode pKVM host (pKVM initialised); it never sees
    an injected abort. The force-reclaim hypercall came with the series: not served.
    """

    name = "panic"
    summary = "hypervisor BUG on any host access to a page it does not own (pKVM before injection)"
    unserved = frozenset({FORCE_RECLAIM_HCALL})

    def on_protected_access(self, el2: El2, access: ProtectedAccess) -> Outcome | None:
        return el2.panic(access, f"host access to {access.ipa:#x} owned by {access.owner}")


class Inject(Policy):
    """pKVM with injection but before the force-reclaim patch: the host gets the abort, marked.

    The host fixes up through its exception table or dies; the force-reclaim
    hypercall a newer host may issue is not implemented (SMCCC NOT_SUPPORTED).
    """

    name = "inject"
    summary = "inject a data abort; the host fixes up through its exception table or dies"
    unserved = frozenset({FORCE_RECLAIM_HCALL})

    def on_protected_access(self, el2: El2, access: ProtectedAccess) -> Outcome | None:
        return el2.inject(access, pkvm_syndrome(access.abort))


class InjectReclaim(Policy):
    """The patch under review: inject as `inject`, and serve the host's force-reclaim hypercall (43)."""

    name = "inject-reclaim"
    summary = "inject; a host kernel access with no fixup asks EL2 to force-reclaim the page and retries"

    def on_protected_access(self, el2: El2, access: ProtectedAccess) -> Outcome | None:
        return el2.inject(access, pkvm_syndrome(access.abort))


class Reclaim(Policy):
    """EL2 reclaims on the fault itself, without asking the host; injects only if the reclaim fails."""

    name = "reclaim"
    summary = "EL2 force-reclaims the page on the fault and retries; injects only if reclaim fails"

    def on_protected_access(self, el2: El2, access: ProtectedAccess) -> Outcome | None:
        if el2.reclaim(access) is Errno.SUCCESS:
            return None  # the frame is the host's again: the access retries and succeeds
        return el2.inject(access, pkvm_syndrome(access.abort))


class RmeGpcReclaim(Policy):
    """RME: the GPF goes to EL3, which hands it to a realm-world EL2 that reclaims the granule and retries.

    EL2 is not pKVM, so the host boots without pKVM initialised.
    """

    name = "rme-gpc-reclaim"
    summary = "RME: the granule-protection fault goes to EL3, a realm-world EL2 reclaims the granule and retries"
    trap = Trap.GPF
    pkvm_initialised = False
    unserved = frozenset({FORCE_RECLAIM_HCALL})  # not pKVM: no force-reclaim call

    def on_protected_access(self, el2: El2, access: ProtectedAccess) -> Outcome | None:
        if el2.reclaim(access) is Errno.SUCCESS:
            return None
        return el2.inject(access, el3_gpf_syndrome(access.abort))


class RmeGpcEl3Inject(Policy):
    """RME: EL3 injects the GPF into the host as it is; no pKVM marker, and the host has no pKVM."""

    name = "rme-gpc-el3-inject"
    summary = "RME: EL3 injects the granule-protection fault into the host; no pKVM marker in the syndrome"
    trap = Trap.GPF
    pkvm_initialised = False
    unserved = frozenset({FORCE_RECLAIM_HCALL})  # not pKVM: no force-reclaim call

    def on_protected_access(self, el2: El2, access: ProtectedAccess) -> Outcome | None:
        return el2.inject(access, el3_gpf_syndrome(access.abort))


class RmeGpcRealmInject(Policy):
    """RME: EL3 forwards the GPF to a realm-world EL2, which injects a syndrome the host understands.

    The realm EL2 composes pKVM's injected stage-2 abort (translation fault at the
    fault's level, S1PTW marker, EC for the host's EL: hyp/inject.py realm_syndrome)
    and serves the force-reclaim hypercall as `inject-reclaim` does. The marker is
    only understood by a host that expects it, so the host boots with pKVM
    initialised (fault.c is_pkvm_stage2_abort() needs is_pkvm_initialized()).
    """

    name = "rme-gpc-realm-inject"
    summary = "RME: EL3 forwards the GPF to a realm EL2 that injects pKVM's marked abort; force-reclaim served"
    trap = Trap.GPF

    def on_protected_access(self, el2: El2, access: ProtectedAccess) -> Outcome | None:
        return el2.inject(access, realm_syndrome(access.abort))


def with_policies(*extra: Policy, base: Mapping[str, Policy] | None = None) -> Mapping[str, Policy]:
    """A registry: `base` (default: the built-in one) plus `extra`, read-only. Nothing global changes."""
    table = dict(POLICIES if base is None else base)
    for p in extra:
        if p.name in table:
            raise ValueError(f"policy {p.name!r} is already registered")
        table[p.name] = p
    return MappingProxyType(table)


def _registry(policies: Iterable[Policy]) -> Mapping[str, Policy]:
    return MappingProxyType({p.name: p for p in policies})


POLICIES: Mapping[str, Policy] = _registry(
    (Panic(), Inject(), InjectReclaim(), Reclaim(), RmeGpcReclaim(), RmeGpcEl3Inject(), RmeGpcRealmInject())
)


class UnknownPolicy(ValueError):
    pass


_active: list[Mapping[str, Policy]] = [POLICIES]  # a stack: the innermost `registered` is on top


def known() -> Mapping[str, Policy]:
    """The policies lookups see now: the built-in ones, plus any added by an enclosing `registered`."""
    return _active[-1]


@contextmanager
def registered(*extra: Policy) -> Iterator[Mapping[str, Policy]]:
    """Make `extra` known (to the CLI, scenarios, sweeps) until the `with` ends."""
    _active.append(with_policies(*extra, base=known()))
    try:
        yield known()
    finally:
        _active.pop()


def policy(name: "str | Policy", registry: Mapping[str, Policy] | None = None) -> Policy:
    """The policy called `name` (a Policy object is returned as it is)."""
    if isinstance(name, Policy):
        return name
    table = known() if registry is None else registry
    try:
        return table[name]
    except KeyError:
        raise UnknownPolicy(f"unknown policy {name!r} (known: {', '.join(table)})") from None
