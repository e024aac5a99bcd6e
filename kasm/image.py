"""The assembler's product: a loadable blob plus what the emulator and host model need."""
from __future__ import annotations

from dataclasses import dataclass, field

from kasm.source import SourceLoc
from kimage.extable_format import ExtableEntry, TypeNumbering


class UnknownSymbolError(LookupError):
    """Image.symbol() of a name the image does not define."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Image:
    """An assembled, loadable blob with the metadata the emulator and the host model need."""

    base: int
    data: bytes
    symbols: dict[str, int]
    sizes: dict[str, int]
    extable: list[ExtableEntry]
    extable_addr: int
    extable_size: int
    numbering: TypeNumbering
    lines: dict[int, SourceLoc]
    sections: dict[str, tuple[int, int]]
    local_symbols: dict[str, int] = field(default_factory=dict)  # `.L` labels, for tests and traces

    def copy(self) -> Image:
        """An Image that shares nothing mutable with this one (data, entries and locations are immutable).

        kasm.cache hands out copies so a caller that edits its symbols or
        extable cannot change what the next run of the same source gets.
        """
        return Image(
            base=self.base, data=self.data, symbols=dict(self.symbols), sizes=dict(self.sizes),
            extable=list(self.extable), extable_addr=self.extable_addr, extable_size=self.extable_size,
            numbering=self.numbering, lines=dict(self.lines), sections=dict(self.sections),
            local_symbols=dict(self.local_symbols),
        )

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def symbol(self, name: str) -> int:
        if name in self.symbols:
            return self.symbols[name]
        if name in self.local_symbols:
            return self.local_symbols[name]
        known = sorted(self.symbols)
        listed = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
        raise UnknownSymbolError(f"unknown symbol '{name}' (known: {listed or 'none'})")
