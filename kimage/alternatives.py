"""`.altinstructions` of a vmlinux, applied for the project's one CPU as the booted kernel would have.

struct alt_instr (arch/arm64/include/asm/alternative.h; 12 bytes, layout
checked against BTF): s32 orig_offset and s32 alt_offset, each relative to
its own field; u16 cpucap; u8 orig_len; u8 alt_len. Bit 15 of cpucap
(ARM64_CB_SHIFT = 15 in asm/alternative-macros.h of both 6.1 and 7.2) marks
a callback alternative: then alt_len is 0, alt_offset points at the callback
function and the low bits are the capability that gates it.

apply_alternatives (arch/arm64/kernel/alternative.c) walks the entries in
order and, for each whose capability the system has, either copies the
replacement over the original (patch_alternative, fixing PC-relative
instructions) or calls the callback with the original's address and length.
`apply` does the same for the capabilities of `kimage.cpucaps.present_caps`.
Callbacks: `alt_cb_patch_nops` (nop the original: the `likely` side of
alternative_has_cap_likely/unlikely) is implemented; every other callback is
left unpatched with its reason in UNPATCHED_CALLBACKS.

PC-relative fix-up (alternative.c get_alt_insn), our own from the Arm ARM
encodings (C6.2 B, BL, B.cond, CBZ/CBNZ, TBZ/TBNZ, ADRP): a branch whose
target lies outside the replacement sequence keeps its absolute target (its
offset is recomputed for the new address); one inside the sequence keeps its
offset; ADRP keeps its absolute page. A literal load or ADR in a replacement
is refused, as the kernel BUG()s on it.
"""
from __future__ import annotations

import copy
import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from abi.cpu import FEATURES, CpuFeatures
from kimage.btf import Btf
from kimage.cpucaps import CpuCaps, Why, present_caps
from kimage.elf import Vmlinux, VmlinuxError

if TYPE_CHECKING:
    from kimage.loaded import LoadedKernel

ALT_INSTR = struct.Struct("<iiHBB")
ARM64_CB_SHIFT = 15
CB_BIT = 1 << ARM64_CB_SHIFT
NOP = 0xD503201F
INSN = 4

# Callbacks we do not run, and why leaving the original is what we want (alternative.c callers).
UNPATCHED_CALLBACKS: dict[str, str] = {
    "kvm_update_va_mask": "KVM hyp VA masking of EL2 code: EL2 is the Python model, this code never runs",
    "kvm_patch_vector_branch": "KVM EL2 vector hardening: EL2 code, not run",
    "kvm_get_kimage_voffset": "KVM EL2 helper: EL2 code, not run",
    "kvm_compute_final_ctr_el0": "KVM's CTR_EL0 for guests: not on the host fault path",
    "kvm_compute_ich_hcr_trap_bits": "KVM GIC trapping at EL2: EL2 code, not run",
    "spectre_bhb_patch_clearbhb": "Spectre-BHB mitigation: the modelled CPU is on no affected list, so the original stays",
    "spectre_bhb_patch_loop_iter": "Spectre-BHB mitigation: not affected, the original stays",
    "spectre_bhb_patch_loop_mitigation_enable": "Spectre-BHB mitigation: not affected, the original stays",
    "spectre_bhb_patch_wa3": "Spectre-BHB firmware workaround: not affected, the original stays",
    "spectre_v4_patch_fw_mitigation_enable": "Spectre-v4 firmware mitigation: not affected, the original stays",
    "smccc_patch_fw_mitigation_conduit": "firmware mitigation conduit: no mitigation firmware, the original stays",
}
PATCH_NOPS = "alt_cb_patch_nops"


class Skip(StrEnum):
    """Why an entry was not applied."""

    ABSENT = "capability absent on the modelled CPU"
    CALLBACK = "callback not implemented (UNPATCHED_CALLBACKS says why)"


@dataclass(frozen=True)
class AltInstr:
    """One `.altinstructions` entry, resolved to absolute addresses."""

    entry: int  # address of the struct
    orig: int
    repl: int  # replacement code, or the callback function for a callback entry
    cap: int  # capability number, callback bit stripped
    callback: bool
    orig_len: int
    alt_len: int


@dataclass
class AltReport:
    """What `apply` did, for the event log and docs."""

    sites: Counter = field(default_factory=Counter)  # cap name -> entries
    patched: Counter = field(default_factory=Counter)  # cap name (or "name via callback") -> entries applied
    skipped: Counter = field(default_factory=Counter)  # Skip -> entries
    callbacks_skipped: Counter = field(default_factory=Counter)  # callback name -> entries (cap present)
    fixed_branches: int = 0
    fixed_adrp: int = 0

    def summary(self) -> str:
        total = sum(self.sites.values())
        return (
            f"{total} alternatives: {sum(self.patched.values())} applied "
            f"({self.fixed_branches} branches, {self.fixed_adrp} adrp re-targeted), "
            + ", ".join(f"{n} skipped: {why.value}" for why, n in self.skipped.items())
        )


