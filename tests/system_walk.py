"""The system walk the stateful tests drive: one emulated system per sequence, every step checked against the shadow.

tests/test_hyp_stateful.py says what is walked and why; this module holds the walk
itself (arguments, steps, the frame-content model, the per-step checks) so the test
file holds only the runs.
"""
from __future__ import annotations

import functools
import random
from collections import Counter
from typing import Sequence

import pytest

from conftest import CODE_VA, DATA_VA, assemble
from picks import Pick, RandomPick
from kimage.extable_format import ExtableEntry, ExType, pack_err_zero
from emu.machine import Machine
from emu.memory import PAGE_SIZE
from host.kernel import HostKernel
from abi.linux import Errno
from hyp.hypercalls import HCALL_BY_NAME, dispatch
from hyp.page_state import HypBug
from hyp.pkvm import Hyp
from faultlab.stack import compose
from hyp.policies import POLICIES
from reference_fault import EFAULT, SMCCC_NOT_SUPPORTED, SMCCC_VENDOR_HYP_FAST64, neg, u64
from shadow.pkvm_table import BUG, NOPAGE, SB, UNSPECIFIED, Shadow

PHYS_SIZE = 256 << 10  # 64 frames
POOL_FRAMES = 4
IPA_LIMIT_GFN = 1 << (40 - 12)  # the model's 40-bit guest IPA space: a gfn at 2^28 is -ERANGE
GFNS = (0x10, 0x11, 0x12, IPA_LIMIT_GFN - 1)
BOGUS_HANDLES = (0, 0x5555, (1 << 64) - 1)
SMCCC_HINT = 1 << 16  # SMCCC v1.3 SVE-live hint; hyp-main.c clears it before decoding
SECRET = bytes.fromhex("5ec2e75ec2e75ec2")  # what a guest writes into a page it owns
PUBLIC = bytes.fromhex("9b11c9b11c9b11c0")  # what a guest writes into a page it shares with the host
HVC_EVERY = 8  # one hypercall in 8 goes through a real hvc #0

HVC_VA = CODE_VA
LOAD_VA = CODE_VA + 0x100  # ldr x1, [x0]; mov x0, #0; ret | fixup: ret (x0 = -EFAULT, x1 = 0)
STORE_VA = CODE_VA + 0x200  # str x1, [x0]; mov x0, #0; ret | fixup: ret (x0 = -EFAULT)


def _stubs() -> bytes:
    page = bytearray(STORE_VA + 16 - CODE_VA)
    for va, text in ((HVC_VA, "hvc #0; ret"), (LOAD_VA, "ldr x1, [x0]; mov x0, #0; ret; ret"), (STORE_VA, "str x1, [x0]; mov x0, #0; ret; ret")):
        code = assemble(text, va)
        page[va - CODE_VA : va - CODE_VA + len(code)] = code
    return bytes(page)


STUBS = _stubs()
HYPERCALLS = tuple(sorted(HCALL_BY_NAME))
UNKNOWN_IDS = (0, SMCCC_VENDOR_HYP_FAST64 | 44, SMCCC_VENDOR_HYP_FAST64 | 0xFFFF, 0x8600_0002, 0x4600_0002,
               (1 << 32) | 0xC600_0002, 0x8400_0000)

# A host kernel access with an ERR_ZERO fixup to a frame the host may not touch, per policy
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
    "rme-gpc-realm-inject": ("fixup", "fixup"),
}
OUTCOME_KIND = {"panic": "hyp-panic", "oops": "host-oops"}

# Python-side transitions: the model's method (= the shadow's row) -> argument kinds.
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
    "init_vcpu": ("handle", "vcpu"),
}
PY_NAMES = tuple(sorted(PY_TRANSITIONS))
# Starting situations of one pool frame P (G: a gfn of its own; A protected, B not).
SETUPS = (
    (),
    (),
    (("host_share_hyp", ("P",)),),
    (("host_share_hyp", ("P",)), ("hyp_pin_shared_mem", ("P", 1))),
    (("host_donate_hyp", ("P", 1)),),
    (("host_donate_guest", ("P", "A", "G")),),
    (("host_donate_guest", ("P", "A", "G")), ("guest_share_host", ("A", "G"))),
    (("host_donate_guest", ("P", "A", "G")), ("host_force_reclaim_guest_page", ("P",))),
    (("host_share_guest", ("P", "B", "G")),),
)


