"""The sweep bench: one Lab per policy with every guest_asm file loaded, and the buffers each routine uses.

Cost: creating a Lab and assembling costs far more than a case, so one
bench serves every case of a sweep (and the default test run reuses one
across sweeps); a case rewrites and reads back only its windows (the
pages around its buffers, one page either side).
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from typing import Mapping

from emu.memory import PAGE_SIZE
from guest_asm import SOURCE_DIR
from host.kernel import KernelConfig
from hyp.policies import known as known_policies
from kimage.profiles import HostFeatures, model_profile

from faultlab import leak
from faultlab.lab import Lab, Region
from faultlab.snapshot import LabSnapshot
from faultlab.sweep.spec import BufferSpec, RoutineSpec

GUEST_ASM = SOURCE_DIR
# A lab goes back to its set-up snapshot after this many donations (Bench.lab says why). Small enough
# that the ownership state stays in the invariant check's memoised range (hyp/invariants.py
# MEMO_MAX_ITEMS), large enough that restores (~0.3 ms, plus the buffers' mappings again) are rare.
RECYCLE_AFTER_DONATIONS = 16
# ... or after this many injected aborts: a lab whose guest keeps its page (inject, panic) never
# donates again, but pKVM's injection records and the host's fixups and delivered signals grow with
# every fault it is injected (a 6.1 livelock case injects ~8); memory only, not time per case.
RECYCLE_AFTER_INJECTIONS = 4096
KERNEL_FILES = ("uaccess.S", "word_at_a_time.S", "gup.S")
USER_FILES = ("vmm.S",)


@dataclass
class BenchBuffer:
    """One buffer's region in a lab: [guard][span pages][G][span pages][guard], G the page the guest may own."""

    region: Region
    spec: BufferSpec
    span: int  # pages before and after the guest page

    @property
    def base(self) -> int:
        r = self.region
        return {"kernel": r.va, "user": r.user_va, "alias": r.alias_va}[self.spec.mapping]

    @property
    def guest_va(self) -> int:
        return self.base + (1 + self.span) * PAGE_SIZE

    @property
    def guest_pfn(self) -> int:
        return self.region.pfns[1 + self.span]

    def va_to_linear(self, va: int) -> int:
        return self.region.va + (va - self.base)


