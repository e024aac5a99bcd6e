"""The sweep judge's window comparison (faultlab/sweep/judge.py `_compare`) against its per-byte definition.

A byte of a window is wrong when it is neither the model's byte nor the alternative byte (where a
faulting store may or may not have written). The judge computes that with whole-window integer
masks; this compares it with the definition, byte by byte, on windows with differences anywhere,
including bytes that differ from one image but match the other.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from faultlab import reference as ref
from faultlab.sweep.judge import _compare
from faultlab.sweep.spec import MAX_SHOWN

VA = 0x4000_0000


@st.composite
def images(draw):
    n = draw(st.integers(1, 96))
    want = draw(st.binary(min_size=n, max_size=n))
    alt = bytearray(want)
    got = bytearray(want)
    for i in draw(st.lists(st.integers(0, n - 1), max_size=n)):
        alt[i] = draw(st.integers(0, 255))
    for i in draw(st.lists(st.integers(0, n - 1), max_size=n)):
        got[i] = draw(st.sampled_from([draw(st.integers(0, 255)), alt[i], want[i]]))
    return bytes(got), want, bytes(alt)


@settings(max_examples=300, deadline=None)
@given(images())
def test_compare_reports_exactly_the_bytes_that_neither_image_explains(case):
    got, want, alt = case
    wrong = [i for i in range(len(got)) if got[i] != want[i] and got[i] != alt[i]]
    problems = _compare("dst", ref.Window("dst", VA, want, None), got, want, alt)
    if not wrong:
        assert problems == []
        return
    assert len(problems) == 1
    assert problems[0].startswith(f"dst: {len(wrong)} wrong bytes: ")
    shown = [f"{VA + i:#x}: {got[i]:#04x}" for i in wrong[:MAX_SHOWN]]
    assert all(text in problems[0] for text in shown)
    assert problems[0].count("(want ") == len(shown)
