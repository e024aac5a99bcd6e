"""ESR fields, fault status codes, oops decoding and architectural judgement (emu.syndrome).

Expected oops text is copied from real kernel logs (cited per case); expected field values are
decoded by hand from the Arm ARM D24.2.45 layout; fault-code tables are written from the
Arm ARM DFSC table and from arch/arm64/mm/fault.c fault_info[].
"""
from __future__ import annotations

import pytest

from emu.access import Access, AccessKind
from emu.syndrome import (
    DFSC,
    EC,
    Esr,
    OopsStyle,
    data_abort_esr,
    dfsc_is_access_flag,
    dfsc_is_external_abort,
    dfsc_is_gpf,
    dfsc_is_permission,
    dfsc_is_translation,
    dfsc_level,
    dfsc_name,
    hpfar_from_ipa,
    hpfar_is_valid,
    instruction_abort_esr,
    ipa_from_hpfar,
    kernel_fault_name,
    non_architectural_fields,
)

# --- real oopses -------------------------------------------------------------------------------

OOPSES = [
    pytest.param(
        # ARM-software/arm-systemready issue #252 (2025, mainline kernel on RB3gen2)
        0x96000007, OopsStyle.LATEST,
        """Mem abort info:
  ESR = 0x0000000096000007
  EC = 0x25: DABT (current EL), IL = 32 bits
  SET = 0, FnV = 0
  EA = 0, S1PTW = 0
  FSC = 0x07: level 3 translation fault
Data abort info:
  ISV = 0, ISS = 0x00000007, ISS2 = 0x00000000
  CM = 0, WnR = 0, TnD = 0, TagAccess = 0
  GCS = 0, Overlay = 0, DirtyBit = 0, Xs = 0""",
        id="systemready-252-l3-read",
    ),
    pytest.param(
        # apple/container issue #614 (Linux 6.12.28): NULL write in __memset
        0x96000046, OopsStyle.LATEST,
        """Mem abort info:
  ESR = 0x0000000096000046
  EC = 0x25: DABT (current EL), IL = 32 bits
  SET = 0, FnV = 0
  EA = 0, S1PTW = 0
  FSC = 0x06: level 2 translation fault
Data abort info:
  ISV = 0, ISS = 0x00000046, ISS2 = 0x00000000
  CM = 0, WnR = 1, TnD = 0, TagAccess = 0
  GCS = 0, Overlay = 0, DirtyBit = 0, Xs = 0""",
        id="apple-container-614-l2-write",
    ),
    pytest.param(
        # raspberrypi/linux issue #6792 (2025)
        0x96000005, OopsStyle.LATEST,
        """Mem abort info:
  ESR = 0x0000000096000005
  EC = 0x25: DABT (current EL), IL = 32 bits
  SET = 0, FnV = 0
  EA = 0, S1PTW = 0
  FSC = 0x05: level 1 translation fault
Data abort info:
  ISV = 0, ISS = 0x00000005, ISS2 = 0x00000000
  CM = 0, WnR = 0, TnD = 0, TagAccess = 0
  GCS = 0, Overlay = 0, DirtyBit = 0, Xs = 0""",
        id="rpi-6792-l1-read",
    ),
    pytest.param(
        # LKFT report, 6.5.3-rc1 on QEMU (linux,dummy-virt), LTP cfs_bandwidth01
        0x97880004, OopsStyle.V6_5,
        """Mem abort info:
  ESR = 0x0000000097880004
  EC = 0x25: DABT (current EL), IL = 32 bits
  SET = 0, FnV = 0
  EA = 0, S1PTW = 0
  FSC = 0x04: level 0 translation fault
Data abort info:
  Access size = 4 byte(s)
  SSE = 0, SRT = 8
  SF = 0, AR = 0
  CM = 0, WnR = 0, TnD = 0, TagAccess = 0
  GCS = 0, Overlay = 0, DirtyBit = 0, Xs = 0""",
        id="lkft-6.5.3-isv1",
    ),
    pytest.param(
        # LKFT report, 6.6.0-rc7-next-2023102x, LTP set_robust_list01 (pre-LPA2 fault names)
        0x9793002B, OopsStyle.V6_5,
        """Mem abort info:
  ESR = 0x000000009793002b
  EC = 0x25: DABT (current EL), IL = 32 bits
  SET = 0, FnV = 0
  EA = 0, S1PTW = 0
  FSC = 0x2b: unknown 43
Data abort info:
  Access size = 4 byte(s)
  SSE = 0, SRT = 19
  SF = 0, AR = 0
  CM = 0, WnR = 0, TnD = 0, TagAccess = 0
  GCS = 0, Overlay = 0, DirtyBit = 0, Xs = 0""",
        id="lkft-6.6-next-unknown43",
    ),
    pytest.param(
        # LKFT report on linux-next (selftests net/pmtu.sh): ldrsw into x21
        0x97B58004, OopsStyle.V6_5,
        """Mem abort info:
  ESR = 0x0000000097b58004
  EC = 0x25: DABT (current EL), IL = 32 bits
  SET = 0, FnV = 0
  EA = 0, S1PTW = 0
  FSC = 0x04: level 0 translation fault
Data abort info:
  Access size = 4 byte(s)
  SSE = 1, SRT = 21
  SF = 1, AR = 0
  CM = 0, WnR = 0, TnD = 0, TagAccess = 0
  GCS = 0, Overlay = 0, DirtyBit = 0, Xs = 0""",
        id="lkft-next-ldrsw-x21",
    ),
    pytest.param(
        # syzbot report on 6.0.0-rc7-syzkaller-18095-gbbed346d5a96 (batadv_nc_worker)
        0x96000007, OopsStyle.V6_1,
        """Mem abort info:
  ESR = 0x0000000096000007
  EC = 0x25: DABT (current EL), IL = 32 bits
  SET = 0, FnV = 0
  EA = 0, S1PTW = 0
  FSC = 0x07: level 3 translation fault
Data abort info:
  ISV = 0, ISS = 0x00000007
  CM = 0, WnR = 0""",
        id="syzbot-6.0-l3-read",
    ),
    pytest.param(
        # syzbot report on 6.0.0-rc2-syzkaller-16455-ga41a877bc12d: jump to NULL
        0x86000006, OopsStyle.V6_1,
        """Mem abort info:
  ESR = 0x0000000086000006
  EC = 0x21: IABT (current EL), IL = 32 bits
  SET = 0, FnV = 0
  EA = 0, S1PTW = 0
  FSC = 0x06: level 2 translation fault""",
        id="syzbot-6.0-iabt",
    ),
]


