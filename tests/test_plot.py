"""Sweep heatmaps (faultlab/plot.py, `faultlab sweep --plot`): the data drawn is the sweep's, case by case.

Pixels are not compared: each panel's image array (gid "METRIC:POLICY") is
read back from the matplotlib figure and checked against cases run here
with the sweep engine's own `run_case`, laid out by the documented rule
(rows: lengths ascending; columns: "none", then per buffer the boundary
offsets ascending).
"""
from __future__ import annotations

import math
import sys

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is in the test extra: pip install -e '.[test]'")

from faultlab import plot
from faultlab.cli.main import main
from faultlab.sweep import Bench, cases, routine, run_case, run_sweep

from cached_kernels import vmlinux

POLICIES = ["inject", "reclaim", "panic"]


def _written(run) -> int:
    """Host bytes changed by the run, counted here (not by faultlab.plot): outside the guest page."""
    n = 0
    for name, after in run.memory.items():
        w = run.windows[name]
        for i, (a, b) in enumerate(zip(after, w.data)):
            in_guest = w.guest is not None and w.guest[0] <= w.va + i < w.guest[1]
            n += a != b and not in_guest
    return n


def _images(fig) -> dict[str, list[list[float]]]:
    """Each panel's image data as drawn (masked cells as NaN), by gid."""
    import numpy as np

    return {
        img.get_gid(): np.ma.filled(np.ma.asarray(img.get_array(), dtype=float), np.nan).tolist()
        for ax in fig.axes for img in ax.get_images() if img.get_gid()
    }


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("name", ["__arch_copy_from_user", "full_name_hash", "get_user_4"])
def test_plotted_matrices_are_the_sweeps_cases(name):
    spec = routine(name)
    todo = list(cases(spec, False, POLICIES))
    summary, points = plot.collect(spec, todo, Bench())
    h = plot.heatmaps(name, points, POLICIES)
    fig = plot.draw(h)
    images = _images(fig)
    assert set(images) == {f"{m}:{p}" for m in plot.METRICS for p in POLICIES}

    # the layout, by the documented rule, from the cases themselves
    rows = sorted({c.sizes for c in todo})
    varied = {}
    for c in todo:
        varied.setdefault((c.policy, c.sizes, c.side, c.boundary), set()).add(c.align)
    by_align = any(len(a) > 1 for a in varied.values())
    cols = sorted({(c.side or "", c.boundary if c.side else 0, c.align if by_align else -1) for c in todo}, key=lambda k: (k[0] != "", k))
    assert len(images[f"outcome:{POLICIES[0]}"]) == len(rows) and len(images[f"outcome:{POLICIES[0]}"][0]) == len(cols)

    bench, seen = Bench(), set()
    for c in todo:
        run = run_case(bench, spec, c)  # the case again, in a bench of its own
        r, k = rows.index(c.sizes), cols.index((c.side or "", c.boundary if c.side else 0, c.align if by_align else -1))
        seen.add((c.policy, r, k))
        assert h.outcomes[int(images[f"outcome:{c.policy}"][r][k])] == str(run.outcome), c
        assert images[f"written:{c.policy}"][r][k] == _written(run), c
        x0 = run.regs["x0"] if str(run.outcome) == "returned" else None
        want = math.nan if x0 is None else float(x0 - (1 << 64) if x0 >> 63 else x0)
        assert _same(images[f"x0:{c.policy}"][r][k], want), c
        assert ((r, k) in h.mismatches[c.policy]) == bool(run.problems), c
    # cells with no case are blank
    for p in POLICIES:
        for r in range(len(rows)):
            for k in range(len(cols)):
                if (p, r, k) not in seen:
                    assert math.isnan(images[f"outcome:{p}"][r][k])
    # and the summary is the sweep engine's
    engine = run_sweep(name, POLICIES).as_json()
    mine = summary.as_json()
    engine.pop("seconds"), mine.pop("seconds")
    assert mine == engine


def test_mismatches_are_marked_where_they_are():
    pts = [
        plot.Point("inject", (4,), "src", 1, 0, "returned", 3, 0, False),
        plot.Point("inject", (4,), "src", 2, 0, "host-oops", 1, None, True),
        plot.Point("inject", (8,), None, 0, 0, "returned", 8, 0, False),
        plot.Point("reclaim", (8,), "dst", 0, 0, "returned", 8, 0, True),
    ]
    h = plot.heatmaps("x", pts, ["inject", "reclaim"])
    assert h.col_labels() == ["none", "dst+0", "src+1", "src+2"] and h.row_labels() == ["4", "8"]
    assert h.mismatches == {"inject": [(0, 3)], "reclaim": [(1, 1)]}
    fig = plot.draw(h)
    marks = {}
    for ax in fig.axes:
        for img in ax.get_images():
            metric, policy = img.get_gid().split(":")
            crosses = [(int(line.get_ydata()[0]), int(line.get_xdata()[0])) for line in ax.get_lines() if line.get_marker() == "x"]
            marks.setdefault(policy, set()).update(crosses)
    assert marks == {"inject": {(0, 3)}, "reclaim": {(1, 1)}}


def test_cli_writes_svg_and_png(tmp_path, capsys):
    for ext, magic in ((".svg", b"<?xml"), (".png", b"\x89PNG")):
        out = tmp_path / f"h{ext}"
        assert main(["sweep", "__arch_copy_to_user", "--lengths", "0-6", "--policy", "inject", "--policy", "reclaim", "--plot", str(out)]) == 0
        assert out.read_bytes().startswith(magic) and out.stat().st_size > 2000
        text = capsys.readouterr().out
        assert f"plot: {out}" in text and "0 failures" in text
    assert b"<svg" in (tmp_path / "h.svg").read_bytes()


@pytest.mark.parametrize("argv, words", [
    (["sweep", "full_name_hash", "--plot", "h.gif"], "must end in .svg or .png"),
    (["sweep", "all", "--plot", "h.svg"], "takes one routine"),
    (["sweep", "full_name_hash", "--plot", "h.svg", "--jobs", "2"], "leave out --jobs"),
    (["sweep", "strscpy", "--lengths", "0-4"], "sized by more than one number"),
    (["sweep", "full_name_hash", "--lengths", "9-4"], "the range is empty"),
])
def test_bad_plot_requests_are_one_line(tmp_path, capsys, argv, words, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_without_matplotlib_the_error_says_how(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["sweep", "full_name_hash", "--plot", str(tmp_path / "h.svg")]) == 2
    err = capsys.readouterr().err
    assert "needs matplotlib: pip install 'pkvm-faultlab[plot]'" in err and err.count("\n") == 1


@pytest.mark.kernel
def test_kernel_sweep_plot(tmp_path, capsys):
    from faultlab.sweep.kernel import KernelBench, kernel_spec, plan_cases, sweep_kernel

    vm = vmlinux("7.2")
    out = tmp_path / "k.png"
    assert main(["kernel", "sweep", "sid", "__arch_copy_from_user", "--lengths", "0-3", "--policy", "inject", "--plot", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    from faultlab.sweep.kernel import kernel_routine, lengths_plan

    plan = lengths_plan(kernel_routine("__arch_copy_from_user"), range(0, 4))
    spec = kernel_spec(vm, "__arch_copy_from_user", plan)
    summary, points = plot.collect(spec, plan_cases(spec, True, ["inject"]), KernelBench(vm))
    engine = sweep_kernel(vm, "__arch_copy_from_user", ["inject"], plan=plan).as_json()
    mine = summary.as_json()
    engine.pop("seconds"), mine.pop("seconds")
    assert mine == engine and len(points) == summary.cases
