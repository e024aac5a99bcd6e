"""Reference models of the guest_asm routines: what each one promises, in plain Python.

Each model answers, for one case (the routine's arguments, the memory
around its buffers, where the guest-owned page sits, the policy): how the
run must end, the registers it must return, every byte the host may see
afterwards, and whether the guest loses its page. Nothing here imports the
emulator or the code under test; the models are written from the kernel's
documented contracts:

* raw_copy_{from,to}_user (include/linux/uaccess.h): return the bytes not
  copied; the reported prefix is copied; "nothing copied" only when nothing
  could be; arm64's fixup retries a single byte to guarantee that.
* clear_user: bytes not cleared. get_user/put_user: -EFAULT and a zeroed
  value. copy_*_kernel_nofault (mm/maccess.c): 0 or -EFAULT, chunks of
  8/4/2/1 bytes. strncpy_from_user / strnlen_user (lib/): length, count,
  count + 1, -EFAULT / 0; a word that faults is retried byte by byte.
* load_unaligned_zeropad (arm64 extable.c): the bytes before the fault,
  then zeros; a fault on the first byte's aligned word is a fault in the
  fault handler. Its users (fs/namei.c, fs/dcache.c, strscpy) read whole
  words, so their access pattern is part of the contract and is modelled.
* The EL0 VMM (guest_asm/vmm.S): skip and count the accesses that fault.

Copies promise a range rather than one value (the kernel allows reporting
fewer bytes copied than were), so their models check ranges; everything
else is exact. What a protected access does is the policy's business
(`fate`): EL2 panics, reclaims (the page comes back scrubbed and the access
retries) or injects an abort, which the host fixes up, oopses on, reclaims
on (inject-reclaim, kernel accesses without a fixup) or turns into a
signal (EL0). An RME GPF injected by EL3 has a fault code the host does not
know: fatal at EL1 and SIGKILL at EL0.

Stores that straddle into the guest page: whether the bytes before the
boundary are written before the fault is IMPLEMENTATION DEFINED for a
misaligned access (docs/facts.md). The machine, like QEMU 7.2, writes
nothing for a single-register store and writes the first register of a
pair whose first register lies wholly before the boundary (a pair is two
accesses); the models accept both images (the "alt" image of RefMemory),
so they stay right on hardware that does write the first bytes.

This module is the one to import (`from faultlab import reference as ref`):
it gathers the models, one module per family, and names them by routine
in `REFERENCES`:
    policy             PolicyTraits, Access, Fate, fate: the policy fate table
    model              RefMemory, Window, RefCase, Expected: what every model shares
    copy               raw_copy_{from,to}_user, clear_user, gup's memcpy
    access             get_user, put_user, copy_*_kernel_nofault, futex
    strings            strncpy_from_user, strnlen_user, strscpy
    names              load_unaligned_zeropad, full_name_hash, hashlen_string, dentry_name_cmp
    vmm                the EL0 VMM's vmm_main and vmm_write
"""
from __future__ import annotations

from typing import Callable

from faultlab.reference.access import copy_from_kernel_nofault, copy_to_kernel_nofault, futex_atomic_add, get_user, put_user
from faultlab.reference.copy import clear_user, copy_from_user, copy_to_user, gup_kernel_copy, progress_check
from faultlab.reference.model import (
    E2BIG,
    EAGAIN,
    EFAULT,
    MASK64,
    PAGE_SIZE,
    SIGSEGV,
    AccessFault,
    Expected,
    ImageFn,
    ModelError,
    RefCase,
    RefMemory,
    RegCheck,
    RunEnds,
    Window,
    neg,
)
from faultlab.reference.names import (
    GOLDEN_RATIO_64,
    dentry_name_cmp,
    fold_hash,
    full_name_hash,
    hash_mix,
    hashlen_string,
    load_unaligned_zeropad,
    name_hash,
)
from faultlab.reference.policy import (
    HOST_OOPS, HYP_PANIC, LIVELOCK, NEWEST_HOST, REFERENCE_TRAITS, RETURNED, TASK_KILLED, Access, El2Action, Fate, HostTraits, PolicyTraits,
    fate, reference_traits,
)
from faultlab.reference.strings import strncpy_from_user, strnlen_user, strscpy
from faultlab.reference.vmm import vmm_main, vmm_pattern, vmm_write

__all__ = [
    "E2BIG", "EAGAIN", "EFAULT", "GOLDEN_RATIO_64", "HOST_OOPS", "HYP_PANIC", "MASK64", "PAGE_SIZE", "REFERENCES",
    "RETURNED", "SIGSEGV", "TASK_KILLED", "Access", "AccessFault", "Expected", "Fate", "ImageFn", "ModelError",
    "PolicyTraits", "HostTraits", "LIVELOCK", "NEWEST_HOST", "REFERENCE_TRAITS", "El2Action", "reference_traits", "RefCase", "RefMemory", "RegCheck", "RunEnds", "Window", "clear_user", "copy_from_kernel_nofault",
    "copy_from_user", "copy_to_kernel_nofault", "copy_to_user", "dentry_name_cmp", "fate", "fold_hash",
    "full_name_hash", "futex_atomic_add", "get_user", "gup_kernel_copy", "hash_mix", "hashlen_string",
    "load_unaligned_zeropad", "name_hash", "neg", "progress_check", "put_user", "strncpy_from_user", "strnlen_user",
    "strscpy", "vmm_main", "vmm_pattern", "vmm_write",
]

# =========================================================================== registry

REFERENCES: dict[str, Callable[[RefCase], Expected]] = {
    "load_unaligned_zeropad": load_unaligned_zeropad,
    "full_name_hash": full_name_hash,
    "hashlen_string": hashlen_string,
    "dentry_name_cmp": dentry_name_cmp,
    "strscpy": strscpy,
    "__arch_copy_from_user": copy_from_user,
    "__arch_copy_to_user": copy_to_user,
    "__arch_clear_user": clear_user,
    **{f"get_user_{n}": get_user(n) for n in (1, 2, 4, 8)},
    **{f"put_user_{n}": put_user(n) for n in (1, 2, 4, 8)},
    "copy_from_kernel_nofault": copy_from_kernel_nofault,
    "copy_to_kernel_nofault": copy_to_kernel_nofault,
    "strncpy_from_user": strncpy_from_user,
    "strnlen_user": strnlen_user,
    "futex_atomic_add_lse": futex_atomic_add,
    "futex_atomic_add_llsc": futex_atomic_add,
    "gup_kernel_copy": gup_kernel_copy,
    "vmm_main": vmm_main,
    "vmm_write": vmm_write,
}
