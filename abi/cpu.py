"""The one CPU feature set the whole project models (docs/architecture.md, "CPU features").

Every part that depends on a feature reads it here: the machine (which
Unicorn CPU model runs, whether PAN exists), the real-kernel loader (which
alternatives and capabilities a booted kernel would have patched in), and
the syndrome and alignment rules. Changing a value here changes the machine
everyone measures against, so it is a frozen dataclass, not a setting.

FEAT_LSE2 is off: Unicorn (QEMU 5 TCG underneath) faults every misaligned
exclusive and atomic itself, which is the architecture without FEAT_LSE2 (with
it, those inside a 16-byte block must succeed); QEMU 7.2 does not implement it
either; no cpucap or alternative of the real kernels depends on it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CpuFeatures:
    lse: bool  # FEAT_LSE atomics (ldadd, cas, swp): run natively (Unicorn's MAX model)
    lse2: bool  # FEAT_LSE2: unaligned exclusives/atomics/LDAR/STLR/LDAPR inside 16 bytes do not alignment-fault
    pan: bool  # FEAT_PAN: privileged access never, set on exception entry when SCTLR_EL1.SPAN = 0
    pauth: bool  # FEAT_PAuth with keys enabled; False: paciasp/autiasp execute as the NOP-space hints they are
    bti: bool  # FEAT_BTI enforcement; False: bti executes as a hint
    mops: bool  # FEAT_MOPS (CPY*/SET*): Unicorn 2.1.4 does not implement it
    mte: bool  # FEAT_MTE tag checks
    ras: bool  # FEAT_RAS: ESR.ISS reports external aborts with SET/EA fields
    hafdbs: bool  # FEAT_HAFDBS: hardware sets AF/DBM; off: AF = 0 is an Access flag fault, walks only read
    lpa2: bool  # FEAT_LPA2: level -1 translation faults (DFSC 0x2B); our stage 1 has 4 levels, 48-bit VAs


FEATURES = CpuFeatures(lse=True, lse2=False, pan=True, pauth=False, bti=False, mops=False, mte=False, ras=True, hafdbs=False, lpa2=False)
