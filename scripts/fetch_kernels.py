#!/usr/bin/env python3
"""Fetch the Debian arm64 debug kernels the kernel tests use (bookworm: Linux 6.1, sid: Linux 7.x).

Usage: scripts/fetch_kernels.py [SUITE...] [--optional]
Prints one line per suite: the vmlinux path, or why it could not be fetched.
Exit code 1 if any fetch failed, unless --optional (CI: the tests then skip,
saying why). The cache is $FAULTLAB_KCACHE or ~/.cache/faultlab-kernels; the
tests find kernels there (or through FAULTLAB_VMLINUX_61 / FAULTLAB_VMLINUX_72).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faultlab.kernel.fetch import SUITES, KernelFetchError, fetch  # noqa: E402

DEFAULT_SUITES = ("bookworm", "sid")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"{', '.join(SUITES)} (default: {' '.join(DEFAULT_SUITES)})")
    parser.add_argument("--optional", action="store_true", help="exit 0 even when a fetch is impossible")
    args = parser.parse_args(argv)
    failed = 0
    for suite in args.suites or DEFAULT_SUITES:
        start = time.monotonic()
        try:
            path = fetch(suite, progress=lambda msg, s=suite: print(f"{s}: {msg}", file=sys.stderr, flush=True))
        except KernelFetchError as exc:
            print(f"{suite}: not fetched: {exc}", flush=True)
            failed += 1
            continue
        print(f"{suite}: {path} ({time.monotonic() - start:.1f} s)", flush=True)
    return 1 if failed and not args.optional else 0


if __name__ == "__main__":
    sys.exit(main())
