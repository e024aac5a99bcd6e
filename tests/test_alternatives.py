"""A booted-like image: `.altinstructions` applied for our CPU, and the host hypercall table, from both kernels.

Capability numbers are never written here: they come from each image's
arm64_features/arm64_errata tables (kimage.cpucaps), and the tests check
the names resolve and that the same name has different numbers in 6.1 and 7.2.
Patched branches are checked with capstone, independently of our decoder.
"""
from __future__ import annotations

import functools
import struct

import capstone
import pytest

from cached_kernels import SUITES, vmlinux

from faultlab.kernel.lab import KernelRig
from kimage.alternatives import NOP, PATCH_NOPS, Alternatives, Skip, apply
from kimage.cpucaps import present_caps
from kimage.hcalls import FORCE_RECLAIM, HcallTable, kvm_host_smccc_id
from kimage.loaded import LoadedKernel

pytestmark = pytest.mark.kernel

KEYS = list(SUITES)
ALWAYS_NAMED = ("ARM64_ALWAYS_SYSTEM", "ARM64_HAS_LSE_ATOMICS", "ARM64_HAS_PAN", "ARM64_HAS_RAS_EXTN", "ARM64_KVM_PROTECTED_MODE")


@functools.cache
def _alts(key: str) -> Alternatives:
    return Alternatives.read(vmlinux(key))


def alts(key: str) -> Alternatives:
    vmlinux(key)
    return _alts(key)


@functools.cache
def _cs() -> capstone.Cs:
    """One disassembler for the process: building a Cs costs more than the decode it is used for."""
    return capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


def _decode(data: bytes, addr: int):
    insn = next(_cs().disasm(data, addr), None)
    assert insn is not None, f"{data.hex()} at {addr:#x} does not decode"
    return insn


def _imm_target(insn) -> int:
    """The last immediate operand capstone prints: the absolute target of b/bl/cbz/tbz/adrp."""
    return int(insn.op_str.split("#")[-1], 0)


@pytest.mark.parametrize("key", KEYS)
def test_every_entry_points_into_text_with_whole_instructions(key):
    a = alts(key)
    v = a.vmlinux
    text = [(s.addr, s.addr + s.size) for s in v.sections if s.exec]

    def in_text(lo: int, hi: int) -> bool:
        return any(start <= lo and hi <= end for start, end in text)

    assert len(a.entries) > 20000
    for alt in a.entries:
        assert alt.orig_len % 4 == 0, alt  # 7.2 has a few empty entries (ALTERNATIVE("", "", cap)); 6.1 none
        assert in_text(alt.orig, alt.orig + alt.orig_len), alt
        if alt.callback:
            assert alt.alt_len == 0, alt  # alternative.c: BUG_ON(alt->alt_len != 0) for callbacks
            sym = v.symbols.function_at(alt.repl)
            assert sym is not None and sym.addr == alt.repl, f"callback {alt.repl:#x} is not a function start"
        else:
            assert alt.alt_len == alt.orig_len, alt
            assert in_text(alt.repl, alt.repl + alt.alt_len), alt


@pytest.mark.parametrize("key", KEYS)
def test_capability_names_come_from_the_image(key):
    caps = alts(key).caps
    for name in ALWAYS_NAMED:
        assert caps.number(name) is not None, f"{name} has no entry in Linux {key}'s capability tables"
    # Every capability our CPU has resolves to exactly one number in this image (or is absent from it).
    for name in present_caps(protected=True):
        caps.number(name)  # raises when ambiguous
    # Unnamed capabilities are never ones we patch.
    unnamed = {alt.cap for alt in alts(key).entries if not caps.name(alt.cap).startswith("ARM64_")}
    present = {caps.number(n) for n in present_caps(protected=True)}
    assert not unnamed & present


def test_capability_numbers_differ_between_kernels():
    old, new = alts("6.1").caps, alts("7.2").caps
    assert old.number("ARM64_HAS_LSE_ATOMICS") != new.number("ARM64_HAS_LSE_ATOMICS")
    assert old.number("ARM64_KVM_PROTECTED_MODE") != new.number("ARM64_KVM_PROTECTED_MODE")
    assert new.number("ARM64_HAS_FPSIMD") is not None and old.number("ARM64_HAS_FPSIMD") is None


@pytest.mark.parametrize("key", KEYS)
def test_plan_counts(key):
    a = alts(key)
    _, report = a.plan(protected=True)
    total = len(a.entries)
    assert sum(report.sites.values()) == total
    assert sum(report.patched.values()) + sum(report.skipped.values()) == total
    assert report.patched["ARM64_HAS_PAN"] > 0
    assert report.patched["ARM64_HAS_LSE_ATOMICS"] > 0
    assert report.patched[f"ARM64_HAS_LSE_ATOMICS via {PATCH_NOPS}"] > 5000
    assert report.patched["ARM64_KVM_PROTECTED_MODE"] > 0
    assert report.skipped[Skip.CALLBACK] == sum(report.callbacks_skipped.values()) > 0
    assert PATCH_NOPS not in report.callbacks_skipped
    assert report.fixed_branches > 0
    # Not protected: the protected-mode sites stay as linked.
    _, plain = a.plan(protected=False)
    assert plain.patched["ARM64_KVM_PROTECTED_MODE"] == 0
    assert sum(plain.patched.values()) == sum(report.patched.values()) - report.patched["ARM64_KVM_PROTECTED_MODE"]


