"""The ownership transition table, produced by running the model (for the README).

Each row starts a fresh `Ownership`, brings one frame into the row's starting
state with earlier transitions, performs the row's transition and records what
the model itself reports: the kernel function it models, the result, and the
states on the host, hyp and guest side before and after. Nothing here states
an outcome; a test keeps the README's copy equal to this output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hyp.ownership import Ownership, PageState

PFN = 0x100
GFN = 0x80


@dataclass(frozen=True)
class Row:
    function: str
    result: str
    host: tuple[str, str]
    hyp: tuple[str, str]
    guest: tuple[str, str]


def _states(own: Ownership, guest: int | None) -> tuple[str, str, str]:
    state = None if guest is None else own.guest_state(guest, GFN)
    g = "-" if guest is None else (PageState.NOPAGE if state is None else state).name  # OWNED is 0: no `or`
    return own.host_state(PFN).name, own.hyp_state(PFN).name, g


# (setup, transition): each gets the model and the guest handle (protected, or not when shared).
Step = Callable[[Ownership, int], object]
_ROWS: list[tuple[bool, list[Step], Step]] = [
    (True, [], lambda o, g: o.host_share_hyp(PFN)),
    (True, [lambda o, g: o.host_share_hyp(PFN)], lambda o, g: o.host_unshare_hyp(PFN)),
    (True, [lambda o, g: o.host_share_hyp(PFN), lambda o, g: o.hyp_pin_shared_mem(PFN)], lambda o, g: o.host_unshare_hyp(PFN)),
    (True, [], lambda o, g: o.host_donate_hyp(PFN)),
    (True, [lambda o, g: o.host_donate_hyp(PFN)], lambda o, g: o.hyp_donate_host(PFN)),
    (True, [], lambda o, g: o.host_donate_guest(PFN, g, GFN)),
    (False, [], lambda o, g: o.host_share_guest(PFN, g, GFN)),
    (False, [lambda o, g: o.host_share_guest(PFN, g, GFN)], lambda o, g: o.host_unshare_guest(g, GFN)),
    (True, [lambda o, g: o.host_donate_guest(PFN, g, GFN)], lambda o, g: o.guest_share_host(g, GFN)),
    (True, [lambda o, g: o.host_donate_guest(PFN, g, GFN), lambda o, g: o.guest_share_host(g, GFN)], lambda o, g: o.guest_unshare_host(g, GFN)),
    (True, [lambda o, g: o.host_donate_guest(PFN, g, GFN)], lambda o, g: o.host_force_reclaim_guest_page(PFN)),
    (
        True,
        [lambda o, g: o.host_donate_guest(PFN, g, GFN), lambda o, g: o.host_force_reclaim_guest_page(PFN)],
        lambda o, g: o.host_force_reclaim_guest_page(PFN),
    ),
    (True, [lambda o, g: o.host_donate_guest(PFN, g, GFN)], lambda o, g: o.host_donate_guest(PFN, g, GFN + 1)),
    (
        True,
        [lambda o, g: o.host_donate_guest(PFN, g, GFN), lambda o, g: o.teardown_guest(g)],
        lambda o, g: o.reclaim_dying_guest_page(g, GFN),
    ),
]


def rows() -> list[Row]:
    out = []
    for protected, setup, step in _ROWS:
        own = Ownership(PFN, 1)
        guest = own.create_guest(protected=protected)
        for s in setup:
            s(own, guest)
        before = _states(own, guest)
        logged = len(own.transitions)
        result = step(own, guest)
        after = _states(own, guest)
        name = own.transitions[logged].name if len(own.transitions) > logged else "?"
        out.append(Row(name, str(result), (before[0], after[0]), (before[1], after[1]), (before[2], after[2])))
    return out


def markdown() -> str:
    def cell(pair: tuple[str, str]) -> str:
        return pair[0] if pair[0] == pair[1] else f"{pair[0]} -> {pair[1]}"

    lines = ["| transition (mem_protect.c) | result | host | hyp | guest |", "|---|---|---|---|---|"]
    for r in rows():
        lines.append(f"| `{r.function}` | {r.result} | {cell(r.host)} | {cell(r.hyp)} | {cell(r.guest)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
