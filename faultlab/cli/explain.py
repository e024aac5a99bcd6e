"""`faultlab explain`: an ESR decoded field by field, the way a kernel engineer reads an oops.

One decoding (`decode`) feeds both outputs: the text (`explain`) and the
JSON document (`explain_record`, docs/schema/explain.schema.json).
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.syndrome import EC, Esr, dfsc_name, ec_kernel_name, hpfar_is_valid, ipa_from_hpfar, non_architectural_fields


@dataclass(frozen=True)
class Field:
    """One ESR field: its name, bit range, value, what the value means, and how the text shows it."""

    name: str
    bits: str
    value: int
    meaning: str
    shown: str  # the value as the text prints it (hex or decimal, padded)
    level: int = 1  # 1: EC/IL/ISS; 2: a field inside the ISS


@dataclass(frozen=True)
class Decoded:
    esr: Esr
    el: int
    fields: tuple[Field, ...]
    non_architectural: tuple[str, ...]
    checked: bool  # whether the architectural check applies (a data or instruction abort)


def decode(value: int, el: int = 1) -> Decoded:
    if not 0 <= value < (1 << 56):
        raise ValueError(f"ESR {value:#x} does not fit in ESR_ELx[55:0]")
    esr = Esr(value)
    f: list[Field] = [
        Field("EC", "31:26", esr.ec, ec_kernel_name(esr.ec), f"{esr.ec:#04x}"),
        Field("IL", "25", int(esr.il), "32-bit instruction" if esr.il else "16-bit instruction", f"{int(esr.il)}   "),
        Field("ISS", "24:0", esr.iss, "", f"{esr.iss:#09x}"),
    ]
    if esr.iss2:
        f.append(Field("ISS2", "55:32", esr.iss2, "", f"{esr.iss2:#010x}"))
    if not (esr.is_data_abort or esr.is_instruction_abort):
        if esr.ec in (EC.SVC64, EC.HVC64, EC.SMC64, EC.BRK64):
            f.append(Field("imm16", "15:0", esr.iss & 0xFFFF, "", f"{esr.iss & 0xFFFF:#x}", 2))
        return Decoded(esr, el, tuple(f), (), False)

    def flag(name: str, bits: str, value: int, meaning: str) -> None:
        f.append(Field(name, bits, int(value), meaning, str(int(value)), 2))

    if esr.is_data_abort:
        flag("ISV", "24", esr.isv, f"instruction syndrome {'valid' if esr.isv else 'not valid: SAS..AR are RES0'}")
        if esr.isv:
            flag("SAS", "23:22", esr.sas, f"access size {1 << esr.sas} byte(s)")
            flag("SSE", "21", esr.sse, "sign-extending load" if esr.sse else "no sign extension")
            flag("SRT", "20:16", esr.srt, f"register x{esr.srt}")
            flag("SF", "15", esr.sf, f"{'64-bit' if esr.sf else '32-bit'} register")
            flag("AR", "14", esr.ar, "acquire/release" if esr.ar else "no acquire/release")
        flag("SET", "12:11", esr.set, "")
    flag("FnV", "10", esr.fnv, f"FAR {'not valid' if esr.fnv else 'valid'}")
    flag("EA", "9", esr.ea, "")
    if esr.is_data_abort:
        flag("CM", "8", esr.cm, "cache maintenance" if esr.cm else "not cache maintenance")
    marker = ""
    if esr.s1ptw and el == 1:
        marker = "<- set on an injected abort: pKVM's marker for 'stage-2 abort' (is_pkvm_stage2_abort)"
    elif esr.s1ptw:
        marker = "stage-2 fault on a stage-1 table walk"
    flag("S1PTW", "7", esr.s1ptw, marker)
    if esr.is_data_abort:
        flag("WnR", "6", esr.wnr, "write" if esr.wnr else "read")
    f.append(Field("DFSC", "5:0", esr.fsc, dfsc_name(esr.fsc), f"{esr.fsc:#04x}", 2))
    try:
        odd = tuple(non_architectural_fields(esr, target_el=el, stage=2 if el == 2 else 1))
    except ValueError:
        odd = ()
    return Decoded(esr, el, tuple(f), odd, True)


def explain(value: int, *, el: int = 1, far: int | None = None, hpfar: int | None = None) -> str:
    d = decode(value, el)
    out = [f"ESR_EL{el} = {value:#018x}"]
    for fld in d.fields:
        indent = "  " * fld.level
        label = f"{fld.name:5} [{fld.bits}]".ljust(13)
        if fld.name == "imm16":
            out.append(f"    imm16 = {fld.shown}")
            continue
        sep = "  " if fld.meaning else ""
        out.append(f"{indent}{label} = {fld.shown}{sep}{fld.meaning}".rstrip())
    if not d.checked:
        return "\n".join(out)
    if far is not None:
        out.append(f"  FAR_EL{el} = {far:#018x}")
    if el == 2 and hpfar is not None:
        valid = hpfar_is_valid(d.esr)
        out.append(f"  HPFAR_EL2 = {hpfar:#x}: IPA page {ipa_from_hpfar(hpfar):#x}" + ("" if valid else " (UNKNOWN for this fault)"))
        if far is not None:
            out.append(f"  faulting IPA = {ipa_from_hpfar(hpfar) | (far & 0xFFF):#x}")
    odd = d.non_architectural
    out.append(f"  architectural at EL{el}: " + ("yes" if not odd else "no (" + ", ".join(odd) + ")"))
    out.append("")
    out.append("as the kernel prints it:")
    out += ["  " + line for line in str(d.esr).splitlines()]
    return "\n".join(out)


def explain_record(value: int, *, el: int = 1, far: int | None = None, hpfar: int | None = None) -> dict:
    """`faultlab explain --json`: the same decoding as data."""
    d = decode(value, el)
    ipa = None
    if el == 2 and hpfar is not None and d.checked:
        ipa = ipa_from_hpfar(hpfar) | ((far or 0) & 0xFFF) if far is not None else ipa_from_hpfar(hpfar)
    return {
        "esr": value,
        "el": el,
        "ec": d.esr.ec,
        "ec_name": ec_kernel_name(d.esr.ec),
        "fields": [{"name": x.name, "bits": x.bits, "value": x.value, "meaning": x.meaning} for x in d.fields],
        "far": far,
        "hpfar": hpfar,
        "hpfar_valid": None if hpfar is None or not d.checked else hpfar_is_valid(d.esr),
        "ipa": ipa,
        "abort": d.checked,
        "architectural": None if not d.checked else not d.non_architectural,
        "non_architectural": list(d.non_architectural),
        "kernel_text": str(d.esr).splitlines() if d.checked else [],
    }
