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

On disk (`disk=`, a directory; faultlab uses the user cache dir): a miss in
memory looks for a pickled (Image, Inputs) named by the SHA-256 of the key and
of kasm's own code and the keystone/capstone versions (so a changed assembler
never reads an old image); the include checks apply as in memory. An entry
that cannot be read back as exactly that - truncated, corrupt, another
version's - is ignored and rewritten, never trusted. Writes go through a
temporary file and a rename, so a reader never sees half an entry. The
directory is the user's own: entries are only ever read from it.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
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
    disk_hits: int = 0
    disk_bad: int = 0  # unreadable or foreign entries on disk, ignored (and rewritten)


class AsmCache:
    """A least-recently-used memo of assembled Images, at most `max_entries` of them."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, *, disk: str | Path | None = None) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, not {max_entries}")
        self.max_entries = max_entries
        self.disk = None if disk is None else Path(disk)
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
        found = self._from_disk(key)
        if found is not None:
            self.stats.disk_hits += 1
            image, inputs = found
        else:
            self.stats.misses += 1
            image, inputs = assemble_with_inputs(source, base, filename=filename, numbering=numbering, include_dirs=dirs)
            self._to_disk(key, image, inputs)
        self._entries[key] = (image.copy(), inputs)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return image

    # ---------------------------------------------------------------- disk
    def _path(self, key: Key) -> Path:
        digest = hashlib.sha256(repr((key, _code_version())).encode()).hexdigest()
        return self.disk / digest[:2] / f"{digest}.pickle"

    def _from_disk(self, key: Key) -> tuple[Image, Inputs] | None:
        if self.disk is None:
            return None
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            stored_key, image, inputs = pickle.loads(data)
            ok = stored_key == key and isinstance(image, Image) and isinstance(inputs, Inputs)
        except Exception:  # truncated, corrupt or from another version: a miss, whatever the reason
            ok = False
        if not ok or not _still_valid(inputs):
            self.stats.disk_bad += ok is False
            return None
        return image, inputs

    def _to_disk(self, key: Key, image: Image, inputs: Inputs) -> None:
        if self.disk is None:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                pickle.dump((key, image, inputs), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full cache dir only costs the next process an assembly

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


@functools.cache
def _code_version() -> str:
    """kasm's own sources and the engines' versions: an entry made by other code never matches."""
    import capstone
    import keystone

    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    h.update(f"{capstone.__version__} {getattr(keystone, '__version__', '?')}".encode())
    return h.hexdigest()


def user_cache_dir() -> Path | None:
    """Where faultlab keeps assembled images: $FAULTLAB_ASM_CACHE, else $XDG_CACHE_HOME or ~/.cache, /faultlab-asm.

    FAULTLAB_ASM_CACHE=off (or an empty value) keeps assembly in memory only.
    """
    env = os.environ.get("FAULTLAB_ASM_CACHE")
    if env is not None:
        return None if env in ("", "off", "0") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "faultlab-asm"
