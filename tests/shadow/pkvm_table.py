"""An independent shadow of pKVM page ownership: mem_protect.c's and pkvm.c's transition rules as a table.

Written from the kernel (arch/arm64/kvm/hyp/nvhe/mem_protect.c, pkvm.c, hyp-main.c,
as summarised in docs/facts.md "pKVM at EL2"), never by calling hyp/: its states
are plain strings and its records its own. Each row of TABLE is one kernel
function: the checks in the kernel's order, each with what a failure returns,
then the effect on success. What pKVM does not define is said so, not guessed:

- BUG: pKVM BUG()s (a hypervisor panic); the model must raise HypBug and change nothing.
- UNSPECIFIED: pKVM defines no result (EL2-internal functions handed a range EL2
  never builds, finalize before the host reclaimed every page): the model may
  refuse with any errno but must change nothing.

The model's own conveniences that are not kernel functions (a whole-VM reclaim
loop) are built here from the kernel rows they stand for.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Union

from abi.linux import Errno

OWNED, SO, SB, NOPAGE, POISON = "OWNED", "SHARED_OWNED", "SHARED_BORROWED", "NOPAGE", "POISON"
ACCESSIBLE = frozenset({OWNED, SO, SB})  # a component may touch the page
OWNING = frozenset({OWNED, SO})
BUG = "BUG"
UNSPECIFIED = "UNSPECIFIED"
Result = Union[Errno, str]

HANDLE_OFFSET = 0x1000  # pkvm.c: handle = vm_table index + HANDLE_OFFSET
KVM_MAX_PVMS = 255  # asm/kvm_pkvm.h: vm_table size
U32 = 0xFFFF_FFFF  # pkvm_handle_t and vcpu_idx are 32-bit
USHRT_MAX = 0xFFFF  # struct hyp_page.refcount
PFN_LIMIT = 1 << (48 - 12)  # pfn_range_is_valid() over a 48-bit PA space


@dataclass
class Frame:
    """struct hyp_page's host/hyp states and counts, plus the host stage-2 owner annotation."""

    host: str = OWNED
    hyp: str = NOPAGE
    owner: tuple | None = None  # ("hyp",) or ("guest", handle, gfn): only while host is NOPAGE
    pins: int = 0  # refcount taken by hyp_pin_shared_mem()
    shares: int = 0  # host_share_guest_count
    secret: bool = False  # holds data a protected guest never shared (not a pKVM field)


@dataclass
class Vm:
    protected: bool
    nr_vcpus: int
    dying: bool = False
    vcpus: set = field(default_factory=set)
    entries: dict = field(default_factory=dict)  # gfn -> (state, pfn)


# ---------------------------------------------------------------- checks (True = refused)
def _not_memory(s, a):
    return not s.is_memory(a.pfn)


def _range_leaves_memory(s, a):
    return not s.is_memory(a.pfn + a.nr - 1)


def _internal_range_bad(s, a):
    # EL2 builds these ranges itself (map_donated_memory(), vCPU pins): a range outside memory never reaches them.
    return a.nr < 1 or not (s.is_memory(a.pfn) and s.is_memory(a.pfn + a.nr - 1))


def _any(pred):
    return lambda s, a: any(pred(s.frame(p)) for p in range(a.pfn, a.pfn + a.nr))


def _host_is_not(state):
    return lambda s, a: s.frame(a.pfn).host != state


def _hyp_is_not(state):
    return lambda s, a: s.frame(a.pfn).hyp != state


def _vm_missing(dying=None, protected=None):
    def check(s, a):
        vm = s.vms.get(a.handle)
        return vm is None or (dying is not None and vm.dying != dying) or (protected is not None and vm.protected != protected)

    return check


def _gfn_out_of_ipa(s, a):
    return not 0 <= a.gfn < s.gfn_limit


def _entry(s, a):
    return s.vms[a.handle].entries.get(a.gfn, (NOPAGE, None))


def _entry_is(*states):
    return lambda s, a: _entry(s, a)[0] in states


def _entry_is_not(state):
    return lambda s, a: _entry(s, a)[0] != state


def _entry_frame_host_is_not(state):
    return lambda s, a: s.frame(_entry(s, a)[1]).host != state


# ---------------------------------------------------------------- effects
def _share_hyp(s, a):
    s.set(a.pfn, host=SO, hyp=SB)


def _unshare_hyp(s, a):
    s.set(a.pfn, host=OWNED, hyp=NOPAGE)


