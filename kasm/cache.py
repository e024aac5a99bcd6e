"""AsmCache: assemble once per content, so a scenario run does not pay for the assembler again.

A profile of one built-in scenario run spent about half its time assembling the
same routine again (issue 12). An Image depends only on the source text, its
file name (error locations, the directory `#include "x"` searches first), the
base address, the extable type numbering, the include path, and every file the
preprocessor or `.include` found and read. The key holds the first five; each
entry keeps the include lookups and the (path, digest) of each file read, and
a lookup re-checks them, so editing or adding a header invalidates the entry.

Errors are never memoised: bad input is assembled again and raises the same
AsmError (file:line). Entries are stored and handed out as Image.copy(), so one
run cannot change another's symbols or extable.

The cache is an explicit object (nothing global in kasm). faultlab.lab keeps one
bounded instance for the process, because its runner builds a fresh Lab per
scenario run; tests and bench pass their own or none.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from kasm.assembler import Inputs, assemble_with_inputs, read_source
from kasm.image import Image
from kasm.preprocess import content_digest, find_file
from kimage.extable_format import NUMBERING_V7, TypeNumbering

DEFAULT_MAX_ENTRIES = 256

Key = tuple[str, str, int, str, tuple[str, ...]]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    # Entries dropped because an included file changed (or a lookup now finds another file).
    stale: int = 0


class AsmCache:
    """A least-recently-used memo of assembled Images, at most `max_entries` of them."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, not {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, tuple[Image, Inputs]] = OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def assemble(
        self,
        source: str,
        base: int,
        *,
        filename: str = "<string>",
        numbering: TypeNumbering = NUMBERING_V7,
        include_dirs: Iterable[str | Path] = (),
    ) -> Image:
        """kasm.assemble(), memoised: the same arguments and unchanged includes give a copy of the same Image."""
        dirs = tuple(str(d) for d in include_dirs)
        key = (content_digest(source), filename, base, _numbering_key(numbering), dirs)
        hit = self._entries.get(key)
        if hit is not None:
            if _still_valid(hit[1]):
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return hit[0].copy()
            del self._entries[key]
            self.stats.stale += 1
        self.stats.misses += 1
        image, inputs = assemble_with_inputs(source, base, filename=filename, numbering=numbering, include_dirs=dirs)
        self._entries[key] = (image.copy(), inputs)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return image

    def assemble_file(self, path: str | Path, base: int, **kw) -> Image:
        """kasm.assemble_file(), memoised on the file's contents (read every time, so edits are seen)."""
        source = read_source(path)
        kw.setdefault("filename", str(path))
        return self.assemble(source, base, **kw)


def _numbering_key(numbering: TypeNumbering) -> str:
    return f"{numbering.name}:{sorted((k.name, v) for k, v in numbering.numbers.items())}"


def _still_valid(inputs: Inputs) -> bool:
    """Whether every include lookup finds the same file and every file read still has the same contents."""
    for name, search, found in inputs.lookups:
        now = find_file(name, [Path(d) for d in search])
        if now is None or str(now) != found:
            return False
    for path, digest in inputs.reads:
        try:
            text = Path(path).read_text()
        except OSError:
            return False
        if content_digest(text) != digest:
            return False
    return True