@functools.cache
def _booted_host(policy: str) -> tuple[Machine, HostKernel, list[int]]:
    """A Machine + HostKernel for `policy` with the stubs, their extable and the pool, booted once per policy."""
    m = Machine(phys_size=PHYS_SIZE)
    kernel = compose(m, policy).host
    m.load(CODE_VA, STUBS, "rx")
    numbering = kernel.config.numbering
    kaccess = numbering.number(ExType.KACCESS_ERR_ZERO)
    kernel.add_extable(
        [ExtableEntry(LOAD_VA, LOAD_VA + 12, kaccess, pack_err_zero(0, 1)), ExtableEntry(STORE_VA, STORE_VA + 12, kaccess, pack_err_zero(0, 31))],
        numbering,
    )
    m.alloc_frame()  # a guard, so no pool range runs into the machine's own pages
    pool = m.map_new(DATA_VA, POOL_FRAMES, "rw")
    assert pool == list(range(pool[0], pool[0] + POOL_FRAMES))
    return m, kernel, pool


def model_view(own, pfns, gfns) -> dict:
    """The model's answers to the questions Shadow.view answers, in the shadow's vocabulary (public queries only)."""
    frames = {}
    for p in pfns:
        fs = own.frame_state(p)
        if fs is None:  # not memory
            frames[p] = ("NOPAGE", "NOPAGE", 0, 0, None, None)
            continue
        ann = fs.annotation
        guest_ann = (ann.owner.handle, ann.gfn) if ann is not None and ann.owner.handle is not None else None
        frames[p] = (fs.host.name, fs.hyp.name, fs.hyp_pin_count, fs.host_share_guest_count, guest_ann, None if fs.owner is None else str(fs.owner))
    vms = {h: (own.is_dying(h), tuple(own.guest_state(h, g).name for g in gfns)) for h in own.guests()}
    return {"frames": frames, "vms": vms}


