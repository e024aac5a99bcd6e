"""handle_host_mem_abort: what EL2 does with a host stage-2 abort.

Order (mem_protect.c: handle_host_mem_abort): recover the IPA from HPFAR_EL2
(plus FAR's page offset), and if the host may access the frame (it owns or
shares it) install the identity mapping - a 2 MiB block where the table
allows (hyp/stage2.py) - and retry. Otherwise the frame belongs
to the hypervisor or to a guest, and the active policy's `on_protected_access`
decides (hyp/policies.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from emu.outcome import Outcome
from emu.syndrome import ipa_from_hpfar

from hyp.el2 import ProtectedAccess

if TYPE_CHECKING:
    from emu.abort import MemoryAbort

    from hyp.el2 import El2
    from hyp.policies import Policy

_PROTECTED_TEXT = "host {} of IPA {:#x} owned by {} ({})".format


def handle_host_mem_abort(el2: "El2", policy: "Policy", abort: "MemoryAbort") -> Outcome | None:
    ipa = ipa_from_hpfar(abort.hpfar) | (abort.far & 0xFFF)
    pfn = ipa >> 12
    machine = el2.machine
    # The CPU still stands at the faulting instruction in the aborting EL, so the event's PC and
    # EL are the abort's (two register reads saved per event); an attached debugger may have
    # moved them at the `abort` event, so then they are read as usual.
    pc, el = (abort.pc, abort.el) if machine.debugger is None else (None, None)
    if el2.ownership.host_may_access(pfn):
        frames = el2.stage2.idmap(pfn)
        machine.log("idmap", (_idmap_message, pfn, frames), pc=pc, el=el, pfn=pfn, first_pfn=frames.start, pages=len(frames))
        return None
    access = ProtectedAccess(abort, ipa, str(el2.ownership.owner(pfn)))
    machine.log(
        "protected-access",
        (_PROTECTED_TEXT, abort.access_type.value, ipa, access.owner, policy.trap.value),  # formatted when read
        pc=pc,
        el=el,
        pfn=pfn,
        owner=access.owner,
        abort=abort,
    )
    return policy.on_protected_access(el2, access)


def _idmap_message(pfn: int, frames: range) -> str:
    if len(frames) > 1:
        return f"host stage-2 idmap pfn {pfn:#x}: {len(frames) * 4 // 1024} MiB block, pfns {frames.start:#x}-{frames.stop - 1:#x}"
    if not frames:
        return f"host stage-2 idmap pfn {pfn:#x}: mapped already, retry"
    return f"host stage-2 idmap pfn {pfn:#x}"