def read_btf(vmlinux: Vmlinux) -> Btf:
    """The image's `.BTF` section (SHF_ALLOC: it is loaded, so read it from the image); indexed once per image."""
    return vmlinux.btf()


def check_layout(btf: Btf) -> None:
    """Refuse an image whose struct alt_instr is not the 12-byte layout decoded here."""
    want = {"orig_offset": 0, "alt_offset": 4, "orig_len": 10, "alt_len": 11}
    got = {m.name: m.bit_offset // 8 for m in btf.members(btf.struct_id("alt_instr"))}
    cap_field = "cpucap" if "cpucap" in got else "cpufeature"  # renamed in 6.3
    if btf.sizeof("alt_instr") != ALT_INSTR.size or got.get(cap_field) != 8 or any(got.get(k) != v for k, v in want.items()):
        raise VmlinuxError(f"struct alt_instr is {got}, not the layout this reader knows")


def read_alternatives(vmlinux: Vmlinux) -> list[AltInstr]:
    """All entries between `__alt_instructions` and `__alt_instructions_end`, in order."""
    start, end = vmlinux.address("__alt_instructions"), vmlinux.address("__alt_instructions_end")
    raw = vmlinux.read(start, end - start)
    out = []
    for off in range(0, len(raw) - ALT_INSTR.size + 1, ALT_INSTR.size):
        orig_off, alt_off, cap, orig_len, alt_len = ALT_INSTR.unpack_from(raw, off)
        entry = start + off
        out.append(AltInstr(entry, entry + orig_off, entry + 4 + alt_off, cap & ~CB_BIT, bool(cap & CB_BIT), orig_len, alt_len))
    return out


# ---------------------------------------------------------------- PC-relative fix-up
def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


# (mask, match, imm lsb, imm bits) of the immediate-branch classes (Arm ARM C4.1.65 "Branches, exception...")
_BRANCHES = (
    (0x7C000000, 0x14000000, 0, 26),  # B, BL
    (0xFF000010, 0x54000000, 5, 19),  # B.cond
    (0x7E000000, 0x34000000, 5, 19),  # CBZ, CBNZ
    (0x7E000000, 0x36000000, 5, 14),  # TBZ, TBNZ
)
_ADRP = (0x9F000000, 0x90000000)
_ADR = (0x9F000000, 0x10000000)
_LITERAL = (0x3B000000, 0x18000000)  # LDR/LDRSW/PRFM (literal), GPR and SIMD


def branch_target(word: int, pc: int) -> int | None:
    """The target of an immediate branch at `pc`, or None if `word` is not one."""
    for mask, match, lsb, bits in _BRANCHES:
        if word & mask == match:
            return pc + 4 * _sext((word >> lsb) & ((1 << bits) - 1), bits)
    return None


def _retarget_branch(word: int, pc: int, target: int) -> int:
    for mask, match, lsb, bits in _BRANCHES:
        if word & mask == match:
            delta = (target - pc) // 4
            if not -(1 << (bits - 1)) <= delta < (1 << (bits - 1)):
                raise VmlinuxError(f"branch at {pc:#x} cannot reach {target:#x}")
            field_mask = ((1 << bits) - 1) << lsb
            return (word & ~field_mask) | ((delta & ((1 << bits) - 1)) << lsb)
    raise AssertionError("not a branch")


def adrp_target(word: int, pc: int) -> int:
    """ADRP: immhi:immlo (21 bits) pages from pc's page (Arm ARM C6.2 ADRP)."""
    imm = ((word >> 5) & 0x7FFFF) << 2 | (word >> 29) & 3
    return (pc & ~0xFFF) + (_sext(imm, 21) << 12)


def _retarget_adrp(word: int, pc: int, target: int) -> int:
    pages = ((target & ~0xFFF) - (pc & ~0xFFF)) >> 12
    if not -(1 << 20) <= pages < (1 << 20):
        raise VmlinuxError(f"adrp at {pc:#x} cannot reach {target:#x}")
    pages &= (1 << 21) - 1
    return (word & 0x9F00001F) | ((pages & 3) << 29) | ((pages >> 2) << 5)


def relocate(word: int, src: int, dst: int, seq: tuple[int, int]) -> tuple[int, str | None]:
    """`word` moved from `src` to `dst`, as get_alt_insn fixes it; returns (word, "branch"|"adrp"|None)."""
    target = branch_target(word, src)
    if target is not None:
        if seq[0] <= target < seq[1]:
            return word, None  # a branch inside the replacement keeps its offset
        return _retarget_branch(word, dst, target), "branch"
    if word & _ADRP[0] == _ADRP[1]:
        return _retarget_adrp(word, dst, adrp_target(word, src)), "adrp"
    if word & _ADR[0] == _ADR[1] or word & _LITERAL[0] == _LITERAL[1]:
        raise VmlinuxError(f"PC-relative literal/adr at {src:#x} in a replacement: the kernel refuses it too")
    return word, None


# ---------------------------------------------------------------- applying
@dataclass
class Alternatives:
    """The alternatives of one image, with names for their capabilities."""

    vmlinux: Vmlinux
    caps: CpuCaps
    entries: list[AltInstr]
    _plans: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def read(cls, vmlinux: Vmlinux) -> "Alternatives":
        """Read once per image (Vmlinux.derived): every boot of a real host applies the same entries."""
        return vmlinux.derived("alternatives", cls._read)

    @classmethod
    def _read(cls, vmlinux: Vmlinux) -> "Alternatives":
        btf = read_btf(vmlinux)
        check_layout(btf)
        return cls(vmlinux, CpuCaps.read(vmlinux, btf), read_alternatives(vmlinux))

    def callback_name(self, alt: AltInstr) -> str:
        sym = self.vmlinux.symbols.function_at(alt.repl)
        name = sym.name if sym else f"{alt.repl:#x}"
        return name.removeprefix("__kvm_nvhe_")

    def plan(self, features: CpuFeatures = FEATURES, *, protected: bool) -> tuple[list[tuple[AltInstr, bytes]], AltReport]:
        """(site, new bytes) in kernel order, and the report; nothing is written.

        A pure function of the image, `features` and `protected`: planned once per
        pair, then handed out as a fresh list and a copy of the report.
        """
        key = (features, protected)
        if key not in self._plans:
            self._plans[key] = self._plan(features, protected=protected)
        writes, report = self._plans[key]
        return list(writes), copy.deepcopy(report)

    def _plan(self, features: CpuFeatures, *, protected: bool) -> tuple[list[tuple[AltInstr, bytes]], AltReport]:
        present: dict[str, Why] = present_caps(features, protected=protected)
        present_numbers = {n for n, name in self.caps.names.items() if name in present}
        report = AltReport()
        writes: list[tuple[AltInstr, bytes]] = []
        for alt in self.entries:
            name = self.caps.name(alt.cap)
            report.sites[name] += 1
            if alt.cap not in present_numbers:
                report.skipped[Skip.ABSENT] += 1
                continue
            if alt.callback:
                cb = self.callback_name(alt)
                if cb != PATCH_NOPS:
                    report.skipped[Skip.CALLBACK] += 1
                    report.callbacks_skipped[cb] += 1
                    continue
                writes.append((alt, struct.pack("<I", NOP) * (alt.orig_len // INSN)))
                report.patched[f"{name} via {cb}"] += 1
                continue
            if alt.alt_len != alt.orig_len:
                raise VmlinuxError(f"alternative at {alt.entry:#x}: replacement {alt.alt_len} bytes for {alt.orig_len}")
            raw = self.vmlinux.read(alt.repl, alt.alt_len)
            seq = (alt.repl, alt.repl + alt.alt_len)
            words = []
            for i, (w,) in enumerate(struct.iter_unpack("<I", raw)):
                new, kind = relocate(w, alt.repl + 4 * i, alt.orig + 4 * i, seq)
                report.fixed_branches += kind == "branch"
                report.fixed_adrp += kind == "adrp"
                words.append(new)
            writes.append((alt, struct.pack(f"<{len(words)}I", *words)))
            report.patched[name] += 1
        return writes, report


def apply(loaded: "LoadedKernel", features: CpuFeatures = FEATURES, *, protected: bool) -> AltReport:
    """Patch a loaded image's alternatives for `features` (and protected-mode KVM iff `protected`).

    Writes go to the image's frames (text is mapped read-only/execute at stage 1,
    as the kernel patches through a writable alias); Unicorn's translated blocks
    are dropped once at the end.
    """
    alts = Alternatives.read(loaded.vmlinux)
    writes, report = alts.plan(features, protected=protected)
    machine = loaded.machine
    for alt, data in writes:
        if not loaded.in_image(alt.orig):
            raise VmlinuxError(f"alternative site {alt.orig:#x} is outside the loaded image")
        machine.phys.write(alt.orig - loaded.kimage_voffset, data)
    machine.uc.ctl_flush_tb()
    machine.log("alternatives", report.summary())
    return report