@pytest.mark.parametrize("value, style, text", OOPSES)
def test_oops_decoding_matches_real_kernel_output(value, style, text):
    assert "\n".join(Esr(value).oops_lines(style)) == text


def test_str_is_the_newest_format():
    assert str(Esr(0x96000007)) == OOPSES[0].values[2]


def test_lpa2_names_differ_between_generations():
    assert kernel_fault_name(0x2B, OopsStyle.V6_5) == "unknown 43"
    assert kernel_fault_name(0x2B, OopsStyle.LATEST) == "level -1 translation fault"
    assert "FSC = 0x2b: level -1 translation fault" in str(Esr(0x9793002B))


# --- field extraction (decoded by hand) -----------------------------------------------------

@pytest.mark.parametrize(
    "value, fields",
    [
        (0x97B58004, dict(ec=0x25, il=True, isv=True, sas=2, sse=True, srt=21, sf=True,
                          ar=False, wnr=False, dfsc=0x04, access_size=4)),
        (0x93C1C047, dict(ec=0x24, isv=True, sas=3, sse=False, srt=1, sf=True, ar=True,
                          wnr=True, dfsc=0x07, access_size=8)),
        (0x96000087, dict(ec=0x25, isv=False, s1ptw=True, wnr=False, dfsc=0x07,
                          access_size=None)),
        (0x96000150, dict(ec=0x25, cm=True, wnr=True, s1ptw=False, dfsc=0x10)),
        (0x96001E10, dict(set=3, fnv=True, ea=True, vncr=False, dfsc=0x10)),
        (0x92002007, dict(ec=0x24, vncr=True, iss=0x2007)),
        (0x0000_0021_9600_000F, dict(iss2=0x21, xs=1, dirty_bit=True, overlay=False,
                                     tnd=False, dfsc=0x0F)),
        (0x0000_0740_9600_000F, dict(iss2=0x740, tnd=True, tag_access=True, gcs=True,
                                     overlay=True, xs=0)),
        (0x8600000F, dict(ec=0x21, ifsc=0x0F, is_instruction_abort=True, is_data_abort=False)),
        (0x5600_0000, dict(ec=0x15, is_data_abort=False, iss=0)),
    ],
    ids=["ldrsw-x21", "stlr-x1-el2", "s1ptw", "cm", "sea-set-fnv-ea", "vncr", "iss2-dirty",
         "iss2-tags", "iabt", "svc"],
)
def test_esr_fields(value, fields):
    esr = Esr(value)
    for name, expected in fields.items():
        assert getattr(esr, name) == expected, name