def _pin(s, a):
    for p in range(a.pfn, a.pfn + a.nr):
        s.frame(p).pins += 1


def _unpin(s, a):
    for p in range(a.pfn, a.pfn + a.nr):
        s.frame(p).pins -= 1


def _donate_hyp(s, a):
    for p in range(a.pfn, a.pfn + a.nr):
        s.set(p, host=NOPAGE, hyp=OWNED, owner=("hyp",))


def _hyp_donate_host(s, a):
    for p in range(a.pfn, a.pfn + a.nr):
        s.set(p, host=OWNED, hyp=NOPAGE)


def _donate_guest(s, a):
    s.vms[a.handle].entries[a.gfn] = (OWNED, a.pfn)
    s.set(a.pfn, host=NOPAGE, owner=("guest", a.handle, a.gfn))
    s.frame(a.pfn).secret = True  # the guest fills its page


def _share_guest(s, a):
    s.vms[a.handle].entries[a.gfn] = (SB, a.pfn)
    s.frame(a.pfn).shares += 1
    s.set(a.pfn, host=SO)


def _unshare_guest(s, a):
    _state, pfn = s.vms[a.handle].entries.pop(a.gfn)
    f = s.frame(pfn)
    f.shares -= 1
    if f.shares == 0:
        s.set(pfn, host=OWNED)


def _guest_share_host(s, a):
    pfn = _entry(s, a)[1]
    s.vms[a.handle].entries[a.gfn] = (SO, pfn)
    s.set(pfn, host=SB)
    s.frame(pfn).secret = False  # what the guest shares it meant to expose


def _guest_unshare_host(s, a):
    pfn = _entry(s, a)[1]
    s.vms[a.handle].entries[a.gfn] = (OWNED, pfn)
    s.set(pfn, host=NOPAGE, owner=("guest", a.handle, a.gfn))
    s.frame(pfn).secret = True


def _force_reclaim(s, a):
    _kind, handle, gfn = s.frame(a.pfn).owner
    s.vms[handle].entries[gfn] = (POISON, a.pfn)
    s.scrub(a.pfn)  # hyp_poison_page() before the host regains it
    s.set(a.pfn, host=OWNED)


def _reclaim_dying(s, a):
    state, pfn = s.vms[a.handle].entries.pop(a.gfn)
    if state == OWNED:
        s.scrub(pfn)
    if state in (OWNED, SO):
        s.set(pfn, host=OWNED)


def _teardown(s, a):
    s.vms[a.handle].dying = True


def _finalize(s, a):
    del s.vms[a.handle]


def _init_vcpu(s, a):
    s.vms[a.handle].vcpus.add(a.idx)


def _reclaim_target_missing(s, a):
    owner = s.frame(a.pfn).owner
    return owner[0] == "guest" and owner[1] not in s.vms  # the VM went away (host_stage2_decode_gfn_meta)


def _reclaim_target_not_owned(s, a):
    _kind, handle, gfn = s.frame(a.pfn).owner
    return s.vms[handle].entries.get(gfn, (NOPAGE,))[0] != OWNED


@dataclass(frozen=True)
class Row:
    args: tuple[str, ...]
    checks: tuple[tuple[Callable, Result], ...]
    effect: Callable


