"""Random walks over one whole emulated system: Python transitions, real `hvc #0`, real host loads/stores.

Each hypothesis example builds a fresh Machine + Hyp(policy) + HostKernel and
runs a short sequence of steps drawn from three kinds:

- an ownership transition called from Python (valid and invalid arguments);
- a hypercall issued by a real `hvc #0` at EL1 with a random function id and
  random arguments (aligned, unaligned, out of range, garbage);
- a host kernel load or store of a pool frame through its linear-map VA, with
  an exception-table entry so a protected frame ends in -EFAULT, not an oops.

Expectations are computed here, not by the code under test: the SMCCC decoding
and the per-call argument handling are written from SMCCC / hyp-main.c, their
ownership effects come from a shadow `Ownership` (no emulator attached) that
every step is replayed on, and frame contents follow a small memory model
(the guest writes its secret when it receives a page, a forced or dying
reclaim scrubs it: mem_protect.c hyp_poison_page()). After every step the
ownership invariants hold, the host stage 2 maps only frames the host may
access, the shadow agrees, and no host-accessible frame holds a guest secret.
"""
from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from conftest import CODE_VA, DATA_VA, assemble
from kimage.extable_format import ExtableEntry, ExType, pack_err_zero
from emu.machine import Machine
from emu.memory import PAGE_SIZE
from host.kernel import HostKernel
from abi.linux import Errno
from hyp.hypercalls import HCALL_BY_NAME
from hyp.ownership import Ownership, PageState
from hyp.pkvm import Hyp
from faultlab.stack import compose
from hyp.policies import POLICIES
from reference_fault import EFAULT, SMCCC_NOT_SUPPORTED, SMCCC_VENDOR_HYP_FAST64, neg, u64

PHYS_SIZE = 256 << 10  # 64 frames: the invariant check runs over all of them after every step
POOL_FRAMES = 4
GFNS = (0x10, 0x11, 0x12)
IPA_LIMIT_GFN = 1 << (40 - 12)  # page_state.DEFAULT_GUEST_IPA_BITS = 40: a gfn at 2^28 is -ERANGE
BOGUS_HANDLES = (0, 0x5555, (1 << 64) - 1)
# SMCCC v1.3: bit 16 of the function id is the SVE-live hint; hyp-main.c clears it before decoding.
SMCCC_HINT = 1 << 16
SECRET = bytes.fromhex("5ec2e75ec2e75ec2")  # what a guest writes into a page it owns
PUBLIC = bytes.fromhex("9b11c9b11c9b11c0")  # what a guest writes into a page it shares with the host

HVC_VA = CODE_VA
LOAD_VA = CODE_VA + 0x100  # ldr x1, [x0]; mov x0, #0; ret | fixup: ret (x0 = -EFAULT, x1 = 0)
STORE_VA = CODE_VA + 0x200  # str x1, [x0]; mov x0, #0; ret | fixup: ret (x0 = -EFAULT)


def _stubs() -> bytes:
    """The three EL1 stubs on one code page (assembled once: keystone costs more than a step)."""
    page = bytearray(STORE_VA + 16 - CODE_VA)
    for va, text in (
        (HVC_VA, "hvc #0; ret"),
        (LOAD_VA, "ldr x1, [x0]; mov x0, #0; ret; ret"),
        (STORE_VA, "str x1, [x0]; mov x0, #0; ret; ret"),
    ):
        code = assemble(text, va)
        page[va - CODE_VA : va - CODE_VA + len(code)] = code
    return bytes(page)


STUBS = _stubs()

# The model's hypercall numbers (hyp/hypercalls.py; 43 is Linux 7.2's force reclaim), with the
# number of results each puts after the SMCCC status: x1 = 0 / -errno, plus x2 = handle for init_vm.
HCALL_RESULTS = {
    "__pkvm_host_share_hyp": 1,
    "__pkvm_host_unshare_hyp": 1,
    "__pkvm_init_vm": 2,
    "__pkvm_host_donate_guest": 1,
    "__pkvm_host_share_guest": 1,
    "__pkvm_host_unshare_guest": 1,
    "__pkvm_start_teardown_vm": 1,
    "__pkvm_reclaim_dying_guest_page": 1,
    "__pkvm_force_reclaim_guest_page": 1,
}
UNKNOWN_IDS = (0, SMCCC_VENDOR_HYP_FAST64 | 44, SMCCC_VENDOR_HYP_FAST64 | 0xFFFF, 0x8600_0002, 0x4600_0002,
               (1 << 32) | 0xC600_0002, 0x8400_0000)

