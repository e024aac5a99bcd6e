"""The documented mapping from the JSON reports before issue 11 to today's structured fields.

Before, a matrix record carried the oracle's answers as sentences:
    guest_integrity  "intact" | "n/a" | "reclaimed: N page(s) lost" | "changed: N page(s)"
    confidentiality  "ok" | "leak: guest data in xN=0x..." | "leak: guest data written to host frame 0x..."
    architectural    "yes" | "n/a" | "no: FIELD, FIELD"
and the kernel scenarios were one file per kernel, named `linux-6.1-<name>` /
`linux-7.2-<name>`. Today (faultlab/oracle.py `Verdict.as_dict`) they are enums
plus the data that used to be in the sentence:
    guest_integrity (intact|reclaimed|changed|n/a) + guest_pages_lost, guest_pages_changed
    confidentiality (ok|leak) + leak_where
    architectural (yes|no|n/a) + non_architectural (list of field names)
and one scenario file names several kernels: rows `linux-<name>@<suite>`.
Every other field (outcome, detail, x0, fixups, signals' signo/code/addr,
reclaims) has kept its name and meaning. This is the only place old sentences
are read; tests/test_baseline.py uses it to compare today's runs with the
baseline JSON in tests/data/baseline/.
"""
from __future__ import annotations

import re

# The kernel scenarios' old per-version names -> the suite their file named.
OLD_KERNEL_PREFIXES = {"linux-6.1-": "bookworm", "linux-7.2-": "sid"}


def scenario_name(old: str) -> str:
    """`linux-6.1-d-copy-to-user` -> `linux-d-copy-to-user@bookworm`; other names are unchanged."""
    for prefix, suite in OLD_KERNEL_PREFIXES.items():
        if old.startswith(prefix):
            return f"linux-{old.removeprefix(prefix)}@{suite}"
    return old


def guest_fields(old: str) -> dict:
    m = re.fullmatch(r"reclaimed: (\d+) page\(s\) lost", old)
    if m:
        return {"guest_integrity": "reclaimed", "guest_pages_lost": int(m.group(1))}
    m = re.fullmatch(r"changed: (\d+) page\(s\)", old)
    if m:
        return {"guest_integrity": "changed", "guest_pages_changed": int(m.group(1))}
    if old in ("intact", "n/a"):
        return {"guest_integrity": old, "guest_pages_lost": 0, "guest_pages_changed": 0}
    raise ValueError(f"not an old guest_integrity: {old!r}")


def confidentiality_fields(old: str) -> dict:
    if old == "ok":
        return {"confidentiality": "ok", "leak_where": None}
    m = re.fullmatch(r"leak: guest data (?:in|written to) (.+)", old)
    if m:
        return {"confidentiality": "leak", "leak_where": m.group(1)}
    raise ValueError(f"not an old confidentiality: {old!r}")


def architectural_fields(old: str) -> dict:
    if old in ("yes", "n/a"):
        return {"architectural": old, "non_architectural": []}
    if old.startswith("no: "):
        return {"architectural": "no", "non_architectural": old.removeprefix("no: ").split(", ")}
    raise ValueError(f"not an old architectural: {old!r}")


def from_old(old: dict) -> dict:
    """One old matrix record as the fields a record of today carries (only those that existed then)."""
    return {
        "scenario": scenario_name(old["scenario"]),
        "policy": old["policy"],
        "outcome": old["outcome"],
        "detail": old["detail"],
        "x0": old["x0"],
        "fixups": list(old["fixups"]),
        "signals": [{"signo": s["signo"], "code": s["code"], "addr": s["addr"]} for s in old["signals"]],
        "reclaims": old["reclaims"],
        "passed": old["passed"],
        **guest_fields(old["guest_integrity"]),
        **confidentiality_fields(old["confidentiality"]),
        **architectural_fields(old["architectural"]),
    }
