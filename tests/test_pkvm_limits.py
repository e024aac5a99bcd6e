"""pKVM's limits and errnos for VMs, vCPUs, handles and hyp pins, as pkvm.c and mem_protect.c give them.

Each expectation is read from the kernel (facts cited per test), not from the model:
handles are u32 (pkvm_handle_t) = HANDLE_OFFSET 0x1000 + a vm_table slot, KVM_MAX_PVMS
slots; __pkvm_init_vcpu() refuses an index past created_vcpus or one already set up;
start/finalize teardown answer -ENOENT for no VM; hyp_unpin_shared_mem() checks no
state and BUG()s on a zero refcount.
"""
from __future__ import annotations

import pytest

from abi.linux import Errno
from hyp.hypercalls import HCALL_BY_NAME
from hyp.ownership import Ownership
from hyp.page_state import HypBug
from hyp.pkvm import Hyp
from emu.machine import Machine

FIRST = 0x80000
KVM_MAX_PVMS = 255  # arch/arm64/include/asm/kvm_pkvm.h
HANDLE_OFFSET = 0x1000  # pkvm.c


def test_vm_table_holds_kvm_max_pvms_then_enomem_and_a_freed_slot_is_reused():
    own = Ownership(FIRST, 4)
    handles = [own.create_guest(protected=bool(i & 1)) for i in range(KVM_MAX_PVMS)]
    assert handles == [HANDLE_OFFSET + i for i in range(KVM_MAX_PVMS)]
    assert own.create_guest() == Errno.ENOMEM
    victim = handles[17]
    assert own.teardown_guest(victim) == 0 and own.finalize_teardown_guest(victim) == 0
    assert own.create_guest() == victim  # allocate_vm_table_entry(): the first free slot
    assert own.create_guest() == Errno.ENOMEM


@pytest.mark.parametrize("nr_vcpus", [0, -1, None])
def test_a_vm_without_vcpus_is_einval(nr_vcpus):
    own = Ownership(FIRST, 4)
    assert own.create_guest(nr_vcpus=nr_vcpus) == Errno.EINVAL
    assert own.guests() == ()


@pytest.mark.parametrize("nr_vcpus", [1, 2, 5])
def test_vcpu_indexes_below_created_vcpus_once_each(nr_vcpus):
    own = Ownership(FIRST, 4)
    vm = own.create_guest(nr_vcpus=nr_vcpus)
    for idx in range(nr_vcpus):
        assert own.init_vcpu(vm, idx) == 0
        assert own.init_vcpu(vm, idx) == Errno.EINVAL  # hyp_vm->vcpus[idx] already set
    for idx in (nr_vcpus, nr_vcpus + 1, -1, 1 << 32):
        assert own.init_vcpu(vm, idx) == Errno.EINVAL
    for handle in (vm + 1, HANDLE_OFFSET - 1, 0, HANDLE_OFFSET + KVM_MAX_PVMS):
        assert own.init_vcpu(handle, 0) == Errno.ENOENT


def test_teardown_and_finalize_errnos_follow_pkvm_c():
    own = Ownership(FIRST, 4)
    vm = own.create_guest()
    assert own.finalize_teardown_guest(vm) == Errno.EBUSY  # not dying
    assert own.teardown_guest(vm) == 0
    assert own.teardown_guest(vm) == Errno.EINVAL  # already dying
    assert own.finalize_teardown_guest(vm) == 0
    assert own.teardown_guest(vm) == Errno.ENOENT
    assert own.finalize_teardown_guest(vm) == Errno.ENOENT


def test_unpin_checks_no_state_and_bugs_on_a_zero_refcount():
    own = Ownership(FIRST, 4)
    for pfn in (FIRST, FIRST + 1):
        with pytest.raises(HypBug):
            own.hyp_unpin_shared_mem(pfn)  # host OWNED, nothing pinned: hyp_page_ref_dec BUG_ON
    assert own.host_share_hyp(FIRST) == 0 and own.hyp_pin_shared_mem(FIRST) == 0
    assert own.hyp_unpin_shared_mem(FIRST) == 0
    with pytest.raises(HypBug):
        own.hyp_unpin_shared_mem(FIRST)
    assert own.hyp_pin_count(FIRST) == 0 and own.check_invariants() == []


def test_pin_bugs_at_ushrt_max():
    own = Ownership(FIRST, 2)
    assert own.host_share_hyp(FIRST) == 0
    own._frames[FIRST].hyp_pin_count = 0xFFFE  # reaching USHRT_MAX by 65534 calls would only cost time
    assert own.hyp_pin_shared_mem(FIRST) == 0
    with pytest.raises(HypBug):
        own.hyp_pin_shared_mem(FIRST)
    assert own.hyp_pin_count(FIRST) == 0xFFFF


@pytest.fixture
def hyp():
    # 32 frames: the machine's own pages take 12 and their stage-1 tables 10 (emu/stage1_tables.py).
    return Hyp(Machine(phys_size=128 << 10), "inject")


@pytest.mark.parametrize("upper", [0, 1 << 32, 0xFFFF_FFFF_0000_0000])
def test_hypercall_handles_are_u32(hyp, upper):
    """DECLARE_REG(pkvm_handle_t, handle, ...): a handle's upper 32 register bits are not looked at."""
    vm = hyp.ownership.create_guest(protected=True, nr_vcpus=1)
    status, results = hyp.call("__pkvm_init_vcpu", vm | upper, 0)
    assert (status, results) == (0, [0])
    status, results = hyp.call("__pkvm_start_teardown_vm", vm | upper)
    assert results == [0] and hyp.ownership.is_dying(vm)


def test_init_vm_by_hypercall_stops_at_the_vm_limit(hyp):
    answers = [hyp.call("__pkvm_init_vm")[1] for _ in range(KVM_MAX_PVMS + 2)]
    assert answers[:KVM_MAX_PVMS] == [[0, HANDLE_OFFSET + i] for i in range(KVM_MAX_PVMS)]
    assert answers[KVM_MAX_PVMS:] == [[Errno.ENOMEM & (2**64 - 1)]] * 2


def test_init_vcpu_is_a_hypercall(hyp):
    assert HCALL_BY_NAME["__pkvm_init_vcpu"].nargs == 2
    assert hyp.call("__pkvm_init_vcpu", 0x5555, 0) == (0, [Errno.ENOENT & (2**64 - 1)])
