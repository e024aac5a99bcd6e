"""The parsed-vmlinux cache: plain builtins in a pickle, next to the vmlinux or in a cache folder.

Why: reading 260k symbols, the extable and BTF out of a 400 MB debug vmlinux
costs a few seconds; the parsed record loads in a fraction of one. The record
is keyed by (format, file size, mtime), so a rebuilt or replaced vmlinux is
parsed again. Only builtin types are stored and the unpickler refuses any
class lookup, so a tampered cache file cannot run code - at worst it fails to
load and the vmlinux is parsed again.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
from pathlib import Path

SUFFIX = ".faultlab-cache"


class _BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"cache may hold only builtin values, not {module}.{name}")


def default_cache_dir() -> Path:
    """$FAULTLAB_KCACHE/parsed, or ~/.cache/faultlab-kernels/parsed."""
    base = os.environ.get("FAULTLAB_KCACHE")
    return (Path(base) if base else Path.home() / ".cache" / "faultlab-kernels") / "parsed"


def _candidates(vmlinux: Path, cache_dir: Path | None) -> list[Path]:
    vmlinux = vmlinux.resolve()  # symlinked names of one file share one cache
    digest = hashlib.sha1(str(vmlinux).encode()).hexdigest()[:16]
    fallback = (cache_dir or default_cache_dir()) / f"{vmlinux.name}-{digest}{SUFFIX}"
    return [vmlinux.with_name(vmlinux.name + SUFFIX), fallback]


def load_cached(vmlinux: Path, key: tuple, cache_dir: Path | None = None) -> dict | None:
    for candidate in _candidates(vmlinux, cache_dir):
        try:
            with open(candidate, "rb") as f:
                stored = _BuiltinsOnly(io.BufferedReader(f)).load()
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError):
            continue
        if isinstance(stored, dict) and stored.get("key") == list(key) and isinstance(stored.get("record"), dict):
            return stored["record"]
    return None


def store_cached(vmlinux: Path, key: tuple, record: dict, cache_dir: Path | None = None) -> Path | None:
    """Write atomically to the first writable location; returns where, or None if nowhere was writable."""
    blob = pickle.dumps({"key": list(key), "record": record}, protocol=pickle.HIGHEST_PROTOCOL)
    for candidate in _candidates(vmlinux, cache_dir):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=candidate.parent, prefix=".tmp-", suffix=SUFFIX)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                os.replace(tmp, candidate)
            except BaseException:
                os.unlink(tmp)
                raise
            return candidate
        except OSError:
            continue
    return None