class SystemWalk:
    """One sequence: a fresh EL2 on a booted host, its shadow, and the steps."""

    def __init__(self, policy: str, pick: Pick, tally: Counter | None = None) -> None:
        m, self.kernel, self.pool = _booted_host(policy)
        self.machine, self.policy, self.pick = m, policy, pick
        for pfn in self.pool:
            m.phys.zero(pfn)
        self.hyp = Hyp(m, policy)  # all frames host-owned, nothing idmapped
        m.flush_tlb()  # Hyp() swaps the stage-2 callback: no translation of the last sequence survives
        self.own = self.hyp.ownership
        first, nr = m.phys.first_pfn, m.phys.nr_frames
        self.shadow = Shadow(first, nr, tally=tally)
        self.bad_pfns = (first - 1, first + nr, first + nr - 1, 1 << 40)  # not memory, and the last (free) frame
        # Checked after every step: the pool and the last frame of memory (the other bad pfns are not
        # memory, so no transition can touch them: checked once, at the end of the sequence).
        self.watched = tuple(self.pool) + (first + nr - 1,)
        self.handles: list[int] = []
        self.contents = {pfn: bytes(8) for pfn in self.pool}
        self._start()  # each setup move is compared with the shadow; the state is, after the first step

    def _start(self) -> None:
        """A protected guest A, a non-protected B, and each pool frame in a drawn starting situation.

        Five random steps from all-host-owned rarely reach a pinned, dying or shared-back frame;
        starting there lets every short walk begin deep. Each setup move is itself checked.
        """
        self.new_guest(True, 2)
        self.new_guest(False, 1)
        a, b = self.handles
        for pfn, gfn in zip(self.pool, GFNS):
            for name, args in self.pick.choice(SETUPS):
                args = [{"A": a, "B": b, "P": pfn, "G": gfn}.get(x, x) for x in args]
                self._before, self._mark = {p: self.shadow.frame(p).host for p in self.pool}, len(self.shadow.scrubbed)
                self._python(name, args)
                self._contents_after()
        if self.pick.choice((False, False, False, True)):
            self._python("teardown_guest", [self.pick.choice((a, b))])

    # ------------------------------------------------------------ arguments
    def arg(self, kind: str, handle: int | None = None) -> int:
        pick = self.pick
        if kind == "pfn":
            return pick.choice(self.pool * 3 + list(self.bad_pfns))
        if kind == "nr":
            return pick.choice((1, 1, 1, 2, 3, 0))
        if kind == "handle":
            return pick.choice(self.handles * 4 + list(BOGUS_HANDLES))
        if kind == "vcpu":
            return pick.choice((0, 0, 1, 2, 1 << 32))
        vm = self.shadow.vms.get(handle)
        mapped = sorted(vm.entries) if vm else []
        return pick.choice(tuple(mapped) * 3 + GFNS + (IPA_LIMIT_GFN,))  # mostly gfns the VM maps

    def register(self) -> int:
        """A hypercall argument: a pool frame's PA (maybe unaligned), a handle, a gfn, or anything."""
        kind = self.pick.choice(("phys", "phys", "unaligned", "bad-phys", "handle", "wide-handle", "gfn", "raw"))
        if kind == "phys":
            return self.arg("pfn") << 12
        if kind == "unaligned":
            return (self.arg("pfn") << 12) | self.pick.integer(1, PAGE_SIZE - 1)
        if kind == "bad-phys":
            return self.pick.choice((0, u64(-PAGE_SIZE), 1 << 63, 1 << 52))
        if kind == "wide-handle":  # pkvm_handle_t is a u32: the upper half must not matter
            return u64(self.arg("handle")) & 0xFFFF_FFFF | (self.pick.integer(1, 0xFFFF_FFFF) << 32)
        if kind in ("handle", "gfn"):
            return u64(self.arg(kind))
        return self.pick.integer(0, (1 << 64) - 1)

    # ------------------------------------------------------------ steps
    def step(self) -> None:
        kind = self.pick.choice(("python", "python", "python", "productive", "hypercall", "hypercall", "access", "guest"))
        self._before = {p: self.shadow.frame(p).host for p in self.pool}
        self._mark = len(self.shadow.scrubbed)
        if kind == "access":
            self.host_access()  # brings the contents up to date itself, before its own store
        else:
            {"python": self.python_transition, "productive": self.productive_transition, "hypercall": self.hypercall,
             "guest": lambda: self.new_guest(self.pick.choice((True, False)), self.pick.choice((0, 1, 2)))}[kind]()
            self._contents_after()
        self.check()

    def new_guest(self, protected: bool, nr_vcpus: int) -> None:
        if len(self.handles) >= 4:
            return
        handle = self.own.create_guest(protected=protected, nr_vcpus=nr_vcpus)
        assert handle == self.shadow.create_guest(protected, nr_vcpus), (protected, nr_vcpus)
        if handle > 0:
            self.handles.append(handle)

    def python_transition(self) -> None:
        name = self.pick.choice(PY_NAMES)
        args: list[int] = []
        for kind in PY_TRANSITIONS[name]:
            args.append(self.arg(kind, args[-1] if kind == "gfn" and args else None))
        self._python(name, args)

    def productive_transition(self) -> None:
        """The moves that hand pages to guests, with a live guest and a free gfn: walks reach deep states."""
        live = [h for h in self.handles if h in self.shadow.vms and not self.shadow.vms[h].dying]
        if not live:
            return
        name = self.pick.choice(("host_donate_guest", "host_share_guest", "guest_share_host", "guest_unshare_host"))
        handle, gfn = self.pick.choice(live), self.pick.choice(GFNS[:3])
        args = [handle, gfn] if name.startswith("guest_") else [self.pick.choice(self.pool), handle, gfn]
        self._python(name, args)

    def _python(self, name: str, args: list[int]) -> None:
        expected = self.shadow.call(name, *args)
        if expected in (BUG, UNSPECIFIED):
            before = self.own.snapshot()
            if expected == BUG:
                with pytest.raises(HypBug):
                    getattr(self.own, name)(*args)
            else:
                assert getattr(self.own, name)(*args) < 0, (name, args)
            assert self.own.snapshot() == before, f"{name}{args}: pKVM {expected}, the model changed state"
            return
        result = getattr(self.own, name)(*args)
        assert isinstance(result, Errno) and result == expected, (name, args, result, expected)

    def hypercall(self) -> None:
        known = self.pick.choice(HYPERCALLS + (None,))
        if known is None:
            fid = self.pick.choice(UNKNOWN_IDS) if self.pick.choice((True, False)) else self.pick.integer(0, (1 << 64) - 1)
        else:
            fid = HCALL_BY_NAME[known].function_id | (SMCCC_HINT if self.pick.choice((True, False)) else 0)
        args = [self.register() for _ in range(3)]
        expected = self._expected_hcall(fid, args)
        if self.pick.integer(1, HVC_EVERY) == 1:
            result = self.machine.call(HVC_VA, fid, *args, budget=1000, timeout=5.0)
            assert result.returned, result.outcome
            regs = [result.regs[f"x{i}"] for i in range(4)]
        else:
            answer = dispatch(self.hyp, self.hyp.policy, [fid, *args], self.hyp.abi)
            regs = [answer.status, *answer.results, *args[len(answer.results):]]
        if expected is None:
            assert regs == [SMCCC_NOT_SUPPORTED, *args], hex(fid)  # only x0 is written
        else:
            assert regs[0] == 0  # SMCCC success: dispatched
            assert regs[1 : 1 + len(expected)] == [u64(v) for v in expected], (hex(fid), [hex(a) for a in args])
            assert regs[1 + len(expected) :] == args[len(expected) :]

    def _expected_hcall(self, fid: int, args: list[int]) -> list[int] | None:
        """SMCCC decode, then the call on the shadow: None = not supported, else [x1, ...]."""
        by_id = {HCALL_BY_NAME[n].function_id: n for n in HYPERCALLS}
        name = by_id.get(fid & ~SMCCC_HINT)
        if name is None:
            return None
        if name == "__pkvm_force_reclaim_guest_page" and not POLICIES[self.policy].serves_force_reclaim:
            return None  # a pre-patch EL2 has no such call
        results = self.shadow.hypercall(name, *args)
        if name == "__pkvm_init_vm" and results[0] == 0 and len(self.handles) < 8:
            self.handles.append(results[1])
        return results

    def host_access(self) -> None:
        index = self.pick.integer(0, POOL_FRAMES - 1)
        store = self.pick.choice((True, False))
        value = self.pick.integer(0, (1 << 64) - 1)
        pfn, va = self.pool[index], DATA_VA + index * PAGE_SIZE
        f = self.shadow.frame(pfn)
        guest_page = f.host == NOPAGE and f.owner[0] == "guest" and self.shadow.vms[f.owner[1]].entries[f.owner[2]][0] == "OWNED"
        first, second = ON_PROTECTED[self.policy]
        fate = "access" if self.shadow.may_access(pfn) else ("reclaim" if guest_page else second) if first == "reclaim" else first
        if fate == "reclaim":
            assert self.shadow.apply("host_force_reclaim_guest_page", pfn) == 0
        if store:
            result = self.machine.call(STORE_VA, va, value, budget=10_000, timeout=5.0)
        else:
            result = self.machine.call(LOAD_VA, va, budget=10_000, timeout=5.0)
        if fate in OUTCOME_KIND:
            assert result.outcome.kind == OUTCOME_KIND[fate], result.outcome
        else:
            assert result.returned, (fate, result.outcome)
        if fate == "fixup":
            assert result.x0 == neg(EFAULT)
            assert store or result.regs["x1"] == 0
        elif fate in ("access", "reclaim"):
            assert result.x0 == 0, (fate, result.outcome)
            assert pfn in self.hyp.stage2.mapped  # idmapped lazily, or mapped again by the reclaim
        self._contents_after()
        if fate in ("access", "reclaim"):
            if store:
                self.contents[pfn] = value.to_bytes(8, "little")
            else:
                loaded = result.regs["x1"].to_bytes(8, "little")
                assert loaded != SECRET, "the host read a guest's secret"
                assert loaded == self.contents[pfn]

    # ------------------------------------------------------------ the memory model
    def _contents_after(self) -> None:
        """Frame contents after a step, from the shadow's host-state changes and scrubs during it."""
        scrubbed = self.shadow.scrubbed[self._mark :]
        for pfn in self.pool:
            was, f = self._before[pfn], self.shadow.frame(pfn)
            if pfn in scrubbed:
                self.contents[pfn] = bytes(8)  # hyp_poison_page()
            if was != NOPAGE and f.host == NOPAGE and f.owner[0] == "guest":
                self._guest_writes(pfn, SECRET)  # donated: the guest fills its new page
            elif was == NOPAGE and f.host == SB:
                self._guest_writes(pfn, PUBLIC)  # the guest shares what it meant to expose
            elif was == SB and f.host == NOPAGE:
                self._guest_writes(pfn, SECRET)  # unshared again: secrets once more

    def _guest_writes(self, pfn: int, data: bytes) -> None:
        self.machine.phys.write(pfn << 12, data)
        self.contents[pfn] = data

    # ------------------------------------------------------------ after every step
    def check(self, pfns: Sequence[int] = ()) -> None:
        pfns = pfns or self.watched
        assert model_view(self.own, pfns, GFNS) == self.shadow.view(pfns, GFNS)
        assert self.own.check_invariants() == []
        assert all(self.shadow.may_access(pfn) for pfn in self.hyp.stage2.mapped)
        for pfn in self.pool:
            frame = self.machine.phys.read(pfn << 12, 8)
            assert frame == self.contents[pfn], hex(pfn)
            if self.shadow.may_access(pfn):
                assert frame != SECRET, f"pfn {pfn:#x}: guest data readable by the host"


POLICY_NAMES = tuple(sorted(ON_PROTECTED))


def walk_sequences(count: int, steps: int, seed: int, tally: Counter | None = None) -> int:
    """`count` sequences of `steps` steps each, seeded; returns the number of steps taken."""
    rng = random.Random(seed)
    pick = RandomPick(rng)
    taken = 0
    for n in range(count):
        walk = SystemWalk(POLICY_NAMES[n % len(POLICY_NAMES)], pick, tally)
        for _ in range(steps):
            walk.step()
            taken += 1
        walk.check(walk.watched + walk.bad_pfns)
    return taken
