"""The load/store forms the differential executes: every class emu/access_decoder.py knows.

Each form is one instruction with base register x0 (and x5/x6 as index registers); the
address it accesses is x0 + `disp`, so a case picks x0 to put the access where it wants
relative to the page boundary. Data registers are x1-x4 and v1-v4 (layout.X_REGS/V_REGS).

Not here, and why: literal loads (PC-relative, cannot straddle the data pages), PAC loads
(LDRAA, not modelled by the decoder), SVE/MOPS/LS64 (not in the CPU feature set),
DC set/way (not by VA). Exclusive/atomic/acquire-release forms fault for alignment when they
straddle (Arm ARM AArch64.UnalignedAccessFaults), so their straddling offsets are the
`alignment` family (cases.py), not the straddle family.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class FormClass(enum.Enum):
    """The access classes of emu.access (what the syndrome rules distinguish)."""

    SINGLE = "single"  # one general register, no writeback: ISV-eligible
    WRITEBACK = "writeback"  # pre/post-index
    UNPRIV = "unpriv"  # LDTR/STTR
    PAIR = "pair"
    SIMD = "simd"
    EXCLUSIVE = "exclusive"
    ACQREL = "acqrel"  # LDAR/STLR/LDAPR/LDAPUR/STLUR/LDLAR/STLLR
    ATOMIC = "atomic"  # LSE atomics, SWP, CAS, CASP
    DC_ZVA = "dc-zva"
    CACHE_MAINT = "cache-maint"
    PREFETCH = "prefetch"


# Classes whose accesses must be aligned (to the access size; LDAR & co: not crossing 16 bytes
# under FEAT_LSE2, which never holds for a page-straddling access).
ALIGNED_CLASSES = frozenset({FormClass.EXCLUSIVE, FormClass.ACQREL, FormClass.ATOMIC})
# Forms whose x0 is an operand, not the start of a sized access: offsets within the page instead.
OPERAND_CLASSES = frozenset({FormClass.DC_ZVA, FormClass.CACHE_MAINT, FormClass.PREFETCH})
OPERAND_OFFSETS = (0, 1, 8, 63, 0xFF8)


@dataclass(frozen=True)
class Form:
    name: str
    text: str
    cls: FormClass
    size: int  # bytes accessed (0 for prefetch; the DC ZVA block / cache line for DC)
    writes: bool  # the access writes (store, RMW, DC ZVA): a read-only page gives a permission fault
    disp: int = 0  # accessed address = x0 + disp
    el0: bool = True  # allowed at EL0 (with SCTLR_EL1.DZE/UCI = 1)

    @property
    def aligned(self) -> bool:
        return self.cls in ALIGNED_CLASSES

    @property
    def operand(self) -> bool:
        return self.cls in OPERAND_CLASSES

    @property
    def store_exclusive(self) -> bool:
        """Without the exclusive monitor held it need not access memory at all (Arm ARM B2.9.5:
        whether memory aborts are detected before the monitor check is IMPLEMENTATION DEFINED), and
        neither QEMU nor our machine does: it cannot be made to take a memory abort."""
        return self.cls is FormClass.EXCLUSIVE and self.writes


S, WB, U, P, V = FormClass.SINGLE, FormClass.WRITEBACK, FormClass.UNPRIV, FormClass.PAIR, FormClass.SIMD
EX, AR, AT = FormClass.EXCLUSIVE, FormClass.ACQREL, FormClass.ATOMIC

FORMS: tuple[Form, ...] = (
    # single general register, immediate / unscaled / register offset
    Form("ldrb", "ldrb w1, [x0]", S, 1, False),
    Form("ldrh", "ldrh w1, [x0]", S, 2, False),
    Form("ldr-w", "ldr w1, [x0]", S, 4, False),
    Form("ldr-x", "ldr x1, [x0]", S, 8, False),
    Form("ldrsb-w", "ldrsb w1, [x0]", S, 1, False),
    Form("ldrsh-w", "ldrsh w1, [x0]", S, 2, False),
    Form("ldrsh-x", "ldrsh x1, [x0]", S, 2, False),
    Form("ldrsw", "ldrsw x1, [x0]", S, 4, False),
    Form("ldr-x-imm", "ldr x3, [x0, #8]", S, 8, False, disp=8),
    Form("ldur-x", "ldur x1, [x0, #-3]", S, 8, False, disp=-3),
    Form("ldursh-w", "ldursh w2, [x0, #5]", S, 2, False, disp=5),
    Form("ldr-x-reg", "ldr x1, [x0, x5]", S, 8, False, disp=0x10),
    Form("ldr-w-sxtw", "ldr w1, [x0, w6, sxtw]", S, 4, False, disp=-8),
    Form("strb", "strb w1, [x0]", S, 1, True),
    Form("strh", "strh w1, [x0]", S, 2, True),
    Form("str-w", "str w1, [x0]", S, 4, True),
    Form("str-x", "str x1, [x0]", S, 8, True),
    Form("str-xzr", "str xzr, [x0]", S, 8, True),
    Form("stur-w", "stur w2, [x0, #-1]", S, 4, True, disp=-1),
    Form("strh-reg", "strh w1, [x0, x5]", S, 2, True, disp=0x10),
    # writeback
    Form("ldr-x-pre", "ldr x1, [x0, #8]!", WB, 8, False, disp=8),
    Form("ldr-x-post", "ldr x1, [x0], #8", WB, 8, False),
    Form("str-w-pre", "str w1, [x0, #-4]!", WB, 4, True, disp=-4),
    Form("strh-post", "strh w1, [x0], #2", WB, 2, True),
    # unprivileged
    Form("ldtr-x", "ldtr x1, [x0]", U, 8, False),
    Form("ldtrh", "ldtrh w1, [x0]", U, 2, False),
    Form("ldtrsw", "ldtrsw x1, [x0]", U, 4, False),
    Form("sttr-x", "sttr x1, [x0]", U, 8, True),
    Form("sttrh", "sttrh w1, [x0]", U, 2, True),
    # pairs
    Form("ldp-x", "ldp x1, x2, [x0]", P, 16, False),
    Form("ldp-w", "ldp w1, w2, [x0]", P, 8, False),
    Form("ldpsw", "ldpsw x1, x2, [x0]", P, 8, False),
    Form("ldnp-x", "ldnp x1, x2, [x0]", P, 16, False),
    Form("ldp-x-pre", "ldp x1, x2, [x0, #16]!", P, 16, False, disp=16),
    Form("stp-x", "stp x1, x2, [x0]", P, 16, True),
    Form("stp-w", "stp w1, w2, [x0]", P, 8, True),
    Form("stnp-x", "stnp x1, x2, [x0]", P, 16, True),
    Form("stp-x-post", "stp x1, x2, [x0], #16", P, 16, True),
    # SIMD&FP
    Form("ldr-b", "ldr b1, [x0]", V, 1, False),
    Form("ldr-h", "ldr h1, [x0]", V, 2, False),
    Form("ldr-s", "ldr s1, [x0]", V, 4, False),
    Form("ldr-d", "ldr d1, [x0]", V, 8, False),
    Form("ldr-q", "ldr q1, [x0]", V, 16, False),
    Form("ldur-q", "ldur q1, [x0, #-1]", V, 16, False, disp=-1),
    Form("str-d", "str d1, [x0]", V, 8, True),
    Form("str-q", "str q1, [x0]", V, 16, True),
    Form("str-q-pre", "str q1, [x0, #16]!", V, 16, True, disp=16),
    Form("ldp-d", "ldp d1, d2, [x0]", V, 16, False),
    Form("ldp-q", "ldp q1, q2, [x0]", V, 32, False),
    Form("stp-s", "stp s1, s2, [x0]", V, 8, True),
    Form("stp-q", "stp q1, q2, [x0]", V, 32, True),
    Form("ld1-8b", "ld1 {v1.8b}, [x0]", V, 8, False),
    Form("ld1-16b", "ld1 {v1.16b}, [x0]", V, 16, False),
    Form("ld1-2x4s", "ld1 {v1.4s, v2.4s}, [x0]", V, 32, False),
    Form("ld1-4x16b", "ld1 {v1.16b, v2.16b, v3.16b, v4.16b}, [x0]", V, 64, False),
    Form("ld1-16b-post", "ld1 {v1.16b}, [x0], #16", V, 16, False),
    Form("ld2-8h", "ld2 {v1.8h, v2.8h}, [x0]", V, 32, False),
    Form("ld3-4s", "ld3 {v1.4s, v2.4s, v3.4s}, [x0]", V, 48, False),
    Form("ld4-16b", "ld4 {v1.16b, v2.16b, v3.16b, v4.16b}, [x0]", V, 64, False),
    Form("ld1-lane-s", "ld1 {v1.s}[1], [x0]", V, 4, False),
    Form("ld1r-2d", "ld1r {v1.2d}, [x0]", V, 8, False),
    Form("ld2r-4s", "ld2r {v1.4s, v2.4s}, [x0]", V, 8, False),
    Form("st1-16b", "st1 {v1.16b}, [x0]", V, 16, True),
    Form("st1-2x2d", "st1 {v1.2d, v2.2d}, [x0]", V, 32, True),
    Form("st1-4x16b", "st1 {v1.16b, v2.16b, v3.16b, v4.16b}, [x0]", V, 64, True),
    Form("st2-4s", "st2 {v1.4s, v2.4s}, [x0]", V, 32, True),
    Form("st4-8h", "st4 {v1.8h, v2.8h, v3.8h, v4.8h}, [x0]", V, 64, True),
    Form("st1-lane-d", "st1 {v1.d}[1], [x0]", V, 8, True),
    # exclusives (STXR without the monitor held need not access memory: Arm ARM B2.9.5)
    Form("ldxrb", "ldxrb w1, [x0]", EX, 1, False),
    Form("ldxrh", "ldxrh w1, [x0]", EX, 2, False),
    Form("ldxr-w", "ldxr w1, [x0]", EX, 4, False),
    Form("ldxr-x", "ldxr x1, [x0]", EX, 8, False),
    Form("ldaxr-x", "ldaxr x1, [x0]", EX, 8, False),
    Form("ldxp-x", "ldxp x1, x2, [x0]", EX, 16, False),
    Form("ldaxp-w", "ldaxp w1, w2, [x0]", EX, 8, False),
    Form("stxr-x", "stxr w3, x1, [x0]", EX, 8, True),
    Form("stlxp-x", "stlxp w3, x1, x2, [x0]", EX, 16, True),
    # acquire/release, RCpc, LORegion
    Form("ldarb", "ldarb w1, [x0]", AR, 1, False),
    Form("ldarh", "ldarh w1, [x0]", AR, 2, False),
    Form("ldar-w", "ldar w1, [x0]", AR, 4, False),
    Form("ldar-x", "ldar x1, [x0]", AR, 8, False),
    Form("stlrb", "stlrb w1, [x0]", AR, 1, True),
    Form("stlr-w", "stlr w1, [x0]", AR, 4, True),
    Form("stlr-x", "stlr x1, [x0]", AR, 8, True),
    Form("ldapr-x", "ldapr x1, [x0]", AR, 8, False),
    Form("ldaprh", "ldaprh w1, [x0]", AR, 2, False),
    Form("ldapur-w", "ldapur w1, [x0, #-2]", AR, 4, False, disp=-2),
    Form("ldapursw", "ldapursw x1, [x0, #4]", AR, 4, False, disp=4),
    Form("stlur-x", "stlur x1, [x0, #-8]", AR, 8, True, disp=-8),
    Form("ldlar-x", "ldlar x1, [x0]", AR, 8, False),
    Form("ldlarb", "ldlarb w1, [x0]", AR, 1, False),
    Form("stllr-w", "stllr w1, [x0]", AR, 4, True),
    Form("stllrh", "stllrh w1, [x0]", AR, 2, True),
    # LSE atomics
    Form("ldaddb", "ldaddb w2, w1, [x0]", AT, 1, True),
    Form("ldadd-x", "ldadd x2, x1, [x0]", AT, 8, True),
    Form("ldaddal-w", "ldaddal w2, w1, [x0]", AT, 4, True),
    Form("ldclrh", "ldclrh w2, w1, [x0]", AT, 2, True),
    Form("ldset-x", "ldset x2, x1, [x0]", AT, 8, True),
    Form("ldsmaxa-w", "ldsmaxa w2, w1, [x0]", AT, 4, True),
    Form("stadd-x", "stadd x2, [x0]", AT, 8, True),
    Form("steorlh", "steorlh w2, [x0]", AT, 2, True),
    Form("swp-x", "swp x2, x1, [x0]", AT, 8, True),
    Form("swpal-w", "swpal w2, w1, [x0]", AT, 4, True),
    Form("casb", "casb w2, w1, [x0]", AT, 1, True),
    Form("cas-x", "cas x2, x1, [x0]", AT, 8, True),
    Form("casal-w", "casal w2, w1, [x0]", AT, 4, True),
    Form("casp-x", "casp x2, x3, x4, x5, [x0]", AT, 16, True),
    Form("caspal-w", "caspal w2, w3, w4, w5, [x0]", AT, 8, True),
    # DC ZVA (a 64-byte block write), DC/IC by VA, prefetch: x0 is an operand
    Form("dc-zva", "dc zva, x0", FormClass.DC_ZVA, 64, True),
    Form("dc-civac", "dc civac, x0", FormClass.CACHE_MAINT, 64, False),
    Form("dc-cvac", "dc cvac, x0", FormClass.CACHE_MAINT, 64, False),
    Form("dc-cvau", "dc cvau, x0", FormClass.CACHE_MAINT, 64, False),
    Form("dc-cvap", "dc cvap, x0", FormClass.CACHE_MAINT, 64, False),
    Form("dc-ivac", "dc ivac, x0", FormClass.CACHE_MAINT, 64, False, el0=False),
    Form("ic-ivau", "ic ivau, x0", FormClass.CACHE_MAINT, 64, False),
    Form("prfm", "prfm pldl1keep, [x0]", FormClass.PREFETCH, 0, False),
    Form("prfum", "prfum pstl2strm, [x0, #-1]", FormClass.PREFETCH, 0, False, disp=-1),
)

BY_NAME = {f.name: f for f in FORMS}
