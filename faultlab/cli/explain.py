"""`faultlab explain`: an ESR decoded field by field, the way a kernel engineer reads an oops."""
from __future__ import annotations

from emu.syndrome import EC, Esr, dfsc_name, ec_kernel_name, hpfar_is_valid, ipa_from_hpfar, non_architectural_fields


def explain(value: int, *, el: int = 1, far: int | None = None, hpfar: int | None = None) -> str:
    if not 0 <= value < (1 << 56):
        raise ValueError(f"ESR {value:#x} does not fit in ESR_ELx[55:0]")
    esr = Esr(value)
    out = [f"ESR_EL{el} = {value:#018x}"]
    out.append(f"  EC    [31:26] = {esr.ec:#04x}  {ec_kernel_name(esr.ec)}")
    out.append(f"  IL    [25]    = {int(esr.il)}     {'32-bit instruction' if esr.il else '16-bit instruction'}")
    out.append(f"  ISS   [24:0]  = {esr.iss:#09x}")
    if esr.iss2:
        out.append(f"  ISS2  [55:32] = {esr.iss2:#010x}")
    if not (esr.is_data_abort or esr.is_instruction_abort):
        if esr.ec in (EC.SVC64, EC.HVC64, EC.SMC64, EC.BRK64):
            out.append(f"    imm16 = {esr.iss & 0xFFFF:#x}")
        return "\n".join(out)
    if esr.is_data_abort:
        out.append(f"    ISV   [24]    = {int(esr.isv)}  instruction syndrome {'valid' if esr.isv else 'not valid: SAS..AR are RES0'}")
        if esr.isv:
            out.append(f"    SAS   [23:22] = {esr.sas}  access size {1 << esr.sas} byte(s)")
            out.append(f"    SSE   [21]    = {int(esr.sse)}  {'sign-extending load' if esr.sse else 'no sign extension'}")
            out.append(f"    SRT   [20:16] = {esr.srt}  register x{esr.srt}")
            out.append(f"    SF    [15]    = {int(esr.sf)}  {'64-bit' if esr.sf else '32-bit'} register")
            out.append(f"    AR    [14]    = {int(esr.ar)}  {'acquire/release' if esr.ar else 'no acquire/release'}")
        out.append(f"    SET   [12:11] = {esr.set}")
    out.append(f"    FnV   [10]    = {int(esr.fnv)}  FAR {'not valid' if esr.fnv else 'valid'}")
    out.append(f"    EA    [9]     = {int(esr.ea)}")
    if esr.is_data_abort:
        out.append(f"    CM    [8]     = {int(esr.cm)}  {'cache maintenance' if esr.cm else 'not cache maintenance'}")
    marker = ""
    if esr.s1ptw and el == 1:
        marker = "  <- set on an injected abort: pKVM's marker for 'stage-2 abort' (is_pkvm_stage2_abort)"
    elif esr.s1ptw:
        marker = "  stage-2 fault on a stage-1 table walk"
    out.append(f"    S1PTW [7]     = {int(esr.s1ptw)}{marker}")
    if esr.is_data_abort:
        out.append(f"    WnR   [6]     = {int(esr.wnr)}  {'write' if esr.wnr else 'read'}")
    out.append(f"    DFSC  [5:0]   = {esr.fsc:#04x}  {dfsc_name(esr.fsc)}")
    if far is not None:
        out.append(f"  FAR_EL{el} = {far:#018x}")
    if el == 2:
        if hpfar is not None:
            valid = hpfar_is_valid(esr)
            out.append(f"  HPFAR_EL2 = {hpfar:#x}: IPA page {ipa_from_hpfar(hpfar):#x}" + ("" if valid else " (UNKNOWN for this fault)"))
            if far is not None:
                out.append(f"  faulting IPA = {ipa_from_hpfar(hpfar) | (far & 0xFFF):#x}")
    stage = 2 if el == 2 else 1
    try:
        odd = non_architectural_fields(esr, target_el=el, stage=stage)
    except ValueError:
        odd = ()
    out.append(f"  architectural at EL{el}: " + ("yes" if not odd else "no (" + ", ".join(odd) + ")"))
    out.append("")
    out.append("as the kernel prints it:")
    out += ["  " + line for line in str(esr).splitlines()]
    return "\n".join(out)