def test_ec_is_an_enum_when_known_and_an_int_otherwise():
    assert Esr(0x96000007).ec is EC.DABT_CUR
    assert Esr(0x0B << 26).ec == 0x0B and not isinstance(Esr(0x0B << 26).ec, EC)
    assert EC.DABT_LOW.kernel_name == "DABT (lower EL)"
    assert "UNRECOGNIZED EC" in Esr(0x0B << 26 | 1 << 25).oops_lines()[2]


def test_esr_rejects_res0_top_byte():
    with pytest.raises(ValueError):
        Esr(1 << 56)


def test_with_s1ptw_and_with_ec_touch_only_their_field():
    esr_el2 = Esr(0x0000_0001_93C1_8007)
    injected = esr_el2.with_s1ptw().with_ec(EC.DABT_CUR)
    assert injected.value == 0x0000_0001_97C1_8087
    assert injected.with_s1ptw(False).with_ec(EC.DABT_LOW) == esr_el2
    with pytest.raises(ValueError):
        esr_el2.with_ec(0x40)


# --- fault status codes -------------------------------------------------------------------------

TRANSLATION = {0x04, 0x05, 0x06, 0x07, 0x2A, 0x2B}
ACCESS_FLAG = {0x08, 0x09, 0x0A, 0x0B}
PERMISSION = {0x0C, 0x0D, 0x0E, 0x0F}
EXTERNAL = {0x10, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F}
GPF = {0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28}
LEVELS = {0x00: 0, 0x01: 1, 0x02: 2, 0x03: 3, 0x04: 0, 0x05: 1, 0x06: 2, 0x07: 3, 0x08: 0,
          0x09: 1, 0x0A: 2, 0x0B: 3, 0x0C: 0, 0x0D: 1, 0x0E: 2, 0x0F: 3, 0x12: -2, 0x13: -1,
          0x14: 0, 0x15: 1, 0x16: 2, 0x17: 3, 0x1B: -1, 0x1C: 0, 0x1D: 1, 0x1E: 2, 0x1F: 3,
          0x22: -2, 0x23: -1, 0x24: 0, 0x25: 1, 0x26: 2, 0x27: 3, 0x29: -1, 0x2A: -2,
          0x2B: -1, 0x2C: -2}


@pytest.mark.parametrize("code", range(64), ids=[f"fsc-{c:#04x}" for c in range(64)])
def test_fault_code_classes(code):
    assert dfsc_is_translation(code) == (code in TRANSLATION)
    assert dfsc_is_access_flag(code) == (code in ACCESS_FLAG)
    assert dfsc_is_permission(code) == (code in PERMISSION)
    assert dfsc_is_external_abort(code) == (code in EXTERNAL)
    assert dfsc_is_gpf(code) == (code in GPF)
    assert dfsc_level(code) == LEVELS.get(code)


@pytest.mark.parametrize(
    "code, name",
    [
        (0x00, "ttbr address size fault"),
        (0x04, "level 0 translation fault"),
        (0x07, "level 3 translation fault"),
        (0x08, "level 0 access flag fault"),
        (0x0E, "level 2 permission fault"),
        (0x10, "synchronous external abort"),
        (0x11, "synchronous tag check fault"),
        (0x15, "level 1 (translation table walk)"),
        (0x21, "alignment fault"),
        (0x23, "level -1 granule protection fault"),
        (0x24, "level 0 granule protection fault"),
        (0x27, "level 3 granule protection fault"),
        (0x28, "granule protection fault"),
        (0x2B, "level -1 translation fault"),
        (0x30, "TLB conflict abort"),
        (0x20, "unknown 32"),
    ],
)
def test_dfsc_names(code, name):
    assert dfsc_name(code) == name


@pytest.mark.parametrize(
    "code, v6_1, latest",
    [
        (0x08, "unknown 8", "level 0 access flag fault"),
        (0x0C, "unknown 12", "level 0 permission fault"),
        (0x13, "unknown 19", "level -1 (translation table walk)"),
        (0x29, "unknown 41", "level -1 address size fault"),
        (0x24, "unknown 36", "unknown 36"),  # mainline has no GPF entries
        (0x35, "implementation fault (unsupported exclusive)",
         "implementation fault (unsupported exclusive)"),
        (0x3E, "page domain fault", "page domain fault"),
    ],
)
def test_kernel_fault_names_per_generation(code, v6_1, latest):
    assert kernel_fault_name(code, OopsStyle.V6_1) == v6_1
    assert kernel_fault_name(code, OopsStyle.LATEST) == latest


