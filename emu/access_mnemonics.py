"""The load/store vocabulary the access decoder matches capstone's output against (data tables).

Register names as capstone prints them, and the mnemonic families of the A64 load/store
instructions with the facts each implies (load or store, unprivileged, acquire/release,
exclusive). Kept apart from emu/access_decoder.py so that module is only the decoding logic.

Source: Arm ARM (DDI 0487) C3.3 load/store instruction classes.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from types import MappingProxyType

# --------------------------------------------------------------------------------------------
# Register names as capstone prints them
# --------------------------------------------------------------------------------------------


class RegKind(enum.Enum):
    """Which register file a capstone register name belongs to."""

    GPR = "gpr"
    SP = "sp"
    FP = "fp"  # b/h/s/d/q views of a SIMD&FP register
    VEC = "vec"


@dataclass(frozen=True)
class Reg:
    """One register name: its number, width in bits and register file."""

    number: int
    bits: int
    kind: RegKind


def _register_table() -> MappingProxyType:
    table: dict[str, Reg] = {}
    for n in range(31):
        table[f"x{n}"] = Reg(n, 64, RegKind.GPR)
        table[f"w{n}"] = Reg(n, 32, RegKind.GPR)
    table["fp"] = table["x29"]
    table["lr"] = table["x30"]
    table["xzr"] = Reg(31, 64, RegKind.GPR)
    table["wzr"] = Reg(31, 32, RegKind.GPR)
    table["sp"] = Reg(31, 64, RegKind.SP)
    table["wsp"] = Reg(31, 32, RegKind.SP)
    for n in range(32):
        for prefix, bits in (("b", 8), ("h", 16), ("s", 32), ("d", 64), ("q", 128)):
            table[f"{prefix}{n}"] = Reg(n, bits, RegKind.FP)
        table[f"v{n}"] = Reg(n, 128, RegKind.VEC)
    return MappingProxyType(table)


REGISTERS = _register_table()

# --------------------------------------------------------------------------------------------
# Mnemonic families
# --------------------------------------------------------------------------------------------

# Single-register loads/stores: root, optional "s" (sign-extending), optional size suffix.
SINGLE = re.compile(
    r"^(ldapur|ldaxr|ldapr|ldlar|ldxr|ldar|ldtr|ldur|ldr|stlxr|stllr|stlur|stxr|stlr|sttr|stur|str)"
    r"(s?)([bhw]?)$"
)
SINGLE_ROOTS = {
    # root: (is_load, unprivileged, acquire_release, exclusive)
    "ldr": (True, False, False, False),
    "ldur": (True, False, False, False),
    "ldtr": (True, True, False, False),
    "ldar": (True, False, True, False),
    "ldapr": (True, False, True, False),
    "ldapur": (True, False, True, False),
    "ldlar": (True, False, True, False),
    "ldxr": (True, False, False, True),
    "ldaxr": (True, False, True, True),
    "str": (False, False, False, False),
    "stur": (False, False, False, False),
    "sttr": (False, True, False, False),
    "stlr": (False, False, True, False),
    "stlur": (False, False, True, False),
    "stllr": (False, False, True, False),
    "stxr": (False, False, False, True),
    "stlxr": (False, False, True, True),
}
# Roots that have sign-extending forms (ldrsw, ldursh, ldtrsb, ldapursw).
SIGNED_ROOTS = frozenset({"ldr", "ldur", "ldtr", "ldapur"})

PAIRS = {
    # mnemonic: (is_load, exclusive, acquire_release, sign_extend_words)
    "ldp": (True, False, False, False),
    "ldnp": (True, False, False, False),
    "ldpsw": (True, False, False, True),
    "stp": (False, False, False, False),
    "stnp": (False, False, False, False),
    "ldxp": (True, True, False, False),
    "ldaxp": (True, True, True, False),
    "stxp": (False, True, False, False),
    "stlxp": (False, True, True, False),
}

ATOMIC = re.compile(
    r"^(ldadd|ldclr|ldeor|ldset|ldsmax|ldsmin|ldumax|ldumin|"
    r"stadd|stclr|steor|stset|stsmax|stsmin|stumax|stumin|swp|casp|cas)(al|a|l)?([bh]?)$"
)

STRUCTURE = re.compile(r"^(ld|st)([1-4])(r?)$")
VECTOR_LIST = re.compile(r"\{([^}]*)\}(\[(?:0x)?[0-9a-f]+\])?")  # capstone prints [0xf]

PREFETCH = frozenset({"prfm", "prfum"})
CACHE_MAINT_BY_VA = frozenset(
    [("dc", op) for op in ("civac", "cvac", "cvau", "cvap", "cvadp", "ivac")] + [("ic", "ivau")]
)
DC_SET_WAY = frozenset({"isw", "csw", "cisw", "igsw", "igdsw", "cgsw", "cgdsw", "cigsw", "cigdsw"})

SUFFIX_BYTES = {"b": 1, "h": 2, "w": 4}
ELEMENT_BYTES = {"b": 1, "h": 2, "s": 4, "d": 8, "q": 16}