@functools.cache
def _patched(key: str) -> tuple[LoadedKernel, list]:
    loaded = LoadedKernel(vmlinux(key))
    writes, _ = alts(key).plan(protected=True)
    apply(loaded, protected=True)
    return loaded, writes


@pytest.mark.parametrize("key", KEYS)
def test_patched_branches_keep_their_targets(key):
    """Each re-targeted branch/adrp, decoded by capstone at its new place, reaches what the
    replacement reached at its own address (and the sequence is otherwise the replacement)."""
    loaded, writes = _patched(key)
    v = loaded.vmlinux
    last: dict[int, bytes] = {}
    for alt, data in writes:  # ALTERNATIVE_2: a later entry for the same site wins, as in the kernel's walk
        last[alt.orig] = (alt, data)
    checked = 0
    for alt, data in last.values():
        now = loaded.machine.read(alt.orig, alt.orig_len)
        assert now == data
        if alt.callback:
            assert now == struct.pack("<I", NOP) * (alt.orig_len // 4)
            continue
        repl = v.read(alt.repl, alt.alt_len)
        for i in range(0, alt.alt_len, 4):
            before = _decode(repl[i : i + 4], alt.repl + i)
            after = _decode(now[i : i + 4], alt.orig + i)
            assert before.mnemonic == after.mnemonic
            if now[i : i + 4] != repl[i : i + 4]:
                assert before.mnemonic in ("b", "bl", "cbz", "cbnz", "tbz", "tbnz", "adrp") or before.mnemonic.startswith("b."), before
                assert _imm_target(after) == _imm_target(before), (hex(alt.orig + i), before.op_str, after.op_str)
                checked += 1
    assert checked > 20


@pytest.mark.parametrize("key", KEYS)
def test_absent_capabilities_leave_the_image_alone(key):
    loaded, _ = _patched(key)
    a = alts(key)
    mops = a.caps.number("ARM64_HAS_MOPS") or a.caps.number("ARM64_HAS_VIRT_HOST_EXTN")
    sites = [alt for alt in a.entries if alt.cap == mops][:50]
    assert sites
    for alt in sites:
        assert loaded.machine.read(alt.orig, alt.orig_len) == loaded.vmlinux.read(alt.orig, alt.orig_len)


# ------------------------------------------------------------------ hypercalls
def test_hcall_table_7_2():
    t = HcallTable.read(vmlinux("7.2"))
    assert (len(t), t.size) == (49, 50)
    assert t.id_of(FORCE_RECLAIM) == kvm_host_smccc_id(43) == 0xC600002B
    assert t.name_of(0xC6000000) is None  # __kvm_hyp_init: served by the init stub
    assert t.name_of(0xC6000032) is None  # past the table
    assert t.id_of("__pkvm_host_share_hyp") == 0xC600001D
    assert t.min_after_finalize == t.id_of("__pkvm_prot_finalize") == 0xC6000007


def test_hcall_table_6_1():
    t = HcallTable.read(vmlinux("6.1"))
    assert (len(t), t.size) == (22, 23)
    assert FORCE_RECLAIM not in t and t.id_of(FORCE_RECLAIM) is None
    assert t.name_of(0xC600002B) is None
    assert t.id_of("__pkvm_host_share_hyp") == 0xC6000009
    assert t.name_of(0xC6000001) == "__kvm_get_mdcr_el2"


# ------------------------------------------------------------------ the real host runs the patched image
@pytest.mark.parametrize("key", KEYS)
def test_real_host_boots_patched_with_its_hcall_table(key):
    rig = KernelRig.boot(vmlinux(key), "inject-reclaim", host="real")
    host = rig.host
    assert host.alternatives.patched["ARM64_HAS_PAN"] > 0
    assert any(line.startswith(f"{len(alts(key).entries)} alternatives") for line in host.booted)
    assert host.hcalls is not None
    assert (FORCE_RECLAIM in host.hcalls) == (key == "7.2")
    # A PAN site in the machine holds the replacement (uaccess_disable/enable toggling PSTATE.PAN).
    pan = alts(key).caps.number("ARM64_HAS_PAN")
    site = next(a for a in alts(key).entries if a.cap == pan and not a.callback)
    word = rig.machine.read(site.orig, 4)
    assert _decode(word, site.orig).mnemonic == _decode(rig.kernel.vmlinux.read(site.repl, 4), site.repl).mnemonic
