"""arm64 CPU capabilities of a vmlinux: numbers read from the image, names attached by what each entry describes.

Why not a header: capability numbers are generated per kernel
(arch/arm64/tools/cpucaps -> asm/cpucaps.h, alphabetical, so inserting one
renumbers the rest: LSE atomics is 26 in 6.1 and 42 in 7.2) and are not in
the image's BTF (they are #defines, not an enum: the only ARM64_* enum in
either Debian kernel's BTF is `arm64_vec`). What the image does hold is the
two capability tables `arm64_features[]` and `arm64_errata[]`
(arch/arm64/kernel/cpufeature.c, cpu_errata.c), arrays of
`struct arm64_cpu_capabilities` whose layout comes from BTF: each entry
carries its number (`capability`), a human description (`desc`), its scope
(`type`) and its `matches` function. A capability is named here by that
evidence, in this order:
  1. its `desc` string, through DESC_NAMES (the kernel's own wording);
  2. for entries without a desc, the `matches` function (MATCHES_NAMES;
     `has_always` is split by scope: boot CPU -> ARM64_ALWAYS_BOOT,
     system -> ARM64_ALWAYS_SYSTEM);
  3. otherwise `cpucap#N: <desc>` (unnamed but described), or
     `cpucap#N` when no table entry has the number at all (the entry is
     compiled out, e.g. 6.1's IRQ priority masking without PSEUDO_NMI).
So a name is never mapped to a number by us: the number is whatever entry
of this image says the thing the name stands for.

Which capabilities our CPU has is `present_caps`: a table from name to
the abi/cpu.py feature (docs/architecture.md "CPU features") or boot fact
that makes it present.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from abi.cpu import FEATURES, CpuFeatures
from kimage.btf import Btf, BtfError
from kimage.elf import Vmlinux, VmlinuxError

CAP_TABLES = ("arm64_features", "arm64_errata")
SCOPE_BOOT_CPU = 1 << 2  # ARM64_CPUCAP_SCOPE_BOOT_CPU (asm/cpufeature.h)

# desc strings of arm64_features/arm64_errata (6.1 and 7.2 wording) -> cpucap name (arch/arm64/tools/cpucaps).
DESC_NAMES: dict[str, str] = {
    "Branch Target Identification": "ARM64_BTI",
    "32-bit EL1 Support": "ARM64_HAS_32BIT_EL1",
    "ARMv8.4 Translation Table Level": "ARM64_HAS_ARMv8_4_TTL",
    "Instruction cache invalidation not required for I/D coherence": "ARM64_HAS_CACHE_DIC",
    "Data cache clean to the PoU not required for I/D coherence": "ARM64_HAS_CACHE_IDC",
    "Common not Private translations": "ARM64_HAS_CNP",
    "CRC32 instructions": "ARM64_HAS_CRC32",
    "Data cache clean to Point of Persistence": "ARM64_HAS_DCPOP",
    "Data cache clean to Point of Deep Persistence": "ARM64_HAS_DCPODP",
    "Data independent timing control (DIT)": "ARM64_HAS_DIT",
    "E0PD": "ARM64_HAS_E0PD",
    "Enhanced Counter Virtualization": "ARM64_HAS_ECV",
    "Enhanced Counter Virtualization (CNTPOFF)": "ARM64_HAS_ECV_CNTPOFF",
    "Enhanced Privileged Access Never": "ARM64_HAS_EPAN",
    "Enhanced Virtualization Traps": "ARM64_HAS_EVT",
    "FPMR": "ARM64_HAS_FPMR",
    "Fine Grained Traps": "ARM64_HAS_FGT",
    "Fine Grained Traps 2": "ARM64_HAS_FGT2",
    "Guarded Control Stack (GCS)": "ARM64_HAS_GCS",
    "GIC system register CPU interface": "ARM64_HAS_SYSREG_GIC_CPUIF",
    "GICv3 CPU interface": "ARM64_HAS_GICV3_CPUIF",
    "HCRX_EL2 register": "ARM64_HAS_HCX",
    "52-bit Virtual Addressing for KVM (LPA2)": "ARM64_HAS_LPA2",
    "52-bit Virtual Addressing (LPA2)": "ARM64_HAS_VA52",
    "LSE atomic instructions": "ARM64_HAS_LSE_ATOMICS",
    "Unprivileged Load Store Instructions (LSUI)": "ARM64_HAS_LSUI",
    "Memory Copy and Memory Set instructions": "ARM64_HAS_MOPS",
    "Nested Virtualization Support": "ARM64_HAS_NESTED_VIRT",
    "Privileged Access Never": "ARM64_HAS_PAN",
    "PMUv3": "ARM64_HAS_PMUV3",
    "RAS Extension Support": "ARM64_HAS_RAS_EXTN",
    "RASv1p1 Extension Support": "ARM64_HAS_RASV1P1_EXTN",
    "RCpc load-acquire (LDAPR)": "ARM64_HAS_LDAPR",
    "Random Number Generator": "ARM64_HAS_RNG",
    "Speculation barrier (SB)": "ARM64_HAS_SB",
    "Stage-1 Permission Indirection Extension (S1PIE)": "ARM64_HAS_S1PIE",
    "Stage-1 Permission Overlay Extension (S1POE)": "ARM64_HAS_S1POE",
    "Stage-2 Force Write-Back": "ARM64_HAS_STAGE2_FWB",
    "TLB range maintenance instructions": "ARM64_HAS_TLB_RANGE",
    "Trap EL0 IMPLEMENTATION DEFINED functionality": "ARM64_HAS_TIDCP1",
    "Virtualization Host Extensions": "ARM64_HAS_VIRT_HOST_EXTN",
    "WFx with timeout": "ARM64_HAS_WFXT",
    "XNX": "ARM64_HAS_XNX",
    "Protected KVM": "ARM64_KVM_PROTECTED_MODE",
    "VHE for hypervisor only": "ARM64_KVM_HVHE",
    "Kernel page table isolation (KPTI)": "ARM64_UNMAP_KERNEL_AT_EL0",
    "Software prefetching using PRFM": "ARM64_HAS_NO_HW_PREFETCH",
    "Memory Tagging Extension": "ARM64_MTE",
    "Asymmetric MTE Tag Check Fault": "ARM64_MTE_ASYMM",
    "Scalable Vector Extension": "ARM64_SVE",
    "Scalable Matrix Extension": "ARM64_SME",
    "Speculative Store Bypassing Safe (SSBS)": "ARM64_SSBS",
    "Mismatched cache type (CTR_EL0)": "ARM64_MISMATCHED_CACHE_TYPE",
    "Spectre-v2": "ARM64_SPECTRE_V2",
    "Spectre-v3a": "ARM64_SPECTRE_V3A",
    "Spectre-v4": "ARM64_SPECTRE_V4",
    "Spectre-BHB": "ARM64_SPECTRE_BHB",
    "ARM erratum 832075": "ARM64_WORKAROUND_832075",
    "Broken broadcast TLBI completion": "ARM64_WORKAROUND_REPEAT_TLBI",
}
# Entries with no desc: named by their `matches` function (cpufeature.c).
MATCHES_NAMES: dict[str, str] = {
    "has_address_auth_metacap": "ARM64_HAS_ADDRESS_AUTH",
    "has_generic_auth": "ARM64_HAS_GENERIC_AUTH",
    "has_no_fpsimd": "ARM64_HAS_NO_FPSIMD",
    "has_32bit_el0": "ARM64_HAS_32BIT_EL0_DO_NOT_USE",
    "has_hw_dbm": "ARM64_HW_DBM",
}
# ID_AA64PFR0_EL1 (op0=3 op1=0 CRn=0 CRm=4 op2=0) field FP (bits 19:16): 7.x's ARM64_HAS_FPSIMD has no desc.
ID_AA64PFR0_EL1 = 0x180400
FP_FIELD = 16


class Why(StrEnum):
    """Why a capability is present on the modelled CPU."""

    ALWAYS = "always: the kernel sets it on every CPU (has_always)"
    FEATURE = "abi/cpu.py FEATURES"
    FP = "every CPU the project models has FP/AdvSIMD (Unicorn's MAX model; Debian kernels require it)"
    PROTECTED = "the host booted with kvm-arm.mode=protected (the EL2 policy initialises pKVM)"


def feature_caps(features: CpuFeatures = FEATURES) -> dict[str, bool]:
    """cpucap name -> present, for capabilities that follow one abi/cpu.py feature.

    FEAT_LSE2 has no cpucap in these kernels (nothing is patched for it); FEAT_RAS
    gives ARM64_HAS_RAS_EXTN; the PAuth/BTI/MOPS/MTE/LPA2 capabilities are absent
    because the feature set has them off. Every other capability (errata,
    mitigations, VHE, SVE/SME, ...) is absent: the modelled CPU is on no
    erratum list and the host runs at EL1 under pKVM (no VHE).
    """
    return {
        "ARM64_HAS_LSE_ATOMICS": features.lse,
        "ARM64_HAS_PAN": features.pan,
        "ARM64_HAS_RAS_EXTN": features.ras,
        "ARM64_HAS_ADDRESS_AUTH": features.pauth,
        "ARM64_HAS_GENERIC_AUTH": features.pauth,
        "ARM64_BTI": features.bti,
        "ARM64_HAS_MOPS": features.mops,
        "ARM64_MTE": features.mte,
        "ARM64_HAS_VA52": features.lpa2,
        "ARM64_HAS_LPA2": features.lpa2,
    }


def present_caps(features: CpuFeatures = FEATURES, *, protected: bool) -> dict[str, Why]:
    """The capabilities a kernel booted on the modelled CPU has, by name, with the reason."""
    present = {"ARM64_ALWAYS_BOOT": Why.ALWAYS, "ARM64_ALWAYS_SYSTEM": Why.ALWAYS, "ARM64_HAS_FPSIMD": Why.FP}
    present.update({name: Why.FEATURE for name, on in feature_caps(features).items() if on})
    if protected:
        present["ARM64_KVM_PROTECTED_MODE"] = Why.PROTECTED
    return present


@dataclass(frozen=True)
class CapEntry:
    """One `struct arm64_cpu_capabilities` of the image."""

    number: int
    table: str  # arm64_features | arm64_errata
    desc: str | None
    matches: str | None  # the matches function's symbol
    scope: int  # `type`
    sys_reg: int
    field_pos: int


@dataclass(frozen=True)
class CpuCaps:
    """Capability numbers <-> names for one image."""

    entries: dict[int, CapEntry]  # first entry per number (multi-entry errata repeat it)
    names: dict[int, str]

    @classmethod
    def read(cls, vmlinux: Vmlinux, btf: Btf) -> "CpuCaps":
        try:
            size = btf.sizeof("arm64_cpu_capabilities")
            off = {p: btf.offsetof("arm64_cpu_capabilities", p) for p in ("desc", "capability", "type", "matches", "sys_reg", "field_pos")}
        except BtfError as exc:
            raise VmlinuxError(f"no struct arm64_cpu_capabilities layout in BTF: {exc}") from None
        entries: dict[int, CapEntry] = {}
        for table in CAP_TABLES:
            sym = vmlinux.symbols.lookup(table)
            data = vmlinux.read(sym.addr, sym.size)
            for base in range(0, len(data) - size + 1, size):
                desc_ptr, matches = (struct.unpack_from("<Q", data, base + off[k])[0] for k in ("desc", "matches"))
                if not desc_ptr and not matches:
                    continue  # the { } terminator
                number = struct.unpack_from("<H", data, base + off["capability"])[0]
                desc = vmlinux.read(desc_ptr, 128).split(b"\0", 1)[0].decode() if desc_ptr else None
                fn = vmlinux.symbols.function_at(matches) if matches else None
                entries.setdefault(number, CapEntry(
                    number, table, desc, fn.name if fn else None,
                    struct.unpack_from("<H", data, base + off["type"])[0],
                    struct.unpack_from("<I", data, base + off["sys_reg"])[0],
                    data[base + off["field_pos"]],
                ))
        return cls(entries, {n: _name(e) for n, e in entries.items()})

    def name(self, number: int) -> str:
        return self.names.get(number, f"cpucap#{number}")

    def number(self, name: str) -> int | None:
        """The image's number for a capability name, or None when no entry of this image is it."""
        found = [n for n, nm in self.names.items() if nm == name]
        if len(found) > 1:
            raise VmlinuxError(f"{name} names capabilities {found}: ambiguous")
        return found[0] if found else None


def _name(e: CapEntry) -> str:
    if e.desc is not None:
        if e.desc in DESC_NAMES:
            return DESC_NAMES[e.desc]
        return f"cpucap#{e.number}: {e.desc}"
    if e.matches == "has_always":
        return "ARM64_ALWAYS_BOOT" if e.scope & SCOPE_BOOT_CPU else "ARM64_ALWAYS_SYSTEM"
    if e.matches in MATCHES_NAMES:
        return MATCHES_NAMES[e.matches]
    if e.matches == "has_cpuid_feature" and (e.sys_reg, e.field_pos) == (ID_AA64PFR0_EL1, FP_FIELD):
        return "ARM64_HAS_FPSIMD"
    return f"cpucap#{e.number}: matches {e.matches}"
