"""Capstone disassembly for traces and abort records."""
from __future__ import annotations

from capstone import CS_ARCH_ARM64, CS_MODE_ARM, Cs


class Disassembler:
    """One capstone handle with a cache: traces repeat the same instructions many times."""

    def __init__(self) -> None:
        self._cs = Cs(CS_ARCH_ARM64, CS_MODE_ARM)
        self._cache: dict[tuple[int, int], str] = {}

    def text(self, word: int, pc: int) -> str:
        key = (word, pc)
        text = self._cache.get(key)
        if text is None:
            insns = list(self._cs.disasm(word.to_bytes(4, "little"), pc, 1))
            text = f"{insns[0].mnemonic} {insns[0].op_str}".strip() if insns else f".word {word:#010x}"
            self._cache[key] = text
        return text
