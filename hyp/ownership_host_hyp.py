"""Host <-> hyp page ownership: sharing, pinning and donating frames between the host and EL2.

mem_protect.c's __pkvm_host_share_hyp(), __pkvm_host_unshare_hyp(),
hyp_pin_shared_mem(), hyp_unpin_shared_mem(), __pkvm_host_donate_hyp() and
__pkvm_hyp_donate_host(): the transitions that never involve a guest. A mixin
of :class:`hyp.ownership.Ownership`, the one class callers use; one checked
method per kernel function, as there.
"""
from __future__ import annotations

from abi.linux import Errno
from hyp.ownership_effects import NOPAGE, OWNED, SHARED_BORROWED, SHARED_OWNED, OwnershipEffects, pfn_range, the_pfn
from hyp.page_checks import check_page_states, check_pfns, is_int, pfn_range_is_valid
from hyp.page_state import HYP, MAX_HYP_PIN_COUNT, Annotation, HypBug
from hyp.transition_log import transition


class HostHypTransitions(OwnershipEffects):
    """The host <-> hyp transitions."""

    @transition("__pkvm_host_share_hyp", the_pfn)
    def host_share_hyp(self, pfn: int) -> Errno:
        """host OWNED -> SHARED_OWNED, hyp NOPAGE -> SHARED_BORROWED (mem_protect.c: __pkvm_host_share_hyp()).

        Not memory -> -EPERM (check_range_allowed_memory()); wrong host state,
        then wrong hyp state -> -EPERM.
        """
        if ret := check_page_states(self._frames, pfn, 1, host=OWNED, hyp=NOPAGE):
            return ret
        self._set_host(pfn, SHARED_OWNED)
        self._frames[pfn].hyp = SHARED_BORROWED
        return Errno.SUCCESS

    @transition("__pkvm_host_unshare_hyp", the_pfn)
    def host_unshare_hyp(self, pfn: int) -> Errno:
        """Reverse of host_share_hyp (mem_protect.c: __pkvm_host_unshare_hyp()).

        Checks host SHARED_OWNED, hyp SHARED_BORROWED (-EPERM), then the pin
        count (__hyp_check_page_count_range(): -EBUSY while hyp holds pins).
        """
        if ret := check_page_states(self._frames, pfn, 1, host=SHARED_OWNED, hyp=SHARED_BORROWED):
            return ret
        if self._frames[pfn].hyp_pin_count:
            return Errno.EBUSY
        self._frames[pfn].hyp = NOPAGE
        self._set_host(pfn, OWNED)
        return Errno.SUCCESS

    @transition("hyp_pin_shared_mem", pfn_range)
    def hyp_pin_shared_mem(self, pfn: int, nr: int = 1) -> Errno:
        """Take a hyp reference on frames the host shares with hyp (mem_protect.c: hyp_pin_shared_mem()).

        Every frame must be host SHARED_OWNED and hyp SHARED_BORROWED: -EPERM,
        or -EINVAL for a range that runs out of memory.
        """
        if ret := check_page_states(self._frames, pfn, nr, host=SHARED_OWNED, hyp=SHARED_BORROWED):
            return ret
        if any(self._frames[p].hyp_pin_count >= MAX_HYP_PIN_COUNT for p in range(pfn, pfn + nr)):
            raise HypBug(f"hyp_pin_shared_mem: refcount of a frame in {pfn:#x}+{nr} at USHRT_MAX")
        for p in range(pfn, pfn + nr):
            self._frames[p].hyp_pin_count += 1
        return Errno.SUCCESS

    @transition("hyp_unpin_shared_mem", pfn_range)
    def hyp_unpin_shared_mem(self, pfn: int, nr: int = 1) -> Errno:
        """Drop a hyp reference (mem_protect.c: hyp_unpin_shared_mem()).

        pKVM checks no page state here: it decrements each frame's refcount, and
        hyp_page_ref_dec() BUG()s on a zero refcount (raised as HypBug). Model
        choice: a range that is not well formed or not memory (pKVM would read a
        stray hyp_page) is refused like hyp_pin_shared_mem refuses it.
        """
        if ret := check_pfns(self._frames, pfn, nr, pa_check=False):
            return ret
        if any(self._frames.peek(p).hyp_pin_count == 0 for p in range(pfn, pfn + nr)):
            raise HypBug(f"hyp_unpin_shared_mem: refcount 0 in {pfn:#x}+{nr} (hyp_page_ref_dec BUG_ON)")
        for p in range(pfn, pfn + nr):
            self._frames[p].hyp_pin_count -= 1
        return Errno.SUCCESS

    @transition("__pkvm_host_donate_hyp", pfn_range)
    def host_donate_hyp(self, pfn: int, nr: int = 1) -> Errno:
        """host OWNED -> NOPAGE (annotated hyp), hyp NOPAGE -> OWNED (mem_protect.c: __pkvm_host_donate_hyp()).

        pfn_range_is_valid() -> -EINVAL; memory check -> -EPERM / -EINVAL;
        any host frame not OWNED, then any hyp frame not NOPAGE -> -EPERM.
        """
        if ret := check_page_states(self._frames, pfn, nr, host=OWNED, hyp=NOPAGE, pa_check=True):
            return ret
        for p in range(pfn, pfn + nr):
            self._frames[p].hyp = OWNED
            self._set_host(p, NOPAGE, Annotation(HYP))
        return Errno.SUCCESS

    @transition("__pkvm_hyp_donate_host", pfn_range)
    def hyp_donate_host(self, pfn: int, nr: int = 1) -> Errno:
        """hyp OWNED -> NOPAGE, host NOPAGE -> OWNED (mem_protect.c: __pkvm_hyp_donate_host()).

        The hyp check comes first; pKVM does no memory check here (only EL2
        calls it), the model adds pfn_range_is_valid() -> -EINVAL. No scrub:
        pKVM leaves clearing to the caller. The -EBUSY pin check of pKVM cannot
        fire in this model (pins need a shared frame).
        """
        if not (is_int(pfn) and is_int(nr)) or nr < 1 or not pfn_range_is_valid(pfn, nr):
            return Errno.EINVAL
        pfns = range(pfn, pfn + nr)
        # Outside memory the hyp state reads as NOPAGE, so the hyp check fails first.
        if any(self.hyp_state(p) is not OWNED for p in pfns):
            return Errno.EPERM
        if any(self._frames[p].host is not NOPAGE for p in pfns):
            return Errno.EPERM
        for p in pfns:
            self._frames[p].hyp = NOPAGE
            self._set_host(p, OWNED)
        return Errno.SUCCESS