# What a host kernel access with an ERR_ZERO fixup ends in when the frame is protected, per policy
# (docs/facts.md "policies"): "fixup" = injected stage-2 abort, the extable gives -EFAULT;
# "reclaim" = EL2 takes the page back from its guest and the access retries, else the second word;
# "oops" = a GPF injected by EL3 is do_bad in fault.c: no fixup is tried; "panic" = hypervisor BUG.
ON_PROTECTED = {
    "panic": ("panic", "panic"),
    "inject": ("fixup", "fixup"),
    "inject-reclaim": ("fixup", "fixup"),  # the fixup wins: force reclaim is only for accesses without one
    "reclaim": ("reclaim", "fixup"),
    "rme-gpc-reclaim": ("reclaim", "oops"),
    "rme-gpc-el3-inject": ("oops", "oops"),
    "rme-gpc-realm-inject": ("fixup", "fixup"),  # pKVM's marked abort, composed by a realm EL2
}
OUTCOME_KIND = {"panic": "hyp-panic", "oops": "host-oops"}

# Python-side transitions: name -> argument kinds ("pfn", "nr", "handle", "gfn").
PY_TRANSITIONS = {
    "host_share_hyp": ("pfn",),
    "host_unshare_hyp": ("pfn",),
    "hyp_pin_shared_mem": ("pfn", "nr"),
    "hyp_unpin_shared_mem": ("pfn", "nr"),
    "host_donate_hyp": ("pfn", "nr"),
    "hyp_donate_host": ("pfn", "nr"),
    "host_donate_guest": ("pfn", "handle", "gfn"),
    "host_share_guest": ("pfn", "handle", "gfn"),
    "host_unshare_guest": ("handle", "gfn"),
    "guest_share_host": ("handle", "gfn"),
    "guest_unshare_host": ("handle", "gfn"),
    "host_force_reclaim_guest_page": ("pfn",),
    "teardown_guest": ("handle",),
    "reclaim_dying_guest_page": ("handle", "gfn"),
    "reclaim_all_dying_guest_pages": ("handle",),
    "finalize_teardown_guest": ("handle",),
}

ACCESSIBLE = {PageState.OWNED, PageState.SHARED_OWNED, PageState.SHARED_BORROWED}


@functools.cache
def _booted_host(policy: str) -> tuple[Machine, HostKernel, list[int]]:
    """A Machine + HostKernel (configured for `policy`) with the stubs, their extable and the pool.

    Booting costs ~2 ms, as much as a whole sequence of steps, so each policy's host is booted
    once and every example gets a fresh Hyp on it (see HypSystemMachine.boot). Machine.call()
    resets every register and PSTATE, and nothing of the host changes between examples but
    the pool frames' contents, which boot zeroes.
    """
    m = Machine(phys_size=PHYS_SIZE)
    kernel = compose(m, policy).host  # each example then puts a fresh Hyp on it (HypSystemMachine.boot)
    m.load(CODE_VA, STUBS, "rx")
    numbering = kernel.config.numbering
    kaccess = numbering.number(ExType.KACCESS_ERR_ZERO)
    kernel.add_extable(
        [
            ExtableEntry(LOAD_VA, LOAD_VA + 12, kaccess, pack_err_zero(0, 1)),
            ExtableEntry(STORE_VA, STORE_VA + 12, kaccess, pack_err_zero(0, 31)),  # 31: xzr
        ],
        numbering,
    )
    m.alloc_frame()  # a guard, so no pool range runs into the machine's own pages
    pool = m.map_new(DATA_VA, POOL_FRAMES, "rw")
    assert pool == list(range(pool[0], pool[0] + POOL_FRAMES))
    return m, kernel, pool


