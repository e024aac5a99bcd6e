"""A real S1PTW stage-2 abort and pKVM's S1PTW marker, end to end on a real kernel.

The architecture reports S1PTW = 1 only in a stage-2 syndrome, to EL2 (ESR_EL2, with
HPFAR_EL2 = the IPA of the table the stage-1 walk could not read). ESR_EL1 never carries
it from hardware: pKVM uses the bit as its "injected stage-2 abort" marker
(host_inject_abort, arch/arm64/kvm/hyp/nvhe/mem_protect.c), and arm64's fault.c
(is_pkvm_stage2_abort) reads any S1PTW in ESR_EL1 as that marker once pKVM is
initialised; Linux 6.1 has no such check and reads the DFSC only. So the two are told
apart by *where* they arrive: the real one at EL2, the marker at EL1 - which is what the
stack does here, for a walk refused at stage 2 and for a data page refused at stage 2.
"""
from __future__ import annotations

import pytest

from cached_kernels import vmlinux
from emu.memory import PAGE_SIZE
from emu.syndrome import non_architectural_fields
from faultlab.kernel.lab import KernelRig


def _abort_and_injection(result):
    aborts = [e.data["abort"] for e in result.events if e.kind == "abort" and e.data["abort"].stage == 2]
    injected = [e for e in result.events if e.kind == "inject"]
    return aborts, injected


def _run(key: str, *, protect_table: bool):
    rig = KernelRig.boot(vmlinux(key), "inject", host="model")
    k, m = rig.kernel, rig.machine
    buf = k.alloc_buffer(2 * PAGE_SIZE)
    target = buf + PAGE_SIZE
    m.read(target, 8)
    if protect_table:
        table_pfn = m.stage1.builder.leaf_pa(target) >> 12
        rig.lab.donate(table_pfn, keep_contents=True)  # the last-level table frame goes to a guest
        refused = table_pfn
    else:
        refused = rig.protect(target).pfn
    result = rig.call("memcpy", buf, target, 64, timeout=60)
    return result, refused, target


@pytest.mark.parametrize("protect_table", [True, False], ids=["table-frame-refused", "data-page-refused"])
def test_real_s1ptw_arrives_at_el2_the_marker_at_el1(protect_table):
    result, refused, target = _run("7.2", protect_table=protect_table)
    aborts, injected = _abort_and_injection(result)
    refused_aborts = [a for a in aborts if a.ipa >> 12 == refused]
    assert refused_aborts, [str(e) for e in result.events]
    abort = refused_aborts[0]
    # At EL2: S1PTW is the hardware's, set exactly when the walk itself was refused.
    assert abort.esr.s1ptw == protect_table
    assert abort.far == target
    assert non_architectural_fields(abort.esr, stage=2, target_el=2) == ()
    if protect_table:
        assert abort.ipa == abort.pa and abort.ipa & 0xFFF == ((target >> 12) & 0x1FF) * 8  # the descriptor
    else:
        assert abort.ipa == (refused << 12)
    # At EL1: pKVM's injection carries S1PTW either way, and 7.2's fault.c takes it as the marker.
    assert injected and "S1PTW" in injected[0].message
    assert result.outcome.kind == "host-oops"
    assert "hypervisor-protected memory" in result.outcome.message


@pytest.mark.parametrize("protect_table", [True, False], ids=["table-frame-refused", "data-page-refused"])
def test_linux_61_reads_the_same_injected_s1ptw_by_its_dfsc_only(protect_table):
    """6.1 knows no marker: its spurious-fault check (AT S1E1R) translates, so it retries forever,
    for the real walk fault exactly as for the data page."""
    result, _, _ = _run("6.1", protect_table=protect_table)
    _, injected = _abort_and_injection(result)
    assert injected and "S1PTW" in injected[0].message
    assert result.outcome.kind == "livelock"
    assert "hypervisor-protected" not in result.outcome.message