class Bench:
    """One Lab per policy with every guest_asm file loaded, and the buffers each routine uses.

    Reuse one Bench across sweeps (the default test run does): creating a Lab
    and assembling costs far more than a case.
    """

    def __init__(self, sources: Mapping[str, str] | None = None, *, secret_seed: int = 0, host: HostFeatures | None = None) -> None:
        # sources: replacement text for guest_asm files, by file name (tests feed broken routines);
        # secret_seed: which data the guest keeps in its pages (tests compare runs with two);
        # host: the host kernel's fault-path features (default: the model's kernel), e.g. a real
        # kernel's, so our routines and that kernel's answer the same question
        self.sources = dict(sources or {})
        self.host = host
        self.secret_seed = secret_seed
        self.labs: dict[str, Lab] = {}
        self.buffers: dict[tuple[str, str, str], BenchBuffer] = {}
        self.secrets: dict[int, bytes] = {}
        self._grams: dict[tuple[bytes, int], frozenset[bytes]] = {}
        self._set_up: dict[str, LabSnapshot] = {}
        self._snapshot_buffers: dict[str, frozenset[tuple[str, str, str]]] = {}  # the buffers each set-up snapshot holds
        self._spans: dict[tuple[str, str], int] = {}  # pages either side of the guest page, by (routine, buffer)
        self.boots = 0  # labs set up
        self.recycles = 0  # labs put back to their set-up snapshot

    def grams(self, secret: bytes, n: int) -> frozenset[bytes]:
        """The runs of n guest bytes worth looking for in registers (not one byte repeated)."""
        key = (secret, n)
        if key not in self._grams:
            self._grams[key] = leak.grams(secret, n)
        return self._grams[key]

    def lab(self, policy: str) -> Lab:
        """The policy's lab, set up once; after RECYCLE_AFTER_DONATIONS donations (or RECYCLE_AFTER_INJECTIONS
        injected aborts) it goes back to its set-up snapshot.

        Why: a case whose guest page EL2 took back (a reclaim) donates a fresh gfn next time, and
        each reclaim leaves a POISON entry in the guest's records. Left to grow over a sweep, the
        ownership state every EL2 entry checks (hyp/invariants.py) grows with the number of cases
        run, and the sweep becomes quadratic (a 5,522-case Linux 7.2 sweep under inject-reclaim took
        733 s). A restored lab is the lab a fresh set-up gives (tests/test_snapshot.py), so the
        cases' results do not depend on when the bench recycles.
        """
        lab = self.labs.get(policy)
        if lab is not None and (len(lab.guest_pages) >= RECYCLE_AFTER_DONATIONS or len(lab.hyp.injections) >= RECYCLE_AFTER_INJECTIONS):
            lab.restore(self._set_up[policy])
            self.recycles += 1
            self._rebuild_buffers(policy, lab)
            return lab
        if lab is None:
            lab = self.labs[policy] = self._make_lab(policy)
            self._set_up[policy] = lab.snapshot()
            self._snapshot_buffers[policy] = frozenset()
            self.boots += 1
        return lab

    def _rebuild_buffers(self, policy: str, lab: Lab) -> None:
        """After a restore: map again the buffers allocated since the snapshot, and snapshot the lab with them.

        Why: a recycle comes every RECYCLE_AFTER_DONATIONS donations, and mapping a sweep's buffers
        again (tens of pages each, linear map plus user or alias) cost more than the restore itself.
        The new snapshot is the set-up lab plus freshly allocated buffers and no guest pages, the
        state every earlier recycle rebuilt by hand; later recycles come back to it directly.
        """
        kept = self._snapshot_buffers[policy]
        lost = [(k, b) for k, b in self.buffers.items() if k[0] == policy and k not in kept]
        if not lost:
            return
        for key, old in lost:
            pages = len(old.region.pfns)
            region = lab.alloc(old.region.name, pages, user=old.spec.mapping == "user", alias=old.spec.mapping == "alias")
            self.buffers[key] = BenchBuffer(region, old.spec, old.span)
        self._set_up[policy] = lab.snapshot()
        self._snapshot_buffers[policy] = frozenset(k for k in self.buffers if k[0] == policy)

    def _make_lab(self, policy: str) -> Lab:
        """A new lab for `policy`: every guest_asm file loaded (KernelBench: a booted vmlinux)."""
        pol = known_policies()[policy]
        config = None
        if self.host is not None:
            profile = dataclasses.replace(model_profile(), host=self.host)
            config = KernelConfig(profile=profile, pkvm_initialised=pol.pkvm_initialised)
        lab = Lab(pol, host_config=config)
        for name in KERNEL_FILES:
            lab.load_asm(GUEST_ASM / name, text=self.sources.get(name))
        for name in USER_FILES:
            lab.load_user_asm(GUEST_ASM / name, text=self.sources.get(name))
        return lab

    def buffer(self, policy: str, spec: RoutineSpec, name: str) -> BenchBuffer:
        key = (policy, spec.name, name)
        if key not in self.buffers:
            bspec = spec.buffer(name)
            span = self._spans.get((spec.name, name))
            if span is None:  # max_reach walks every size of both plans: once per routine, not per recycle
                span = self._spans[(spec.name, name)] = -(-(spec.max_reach(name) + 32) // PAGE_SIZE) + 1
            lab = self.lab(policy)
            region = lab.alloc(f"{spec.name}.{name}", 2 * span + 3, user=bspec.mapping == "user", alias=bspec.mapping == "alias")
            self.buffers[key] = BenchBuffer(region, bspec, span)
        return self.buffers[key]

    def guest_page(self, lab: Lab, buf: BenchBuffer, wanted: bool) -> bytes | None:
        """The guest's bytes in the buffer's guest page, donating it first if `wanted`; None if it is the host's.

        A page not wanted is left with the guest when it already is (taking it
        back costs a reclaim, and the buffer never reaches it in such a case).
        """
        pfn = buf.guest_pfn
        if wanted and lab.hyp.ownership.host_may_access(pfn):
            self.secrets[pfn] = lab.donate(pfn, seed=self.secret_seed).secret
        return None if lab.hyp.ownership.host_may_access(pfn) else self.secrets[pfn]
