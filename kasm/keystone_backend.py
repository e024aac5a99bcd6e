"""Keystone for the plain instructions, with capstone checking every word it returns.

Keystone 0.9.2 is known to drop or change instructions silently (measured; see
docs/facts.md), so each word must decode with capstone to exactly one 4-byte
instruction of the same kind that still names every register the source wrote.
Keystone only ever sees one resolved instruction at a time.
"""
from __future__ import annotations

import re

import capstone
import keystone

from kasm.source import Line, error

# Mnemonics that capstone may print for what the source wrote (architectural aliases,
# Arm ARM C6.2 "preferred disassembly"); each group is one family.
_ALIAS_GROUPS: list[frozenset[str]] = [frozenset(g.split()) for g in (
    "mov movz movn orr add umov ins dup",
    "add sub adds subs cmp cmn neg negs mov",
    "ubfm lsl lsr ubfx ubfiz uxtb uxth",
    "sbfm asr sbfx sbfiz sxtb sxth sxtw",
    "bfm bfi bfxil bfc",
    "csinc cset cinc", "csinv csetm cinv", "csneg cneg",
    "orn mvn not", "ands tst and", "extr ror", "madd mul", "msub mneg",
    "smaddl smull", "umaddl umull", "smsubl smnegl", "umsubl umnegl",
    "sys dc ic at tlbi", "hint nop yield wfe wfi sev sevl",
    "dsb ssbb pssbb", "lslv lsl", "lsrv lsr", "asrv asr", "rorv ror",
    "sbc ngc", "sbcs ngcs", "sshll sxtl", "ushll uxtl",
    "cmhs cmls", "cmge cmle", "cmgt cmlt", "cmhi cmlo", "fcmge fcmle", "fcmgt fcmlt",
)]
_REG_TOKEN = re.compile(r"\b(?:[xwbhsdqv]\d{1,2}|[xw]zr|w?sp)\b")


def _same_mnemonic(source: str, decoded: str) -> bool:
    source, decoded = source.lower(), decoded.lower()
    if source == decoded:
        return True
    # unscaled-offset forms: `ldr x0, [x1, #-8]` is LDUR (Arm ARM C6.2 LDR (immediate) note)
    if source[:2] in ("ld", "st") and decoded == source[:2] + "u" + source[2:]:
        return True
    return any(source in g and decoded in g for g in _ALIAS_GROUPS)


def _registers(text: str) -> set[str]:
    return set(_REG_TOKEN.findall(text.lower()))


class KeystoneBackend:
    """One keystone and one capstone handle per assemble() call, and a cache of checked words."""

    def __init__(self) -> None:
        self.ks = keystone.Ks(keystone.KS_ARCH_ARM64, keystone.KS_MODE_LITTLE_ENDIAN)
        self.cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
        self.cache: dict[str, int] = {}

    def assemble(self, text: str, mnemonic: str, shown: str, line: Line) -> int:
        """Encode the resolved instruction `text`; `shown` is how the source wrote it, for errors."""
        if text in self.cache:
            return self.cache[text]
        try:
            encoding, _ = self.ks.asm(text, 0)
        except keystone.KsError as exc:
            if exc.errno == keystone.KS_ERR_ASM_MNEMONICFAIL:
                raise error(line, f"unknown mnemonic '{mnemonic}' in '{shown}'") from None
            raise error(line, f"keystone could not assemble '{shown}' (as '{text}'): {exc}") from None
        blob = bytes(encoding or [])
        if len(blob) != 4:
            raise error(line, f"keystone did not assemble '{shown}' (it emitted {len(blob)} bytes, not 4)")
        decoded = list(self.cs.disasm(blob, 0))
        if len(decoded) != 1:
            raise error(line, f"keystone did not assemble '{shown}': capstone cannot decode {blob.hex()}")
        insn = decoded[0]
        if not _same_mnemonic(mnemonic, insn.mnemonic):
            raise error(line, f"keystone did not assemble '{shown}': it produced '{insn.mnemonic} {insn.op_str}'")
        missing = _registers(text.partition(" ")[2]) - _registers(insn.op_str)
        if missing:
            raise error(line, f"keystone did not assemble '{shown}': it produced '{insn.mnemonic} {insn.op_str}' "
                              f"(lost {', '.join(sorted(missing))})")
        word = int.from_bytes(blob, "little")
        self.cache[text] = word
        return word