E = Errno
# One row per kernel function: (argument names, [(refused-if, result), ...] in the kernel's order, effect).
TABLE: dict[str, Row] = {
    # mem_protect.c __pkvm_host_share_hyp(): check_range_allowed_memory(), host OWNED, hyp NOPAGE.
    "host_share_hyp": Row(("pfn",), ((_not_memory, E.EPERM), (_host_is_not(OWNED), E.EPERM), (_hyp_is_not(NOPAGE), E.EPERM)), _share_hyp),
    # __pkvm_host_unshare_hyp(): host SHARED_OWNED, hyp SHARED_BORROWED, then no hyp pin (-EBUSY).
    "host_unshare_hyp": Row(("pfn",), ((_not_memory, E.EPERM), (_host_is_not(SO), E.EPERM), (_hyp_is_not(SB), E.EPERM),
                                       (lambda s, a: s.frame(a.pfn).pins > 0, E.EBUSY)), _unshare_hyp),
    # hyp_pin_shared_mem(): every page host SHARED_OWNED and hyp SHARED_BORROWED, else -EPERM; ref_inc BUG at USHRT_MAX.
    "hyp_pin_shared_mem": Row(("pfn", "nr"), ((_internal_range_bad, UNSPECIFIED), (_any(lambda f: f.host != SO or f.hyp != SB), E.EPERM),
                                              (_any(lambda f: f.pins >= USHRT_MAX), BUG)), _pin),
    # hyp_unpin_shared_mem(): no state check; hyp_page_ref_dec() BUG()s at refcount 0.
    "hyp_unpin_shared_mem": Row(("pfn", "nr"), ((_internal_range_bad, UNSPECIFIED), (_any(lambda f: f.pins == 0), BUG)), _unpin),
    # __pkvm_host_donate_hyp(): host OWNED -> NOPAGE (owner hyp), hyp NOPAGE -> OWNED.
    "host_donate_hyp": Row(("pfn", "nr"), ((_internal_range_bad, UNSPECIFIED), (_any(lambda f: f.host != OWNED), E.EPERM),
                                           (_any(lambda f: f.hyp != NOPAGE), E.EPERM)), _donate_hyp),
    # __pkvm_hyp_donate_host(): hyp OWNED first, then host NOPAGE.
    "hyp_donate_host": Row(("pfn", "nr"), ((_internal_range_bad, UNSPECIFIED), (_any(lambda f: f.hyp != OWNED), E.EPERM),
                                           (_any(lambda f: f.host != NOPAGE), E.EPERM)), _hyp_donate_host),
    # __pkvm_host_donate_guest(): a loaded protected vCPU (so a live protected VM, -EINVAL), memory and host
    # OWNED (-EPERM), the gfn inside the IPA space (-ERANGE), nothing mapped there (-EPERM).
    "host_donate_guest": Row(("pfn", "handle", "gfn"), ((_vm_missing(dying=False, protected=True), E.EINVAL), (_not_memory, E.EPERM),
                                                         (_host_is_not(OWNED), E.EPERM), (_gfn_out_of_ipa, E.ERANGE),
                                                         (_entry_is_not(NOPAGE), E.EPERM)), _donate_guest),
    # __pkvm_host_share_guest(): a live non-protected VM, pfn_range_is_valid() (-EINVAL), memory (-EPERM),
    # IPA range, nothing mapped; host OWNED, or SHARED_OWNED already shared with guests.
    "host_share_guest": Row(("pfn", "handle", "gfn"), ((_vm_missing(dying=False, protected=False), E.EINVAL),
                                                        (lambda s, a: not 0 <= a.pfn < PFN_LIMIT, E.EINVAL), (_not_memory, E.EPERM),
                                                        (_gfn_out_of_ipa, E.ERANGE), (_entry_is_not(NOPAGE), E.EPERM),
                                                        (lambda s, a: not (s.frame(a.pfn).host == OWNED or (s.frame(a.pfn).host == SO and s.frame(a.pfn).shares > 0)), E.EPERM)),
                            _share_guest),
    # __pkvm_host_unshare_guest(): a non-protected VM (dying too), IPA range, a valid entry (-ENOENT),
    # SHARED_BORROWED (-EPERM), host SHARED_OWNED (-EPERM).
    "host_unshare_guest": Row(("handle", "gfn"), ((_vm_missing(protected=False), E.EINVAL), (_gfn_out_of_ipa, E.ERANGE),
                                                  (_entry_is(NOPAGE, POISON), E.ENOENT), (_entry_is_not(SB), E.EPERM),
                                                  (_entry_frame_host_is_not(SO), E.EPERM)), _unshare_guest),
    # __pkvm_guest_share_host(): the guest's live vCPU, IPA range, get_valid_guest_pte() (POISON -EHWPOISON,
    # nothing -ENOENT), guest OWNED and host NOPAGE (-EPERM).
    "guest_share_host": Row(("handle", "gfn"), ((_vm_missing(dying=False), E.EINVAL), (_gfn_out_of_ipa, E.ERANGE),
                                                (_entry_is(POISON), E.EHWPOISON), (_entry_is(NOPAGE), E.ENOENT),
                                                (_entry_is_not(OWNED), E.EPERM), (_entry_frame_host_is_not(NOPAGE), E.EPERM)), _guest_share_host),
    "guest_unshare_host": Row(("handle", "gfn"), ((_vm_missing(dying=False), E.EINVAL), (_gfn_out_of_ipa, E.ERANGE),
                                                  (_entry_is(POISON), E.EHWPOISON), (_entry_is(NOPAGE), E.ENOENT),
                                                  (_entry_is_not(SO), E.EPERM), (_entry_frame_host_is_not(SB), E.EPERM)), _guest_unshare_host),
    # __pkvm_host_force_reclaim_page_guest() (the 2026 series): memory, host NOPAGE (-EAGAIN: already back),
    # owner a guest (-EPERM), the VM still there (-EAGAIN), its entry OWNED (-EPERM); poison, zero, host OWNED.
    "host_force_reclaim_guest_page": Row(("pfn",), ((_not_memory, E.EPERM), (_host_is_not(NOPAGE), E.EAGAIN),
                                                    (lambda s, a: s.frame(a.pfn).owner[0] != "guest", E.EPERM),
                                                    (_reclaim_target_missing, E.EAGAIN), (_reclaim_target_not_owned, E.EPERM)), _force_reclaim),
    # pkvm.c __pkvm_start_teardown_vm(): no VM -ENOENT, already dying -EINVAL.
    "teardown_guest": Row(("handle",), ((_vm_missing(), E.ENOENT), (lambda s, a: s.vms[a.handle].dying, E.EINVAL)), _teardown),
    # pkvm.c __pkvm_reclaim_dying_guest_page(): a dying VM (-EINVAL), then __pkvm_host_reclaim_page_guest():
    # IPA range, nothing mapped -ENOENT, a host share (SHARED_BORROWED) -EPERM; POISON entries just go.
    "reclaim_dying_guest_page": Row(("handle", "gfn"), ((_vm_missing(dying=True), E.EINVAL), (_gfn_out_of_ipa, E.ERANGE),
                                                        (_entry_is(NOPAGE), E.ENOENT), (_entry_is(SB), E.EPERM)), _reclaim_dying),
    # pkvm.c __pkvm_finalize_teardown_vm(): no VM -ENOENT, not dying -EBUSY. Pages the host left behind are
    # the host's bug, which pKVM does not define a result for.
    "finalize_teardown_guest": Row(("handle",), ((_vm_missing(), E.ENOENT), (_vm_missing(dying=True), E.EBUSY),
                                                 (lambda s, a: bool(s.vms[a.handle].entries), UNSPECIFIED)), _finalize),
    # pkvm.c __pkvm_init_vcpu(): get_vm_by_handle() -ENOENT; vcpu_idx past created_vcpus or taken -EINVAL.
    "init_vcpu": Row(("handle", "idx"), ((_vm_missing(), E.ENOENT), (lambda s, a: not 0 <= a.idx < s.vms[a.handle].nr_vcpus, E.EINVAL),
                                         (lambda s, a: a.idx in s.vms[a.handle].vcpus, E.EINVAL)), _init_vcpu),
}