class HypSystemMachine(RuleBasedStateMachine):
    """One emulated system per example, driven by Python transitions, hypercalls and host accesses."""

    @initialize(policy=st.sampled_from(sorted(ON_PROTECTED)), protected=st.booleans())
    def boot(self, policy, protected):
        m, self.kernel, self.pool = _booted_host(policy)
        self.machine = m
        for pfn in self.pool:
            m.phys.zero(pfn)
        # A fresh EL2 per example: all frames host-owned, nothing idmapped. Hyp() swaps the
        # stage-2 callback without a TLB flush, so flush: no translation of the last example survives.
        self.hyp = Hyp(m, policy)
        m.flush_tlb()
        self.policy = policy
        first, nr = m.phys.first_pfn, m.phys.nr_frames
        # Frames outside memory, and the last frame of memory (free, unmapped) for ranges that run out.
        self.bad_pfns = (first - 1, first + nr, first + nr - 1, 1 << 40)
        self.own = self.hyp.ownership
        self.shadow = Ownership(first, nr)
        self.handles: list[int] = []
        self.contents = {pfn: bytes(8) for pfn in self.pool}  # the first 8 bytes of each pool frame
        self.secret = {pfn: False for pfn in self.pool}
        self.new_guest(protected)

    # ------------------------------------------------------------ argument pickers

    def pick(self, data, kind: str) -> int:
        if kind == "pfn":
            # Mostly pool frames: a walk needs pages that actually move between owners.
            return data.draw(st.sampled_from(self.pool * 3 + list(self.bad_pfns)))
        if kind == "nr":
            return data.draw(st.sampled_from((1, 1, 1, 2, 3, 0)))
        if kind == "handle":
            return data.draw(st.sampled_from(self.handles * 4 + list(BOGUS_HANDLES)))
        return data.draw(st.sampled_from(GFNS + (IPA_LIMIT_GFN, IPA_LIMIT_GFN - 1)))

    def pick_arg(self, data) -> int:
        """A register argument: a pool frame's PA (maybe unaligned), a handle, a gfn, or anything."""
        kind = data.draw(st.sampled_from(("phys", "phys", "unaligned", "bad-phys", "handle", "gfn", "raw")))
        if kind == "phys":
            return self.pick(data, "pfn") << 12
        if kind == "unaligned":
            return (self.pick(data, "pfn") << 12) | data.draw(st.integers(1, PAGE_SIZE - 1))
        if kind == "bad-phys":
            return data.draw(st.sampled_from((0, u64(-PAGE_SIZE), 1 << 63, 1 << 52)))
        if kind in ("handle", "gfn"):
            return u64(self.pick(data, kind))
        return data.draw(st.integers(0, (1 << 64) - 1))

    # ------------------------------------------------------------ the memory model

    def _step(self, apply):
        """Run one state-changing step; keep the frame-content model in line with what happened.

        apply() performs the step and returns whether ownership should be unchanged (a failure).
        """
        before = self.own.snapshot()
        host_before = {pfn: self.own.host_state(pfn) for pfn in self.pool}
        owner_before = {pfn: self.own.owner(pfn) for pfn in self.pool}
        unchanged = apply()
        if unchanged:
            assert self.own.snapshot() == before
        for pfn in self.pool:
            self._follow(pfn, host_before[pfn], owner_before[pfn])

    def _follow(self, pfn, host_before, owner_before):
        host_now, owner_now = self.own.host_state(pfn), self.own.owner(pfn)
        is_guest = owner_now is not None and owner_now.id.name == "GUEST"
        if host_before in ACCESSIBLE and host_now not in ACCESSIBLE and is_guest:
            self._guest_writes(pfn, SECRET)  # donated: the guest fills its new page
        elif host_before is PageState.NOPAGE and host_now is PageState.SHARED_BORROWED:
            self._guest_writes(pfn, PUBLIC)  # the guest shares: it wrote what it meant to expose
        elif host_before is PageState.SHARED_BORROWED and host_now is PageState.NOPAGE:
            self._guest_writes(pfn, SECRET)  # unshared again: the guest writes secrets once more
        elif host_before not in ACCESSIBLE and host_now in ACCESSIBLE and self.secret[pfn]:
            # A guest page comes back to the host: scrubbed first (hyp_poison_page()).
            self.contents[pfn] = bytes(8)
            self.secret[pfn] = False

    def _guest_writes(self, pfn, data):
        self.machine.phys.write(pfn << 12, data)
        self.contents[pfn] = data
        self.secret[pfn] = data == SECRET

    def new_guest(self, protected: bool) -> int:
        handle = self.own.create_guest(protected=protected)
        assert self.shadow.create_guest(protected=protected) == handle
        self.handles.append(handle)
        return handle

    # ------------------------------------------------------------ rules

    @rule(protected=st.booleans())
    def create_guest(self, protected):
        if len(self.handles) < 4:
            self.new_guest(protected)

    @rule(data=st.data(), name=st.sampled_from(("host_donate_guest", "host_share_guest", "guest_share_host")))
    def productive_transition(self, data, name):
        """The moves that hand pages to guests, with a live guest and a free gfn: walks reach deep states."""
        live = [h for h in self.handles if self.own.guest_state(h, 0) is not None and not self.own.is_dying(h)]
        if not live:
            return
        handle = data.draw(st.sampled_from(live))
        gfn = data.draw(st.sampled_from(GFNS))
        args = (handle, gfn) if name == "guest_share_host" else (data.draw(st.sampled_from(self.pool)), handle, gfn)
        self._python(name, args)

    @rule(data=st.data(), name=st.sampled_from(sorted(PY_TRANSITIONS)))
    def python_transition(self, data, name):
        self._python(name, [self.pick(data, kind) for kind in PY_TRANSITIONS[name]])

    def _python(self, name, args):
        def apply():
            result = getattr(self.own, name)(*args)
            assert isinstance(result, Errno), (name, args, result)
            assert getattr(self.shadow, name)(*args) == result, (name, args)
            return not result.ok

        self._step(apply)

    @rule(data=st.data(), known=st.sampled_from(sorted(HCALL_RESULTS) + [None]), hint=st.booleans())
    def hypercall(self, data, known, hint):
        if known is None:
            fid = data.draw(st.sampled_from(UNKNOWN_IDS) | st.integers(0, (1 << 64) - 1))
        else:
            fid = HCALL_BY_NAME[known].function_id | (SMCCC_HINT if hint else 0)
        args = [self.pick_arg(data) for _ in range(3)]

        def apply():
            expected = self._expected_hcall(fid, args)
            result = self.machine.call(HVC_VA, fid, *args, budget=1000, timeout=5.0)
            assert result.returned, result.outcome
            regs = [result.regs[f"x{i}"] for i in range(4)]
            if expected is None:
                assert regs == [SMCCC_NOT_SUPPORTED, *args]  # only x0 is written
                return True
            assert regs[0] == 0  # SMCCC success: dispatched
            assert regs[1 : 1 + len(expected)] == [u64(v) for v in expected], (fid, args)
            assert regs[1 + len(expected) :] == args[len(expected) :]
            return expected[0] != 0

        self._step(apply)

    def _expected_hcall(self, fid: int, args: list[int]) -> list[int] | None:
        """SMCCC decode, then the call on the shadow: None = not supported, else [x1, ...]."""
        fid &= ~SMCCC_HINT
        by_id = {HCALL_BY_NAME[n].function_id: n for n in HCALL_RESULTS}
        name = by_id.get(fid)
        if name is None:
            return None
        if name == "__pkvm_force_reclaim_guest_page" and not POLICIES[self.policy].serves_force_reclaim:
            return None  # a pre-patch EL2 has no such call: NOT_SUPPORTED
        x1, x2, x3 = args
        sh = self.shadow

        def phys_call(fn, *rest):
            # hyp-main.c: a PA argument must be page aligned, else -EINVAL before any check.
            return [Errno.EINVAL if x1 & (PAGE_SIZE - 1) else fn(x1 >> 12, *rest)]

        if name == "__pkvm_init_vm":
            handle = sh.create_guest(protected=True)
            self.handles.append(handle)
            return [0, handle]
        return {
            "__pkvm_host_share_hyp": lambda: phys_call(sh.host_share_hyp),
            "__pkvm_host_unshare_hyp": lambda: phys_call(sh.host_unshare_hyp),
            "__pkvm_host_donate_guest": lambda: phys_call(sh.host_donate_guest, x2, x3),
            "__pkvm_host_share_guest": lambda: phys_call(sh.host_share_guest, x2, x3),
            "__pkvm_host_unshare_guest": lambda: [sh.host_unshare_guest(x1, x2)],
            "__pkvm_start_teardown_vm": lambda: [sh.teardown_guest(x1)],
            "__pkvm_reclaim_dying_guest_page": lambda: [sh.reclaim_dying_guest_page(x1, x2)],
            "__pkvm_force_reclaim_guest_page": lambda: phys_call(sh.host_force_reclaim_guest_page),
        }[name]()

    @rule(index=st.integers(0, POOL_FRAMES - 1), store=st.booleans(), value=st.binary(min_size=8, max_size=8))
    def host_access(self, index, store, value):
        pfn = self.pool[index]
        va = DATA_VA + index * PAGE_SIZE
        may = self.own.host_may_access(pfn)
        guest_page = self.own.annotation(pfn) is not None and self.own.guest_state(*self.own.annotation(pfn)) is PageState.OWNED
        first, second = ON_PROTECTED[self.policy]
        if may:
            fate = "access"
        elif first == "reclaim":
            fate = "reclaim" if guest_page else second
        else:
            fate = first

        def apply():
            if fate == "reclaim":
                assert self.shadow.host_force_reclaim_guest_page(pfn) == 0
            word = int.from_bytes(value, "little")
            if store:
                result = self.machine.call(STORE_VA, va, word, budget=10_000, timeout=5.0)
            else:
                result = self.machine.call(LOAD_VA, va, budget=10_000, timeout=5.0)
            if fate in OUTCOME_KIND:
                assert result.outcome.kind == OUTCOME_KIND[fate], result.outcome
                return True
            assert result.returned, (fate, result.outcome)
            if fate == "fixup":
                assert result.x0 == neg(EFAULT)
                if not store:
                    assert result.regs["x1"] == 0
                return True
            assert result.x0 == 0, (fate, result.outcome)
            assert pfn in self.hyp.stage2.mapped  # idmapped lazily, or mapped again by the reclaim
            if fate == "reclaim":  # the content model learns of the scrub from the host state change
                self.contents[pfn], self.secret[pfn] = bytes(8), False
            if store:
                self.contents[pfn] = value
                self.secret[pfn] = False
            else:
                loaded = result.regs["x1"].to_bytes(8, "little")
                assert loaded != SECRET, "the host read a guest's secret"
                assert loaded == self.contents[pfn]
            return fate == "access"

        self._step(apply)

    # ------------------------------------------------------------ invariants, after every step

    @invariant()
    def ownership_invariants_hold(self):
        assert self.own.check_invariants() == []

    @invariant()
    def stage2_maps_only_accessible_frames(self):
        assert all(self.own.host_may_access(pfn) for pfn in self.hyp.stage2.mapped)

    @invariant()
    def shadow_agrees(self):
        assert self.own.snapshot() == self.shadow.snapshot()

    @invariant()
    def no_secret_where_the_host_can_read(self):
        for pfn in self.pool:
            frame = self.machine.phys.read(pfn << 12, 8)
            assert frame == self.contents[pfn]
            if self.own.host_may_access(pfn):
                assert frame != SECRET, f"pfn {pfn:#x}: guest data readable by the host"


def _settings(examples: int, steps: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def test_random_system_walks_keep_invariants():
    """>= 10,000 sequences: the issue-3 acceptance bar for the default suite."""
    run_state_machine_as_test(HypSystemMachine, settings=_settings(10_000, 5))


@pytest.mark.slow
def test_random_system_walks_keep_invariants_slow():
    run_state_machine_as_test(HypSystemMachine, settings=_settings(10_000, 15))
