"""The vocabulary of pKVM page ownership: page states, components, and the records that hold them.

Split out of ``hyp.ownership`` so that the transitions (``hyp.ownership``),
their argument checks (``hyp.page_checks``) and the invariants
(``hyp.invariants``) share one set of types without importing each other.
The frozen dataclasses are values handed to callers; :class:`FrameRecord` and
:class:`VmRecord` are the model's mutable per-frame and per-VM state, which
only those three modules touch.
"""
from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

from abi.linux import Errno

PAGE_SHIFT = 12
# pfn_range_is_valid(): a range must lie below BIT(kvm_phys_shift() - PAGE_SHIFT);
# we model a 48-bit physical address space.
PA_BITS = 48
PFN_LIMIT = 1 << (PA_BITS - PAGE_SHIFT)
# A guest's IPA space; kvm_pgtable walks beyond it fail with -ERANGE.
DEFAULT_GUEST_IPA_BITS = 40
# pkvm.c: handles are vm_table index + HANDLE_OFFSET (0x1000); __pkvm_reserve_vm() takes the
# first free slot (allocate_vm_table_entry()), so a slot freed by teardown is handed out again.
FIRST_VM_HANDLE = 0x1000
# arch/arm64/include/asm/kvm_pkvm.h: KVM_MAX_PVMS, the vm_table size; a full table is -ENOMEM.
KVM_MAX_PVMS = 255
# pkvm.c: pkvm_handle_t is a u32, so a handle passed in a 64-bit register is read as its low 32 bits.
HANDLE_MASK = 0xFFFF_FFFF
# memory.h: struct hyp_page.refcount is an unsigned short; hyp_page_ref_inc() BUG()s at USHRT_MAX.
MAX_HYP_PIN_COUNT = 0xFFFF


class HypBug(Exception):
    """pKVM hits a BUG() (a hypervisor panic): the machine is gone, there is no errno to return.

    Raised only by EL2-internal functions no hypercall reaches with bad arguments
    (hyp_pin_shared_mem/hyp_unpin_shared_mem's refcount BUG_ONs); Hyp turns it into
    a hyp-panic outcome.
    """


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
        return _component_text(self.id, self.handle)


@functools.lru_cache(maxsize=1024, typed=True)  # typed: a stray int id is not the enum member it equals
def _component_text(cid: ComponentId, handle: int | None) -> str:
    # Memoised: every protected-access event names the owner (a pure function of two small values).
    if cid is ComponentId.GUEST:
        return f"guest {handle:#x}"
    return cid.name.lower()


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
class FrameRecord:
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
class VmRecord:
    """struct pkvm_hyp_vm, reduced to what ownership needs."""

    handle: int
    protected: bool
    dying: bool = False
    # pkvm.c: created_vcpus, fixed at __pkvm_init_vm(); __pkvm_init_vcpu() fills vcpus[idx] once each.
    nr_vcpus: int = 1
    vcpus: set[int] = field(default_factory=set)
    entries: dict[int, GuestEntry] = field(default_factory=dict)
    # gfns lost to a forced reclaim, in order (history: survives teardown reclaim).
    poisoned: list[int] = field(default_factory=list)

    def state_at(self, gfn: int) -> PageState:
        """The state of the entry at gfn; NOPAGE where the guest maps nothing."""
        entry = self.entries.get(gfn)
        return entry.state if entry else PageState.NOPAGE
