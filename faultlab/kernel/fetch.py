"""Finding and fetching real arm64 kernels: Debian's cloud-arm64 debug vmlinux, per suite.

`fetch(suite)` downloads Debian's arm64 debug kernel package without root:
apt-get with its state, cache and source list redirected into a user cache
folder downloads `linux-image-<abi>-cloud-arm64-dbg` for arm64, and only the
vmlinux is extracted from the .deb. The cache folder is $FAULTLAB_KCACHE or
~/.cache/faultlab-kernels, one subfolder per suite; a second fetch finds the
extracted file and does nothing. `resolve()` turns what a user typed (a path,
a suite name, or nothing with $FAULTLAB_VMLINUX set) into a vmlinux path.
Every failure is a `KernelFetchError` whose message is one line.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, Callable

from kimage.cache import SUFFIX as CACHE_SUFFIX
from kimage.profiles import PROFILES

# Debian suite -> the Linux it ships, one per kernel profile (the vmlinux's own banner is the authority).
SUITES = {p.suite: f"{p.version[0]}.{p.version[1]}" for p in PROFILES}
META_PACKAGE = "linux-image-cloud-arm64-dbg"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEBUG_PREFIX = PurePosixPath("usr/lib/debug")
_NOT_VMLINUX = (CACHE_SUFFIX, ".partial")  # our parse cache and interrupted extractions
APT_TIMEOUT = 1800  # seconds for one apt-get step (the sid debug package is ~150 MB)


class KernelFetchError(RuntimeError):
    """Fetching or finding a kernel is impossible here; str() is one line saying why."""


def cache_root() -> Path:
    base = os.environ.get("FAULTLAB_KCACHE")
    return Path(base) if base else Path.home() / ".cache" / "faultlab-kernels"


def _check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise KernelFetchError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")


def find_cached(suite: str) -> Path | None:
    """The vmlinux already extracted for `suite`, if any (no network)."""
    _check_suite(suite)
    debug = cache_root() / suite / DEBUG_PREFIX
    if not debug.is_dir():
        return None
    # Debian ships symlinks to the one file (boot/vmlinux-<abi> -> lib/modules/<abi>/vmlinux).
    candidates = {p.resolve() for p in debug.rglob("vmlinux*") if p.is_file() and not p.name.endswith(_NOT_VMLINUX)}
    found = sorted(p for p in candidates if p.stat().st_size)
    return found[0] if found else None


def resolve(spec: str | None) -> Path:
    """A vmlinux path from: nothing ($FAULTLAB_VMLINUX), a suite name (cached, else fetched), or a path."""
    if spec is None:
        env = os.environ.get("FAULTLAB_VMLINUX")
        if not env:
            raise KernelFetchError("no vmlinux given: pass a path or a suite name, or set FAULTLAB_VMLINUX")
        spec = env
    if spec in SUITES and not Path(spec).exists():
        return find_cached(spec) or fetch(spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise KernelFetchError(f"no such vmlinux: {path}")
    return path


def fetch(suite: str = "bookworm", *, progress: Callable[[str], None] | None = None) -> Path:
    """The path of `suite`'s debug vmlinux, downloading and extracting it on first use."""
    _check_suite(suite)
    cached = find_cached(suite)
    if cached is not None:
        return cached
    say = progress or (lambda _msg: None)
    for tool in ("apt-get", "apt-cache"):
        if shutil.which(tool) is None:
            raise KernelFetchError(f"{tool} not found: fetching needs Debian's apt (or point FAULTLAB_VMLINUX at a vmlinux)")
    if not KEYRING.is_file():
        raise KernelFetchError(f"{KEYRING} is missing (install debian-archive-keyring) or point FAULTLAB_VMLINUX at a vmlinux")
    root = cache_root() / suite
    try:
        (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        mirror = os.environ.get("FAULTLAB_DEBIAN_MIRROR", DEFAULT_MIRROR)
        (root / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror} {suite} main\n")
    except OSError as exc:
        raise KernelFetchError(f"cannot write the kernel cache {root}: {exc.strerror}") from None
    opts = _apt_options(root)
    say(f"apt-get update ({suite}, arm64)")
    _run(["apt-get", *opts, "update"], root, f"apt-get update failed for {suite}")
    depends = _run(["apt-cache", *opts, "depends", f"{META_PACKAGE}:arm64"], root, f"apt-cache depends failed for {suite}")
    m = re.search(r"^\s*Depends:\s*(linux-image-[^\s:]*-dbg)", depends, re.M)
    if not m:
        raise KernelFetchError(f"could not resolve the debug kernel package behind {META_PACKAGE} in {suite}")
    package = m.group(1)
    say(f"apt-get download {package}:arm64")
    _run(["apt-get", *opts, "download", f"{package}:arm64"], root, f"download of {package} failed")
    debs = sorted(root.glob(f"{package}_*.deb"))
    if not debs:
        raise KernelFetchError(f"apt-get download of {package} left no .deb in {root}")
    try:
        say(f"extracting the vmlinux from {debs[-1].name}")
        extracted = _extract_vmlinux(debs[-1], root)
    finally:
        for deb in debs:
            deb.unlink(missing_ok=True)
    if not extracted:
        raise KernelFetchError(f"{package} holds no vmlinux under /{DEBUG_PREFIX}")
    found = find_cached(suite)
    if found is None:
        raise KernelFetchError(f"no vmlinux extracted into {root}")
    return found


def _apt_options(root: Path) -> list[str]:
    opts = [
        "-oAPT::Architecture=arm64",
        "-oAPT::Architectures=arm64",
        f"-oDir::State::Lists={root / 'lists'}",
        f"-oDir::Cache={root / 'apt'}",
        f"-oDir::Etc::SourceList={root / 'sources.list'}",
        "-oDir::Etc::SourceParts=/nonexistent",
        "-oDebug::NoLocking=1",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # apt drops to the _apt user for downloads, which cannot write into root's home.
        opts.append("-oAPT::Sandbox::User=root")
    return opts


def _run(cmd: list[str], cwd: Path, failure: str) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelFetchError(f"{failure}: {exc}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        detail = next((ln for ln in reversed(lines) if ln.startswith(("E:", "Err:"))), lines[-1] if lines else "")
        raise KernelFetchError(f"{failure}: {detail}" if detail else failure)
    return proc.stdout


# ----------------------------------------------------------------- .deb extraction
def _extract_vmlinux(deb: Path, root: Path) -> list[Path]:
    """Extract ./usr/lib/debug/**/vmlinux* from a .deb: dpkg-deb if present, else our own ar reader."""
    if shutil.which("dpkg-deb"):
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            written = _extract_from_tar(proc.stdout, root, "r|")
        finally:
            proc.stdout.close()
            _, err = proc.communicate(timeout=APT_TIMEOUT)
        if proc.returncode != 0:
            raise KernelFetchError(f"dpkg-deb failed on {deb.name}: {err.decode(errors='replace').strip()}")
        return written
    with open(deb, "rb") as f:
        member = _ar_data_member(f, deb.name)
        return _extract_from_tar(member, root, "r|*")


def _ar_data_member(f: IO[bytes], name: str) -> IO[bytes]:
    """Position `f` at the data.tar.* member of a Debian ar archive (deb(5): '!<arch>' + 60-byte headers)."""
    if f.read(8) != b"!<arch>\n":
        raise KernelFetchError(f"{name} is not a Debian package (no ar header)")
    while True:
        header = f.read(60)
        if len(header) < 60:
            raise KernelFetchError(f"{name} has no data.tar member")
        member = header[:16].decode(errors="replace").strip().rstrip("/")
        size = int(header[48:58].decode().strip() or 0)
        if member.startswith("data.tar"):
            if member.endswith(".zst"):
                raise KernelFetchError(f"{name} uses zstd compression: install dpkg-deb to extract it")
            return f
        f.seek(size + (size & 1), os.SEEK_CUR)


def _extract_from_tar(stream: IO[bytes], root: Path, mode: str) -> list[Path]:
    written = []
    with tarfile.open(fileobj=stream, mode=mode) as tar:
        for info in tar:
            name = info.name[2:] if info.name.startswith("./") else info.name
            path = PurePosixPath(name)
            if not info.isfile() or not path.name.startswith("vmlinux") or ".." in path.parts or path.is_absolute():
                continue
            if path.parts[: len(DEBUG_PREFIX.parts)] != DEBUG_PREFIX.parts:
                continue
            target = root.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(info)
            if source is None:
                continue
            tmp = target.with_name(target.name + ".partial")
            with open(tmp, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            os.replace(tmp, target)
            written.append(target)
    return written
