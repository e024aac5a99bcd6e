"""pKVM page ownership: who may touch each physical frame, and the checked moves between owners.

This is the model of arch/arm64/kvm/hyp/nvhe/mem_protect.c that the rest of
``hyp`` consults. Every frame has a state on the host side and on the hyp side
(pKVM keeps both in ``struct hyp_page``); a guest's state lives in its own
stage-2 entry for a gfn. Each ownership change is one method named after the
kernel function it models. Like the kernel, a method first checks both sides
and returns an :class:`Errno` without touching anything when a check fails;
only then does it change both sides. Bad arguments are reported the same way:
no transition raises.

Effects the emulator must see are delivered through two callbacks given to the
constructor (this module imports nothing from ``emu``):

- ``on_host_stage2_change(pfn, mapped_allowed)`` when the host loses or regains
  the right to access a frame (host stage-2 unmap / lazy map allowed again);
- ``zero_frame(pfn)`` to scrub a frame (``hyp_poison_page()``).

Where this model departs from pKVM, or picks one of several behaviours, the
method docstring says so. Facts are cited as ``mem_protect.c: ...`` (upstream
Linux with the 2026 pKVM guest-memory / forced-reclaim series), read through
the search tool; no code was copied.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Iterable

from hyp.errno import Errno

PAGE_SHIFT = 12
# pfn_range_is_valid(): a range must lie below BIT(kvm_phys_shift() - PAGE_SHIFT);
# we model a 48-bit physical address space.
PA_BITS = 48
PFN_LIMIT = 1 << (PA_BITS - PAGE_SHIFT)
# A guest's IPA space; kvm_pgtable walks beyond it fail with -ERANGE.
DEFAULT_GUEST_IPA_BITS = 40
# pkvm.c: handles are vm_table index + HANDLE_OFFSET (0x1000). The model never
# reuses a handle, so a stale handle always means "gone".
FIRST_VM_HANDLE = 0x1000


class PageState(enum.IntEnum):
    """enum pkvm_page_state (arch/arm64/kvm/hyp/include/nvhe/memory.h, v6.15+ numbering)."""

    OWNED = 0
    SHARED_OWNED = 1
    SHARED_BORROWED = 2
    NOPAGE = 3
    # memory.h: PKVM_POISON = BIT(2). Guest side only: guest_get_page_state()
    # infers it from a KVM_GUEST_INVALID_PTE_TYPE_POISONED entry left by a
    # forced reclaim; host and hyp states never take it.
    POISON = 4

    def __str__(self) -> str:
        return self.name


# States in which a component may access the frame through its stage-2 / stage-1.
ACCESSIBLE = frozenset({PageState.OWNED, PageState.SHARED_OWNED, PageState.SHARED_BORROWED})
# States that make a component the frame's owner.
OWNING = frozenset({PageState.OWNED, PageState.SHARED_OWNED})


class ComponentId(enum.IntEnum):
    """enum pkvm_component_id (nvhe/mem_protect.h); its order is also the lock order."""

    HOST = 0
    HYP = 1
    GUEST = 2


@dataclass(frozen=True)
class Component:
    """One party that can own or borrow a frame; guests are told apart by VM handle."""

    id: ComponentId
    handle: int | None = None

    @classmethod
    def guest(cls, handle: int) -> Component:
        return cls(ComponentId.GUEST, handle)

    def __str__(self) -> str:
        if self.id is ComponentId.GUEST:
            return f"guest {self.handle:#x}"
        return self.id.name.lower()


HOST = Component(ComponentId.HOST)
HYP = Component(ComponentId.HYP)


@dataclass(frozen=True)
class Annotation:
    """The invalid host stage-2 entry of a frame the host gave away.

    mem_protect.c: host_stage2_set_owner_metadata_locked() writes type
    KVM_HOST_INVALID_PTE_TYPE_DONATION, the owner id and, for a guest, the VM
    handle and gfn (host_stage2_encode_gfn_meta()). It exists exactly while the
    host state is NOPAGE.
    """

    owner: Component
    gfn: int | None = None


@dataclass(frozen=True)
class GuestEntry:
    """A guest stage-2 entry: its state and the frame it maps (the frame it used to map, for POISON)."""

    state: PageState
    pfn: int


@dataclass(frozen=True)
class FrameState:
    """Everything about one frame at one moment, for transition logs and test comparisons."""

    pfn: int
    host: PageState
    hyp: PageState
    owner: Component
    annotation: Annotation | None
    host_share_guest_count: int
    hyp_pin_count: int
    # (handle, gfn, state) of every guest entry that maps this frame.
    guest_mappings: tuple[tuple[int, int, PageState], ...]


@dataclass(frozen=True)
class Transition:
    """One call of a transition method: what was asked, what came back, the frames before and after."""

    name: str
    pfn: int | None
    args: tuple[object, ...]
    result: Errno
    before: tuple[FrameState, ...]
    after: tuple[FrameState, ...]

    def __str__(self) -> str:
        args = ", ".join(hex(a) if isinstance(a, int) and not isinstance(a, bool) else repr(a) for a in self.args)
        return f"{self.name}({args}) = {self.result}"


@dataclass
class _Frame:
    """Per-frame record: the host and hyp halves of struct hyp_page plus the host stage-2 annotation."""

    host: PageState = PageState.OWNED
    hyp: PageState = PageState.NOPAGE
    annotation: Annotation | None = None
    # struct hyp_page.host_share_guest_count: shares with non-protected guests.
    host_share_guest_count: int = 0
    # struct hyp_page.refcount as used by hyp_pin_shared_mem().
    hyp_pin_count: int = 0
    # Not a pKVM field: true while the frame may hold data a protected guest
    # wrote and never shared. The host must not regain access before a scrub.
    holds_guest_secret: bool = False


@dataclass
class _Vm:
    """struct pkvm_hyp_vm, reduced to what ownership needs."""

    handle: int
    protected: bool
    dying: bool = False
    entries: dict[int, GuestEntry] = field(default_factory=dict)
    # gfns lost to a forced reclaim, in order (history: survives teardown reclaim).
    poisoned: list[int] = field(default_factory=list)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _noop_stage2(pfn: int, mapped_allowed: bool) -> None:
    pass


def _noop_zero(pfn: int) -> None:
    pass


class Ownership:
    """Page ownership of one machine: frames [first_pfn, first_pfn + nr_pages) and its guests.

    All frames start owned by the host (as after pKVM init, before anything is
    donated). Frames outside the range are "not memory": transitions on them
    fail the way pKVM's check_range_allowed_memory() does, and queries report
    them as NOPAGE / not accessible / unowned.
    """

    def __init__(
        self,
        first_pfn: int,
        nr_pages: int,
        *,
        on_host_stage2_change: Callable[[int, bool], None] | None = None,
        zero_frame: Callable[[int], None] | None = None,
        guest_ipa_bits: int = DEFAULT_GUEST_IPA_BITS,
    ) -> None:
        if not (_is_int(first_pfn) and _is_int(nr_pages)) or first_pfn < 0 or nr_pages < 1:
            raise ValueError(f"bad frame range: first_pfn={first_pfn!r} nr_pages={nr_pages!r}")
        if first_pfn + nr_pages > PFN_LIMIT:
            raise ValueError(f"frame range ends beyond the {PA_BITS}-bit physical address space")
        self.first_pfn = first_pfn
        self.nr_pages = nr_pages
        self._on_host_stage2_change = on_host_stage2_change or _noop_stage2
        self._zero_frame = zero_frame or _noop_zero
        self._gfn_limit = 1 << (guest_ipa_bits - PAGE_SHIFT)
        self._frames: dict[int, _Frame] = {pfn: _Frame() for pfn in range(first_pfn, first_pfn + nr_pages)}
        self._vms: dict[int, _Vm] = {}
        self._next_handle = FIRST_VM_HANDLE
        self._violations: list[str] = []
        self.transitions: list[Transition] = []

    # ------------------------------------------------------------------ queries

    def is_memory(self, pfn: object) -> bool:
        return _is_int(pfn) and pfn in self._frames

    def host_state(self, pfn: int) -> PageState:
        frame = self._frames.get(pfn) if _is_int(pfn) else None
        return frame.host if frame else PageState.NOPAGE

    def hyp_state(self, pfn: int) -> PageState:
        frame = self._frames.get(pfn) if _is_int(pfn) else None
        return frame.hyp if frame else PageState.NOPAGE

    def host_may_access(self, pfn: int) -> bool:
        """Whether the host stage-2 may map this frame (the lazy idmap of handle_host_mem_abort())."""
        return self.host_state(pfn) in ACCESSIBLE

    def host_share_guest_count(self, pfn: int) -> int:
        return self._frames[pfn].host_share_guest_count if self.is_memory(pfn) else 0

    def hyp_pin_count(self, pfn: int) -> int:
        return self._frames[pfn].hyp_pin_count if self.is_memory(pfn) else 0

    def annotation(self, pfn: int) -> tuple[int, int] | None:
        """(VM handle, gfn) recorded in the host stage-2 for a frame donated to a guest, else None.

        Hyp-owned frames carry an annotation too (owner hyp, no metadata);
        owner() reports those.
        """
        if not self.is_memory(pfn):
            return None
        ann = self._frames[pfn].annotation
        if ann is None or ann.owner.id is not ComponentId.GUEST:
            return None
        return (ann.owner.handle, ann.gfn)

    def owner(self, pfn: int) -> Component | None:
        """The one component whose state is OWNED or SHARED_OWNED, or None outside memory."""
        if not self.is_memory(pfn):
            return None
        frame = self._frames[pfn]
        if frame.host in OWNING:
            return HOST
        if frame.annotation is not None:
            return frame.annotation.owner
        if frame.hyp in OWNING:
            return HYP
        for handle, _gfn, state in self._mappings_of(pfn):
            if state in OWNING:
                return Component.guest(handle)
        return None

    def guests(self) -> tuple[int, ...]:
        return tuple(sorted(self._vms))

    def is_dying(self, handle: int) -> bool:
        vm = self._vm(handle)
        return bool(vm and vm.dying)

    def is_protected(self, handle: int) -> bool:
        vm = self._vm(handle)
        return bool(vm and vm.protected)

    def guest_state(self, handle: int, gfn: int) -> PageState | None:
        """The guest's state at gfn (NOPAGE when nothing is there), or None for an unknown VM."""
        vm = self._vm(handle)
        if vm is None:
            return None
        entry = vm.entries.get(gfn) if _is_int(gfn) else None
        return entry.state if entry else PageState.NOPAGE

    def guest_frames(self, handle: int) -> dict[int, int]:
        """gfn -> pfn for every valid (accessible) entry of the guest."""
        vm = self._vm(handle)
        if vm is None:
            return {}
        return {gfn: e.pfn for gfn, e in sorted(vm.entries.items()) if e.state in ACCESSIBLE}

    def poisoned(self, handle: int) -> list[int]:
        """gfns this guest lost to a forced reclaim, oldest first."""
        vm = self._vm(handle)
        return list(vm.poisoned) if vm else []

    def guest_in_poison_fault(self, handle: int, gfn: int) -> bool:
        """Whether a guest access to gfn hits a poisoned entry.

        mem_protect.c: __pkvm_vcpu_in_poison_fault(); the host's
        pkvm_pgtable_stage2_map() turns that into -EFAULT from KVM_RUN.
        """
        return self.guest_state(handle, gfn) is PageState.POISON

    def frame_state(self, pfn: int) -> FrameState | None:
        if not self.is_memory(pfn):
            return None
        frame = self._frames[pfn]
        return FrameState(
            pfn=pfn,
            host=frame.host,
            hyp=frame.hyp,
            owner=self.owner(pfn),
            annotation=frame.annotation,
            host_share_guest_count=frame.host_share_guest_count,
            hyp_pin_count=frame.hyp_pin_count,
            guest_mappings=tuple(self._mappings_of(pfn)),
        )

    def snapshot(self) -> tuple:
        """A hashable copy of the whole ownership state (not the transition log), to compare before/after."""
        frames = tuple(
            (pfn, f.host, f.hyp, f.annotation, f.host_share_guest_count, f.hyp_pin_count, f.holds_guest_secret)
            for pfn, f in sorted(self._frames.items())
        )
        vms = tuple(
            (h, vm.protected, vm.dying, tuple(sorted(vm.entries.items())), tuple(vm.poisoned))
            for h, vm in sorted(self._vms.items())
        )
        return (frames, vms, self._next_handle)

    # ---------------------------------------------------------- VM lifecycle

    def create_guest(self, protected: bool = True) -> int:
        """Create a VM and return its handle (pkvm.c: __pkvm_init_vm()).

        ``protected`` selects the pVM kind: hyp-main.c only lets the host
        donate to protected VMs and only share with non-protected ones.
        """
        handle = self._next_handle
        self._next_handle += 1
        self._vms[handle] = _Vm(handle=handle, protected=bool(protected))
        self._log("__pkvm_init_vm", None, (bool(protected),), Errno.SUCCESS, (), ())
        return handle

    def teardown_guest(self, handle: int) -> Errno:
        """Mark the VM dying (pkvm.c: __pkvm_start_teardown_vm()): -EINVAL if unknown or already dying."""
        return self._run("__pkvm_start_teardown_vm", (handle,), (), lambda: self._start_teardown(handle))

    def reclaim_dying_guest_page(self, handle: int, gfn: int) -> Errno:
        """Give one page of a dying VM back to the host (pkvm.c: __pkvm_reclaim_dying_guest_page()).

        Order: unknown VM or not dying -> -EINVAL; gfn outside the IPA space
        -> -ERANGE; then by guest state (mem_protect.c:
        __pkvm_host_reclaim_page_guest()):
        NOPAGE -> -ENOENT (get_valid_guest_pte());
        POISON -> 0, entry dropped (the kernel maps -EHWPOISON to 0);
        OWNED -> scrub, host OWNED (host regains access after the scrub);
        SHARED_OWNED (shared back to the host) -> host OWNED, no scrub, the host already saw it;
        SHARED_BORROWED -> -EPERM (a host share leaves through host_unshare_guest()).
        """
        pfn = self._entry_pfn(handle, gfn)
        return self._run(
            "__pkvm_reclaim_dying_guest_page", (handle, gfn), (pfn,), lambda: self._reclaim_dying(handle, gfn)
        )

    def reclaim_all_dying_guest_pages(self, handle: int) -> Errno:
        """Return every page of a dying VM, as the host's stage-2 destroy does: one transition per gfn.

        Pages the host shared with the guest are unshared (host_unshare_guest),
        the others reclaimed. Stops at the first error and returns it. Not a
        transition itself: only the per-page calls are logged.
        """
        vm = self._vm(handle)
        if vm is None or not vm.dying:
            return Errno.EINVAL
        for gfn, entry in sorted(vm.entries.items()):
            if entry.state is PageState.SHARED_BORROWED:
                ret = self.host_unshare_guest(handle, gfn)
            else:
                ret = self.reclaim_dying_guest_page(handle, gfn)
            if ret:
                return ret
        return Errno.SUCCESS

    def finalize_teardown_guest(self, handle: int) -> Errno:
        """Forget a dying VM (pkvm.c: __pkvm_finalize_teardown_vm()).

        -EINVAL if unknown or not dying. Model choice: -EBUSY while the guest
        still has any stage-2 entry; pKVM relies on the host having reclaimed
        everything first, and refusing keeps every annotation pointing at a
        live VM.
        """
        return self._run(
            "__pkvm_finalize_teardown_vm", (handle,), (), lambda: self._finalize_teardown(handle)
        )

    # -------------------------------------------------------- host <-> hyp

    def host_share_hyp(self, pfn: int) -> Errno:
        """host OWNED -> SHARED_OWNED, hyp NOPAGE -> SHARED_BORROWED (mem_protect.c: __pkvm_host_share_hyp()).

        Not memory -> -EPERM (check_range_allowed_memory()); wrong host state,
        then wrong hyp state -> -EPERM.
        """
        return self._run("__pkvm_host_share_hyp", (pfn,), (pfn,), lambda: self._host_share_hyp(pfn))

    def host_unshare_hyp(self, pfn: int) -> Errno:
        """Reverse of host_share_hyp (mem_protect.c: __pkvm_host_unshare_hyp()).

        Checks host SHARED_OWNED, hyp SHARED_BORROWED (-EPERM), then the pin
        count (__hyp_check_page_count_range(): -EBUSY while hyp holds pins).
        """
        return self._run("__pkvm_host_unshare_hyp", (pfn,), (pfn,), lambda: self._host_unshare_hyp(pfn))

    def hyp_pin_shared_mem(self, pfn: int, nr: int = 1) -> Errno:
        """Take a hyp reference on frames the host shares with hyp (mem_protect.c: hyp_pin_shared_mem()).

        Every frame must be host SHARED_OWNED and hyp SHARED_BORROWED: -EPERM,
        or -EINVAL for a range that runs out of memory.
        """
        return self._run(
            "hyp_pin_shared_mem", (pfn, nr), self._range(pfn, nr), lambda: self._hyp_pin(pfn, nr)
        )

    def hyp_unpin_shared_mem(self, pfn: int, nr: int = 1) -> Errno:
        """Drop a hyp reference (mem_protect.c: hyp_unpin_shared_mem()).

        pKVM checks nothing here and BUG()s on a zero refcount; the model
        checks the shared states (-EPERM) and returns -EINVAL for an unpinned
        frame instead of panicking.
        """
        return self._run(
            "hyp_unpin_shared_mem", (pfn, nr), self._range(pfn, nr), lambda: self._hyp_unpin(pfn, nr)
        )

    def host_donate_hyp(self, pfn: int, nr: int = 1) -> Errno:
        """host OWNED -> NOPAGE (annotated hyp), hyp NOPAGE -> OWNED (mem_protect.c: __pkvm_host_donate_hyp()).

        pfn_range_is_valid() -> -EINVAL; memory check -> -EPERM / -EINVAL;
        any host frame not OWNED, then any hyp frame not NOPAGE -> -EPERM.
        """
        return self._run(
            "__pkvm_host_donate_hyp", (pfn, nr), self._range(pfn, nr), lambda: self._host_donate_hyp(pfn, nr)
        )

    def hyp_donate_host(self, pfn: int, nr: int = 1) -> Errno:
        """hyp OWNED -> NOPAGE, host NOPAGE -> OWNED (mem_protect.c: __pkvm_hyp_donate_host()).

        The hyp check comes first; pKVM does no memory check here (only EL2
        calls it), the model adds pfn_range_is_valid() -> -EINVAL. No scrub:
        pKVM leaves clearing to the caller. The -EBUSY pin check of pKVM cannot
        fire in this model (pins need a shared frame).
        """
        return self._run(
            "__pkvm_hyp_donate_host", (pfn, nr), self._range(pfn, nr), lambda: self._hyp_donate_host(pfn, nr)
        )

    # ------------------------------------------------------- host <-> guest

    def host_donate_guest(self, pfn: int, handle: int, gfn: int) -> Errno:
        """host OWNED -> NOPAGE annotated (handle, gfn); guest NOPAGE -> OWNED.

        mem_protect.c: __pkvm_host_donate_guest().

        Order: bad argument types -> -EINVAL; unknown, dying or non-protected
        VM -> -EINVAL (hyp-main.c: the handler needs a loaded protected vCPU,
        and none can be loaded once the VM is dying); not memory or host not
        OWNED -> -EPERM; gfn outside the IPA space -> -ERANGE; guest entry not
        NOPAGE (POISON included) -> -EPERM.
        """
        return self._run(
            "__pkvm_host_donate_guest", (pfn, handle, gfn), (pfn,),
            lambda: self._host_donate_guest(pfn, handle, gfn),
        )

    def host_share_guest(self, pfn: int, handle: int, gfn: int) -> Errno:
        """host OWNED/SHARED_OWNED -> SHARED_OWNED (count + 1); guest NOPAGE -> SHARED_BORROWED.

        mem_protect.c: __pkvm_host_share_guest(). Order: bad types, unknown,
        dying or protected VM -> -EINVAL; pfn_range_is_valid() -> -EINVAL; not
        memory -> -EPERM; gfn outside IPA space -> -ERANGE; guest entry not
        NOPAGE -> -EPERM; host OWNED, or SHARED_OWNED with a non-zero share
        count (multi-sharing with non-protected guests is tolerated), else
        -EPERM (e.g. a frame shared with hyp). pKVM's -EBUSY at a count of
        U32_MAX is not modelled.
        """
        return self._run(
            "__pkvm_host_share_guest", (pfn, handle, gfn), (pfn,), lambda: self._host_share_guest(pfn, handle, gfn)
        )

    def host_unshare_guest(self, handle: int, gfn: int) -> Errno:
        """Undo one host share (mem_protect.c: __pkvm_host_unshare_guest(), __check_host_shared_guest()).

        Order: bad types, unknown or protected VM -> -EINVAL (works on a dying
        VM: the handler looks it up by handle); gfn outside IPA space ->
        -ERANGE; no valid entry -> -ENOENT; entry not SHARED_BORROWED ->
        -EPERM. The host goes back to OWNED when the count reaches 0.
        """
        pfn = self._entry_pfn(handle, gfn)
        return self._run(
            "__pkvm_host_unshare_guest", (handle, gfn), (pfn,), lambda: self._host_unshare_guest(handle, gfn)
        )

    def guest_share_host(self, handle: int, gfn: int) -> Errno:
        """Guest-initiated: guest OWNED -> SHARED_OWNED, host NOPAGE -> SHARED_BORROWED.

        mem_protect.c: __pkvm_guest_share_host(). Order: bad types, unknown or
        dying VM (its vCPUs cannot run) -> -EINVAL; gfn outside IPA space ->
        -ERANGE; get_valid_guest_pte(): POISON -> -EHWPOISON, nothing mapped
        -> -ENOENT; guest not OWNED, then host not NOPAGE -> -EPERM. The host
        annotation is replaced by a valid mapping: the host may access it.
        """
        pfn = self._entry_pfn(handle, gfn)
        return self._run(
            "__pkvm_guest_share_host", (handle, gfn), (pfn,), lambda: self._guest_share_host(handle, gfn)
        )

    def guest_unshare_host(self, handle: int, gfn: int) -> Errno:
        """Guest-initiated: guest SHARED_OWNED -> OWNED, host SHARED_BORROWED -> NOPAGE annotated again.

        mem_protect.c: __pkvm_guest_unshare_host(); same argument checks as
        guest_share_host, then guest not SHARED_OWNED, host not
        SHARED_BORROWED -> -EPERM.
        """
        pfn = self._entry_pfn(handle, gfn)
        return self._run(
            "__pkvm_guest_unshare_host", (handle, gfn), (pfn,), lambda: self._guest_unshare_host(handle, gfn)
        )

    def host_force_reclaim_guest_page(self, pfn: int) -> Errno:
        """Take a donated page back from a guest: the seed patch.

        mem_protect.c: __pkvm_host_force_reclaim_page_guest().

        Order (host_stage2_get_guest_info(), then the guest check): not
        memory -> -EPERM; host state not NOPAGE (already reclaimed, or shared
        back) -> -EAGAIN; annotation owner not a guest (hyp) -> -EPERM; VM
        gone -> -EAGAIN; guest entry not OWNED -> -EPERM.
        Then, in pKVM's order: guest entry -> POISON; the frame is zeroed;
        only then host OWNED (its stage-2 may map it again).
        A dying VM is not refused: pKVM tests is_dying only in vCPU load,
        teardown and reclaim, so forced reclaim works on it too.
        """
        return self._run(
            "__pkvm_host_force_reclaim_page_guest", (pfn,), (pfn,), lambda: self._force_reclaim(pfn)
        )

    # ---------------------------------------------------------- invariants

    def check_invariants(self) -> list[str]:
        """Every ownership invariant, checked from scratch; returns one message per broken one."""
        problems = list(self._violations)
        mappings: dict[int, list[tuple[int, int, PageState]]] = {}
        for vm in self._vms.values():
            problems += self._check_vm(vm, mappings)
        for pfn, frame in sorted(self._frames.items()):
            problems += [f"pfn {pfn:#x}: {p}" for p in self._check_frame(frame, mappings.get(pfn, []))]
        return problems

    def _check_vm(self, vm: _Vm, mappings: dict[int, list[tuple[int, int, PageState]]]) -> list[str]:
        problems = []
        who = f"guest {vm.handle:#x}"
        for gfn, entry in vm.entries.items():
            if entry.state is PageState.POISON:
                if gfn not in vm.poisoned:
                    problems.append(f"{who} gfn {gfn:#x}: POISON entry without a forced reclaim")
                continue
            if entry.state is PageState.NOPAGE:
                problems.append(f"{who} gfn {gfn:#x}: stored NOPAGE entry")
                continue
            if entry.pfn not in self._frames:
                problems.append(f"{who} gfn {gfn:#x}: maps pfn {entry.pfn:#x} outside memory")
                continue
            if vm.protected == (entry.state is PageState.SHARED_BORROWED):
                kind = "protected" if vm.protected else "non-protected"
                problems.append(f"{who} gfn {gfn:#x}: {entry.state} in a {kind} VM")
            mappings.setdefault(entry.pfn, []).append((vm.handle, gfn, entry.state))
        return problems

    def _check_frame(self, frame: _Frame, maps: list[tuple[int, int, PageState]]) -> list[str]:
        problems = []
        if frame.host is PageState.POISON or frame.hyp is PageState.POISON:
            problems.append("POISON on the host or hyp side")
        owners = (frame.host in OWNING) + (frame.hyp in OWNING) + sum(s in OWNING for _h, _g, s in maps)
        if owners != 1:
            problems.append(f"{owners} owners")
        if (frame.host is PageState.NOPAGE) != (frame.annotation is not None):
            problems.append(f"host {frame.host} with annotation {frame.annotation}")
        if frame.hyp_pin_count < 0 or frame.host_share_guest_count < 0:
            problems.append("negative count")
        if frame.hyp_pin_count and frame.hyp is not PageState.SHARED_BORROWED:
            problems.append(f"{frame.hyp_pin_count} hyp pins on hyp {frame.hyp}")
        hyp_shared = frame.hyp in (PageState.SHARED_BORROWED, PageState.SHARED_OWNED)
        if hyp_shared and frame.host is not PageState.SHARED_OWNED:
            problems.append(f"hyp {frame.hyp} but host {frame.host}")
        borrowed = [m for m in maps if m[2] is PageState.SHARED_BORROWED]
        if frame.host_share_guest_count != len(borrowed):
            problems.append(f"share count {frame.host_share_guest_count} but {len(borrowed)} guest borrowers")
        guest_holders = {m[2] for m in maps} - {PageState.SHARED_BORROWED}
        if frame.host is PageState.OWNED:
            if frame.hyp is not PageState.NOPAGE or maps:
                problems.append(f"host OWNED but hyp {frame.hyp}, guests {maps}")
        elif frame.host is PageState.SHARED_OWNED:
            if (frame.hyp is PageState.SHARED_BORROWED) == bool(borrowed):
                problems.append("host SHARED_OWNED must be shared with hyp or with guests, not both or neither")
            if guest_holders:
                problems.append(f"host SHARED_OWNED but a guest holds it: {maps}")
        elif frame.host is PageState.SHARED_BORROWED:
            if frame.hyp is not PageState.NOPAGE or [m[2] for m in maps] != [PageState.SHARED_OWNED]:
                problems.append(f"host SHARED_BORROWED needs one guest SHARED_OWNED and hyp NOPAGE: {maps}")
        elif frame.annotation is not None:
            owner = frame.annotation.owner
            if owner == HYP:
                if frame.hyp is not PageState.OWNED or maps:
                    problems.append(f"annotated hyp but hyp {frame.hyp}, guests {maps}")
            elif owner.id is ComponentId.GUEST:
                expected = [(owner.handle, frame.annotation.gfn, PageState.OWNED)]
                if frame.hyp is not PageState.NOPAGE or maps != expected:
                    problems.append(
                        f"annotated {owner} gfn {frame.annotation.gfn} but guests {maps}, hyp {frame.hyp}"
                    )
            else:
                problems.append(f"annotated with owner {owner}")
        if frame.holds_guest_secret:
            if frame.host in ACCESSIBLE:
                problems.append("host may access a frame holding guest data that was never scrubbed")
            if PageState.OWNED not in {m[2] for m in maps}:
                problems.append("guest data left behind in a frame no guest owns")
        return problems

    # ------------------------------------------------------------ internals

    def _vm(self, handle: object) -> _Vm | None:
        return self._vms.get(handle) if _is_int(handle) else None

    def _mappings_of(self, pfn: int) -> Iterable[tuple[int, int, PageState]]:
        for handle, vm in sorted(self._vms.items()):
            for gfn, entry in sorted(vm.entries.items()):
                if entry.pfn == pfn and entry.state is not PageState.POISON:
                    yield (handle, gfn, entry.state)

    def _entry_pfn(self, handle: object, gfn: object) -> int | None:
        vm = self._vm(handle)
        entry = vm.entries.get(gfn) if vm is not None and _is_int(gfn) else None
        if entry is None or entry.state is PageState.POISON:
            return None
        return entry.pfn

    def _range(self, pfn: object, nr: object) -> tuple[int, ...]:
        if not (_is_int(pfn) and _is_int(nr)) or nr < 1:
            return ()
        return tuple(p for p in range(pfn, pfn + min(nr, self.nr_pages + 1)) if p in self._frames)

    def _run(
        self, name: str, args: tuple[object, ...], pfns: Iterable[object], body: Callable[[], Errno]
    ) -> Errno:
        """Run one transition body and log it with the frames it concerns, before and after."""
        frames = tuple(p for p in pfns if self.is_memory(p))
        before = tuple(self.frame_state(p) for p in frames)
        result = Errno(body())
        after = tuple(self.frame_state(p) for p in frames)
        self._log(name, frames[0] if frames else None, args, result, before, after)
        return result

    def _log(
        self,
        name: str,
        pfn: int | None,
        args: tuple[object, ...],
        result: Errno,
        before: tuple[FrameState, ...],
        after: tuple[FrameState, ...],
    ) -> None:
        self.transitions.append(Transition(name, pfn, args, result, before, after))

    # Argument checks, in the shape of mem_protect.c's helpers.

    @staticmethod
    def _pfn_range_is_valid(pfn: int, nr: int) -> bool:
        return 0 <= pfn and pfn + nr <= PFN_LIMIT

    def _check_range_allowed_memory(self, pfn: int, nr: int) -> Errno:
        # mem_protect.c: check_range_allowed_memory(): -EPERM when the start is
        # not memory, -EINVAL when the range leaves its memory region.
        if pfn not in self._frames:
            return Errno.EPERM
        if pfn + nr - 1 not in self._frames:
            return Errno.EINVAL
        return Errno.SUCCESS

    def _check_pfns(self, pfn: object, nr: object, *, pa_check: bool) -> Errno:
        if not (_is_int(pfn) and _is_int(nr)) or nr < 1:
            return Errno.EINVAL
        if pa_check and not self._pfn_range_is_valid(pfn, nr):
            return Errno.EINVAL
        return self._check_range_allowed_memory(pfn, nr)

    def _check_gfn(self, gfn: int) -> Errno:
        # kvm_pgtable_walk() refuses addresses beyond the guest's IPA size.
        return Errno.SUCCESS if 0 <= gfn < self._gfn_limit else Errno.ERANGE

    def _guest_entry_state(self, vm: _Vm, gfn: int) -> PageState:
        entry = vm.entries.get(gfn)
        return entry.state if entry else PageState.NOPAGE

    def _valid_guest_entry(self, vm: _Vm, gfn: int) -> Errno:
        # mem_protect.c: get_valid_guest_pte(): poisoned first, then invalid.
        state = self._guest_entry_state(vm, gfn)
        if state is PageState.POISON:
            return Errno.EHWPOISON
        if state is PageState.NOPAGE:
            return Errno.ENOENT
        return Errno.SUCCESS

    # State changes. Host changes go through _set_host so that the stage-2
    # callback fires exactly when host access flips.

    def _set_host(self, pfn: int, state: PageState, annotation: Annotation | None = None) -> None:
        frame = self._frames[pfn]
        could = frame.host in ACCESSIBLE
        frame.host = state
        frame.annotation = annotation
        can = state in ACCESSIBLE
        if could != can:
            if can and frame.holds_guest_secret:
                self._violations.append(f"pfn {pfn:#x}: host regained access before the frame was zeroed")
            self._on_host_stage2_change(pfn, can)

    def _scrub(self, pfn: int) -> None:
        # mem_protect.c: hyp_poison_page() clears the whole page.
        self._zero_frame(pfn)
        self._frames[pfn].holds_guest_secret = False

    def _set_guest(self, vm: _Vm, gfn: int, state: PageState, pfn: int) -> None:
        if state is PageState.NOPAGE:
            vm.entries.pop(gfn, None)
        else:
            vm.entries[gfn] = GuestEntry(state, pfn)

    # Transition bodies: checks, then effects.

    def _host_share_hyp(self, pfn: object) -> Errno:
        if ret := self._check_pfns(pfn, 1, pa_check=False):
            return ret
        frame = self._frames[pfn]
        if frame.host is not PageState.OWNED or frame.hyp is not PageState.NOPAGE:
            return Errno.EPERM
        self._set_host(pfn, PageState.SHARED_OWNED)
        frame.hyp = PageState.SHARED_BORROWED
        return Errno.SUCCESS

    def _host_unshare_hyp(self, pfn: object) -> Errno:
        if ret := self._check_pfns(pfn, 1, pa_check=False):
            return ret
        frame = self._frames[pfn]
        if frame.host is not PageState.SHARED_OWNED or frame.hyp is not PageState.SHARED_BORROWED:
            return Errno.EPERM
        if frame.hyp_pin_count:
            return Errno.EBUSY
        frame.hyp = PageState.NOPAGE
        self._set_host(pfn, PageState.OWNED)
        return Errno.SUCCESS

    def _shared_with_hyp(self, pfn: int, nr: int) -> bool:
        return all(
            self._frames[p].host is PageState.SHARED_OWNED and self._frames[p].hyp is PageState.SHARED_BORROWED
            for p in range(pfn, pfn + nr)
        )

    def _hyp_pin(self, pfn: object, nr: object) -> Errno:
        if ret := self._check_pfns(pfn, nr, pa_check=False):
            return ret
        if not self._shared_with_hyp(pfn, nr):
            return Errno.EPERM
        for p in range(pfn, pfn + nr):
            self._frames[p].hyp_pin_count += 1
        return Errno.SUCCESS

    def _hyp_unpin(self, pfn: object, nr: object) -> Errno:
        if ret := self._check_pfns(pfn, nr, pa_check=False):
            return ret
        if not self._shared_with_hyp(pfn, nr):
            return Errno.EPERM
        if any(self._frames[p].hyp_pin_count == 0 for p in range(pfn, pfn + nr)):
            return Errno.EINVAL
        for p in range(pfn, pfn + nr):
            self._frames[p].hyp_pin_count -= 1
        return Errno.SUCCESS

    def _host_donate_hyp(self, pfn: object, nr: object) -> Errno:
        if ret := self._check_pfns(pfn, nr, pa_check=True):
            return ret
        pfns = range(pfn, pfn + nr)
        if any(self._frames[p].host is not PageState.OWNED for p in pfns):
            return Errno.EPERM
        if any(self._frames[p].hyp is not PageState.NOPAGE for p in pfns):
            return Errno.EPERM
        for p in pfns:
            self._frames[p].hyp = PageState.OWNED
            self._set_host(p, PageState.NOPAGE, Annotation(HYP))
        return Errno.SUCCESS

    def _hyp_donate_host(self, pfn: object, nr: object) -> Errno:
        if not (_is_int(pfn) and _is_int(nr)) or nr < 1 or not self._pfn_range_is_valid(pfn, nr):
            return Errno.EINVAL
        pfns = range(pfn, pfn + nr)
        # Outside memory the hyp state reads as NOPAGE, so the hyp check fails first.
        if any(self.hyp_state(p) is not PageState.OWNED for p in pfns):
            return Errno.EPERM
        if any(self._frames[p].host is not PageState.NOPAGE for p in pfns):
            return Errno.EPERM
        for p in pfns:
            self._frames[p].hyp = PageState.NOPAGE
            self._set_host(p, PageState.OWNED)
        return Errno.SUCCESS

    def _host_donate_guest(self, pfn: object, handle: object, gfn: object) -> Errno:
        if not (_is_int(pfn) and _is_int(handle) and _is_int(gfn)):
            return Errno.EINVAL
        vm = self._vm(handle)
        if vm is None or vm.dying or not vm.protected:
            return Errno.EINVAL
        if ret := self._check_range_allowed_memory(pfn, 1):
            return ret
        if self._frames[pfn].host is not PageState.OWNED:
            return Errno.EPERM
        if ret := self._check_gfn(gfn):
            return ret
        if self._guest_entry_state(vm, gfn) is not PageState.NOPAGE:
            return Errno.EPERM
        self._set_guest(vm, gfn, PageState.OWNED, pfn)
        self._set_host(pfn, PageState.NOPAGE, Annotation(Component.guest(handle), gfn))
        self._frames[pfn].holds_guest_secret = True
        return Errno.SUCCESS

    def _host_share_guest(self, pfn: object, handle: object, gfn: object) -> Errno:
        if not (_is_int(pfn) and _is_int(handle) and _is_int(gfn)):
            return Errno.EINVAL
        vm = self._vm(handle)
        if vm is None or vm.dying or vm.protected:
            return Errno.EINVAL
        if ret := self._check_pfns(pfn, 1, pa_check=True):
            return ret
        if ret := self._check_gfn(gfn):
            return ret
        if self._guest_entry_state(vm, gfn) is not PageState.NOPAGE:
            return Errno.EPERM
        frame = self._frames[pfn]
        shareable = frame.host is PageState.OWNED or (
            frame.host is PageState.SHARED_OWNED and frame.host_share_guest_count > 0
        )
        if not shareable:
            return Errno.EPERM
        self._set_host(pfn, PageState.SHARED_OWNED)
        frame.host_share_guest_count += 1
        self._set_guest(vm, gfn, PageState.SHARED_BORROWED, pfn)
        return Errno.SUCCESS

    def _host_unshare_guest(self, handle: object, gfn: object) -> Errno:
        if not (_is_int(handle) and _is_int(gfn)):
            return Errno.EINVAL
        vm = self._vm(handle)
        if vm is None or vm.protected:
            return Errno.EINVAL
        if ret := self._check_gfn(gfn):
            return ret
        state = self._guest_entry_state(vm, gfn)
        if state in (PageState.NOPAGE, PageState.POISON):
            return Errno.ENOENT
        if state is not PageState.SHARED_BORROWED:
            return Errno.EPERM
        pfn = vm.entries[gfn].pfn
        frame = self._frames[pfn]
        if frame.host is not PageState.SHARED_OWNED:
            return Errno.EPERM
        if frame.host_share_guest_count == 0:
            return Errno.EINVAL
        self._set_guest(vm, gfn, PageState.NOPAGE, pfn)
        frame.host_share_guest_count -= 1
        if frame.host_share_guest_count == 0:
            self._set_host(pfn, PageState.OWNED)
        return Errno.SUCCESS

    def _guest_side_checks(self, handle: object, gfn: object) -> tuple[Errno, _Vm | None]:
        """Argument checks shared by the guest-initiated transitions."""
        if not (_is_int(handle) and _is_int(gfn)):
            return Errno.EINVAL, None
        vm = self._vm(handle)
        if vm is None or vm.dying:
            return Errno.EINVAL, None
        if ret := self._check_gfn(gfn):
            return ret, None
        if ret := self._valid_guest_entry(vm, gfn):
            return ret, None
        return Errno.SUCCESS, vm

    def _guest_share_host(self, handle: object, gfn: object) -> Errno:
        ret, vm = self._guest_side_checks(handle, gfn)
        if ret:
            return ret
        entry = vm.entries[gfn]
        if entry.state is not PageState.OWNED or self._frames[entry.pfn].host is not PageState.NOPAGE:
            return Errno.EPERM
        self._set_guest(vm, gfn, PageState.SHARED_OWNED, entry.pfn)
        # The guest chose to expose the contents: nothing secret is left.
        self._frames[entry.pfn].holds_guest_secret = False
        self._set_host(entry.pfn, PageState.SHARED_BORROWED)
        return Errno.SUCCESS

    def _guest_unshare_host(self, handle: object, gfn: object) -> Errno:
        ret, vm = self._guest_side_checks(handle, gfn)
        if ret:
            return ret
        entry = vm.entries[gfn]
        if entry.state is not PageState.SHARED_OWNED:
            return Errno.EPERM
        if self._frames[entry.pfn].host is not PageState.SHARED_BORROWED:
            return Errno.EPERM
        self._set_guest(vm, gfn, PageState.OWNED, entry.pfn)
        self._set_host(entry.pfn, PageState.NOPAGE, Annotation(Component.guest(vm.handle), gfn))
        self._frames[entry.pfn].holds_guest_secret = True
        return Errno.SUCCESS

    def _force_reclaim(self, pfn: object) -> Errno:
        if not _is_int(pfn):
            return Errno.EINVAL
        if pfn not in self._frames:
            return Errno.EPERM
        frame = self._frames[pfn]
        if frame.host is not PageState.NOPAGE:
            return Errno.EAGAIN
        owner = frame.annotation.owner
        if owner.id is not ComponentId.GUEST:
            return Errno.EPERM
        vm = self._vm(owner.handle)
        if vm is None:
            # host_stage2_decode_gfn_meta(): the VM went away under us. finalize
            # refuses while pages remain, so this is defensive in the model.
            return Errno.EAGAIN
        gfn = frame.annotation.gfn
        if self._guest_entry_state(vm, gfn) is not PageState.OWNED:
            return Errno.EPERM
        self._set_guest(vm, gfn, PageState.POISON, pfn)
        vm.poisoned.append(gfn)
        self._scrub(pfn)
        self._set_host(pfn, PageState.OWNED)
        return Errno.SUCCESS

    def _start_teardown(self, handle: object) -> Errno:
        vm = self._vm(handle)
        if vm is None or vm.dying:
            return Errno.EINVAL
        vm.dying = True
        return Errno.SUCCESS

    def _reclaim_dying(self, handle: object, gfn: object) -> Errno:
        if not (_is_int(handle) and _is_int(gfn)):
            return Errno.EINVAL
        vm = self._vm(handle)
        if vm is None or not vm.dying:
            return Errno.EINVAL
        if ret := self._check_gfn(gfn):
            return ret
        state = self._guest_entry_state(vm, gfn)
        if state is PageState.NOPAGE:
            return Errno.ENOENT
        if state is PageState.SHARED_BORROWED:
            return Errno.EPERM
        pfn = vm.entries[gfn].pfn
        self._set_guest(vm, gfn, PageState.NOPAGE, pfn)
        if state is PageState.OWNED:
            self._scrub(pfn)
            self._set_host(pfn, PageState.OWNED)
        elif state is PageState.SHARED_OWNED:
            self._set_host(pfn, PageState.OWNED)
        return Errno.SUCCESS

    def _finalize_teardown(self, handle: object) -> Errno:
        vm = self._vm(handle)
        if vm is None or not vm.dying:
            return Errno.EINVAL
        if vm.entries:
            return Errno.EBUSY
        del self._vms[handle]
        return Errno.SUCCESS