@pytest.mark.parametrize("level, code", [(-2, 0x2A), (-1, 0x2B), (0, 0x04), (1, 0x05), (2, 0x06),
                                         (3, 0x07)])
def test_translation_codes(level, code):
    assert DFSC.translation(level) == code


@pytest.mark.parametrize("level", range(4))
def test_leveled_codes(level):
    assert DFSC.permission(level) == 0x0C + level
    assert DFSC.access_flag(level) == 0x08 + level
    assert DFSC.address_size(level) == level
    assert DFSC.sync_external_walk(level) == 0x14 + level
    assert DFSC.gpf_walk(level) == 0x24 + level
    assert DFSC.gpf_walk(-1) == 0x23 and DFSC.ALIGNMENT == 0x21 and DFSC.GPF == 0x28


@pytest.mark.parametrize("maker", [DFSC.permission, DFSC.access_flag, DFSC.translation])
def test_impossible_levels_raise(maker):
    with pytest.raises(ValueError):
        maker(4)
    with pytest.raises(ValueError):
        maker(-3)


# --- building -----------------------------------------------------------------------------------

LDR_X = Access(mnemonic="ldr", kind=AccessKind.READ, size=8, element_size=8, address=0x1000,
               srt=0, sf=True, isv_eligible=True)


def test_instruction_abort_esr():
    assert instruction_abort_esr(from_lower_el=False, ifsc=0x06).value == 0x86000006
    assert instruction_abort_esr(from_lower_el=True, ifsc=0x07, s1ptw=True).value == 0x82000087


@pytest.mark.parametrize(
    "kwargs",
    [dict(dfsc=0x07, fnv=True), dict(dfsc=0x07, ea=True), dict(dfsc=0x40),
     dict(dfsc=0x07, cm=True, wnr=False)],
    ids=["fnv-not-sea", "ea-not-external", "dfsc-too-wide", "cm-without-wnr"],
)
def test_data_abort_esr_refuses_non_architectural_requests(kwargs):
    args = dict(from_lower_el=False, access=LDR_X, wnr=False, isv_allowed=False)
    args.update(kwargs)
    with pytest.raises(ValueError):
        data_abort_esr(**args)


def test_data_abort_esr_sea_fields():
    esr = data_abort_esr(from_lower_el=True, dfsc=0x10, access=LDR_X, wnr=False, fnv=True,
                         ea=True, isv_allowed=True)
    assert esr.value == 0x92000610  # no ISV on an external abort (FEAT_RAS)


def test_data_abort_esr_without_access():
    esr = data_abort_esr(from_lower_el=True, dfsc=0x06, access=None, wnr=True, isv_allowed=True)
    assert esr.value == 0x92000046


# --- judging injected syndromes -----------------------------------------------------------------

def pkvm_injected(esr_el2: Esr) -> Esr:
    """pKVM's injection from a host at EL1: S1PTW set, EC 0x24 -> 0x25, rest copied."""
    return esr_el2.with_s1ptw().with_ec(EC.DABT_CUR)


LDR_ESR_EL2 = data_abort_esr(from_lower_el=True, dfsc=0x07, access=LDR_X, wnr=False,
                             isv_allowed=True)
LDP_ESR_EL2 = Esr(0x92000007)


