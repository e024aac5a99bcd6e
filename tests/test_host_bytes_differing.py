"""faultlab.sweep.hosts.host_bytes_differing: the differentials' byte comparison, slice by slice,
against the plain per-byte definition, on random windows with and without a guest page."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from faultlab.reference.model import Window
from faultlab.sweep.hosts import host_bytes_differing
from faultlab.sweep.spec import Case, CaseRun

VA = 0xFFFF_0000_1000_0F00


def by_definition(w: Window, a: bytes, b: bytes, reclaimed: bool) -> list[int]:
    guest = range(w.guest[0] - w.va, w.guest[1] - w.va) if w.guest and not reclaimed else range(0)
    return [i for i in range(len(a)) if a[i] != b[i] and i not in guest]


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(0, 700),
    data=st.data(),
    guest=st.one_of(st.none(), st.tuples(st.integers(-100, 800), st.integers(-100, 800))),
    reclaimed=st.booleans(),
)
def test_matches_the_per_byte_definition(size, data, guest, reclaimed):
    before = bytes(data.draw(st.binary(min_size=size, max_size=size)))
    after = bytearray(before)
    for i in data.draw(st.lists(st.integers(0, max(size - 1, 0)), max_size=20)) if size else ():
        after[i] ^= data.draw(st.integers(1, 255))
    g = None if guest is None else (VA + min(guest), VA + max(guest))
    w = Window("dst", VA, before, g)
    run = CaseRun(Case("r", "inject", (size,), "dst", 0, 0, 0), (), "returned", {}, {"dst": before}, {"dst": w},
                  frozenset({"dst"}) if reclaimed else frozenset())
    assert host_bytes_differing(run, "dst", bytes(after)) == by_definition(w, before, bytes(after), reclaimed)