class Shadow:
    """The ownership state of frames [first_pfn, first_pfn + nr) and the VMs, moved only by TABLE's rows."""

    def __init__(self, first_pfn: int, nr: int, *, gfn_limit: int = 1 << (40 - 12), tally: Counter | None = None) -> None:
        self.first, self.end, self.gfn_limit = first_pfn, first_pfn + nr, gfn_limit
        self.tally = tally  # (row, result) -> count, for tests that guard what the walks reach
        self.frames: dict[int, Frame] = {}
        self.vms: dict[int, Vm] = {}
        self.scrubbed: list[int] = []  # pfns zeroed, in order

    def is_memory(self, pfn: int) -> bool:
        return self.first <= pfn < self.end

    def frame(self, pfn: int) -> Frame:
        return self.frames.setdefault(pfn, Frame())

    def set(self, pfn: int, **states) -> None:
        f = self.frame(pfn)
        for name, value in states.items():
            setattr(f, name, value)
        if f.host != NOPAGE:
            f.owner = None  # the annotation lives only in an invalid host entry

    def scrub(self, pfn: int) -> None:
        self.frame(pfn).secret = False
        self.scrubbed.append(pfn)

    def may_access(self, pfn: int) -> bool:
        """Whether the host stage 2 may map pfn (handle_host_mem_abort's lazy idmap)."""
        return self.is_memory(pfn) and self.frame(pfn).host in ACCESSIBLE

    # ------------------------------------------------------------ calls
    def apply(self, name: str, *args: int) -> Result:
        """Run one row: the first failed check's result (nothing changes), else the effect and 0."""
        row = TABLE[name]
        a = SimpleNamespace(**dict(zip(row.args, args)))
        for refused, result in row.checks:
            if refused(self, a):
                break
        else:
            row.effect(self, a)
            result = E.SUCCESS
        if self.tally is not None:
            self.tally[name, result] += 1
        return result

    def create_guest(self, protected: bool = True, nr_vcpus: int = 1) -> int:
        """pkvm.c __pkvm_reserve_vm() + __pkvm_init_vm(): -EINVAL without vCPUs, -ENOMEM when the table is full."""
        if nr_vcpus < 1:
            return E.EINVAL
        free = [i for i in range(KVM_MAX_PVMS) if HANDLE_OFFSET + i not in self.vms]
        if not free:
            return E.ENOMEM
        handle = HANDLE_OFFSET + free[0]
        self.vms[handle] = Vm(bool(protected), nr_vcpus)
        return handle

    def reclaim_all_dying_guest_pages(self, handle: int) -> Result:
        """The host's teardown loop: each gfn in order, unshared (host shares) or reclaimed; the first error stops it."""
        vm = self.vms.get(handle)
        if vm is None or not vm.dying:
            return E.EINVAL
        for gfn in sorted(vm.entries):
            row = "host_unshare_guest" if vm.entries[gfn][0] == SB else "reclaim_dying_guest_page"
            if ret := self.apply(row, handle, gfn):
                return ret
        return E.SUCCESS

    def call(self, name: str, *args: int) -> Result:
        """A Python-side call by the model's method name."""
        if name == "reclaim_all_dying_guest_pages":
            return self.reclaim_all_dying_guest_pages(*args)
        return self.apply(name, *args)

    # ------------------------------------------------------------ the hypercall ABI
    def hypercall(self, name: str, x1: int, x2: int, x3: int) -> list[int]:
        """x1.. as EL2 answers `name` with these registers: [ret] or [0, handle] (init_vm).

        Physical addresses must be page aligned (-EINVAL before any check); handles and
        vCPU indexes are u32 (DECLARE_REG(pkvm_handle_t, ...)); gfns are u64.
        """
        def phys(row, *rest):
            return [E.EINVAL if x1 & 0xFFF else self.apply(row, x1 >> 12, *rest)]

        if name == "__pkvm_init_vm":
            handle = self.create_guest(protected=True)
            return [handle] if handle < 0 else [0, handle]
        return {
            "__pkvm_host_share_hyp": lambda: phys("host_share_hyp"),
            "__pkvm_host_unshare_hyp": lambda: phys("host_unshare_hyp"),
            "__pkvm_host_donate_guest": lambda: phys("host_donate_guest", x2 & U32, x3),
            "__pkvm_host_share_guest": lambda: phys("host_share_guest", x2 & U32, x3),
            "__pkvm_host_unshare_guest": lambda: [self.apply("host_unshare_guest", x1 & U32, x2)],
            "__pkvm_start_teardown_vm": lambda: [self.apply("teardown_guest", x1 & U32)],
            "__pkvm_reclaim_dying_guest_page": lambda: [self.apply("reclaim_dying_guest_page", x1 & U32, x2)],
            "__pkvm_force_reclaim_guest_page": lambda: phys("host_force_reclaim_guest_page"),
            "__pkvm_init_vcpu": lambda: [self.apply("init_vcpu", x1 & U32, x2 & U32)],
        }[name]()

    # ------------------------------------------------------------ what to compare
    def owner(self, pfn: int) -> str | None:
        """Who owns pfn, as a name: "host", "hyp", "guest 0x1000"; None outside memory."""
        if not self.is_memory(pfn):
            return None
        f = self.frame(pfn)
        if f.host in OWNING:
            return "host"
        if f.owner is not None:
            return "hyp" if f.owner[0] == "hyp" else f"guest {f.owner[1]:#x}"
        if f.hyp in OWNING:
            return "hyp"
        for handle, vm in self.vms.items():
            if any(state in OWNING and p == pfn for state, p in vm.entries.values()):
                return f"guest {handle:#x}"
        return None

    def view(self, pfns, gfns) -> dict:
        """The state in plain values: per frame, per VM; compared with the model's answers to the same questions."""
        frames = {}
        for pfn in pfns:
            if not self.is_memory(pfn):
                frames[pfn] = (NOPAGE, NOPAGE, 0, 0, None, None)
                continue
            f = self.frame(pfn)
            ann = (f.owner[1], f.owner[2]) if f.owner and f.owner[0] == "guest" else None
            frames[pfn] = (f.host, f.hyp, f.pins, f.shares, ann, self.owner(pfn))
        vms = {h: (vm.dying, tuple(vm.entries.get(g, (NOPAGE,))[0] for g in gfns)) for h, vm in self.vms.items()}
        return {"frames": frames, "vms": vms}