@pytest.mark.parametrize(
    "value, target_el, stage, from_el, expected",
    [
        (0x96000007, 1, 1, 1, ()),  # what a stage-1 fault really looks like
        (0x92000007, 1, 1, 0, ()),  # the same fault from EL0
        (LDR_ESR_EL2.value, 2, 2, 1, ()),  # the stage-2 abort pKVM receives
        (pkvm_injected(LDR_ESR_EL2).value, 1, 1, 1, ("ISV", "S1PTW")),
        (pkvm_injected(LDP_ESR_EL2).value, 1, 1, 1, ("S1PTW",)),
        (0x97880004, 1, 1, 1, ("ISV",)),  # QEMU-reported ESR_EL1 from the LKFT oops above
        # EL2's own stage-1 fault: the QEMU bug fixed by "target/arm: Don't set ISV when
        # reporting stage 1 faults in ESR_EL2" (QEMU 8.1)
        (0x97C18007, 2, 1, 2, ("ISV",)),
        (0x93C18007, 2, 1, 0, ("ISV",)),  # EL0 stage-1 fault routed to EL2 (HCR_EL2.TGE)
        (0x93C18087, 2, 2, 1, ("ISV",)),  # syndrome on a stage-1 walk fault
        (0x93C18010, 2, 2, 1, ("ISV",)),  # syndrome on an external abort
        (0x92000007, 1, 1, 1, ("EC",)),  # "lower EL" for a fault taken from EL1 to EL1
        (0x96000007, 2, 2, 1, ("EC",)),  # "current EL" for EL1 -> EL2
        (0x96000407, 1, 1, None, ("FnV",)),
        (0x96000207, 1, 1, None, ("EA",)),
        (0x96000807, 1, 1, None, ("SET",)),
        (0x96010007, 1, 1, None, ("SRT",)),  # ISS[23:14] RES0 with ISV = 0
        (0x96C0C007, 1, 1, None, ("SAS", "SF", "AR")),
        (0x96002007, 1, 1, None, ("VNCR",)),
        (0x92002007, 2, 2, 1, ()),  # VNCR exists in ESR_EL2
        (0x96000107, 1, 1, None, ("WnR",)),  # CM without WnR
        (0x93E00007, 2, 2, None, ("SSE", "SF")),  # sign-extending doubleword, W register
        (0x94000007, 1, 1, None, ("IL",)),
        (0x96000020, 1, 1, None, ("FSC",)),  # DFSC 0x20 is reserved
        (0x0000_0001_96000007, 1, 1, None, ("ISS2",)),
        (0x86000087, 1, 1, 1, ("S1PTW",)),  # injected instruction abort
        (0x86000021, 1, 1, 1, ("FSC",)),  # alignment is not an instruction fault code
        (0x86010006, 1, 1, 1, ("ISS[24:13]",)),
    ],
    ids=["el1-stage1", "el0-stage1", "esr-el2", "pkvm-ldr", "pkvm-ldp", "lkft-qemu",
         "el2-own-stage1", "el0-tge-stage1", "isv-s1ptw", "isv-sea", "ec-lower", "ec-current",
         "fnv", "ea", "set", "srt-res0",
         "sas-sf-ar-res0", "vncr-el1", "vncr-el2", "cm-wnr", "sse-sf", "il", "fsc-reserved",
         "iss2", "iabt-s1ptw", "iabt-fsc", "iabt-res0"],
)
def test_non_architectural_fields(value, target_el, stage, from_el, expected):
    esr = Esr(value)
    assert non_architectural_fields(esr, target_el=target_el, stage=stage,
                                    from_el=from_el) == expected


def test_stage2_faults_never_reach_el1():
    with pytest.raises(ValueError):
        non_architectural_fields(Esr(0x96000007), target_el=1, stage=2)


def test_only_aborts_are_judged():
    with pytest.raises(ValueError):
        non_architectural_fields(Esr(0x56000000), target_el=1, stage=1)


# --- HPFAR_EL2 --------------------------------------------------------------------------------

@pytest.mark.parametrize("ipa", [0x0, 0x1000, 0x8_1234_5678, 0xFFFF_FFFF_FFFF, (1 << 52) - 1,
                                 0x4_0000_0FFF])
def test_hpfar_holds_ipa_bits_51_12_at_bit_4(ipa):
    hpfar = hpfar_from_ipa(ipa)
    assert hpfar == ((ipa >> 12) & ((1 << 40) - 1)) << 4
    assert hpfar & 0xF == 0 and hpfar >> 44 == 0
    assert ipa_from_hpfar(hpfar) == ipa & ~0xFFF
    assert ipa_from_hpfar(hpfar | (1 << 63) | 0xF) == ipa & ~0xFFF  # NS and [3:0] ignored


def test_hpfar_sweep_of_page_numbers():
    for pfn in range(0, 1 << 40, 0x1_2345_6789):
        assert ipa_from_hpfar(hpfar_from_ipa(pfn << 12 | 0x123)) == pfn << 12


def test_hpfar_rejects_wide_ipa():
    with pytest.raises(ValueError):
        hpfar_from_ipa(1 << 52)


@pytest.mark.parametrize(
    "value, valid",
    [(0x92000007, True), (0x92000004, True), (0x9200000B, True), (0x92000003, True),
     (0x9200000F, False), (0x9200008F, True), (0x92000010, False), (0x92000028, True),
     (0x92000021, False)],
    ids=["translation", "translation-l0", "access-flag", "address-size", "permission",
         "permission-s1ptw", "sea", "gpf", "alignment"],
)
def test_hpfar_validity(value, valid):
    assert hpfar_is_valid(Esr(value)) is valid
