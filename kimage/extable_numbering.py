"""Which exception-table type numbering a vmlinux uses, decided from its version and its entries.

Two independent sources: the version in `linux_banner`, and the entries themselves (a type-4
entry on a FEAT_MOPS `CPY*` instruction can only be UACCESS_CPY; on a load it can only be
LOAD_UNALIGNED_ZEROPAD). When they disagree outside the version window where the change
landed, the loader refuses rather than guess. The numberings themselves are
kimage/extable_format.py.

Source: arch/arm64/include/asm/asm-extable.h (EX_TYPE_* values per release).
"""
from __future__ import annotations

from collections import Counter

from kimage.extable_format import NUMBERING_V6_1, NUMBERING_V7, ExtableEntry, TypeNumbering, UnknownExtableType
from kimage.version import KernelVersion, VmlinuxError

# The extable gained type/data fields in v5.16 (arm64: extable: add `type` and `data` fields).
FIRST_TYPED_EXTABLE = (5, 16)
# EX_TYPE_UACCESS_CPY (FEAT_MOPS uaccess) was inserted as 4 around v6.16-v6.18 (unverified
# exactly); inside this window the entries decide, outside it the version must agree with them.
MOPS_UACCESS_WINDOW = ((6, 14), (6, 19))


def _is_mops_cpy(word: int) -> bool:
    """FEAT_MOPS CPY*/CPYF*/SET* (Arm ARM C4.1 'Memory Copy and Memory Set'): size=00 011 x 01 xx 0 ... 01."""
    return word & 0x3B200C00 == 0x19000400


def _is_load(word: int) -> bool:
    """A general-register load of the 'load/store register' classes (op0 x1x0, bit 22 = load)."""
    return word & 0x0A000000 == 0x08000000 and bool(word & (1 << 22))


def choose_numbering(version: KernelVersion, entries: list[ExtableEntry], insn_at) -> tuple[TypeNumbering, str]:
    """The type numbering of this kernel, with the reason; raises VmlinuxError when the evidence conflicts."""
    types = Counter(e.type for e in entries)
    evidence: TypeNumbering | None = None
    why = ""
    if types.get(5):
        evidence, why = NUMBERING_V7, f"{types[5]} entries of type 5"
    elif types.get(4):
        words = [insn_at(e.insn) for e in entries if e.type == 4]
        if all(_is_mops_cpy(w) for w in words):
            evidence, why = NUMBERING_V7, "type-4 entries sit on MOPS CPY instructions"
        elif all(_is_load(w) for w in words):
            evidence, why = NUMBERING_V6_1, "type-4 entries sit on loads"
        else:
            raise VmlinuxError("type-4 extable entries sit on neither loads nor MOPS CPY instructions: unknown numbering")
    low, high = MOPS_UACCESS_WINDOW
    by_version = NUMBERING_V7 if version.tuple >= high else NUMBERING_V6_1 if version.tuple < low else None
    if evidence is None and by_version is None:
        raise VmlinuxError(f"Linux {version}: no entry tells which extable numbering applies and the version is ambiguous")
    if evidence is not None and by_version is not None and evidence is not by_version:
        raise VmlinuxError(f"Linux {version} implies the {by_version.name} extable numbering but {why} ({evidence.name})")
    chosen = evidence or by_version
    reason = f"Linux {version.major}.{version.minor}" + (f"; {why}" if why else "")
    for number in types:
        try:
            chosen.kind(number)
        except UnknownExtableType as exc:
            raise VmlinuxError(f"{exc} ({types[number]} entries): refusing to guess") from None
    return chosen, reason
