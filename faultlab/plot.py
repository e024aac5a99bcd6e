"""Sweep heatmaps: `faultlab sweep ROUTINE --plot FILE` (and `faultlab kernel sweep ... --plot FILE`).

A sweep's cases vary the buffer length, where the guest page starts in a
buffer (the boundary offset, per buffer: "src+5" is the guest page 5 bytes
into src; "none" is the case without a guest page) and, for single
accesses, the other buffers' alignment. Read as pictures, one panel per
policy and one row of panels per quantity:
    outcome        how the run ended (categorical)
    host bytes written   bytes outside the guest page that differ after the run
    return value   x0 when the routine returned (signed), blank otherwise
with a red cross on every case the judge flagged (a mismatch with the
reference contract). The data is `Heatmaps` (built from the sweep's own
case runs by `collect`), so tests check the matrices, not pixels;
matplotlib is needed only to draw them (the `plot` extra).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from faultlab import reference as ref
from faultlab.sweep import Bench, Case, CaseRun, Failure, RoutineSpec, SweepSummary, run_case

FORMATS = (".svg", ".png")
METRICS = ("outcome", "written", "x0")
METRIC_TITLES = {"outcome": "outcome", "written": "host bytes written", "x0": "return value (x0)"}
MAX_TICKS = 24
# The matrix's colours (faultlab/report.py): the host carries on in greens, the host dies in reds,
# EL2 gives up in dark red; anything else (livelock, budget, model error...) in purple.
OUTCOME_COLOURS = {
    "returned": "#2ca02c", "fixed-up": "#98df8a", "signal": "#bcbd22", "task-killed": "#ff7f0e",
    "host-oops": "#d62728", "host-bug": "#e377c2", "hyp-panic": "#7f0000", "livelock": "#1f77b4",
}
OTHER_COLOUR = "#9467bd"


class PlotError(ValueError):
    """A plot that cannot be made (no matplotlib, an unknown file type): one line at the CLI, exit 2."""


@dataclass(frozen=True)
class Point:
    """One case of a sweep, as the heatmaps show it."""

    policy: str
    sizes: tuple[int, ...]
    side: str | None
    boundary: int
    align: int
    outcome: str
    written: int | None  # host bytes changed (None when the case was not run: unjudged)
    x0: int | None  # signed x0 when the routine returned
    mismatch: bool

    def value(self, metric: str) -> float | str | None:
        return {"outcome": self.outcome, "written": self.written, "x0": self.x0}[metric]


def _signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def host_bytes_written(run: CaseRun) -> int:
    """Bytes of the windows that differ after the run, outside the guest's page (scrubbed or not, it is not the host's write)."""
    total = 0
    for name, after in run.memory.items():
        w = run.windows[name]
        g0, g1 = (w.guest[0] - w.va, w.guest[1] - w.va) if w.guest else (0, 0)
        total += sum(1 for i, (a, b) in enumerate(zip(after, w.data)) if a != b and not g0 <= i < g1)
    return total


def point_of(run: CaseRun) -> Point:
    c = run.case
    x0 = _signed(run.regs["x0"]) if run.outcome == ref.RETURNED and "x0" in run.regs else None
    return Point(c.policy, c.sizes, c.side, c.boundary, c.align, str(run.outcome), host_bytes_written(run), x0, bool(run.problems))


def collect(spec: RoutineSpec, todo: Sequence[Case], bench: Bench, progress: Callable[[int, int], None] | None = None) -> tuple[SweepSummary, list[Point]]:
    """Run the cases in this process, keeping each one's point, and summarise them as `run_sweep` does.

    Same accounting as the sweep engine (tests/test_plot.py compares the two
    summaries): a policy without reference traits is unjudged and not run; a
    model error is the outcome "model-error", a failure.
    """
    summary = SweepSummary(spec.name)
    points: list[Point] = []
    started = time.monotonic()
    for i, case in enumerate(todo, 1):
        summary.cases += 1
        if ref.reference_traits(case.policy) is None:
            summary.unjudged += 1
            continue
        try:
            run = run_case(bench, spec, case)
            point, problems = point_of(run), run.problems
        except ref.ModelError as exc:
            problems = (f"model error: {exc}",)
            point = Point(case.policy, case.sizes, case.side, case.boundary, case.align, "model-error", None, None, True)
        summary.outcomes[point.outcome] = summary.outcomes.get(point.outcome, 0) + 1
        if problems:
            summary.failures.append(Failure(case, tuple(problems)))
        points.append(point)
        if progress is not None and (i % 64 == 0 or i == len(todo)):
            progress(i, len(todo))
    summary.seconds = time.monotonic() - started
    return summary, points


# ---------------------------------------------------------------- the matrices


def _length_label(sizes: tuple[int, ...]) -> str:
    return str(sizes[0]) if len(sizes) == 1 else ",".join(map(str, sizes))


@dataclass
class Heatmaps:
    """The data of the picture: for each (metric, policy) a matrix rows x cols (None: no case there)."""

    routine: str
    policies: list[str]
    rows: list[tuple[int, ...]]  # sizes, ascending
    cols: list[tuple]  # (side or "", boundary, align or None), "none" first
    cells: dict[tuple[str, str], list[list]] = field(default_factory=dict)  # (metric, policy) -> matrix
    mismatches: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # policy -> (row, col)
    outcomes: list[str] = field(default_factory=list)  # the outcome categories, in colour order

    def row_labels(self) -> list[str]:
        return [_length_label(s) for s in self.rows]

    def col_labels(self) -> list[str]:
        out = []
        for side, boundary, align in self.cols:
            text = "none" if not side else f"{side}+{boundary}"
            out.append(text if align is None else f"{text}/a{align}")
        return out


def heatmaps(routine: str, points: Sequence[Point], policies: Sequence[str] | None = None) -> Heatmaps:
    """Lay the points out: rows by length, columns by (buffer holding the guest page, boundary offset),
    with the alignment as part of the column where the plan varied it for one boundary."""
    pols = list(policies) if policies is not None else sorted({p.policy for p in points})
    keyed = {}
    with_align = False
    for p in points:
        k = (p.policy, p.sizes, p.side, p.boundary)
        if k in keyed and keyed[k] != p.align:
            with_align = True
        keyed[k] = p.align

    def col(p: Point) -> tuple:
        return (p.side or "", p.boundary if p.side else 0, p.align if with_align else None)

    rows = sorted({p.sizes for p in points})
    cols = sorted({col(p) for p in points}, key=lambda c: (c[0] != "", c[0], c[1], -1 if c[2] is None else c[2]))
    r_at = {s: i for i, s in enumerate(rows)}
    c_at = {c: i for i, c in enumerate(cols)}
    h = Heatmaps(routine, pols, rows, cols, outcomes=sorted({p.outcome for p in points}))
    for metric in METRICS:
        for pol in pols:
            h.cells[(metric, pol)] = [[None] * len(cols) for _ in rows]
    for pol in pols:
        h.mismatches[pol] = []
    for p in points:
        if p.policy not in h.mismatches:
            continue
        r, c = r_at[p.sizes], c_at[col(p)]
        for metric in METRICS:
            h.cells[(metric, p.policy)][r][c] = p.value(metric)
        if p.mismatch:
            h.mismatches[p.policy].append((r, c))
    return h


def numeric(h: Heatmaps, metric: str, policy: str) -> list[list[float]]:
    """A matrix as drawn: outcomes as their index in `h.outcomes`, missing cells as NaN."""
    code = {o: i for i, o in enumerate(h.outcomes)}
    out = []
    for row in h.cells[(metric, policy)]:
        out.append([math.nan if v is None else float(code[v] if metric == "outcome" else v) for v in row])
    return out


# ---------------------------------------------------------------- drawing


def _matplotlib():
    """(matplotlib, Figure, ListedColormap), or a PlotError saying how to install it."""
    try:
        import matplotlib  # the package itself first: its submodules may be cached without it
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("--plot needs matplotlib: pip install 'pkvm-faultlab[plot]'") from None
    return matplotlib, Figure, ListedColormap


def _ticks(n: int) -> list[int]:
    step = max(1, math.ceil(n / MAX_TICKS))
    return list(range(0, n, step))


def draw(h: Heatmaps, title: str = ""):
    """A matplotlib Figure (no pyplot, no global backend state): rows of panels per metric, one column per policy.

    Each panel's image has gid "METRIC:POLICY" and holds `numeric(h, METRIC, POLICY)`.
    """
    _, Figure, ListedColormap = _matplotlib()
    npol = max(len(h.policies), 1)
    width = min(4 + 3.2 * npol, 40)
    height = 3 * (1.2 + min(len(h.rows), 40) * 0.12) + 1
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(len(METRICS), npol, squeeze=False)
    outcome_map = ListedColormap([OUTCOME_COLOURS.get(o, OTHER_COLOUR) for o in h.outcomes] or [OTHER_COLOUR])
    for mi, metric in enumerate(METRICS):
        values = [v for pol in h.policies for row in numeric(h, metric, pol) for v in row if not math.isnan(v)]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        for pi, pol in enumerate(h.policies):
            ax = axes[mi][pi]
            data = numeric(h, metric, pol)
            if metric == "outcome":
                img = ax.imshow(data, aspect="auto", interpolation="nearest", cmap=outcome_map, vmin=-0.5, vmax=max(len(h.outcomes), 1) - 0.5)
            else:
                img = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1)
            img.set_gid(f"{metric}:{pol}")
            for r, c in h.mismatches.get(pol, []):
                ax.plot([c], [r], marker="x", color="red", markersize=7, markeredgewidth=2)
            ax.set_title(f"{pol}: {METRIC_TITLES[metric]}", fontsize=8)
            xt, yt = _ticks(len(h.cols)), _ticks(len(h.rows))
            ax.set_xticks(xt, [h.col_labels()[i] for i in xt], rotation=90, fontsize=6)
            ax.set_yticks(yt, [h.row_labels()[i] for i in yt], fontsize=6)
            if pi == 0:
                ax.set_ylabel("length", fontsize=7)
            if mi == len(METRICS) - 1:
                ax.set_xlabel("guest page at (buffer+offset)", fontsize=7)
        if metric == "outcome":
            bar = fig.colorbar(img, ax=list(axes[mi]), ticks=list(range(len(h.outcomes))))
            bar.ax.set_yticklabels(h.outcomes, fontsize=7)
        else:
            fig.colorbar(img, ax=list(axes[mi]))
    fig.suptitle(title or f"{h.routine}: sweep heatmaps (red x: differs from the reference)", fontsize=10)
    return fig


def check_target(path: str | Path) -> Path:
    """The output file, checked before a sweep runs: .svg or .png, and matplotlib importable."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise PlotError(f"--plot {path}: the file name must end in {' or '.join(FORMATS)}")
    _matplotlib()
    return p


def save(h: Heatmaps, path: str | Path, title: str = "") -> Path:
    matplotlib = _matplotlib()[0]
    p = check_target(path)
    fig = draw(h, title)
    svg = p.suffix.lower() == ".svg"
    try:
        # SVG text as text (small files) and a fixed id salt and no date (the same sweep, the same file)
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "faultlab"}):
            fig.savefig(p, format=p.suffix.lower()[1:], dpi=90, metadata={"Date": None} if svg else {"Software": None})
    except OSError as exc:
        raise PlotError(f"--plot {path}: {exc.strerror or exc}") from None
    return p
