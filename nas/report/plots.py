"""Draw what `nas.report.data` computed: Pareto panels, hypervolume history, predictor parity.

Every function takes the computed data, writes a PNG and an SVG, and returns their paths. Figures are built
with matplotlib's object API on the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

from nas.latency.uncertainty import band_for
from nas.report.data import Front2D, Parity, ProxyRun, ReportData, SearchProgress
from nas.study.pareto import PICKS
from nas.study.read import PICK_TITLES
from nas.study.schema import QUALITY_LAW, QUALITY_PROXY

DPI = 130
PANEL_SIZE = (7.6, 5.6)  # inches per target panel

# Styles: the front stands out, everything else is faint; the three picks are distinct shapes and colours.
FRONT_COLOR = "#1f5fa8"
DOMINATED_STYLE = dict(marker="o", s=11, color="#8a8a8a", alpha=0.28, linewidths=0, zorder=1)
INFEASIBLE_STYLE = dict(marker="x", s=14, color="#d9534f", alpha=0.30, linewidths=0.8, zorder=1)
PICK_STYLE = {
    "knee": dict(marker="*", s=430, facecolor="#ffc20e", edgecolor="black", linewidths=1.0, zorder=6),
    "fastest": dict(marker="D", s=150, facecolor="none", edgecolor="#1a9641", linewidths=2.2, zorder=5),
    "best-quality": dict(marker="s", s=170, facecolor="none", edgecolor="#7b3294", linewidths=2.2, zorder=5),
}

_METRIC_AXIS = {
    "decode_tokens_per_s": "decode speed on {target} (tokens/s, one token with {ctx} in the KV cache)",
    "prefill_tokens_per_s": "prefill speed on {target} (tokens/s over a {prompt}-token prompt)",
}
_METRIC_TITLE = {"decode_tokens_per_s": "decode", "prefill_tokens_per_s": "prefill"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, format=ext, dpi=DPI)
        paths.append(path)
    return paths


def _use_log(values: Sequence[float]) -> bool:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > 8


# ----------------------------------------------------------------------------------------------- Pareto
def plot_fronts(data: ReportData, metric: str, out_dir: Path, prefix: str = "") -> list[Path]:
    """Quality against `metric` on every target, one panel per target."""
    fronts = data.fronts[metric]
    ncols = min(2, len(fronts))
    nrows = math.ceil(len(fronts) / ncols)
    fig = _figure(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(fronts):]:
        ax.set_visible(False)
    for ax, front in zip(axes, fronts):
        _draw_front(ax, front, data)
    # Two short lines: one long line is clipped on a single-panel figure (seen with a 25-character study name).
    what = {QUALITY_PROXY: "Proxy quality", QUALITY_LAW: "Predicted loss"}.get(data.quality_source, "Quality")
    fig.suptitle(f"{what} vs {_METRIC_TITLE[metric]} speed\nstudy {data.trials.name}: "
                 f"{len(data.pareto)} shapes on the Pareto set", fontsize=12, fontweight="bold")
    fig.canvas.draw()  # fixes limits and layout, so labels can be placed in display space
    fig.set_layout_engine("none")  # and keep them: labels must not move the axes after placement
    for ax, front in zip(axes, fronts):
        _place_labels(ax, front, data)
    return _save(fig, out_dir, f"{prefix}pareto_{_METRIC_TITLE[metric]}")


def _draw_picks(ax, picks, xy) -> list:
    """The picks marked on a panel; their legend handles."""
    from matplotlib.lines import Line2D

    handles = []
    for name in PICKS:
        n = picks.get(name)
        if n is not None and n in xy:
            ax.scatter([xy[n][0]], [xy[n][1]], **PICK_STYLE[name])
            style = PICK_STYLE[name]
            handles.append(Line2D([], [], linestyle="", marker=style["marker"], markersize=13 if name == "knee" else 9,
                                  markerfacecolor=style["facecolor"], markeredgecolor=style["edgecolor"],
                                  markeredgewidth=style["linewidths"], label=f"{PICK_TITLES[name]}: #{n}"))
    return handles


def _draw_front(ax, front: Front2D, data: ReportData) -> None:
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    meta = data.trials.meta
    q = data.quality_scale
    xy = {n: (x, y * q) for n, (x, y) in front.xy.items()}

    def cols(numbers):
        return [xy[n][0] for n in numbers], [xy[n][1] for n in numbers]

    handles = []
    if front.infeasible:
        ax.scatter(*cols(front.infeasible), **INFEASIBLE_STYLE)
        handles.append(Line2D([], [], linestyle="", marker="x", color=INFEASIBLE_STYLE["color"], alpha=0.6,
                              label=f"infeasible ({len(front.infeasible)})"))
    if front.dominated:
        ax.scatter(*cols(front.dominated), **DOMINATED_STYLE)
        handles.append(Line2D([], [], linestyle="", marker="o", color=DOMINATED_STYLE["color"], alpha=0.6,
                              label=f"dominated ({len(front.dominated)})"))
    rel = band_for(front.metric, meta.latency_errors.get(front.target))
    if front.front:
        fx, fy = cols(front.front)
        ax.plot(fx, fy, "-o", color=FRONT_COLOR, lw=2.0, ms=5.5, zorder=4)
        handles.append(Line2D([], [], color=FRONT_COLOR, marker="o", lw=2.0,
                              label=f"Pareto front on this panel ({len(set(zip(fx, fy)))} points)"))
        band = meta.band if data.quality_source == QUALITY_LAW else 0.0
        if band > 0:  # the quality law's band: losses inside it are ties
            order = np.argsort(fx)
            xs, ys = np.asarray(fx)[order], np.asarray(fy)[order]
            ax.fill_between(xs, ys - band, ys + band, color=FRONT_COLOR, alpha=0.12, lw=0, zorder=2)
            handles.append(Patch(color=FRONT_COLOR, alpha=0.12, label=f"loss band (+-{band:.3f} nats: ties)"))
        if rel is not None:  # the latency model's error band on the speeds it predicts
            ax.errorbar(fx, fy, xerr=[[x * rel for x in fx], [x * rel for x in fx]], fmt="none",
                        ecolor=FRONT_COLOR, alpha=0.45, capsize=2.5, lw=1.0, zorder=3.5)
            handles.append(Line2D([], [], color=FRONT_COLOR, alpha=0.45, lw=1.0,
                                  label=f"speed error band (+-{rel:.0%})"))

    handles += _draw_picks(ax, data.picks, xy)
    marks = _draw_landmarks(ax, front, data, q)
    if marks:
        handles.append(marks)
    _scale_axis(ax, "x", [v[0] for v in xy.values()])
    _scale_axis(ax, "y", [v[1] for v in xy.values()])
    if q < 0:  # a loss (lower is better) shown as itself: flip the axis so that up is still better
        ax.invert_yaxis()
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel(_METRIC_AXIS[front.metric].format(target=front.target, ctx=meta.context_len,
                                                   prompt=meta.prompt_len))
    ax.set_ylabel(data.quality_label)
    precision = meta.precision.get(front.target, "")
    error = "speed error unknown" if rel is None else f"speed +-{rel:.0%}"
    title = f"{front.target} ({precision}) — latency: {front.latency_source}; {error}"
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=11.5)  # long latency labels would be clipped
    ax.annotate("better ↗", xy=(0.985, 0.985), xycoords="axes fraction", ha="right", va="top", fontsize=9,
                color="#555555")
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8.5,
              frameon=False)
    if not xy:
        ax.text(0.5, 0.5, "no trial has figures for this target", transform=ax.transAxes, ha="center")


def _draw_landmarks(ax, front: Front2D, data: ReportData, q: float):
    """Published models at their predicted speed: a diamond at their predicted loss on a predicted-loss plot, at
    their parameter count on a parameter-count plot, or at their proxy's bits per byte on a proxy-quality plot
    when they were trained as proxies (`nas report --landmark-quality`); otherwise a dashed vertical line at
    their speed."""
    from matplotlib.lines import Line2D

    shown = [(lm, lm.speed(front.target, front.metric)) for lm in data.landmarks]
    shown = [(lm, x) for lm, x in shown if x is not None and math.isfinite(x)]
    if not shown:
        return None
    placed = False
    source = data.quality_source
    spots: list[tuple[float, float | None, list[str]]] = []  # one label per spot: models of one shape share it
    for lm, x in sorted(shown, key=lambda item: item[1]):
        value = lm.quality(source)
        y = None if value is None else value * q
        near = [s for s in spots if s[1] == y or (y is not None and s[1] is not None and abs(s[1] - y) < 1e-9)]
        near = [s for s in near if abs(s[0] - x) <= 0.15 * max(abs(x), 1e-12)]
        if near:
            near[0][2].append(lm.name)
        else:
            spots.append((x, y, [lm.name]))
    for x, y, names in spots:
        name = " / ".join(names)
        if y is not None:
            placed = True
            ax.scatter([x], [y], marker="D", s=42, facecolor="white", edgecolor="black", linewidths=1.2, zorder=6)
            ax.annotate(name, (x, y), xytext=(5, -10), textcoords="offset points", fontsize=7.5, color="#222",
                        zorder=4.5,
                        bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8))
        else:
            ax.axvline(x, color="#555555", lw=0.9, ls="--", alpha=0.7, zorder=1)
            ax.annotate(name, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -4),
                        textcoords="offset points", rotation=90, va="top", fontsize=7, color="#444")
    if source == QUALITY_LAW:
        return Line2D([], [], linestyle="", marker="D", markerfacecolor="white", markeredgecolor="black",
                      label="published models (predicted)")
    if q > 0:
        return Line2D([], [], linestyle="", marker="D", markerfacecolor="white", markeredgecolor="black",
                      label="published models (predicted speed)")
    if placed:
        return Line2D([], [], linestyle="", marker="D", markerfacecolor="white", markeredgecolor="black",
                      label="published models (proxy-trained alike)")
    return Line2D([], [], color="#555555", ls="--", label="published models' speed (untrained)")


def _scale_axis(ax, which: str, values: Sequence[float]) -> None:
    """Log scale for values spanning more than 8x, with plain tick labels (20, 50, 100, not 2x10^1)."""
    if _use_log(values):
        _plain_log(ax, which)


def _plain_log(ax, which: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


# Label offsets in points, tried in order: up-right of a front point is empty (nothing dominates it), so try
# that first, then the sides, then farther out with a leader line.
_DIRECTIONS = [(1, 1), (1, 0), (0, 1), (1, -1), (-1, 1), (-1, 0), (0, -1), (-1, -1)]
_RADII = [9, 22, 38, 56, 78]


def _place_labels(ax, front: Front2D, data: ReportData) -> None:
    """Greedy label placement: each label takes the first offset whose box hits no marker, label or edge."""
    from matplotlib.text import Text

    if not front.labelled:
        return
    renderer = ax.figure.canvas.get_renderer()
    q = data.quality_scale
    pick_of = {n: name for name, n in data.picks.items()}
    to_display = ax.transData.transform
    axes_box = ax.get_window_extent(renderer)
    obstacles = []  # display-space boxes (x0, y0, x1, y1) of front markers and placed labels
    pad = 6
    centres = []
    for n in front.front:
        px, py = to_display((front.xy[n][0], front.xy[n][1] * q))
        r = 11 if n in pick_of else 5
        obstacles.append((px - r, py - r, px + r, py + r))
        centres.append((px, py))
    # Picks first so they always get the best spots, then along the front.
    order = sorted(front.labelled, key=lambda n: (n not in pick_of, front.front.index(n)))
    for n in order:
        x, y = front.xy[n][0], front.xy[n][1] * q
        px, py = to_display((x, y))
        # Markers touching this point's own marker cannot be told apart by a leader anyway.
        others = [o for o in obstacles if not _overlap(o, (px - 8, py - 8, px + 8, py + 8))]
        rivals = [c for c in centres if math.hypot(c[0] - px, c[1] - py) > 8]
        arch = data.trials.points[n].record.arch
        ffn = "" if arch.ffn_kind == "swiglu" else f" {arch.ffn_kind}"  # the tag assumes Llama's SwiGLU
        text = f"{arch.short_tag}{ffn}  #{n}"
        weight = "bold" if n in pick_of else "normal"
        best = None
        for radius in _RADII:
            for dx, dy in _DIRECTIONS:
                ann = _annotate(ax, text, (x, y), radius * dx, radius * dy, weight, leader=True)
                ann.update_positions(renderer)
                bb = Text.get_window_extent(ann, renderer)  # the text alone, not its leader line
                box = (bb.x0 - 4, bb.y0 - 4, bb.x1 + 4, bb.y1 + 4)
                inside = (box[0] >= axes_box.x0 + pad and box[2] <= axes_box.x1 - pad
                          and box[1] >= axes_box.y0 + pad and box[3] <= axes_box.y1 - pad)
                hits = sum(_overlap(box, o) for o in obstacles)
                if radius > _RADII[0]:
                    hits += _leader_hits((px, py), box, others)
                # The label must sit nearer its own point than any other front point, or it reads as theirs.
                own = _box_distance(box, (px, py))
                hits += any(_box_distance(box, c) < own for c in rivals)
                score = hits + (0 if inside else 100)
                if best is None or score < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (score, ann, box)
                else:
                    ann.remove()
                if score == 0:
                    break
            if best[0] == 0:
                break
        if best[0] > 0 and n not in pick_of:
            best[1].remove()  # an ordinary label that cannot be placed cleanly is left out
            continue
        obstacles.append(best[2])
        # A dark ring ties the label to its point on a dense front.
        ax.scatter([x], [y], s=60, facecolor=FRONT_COLOR, edgecolor="black", linewidths=1.3, zorder=4.5)


def _box_distance(box, point) -> float:
    dx = max(box[0] - point[0], 0.0, point[0] - box[2])
    dy = max(box[1] - point[1], 0.0, point[1] - box[3])
    return math.hypot(dx, dy)


def _leader_hits(point, box, obstacles) -> int:
    """How many obstacles the leader line from `point` to the nearest edge of `box` passes through.

    A leader crossing another marker makes a label look as if it belonged to that marker.
    """
    px, py = point
    qx, qy = min(max(px, box[0]), box[2]), min(max(py, box[1]), box[3])
    hits = 0
    for o in obstacles:
        for i in range(1, 9):
            t = i / 9
            x, y = px + t * (qx - px), py + t * (qy - py)
            if o[0] <= x <= o[2] and o[1] <= y <= o[3]:
                hits += 1
                break
    return hits


def _annotate(ax, text, xy, dx, dy, weight, leader):
    ha = "left" if dx > 0 else "right" if dx < 0 else "center"
    va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
    return ax.annotate(
        text, xy=xy, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=8.2, fontweight=weight,
        zorder=7, bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="#bbbbbb", alpha=0.88, lw=0.6),
        arrowprops=dict(arrowstyle="-", color="#333333", lw=0.9, shrinkA=0, shrinkB=2) if leader else None,
    )


def _overlap(a, b) -> int:
    return int(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


# ----------------------------------------------------------------------------------------------- progress
def plot_progress(progress: SearchProgress, out_dir: Path, study: str) -> list[Path]:
    """The sampler's hypervolume after each feasible trial it found, and where the exact front was added."""
    fig = _figure(7.6, 4.4)
    ax = fig.subplots()
    if progress.numbers:
        ax.step(progress.numbers, progress.values, where="post", lw=2,
                label=f"sampler's trials (final {progress.values[-1]:.3f})")
        if progress.final_with_exact is not None:
            x = progress.numbers[-1]
            ax.plot([x], [progress.final_with_exact], marker="*", markersize=12, color="#d62728", linestyle="none",
                    label=f"+ {progress.exact_added} exact-front trials added after the search "
                          f"({progress.final_with_exact:.3f})")
        ax.legend(loc="lower right", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no feasible trial found by the sampler", transform=ax.transAxes, ha="center")
    ax.set_xlabel("trial number")
    ax.set_ylabel(progress.unit)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Search progress: hypervolume over the study's objectives — study {study}", fontsize=11)
    return _save(fig, out_dir, "hypervolume")


# ----------------------------------------------------------------------------------------------- proxy runs
def plot_proxy_runs(runs: Sequence[ProxyRun], out_dir: Path, study: str) -> list[Path]:
    """Training-loss curves of every proxy (left) and each shape's held-out score per rung (right); a shape
    stopped by successive halving ends in a cross at the rung it was stopped."""
    fig = _figure(12.0, 4.8)
    left, right = fig.subplots(1, 2)
    colors = _cycle(len(runs))
    for run, color in zip(runs, colors):
        if run.curve:
            left.plot([c[0] for c in run.curve], [c[1] for c in run.curve], lw=1.2, color=color, alpha=0.85,
                      label=f"#{run.number} {run.shape}")
        if run.rungs:
            xs, ys = [r[0] for r in run.rungs], [r[1] for r in run.rungs]
            right.plot(xs, ys, "-o", color=color, lw=1.5, ms=5)
            if run.state == "PRUNED":
                right.scatter([xs[-1]], [ys[-1]], marker="x", s=90, color=color, zorder=5)
    for ax, title, ylabel in ((left, "training loss", "training bits per byte"),
                              (right, "held-out score at each rung (x: stopped by halving)", "held-out bits per byte")):
        ax.set_xlabel("tokens trained")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.grid(True, alpha=0.3)
    if runs:
        left.legend(fontsize=7, ncol=2, loc="upper right")
    fig.suptitle(f"Proxy training — study {study}", fontsize=12, fontweight="bold")
    return _save(fig, out_dir, "proxy_training")


def _cycle(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


# ----------------------------------------------------------------------------------------------- parity
def parity_caption(phase) -> str:
    def pct(v, digits=0):
        return "n/a" if v is None else f"{v:.{digits}f}%"

    tau = "n/a" if phase.kendall_tau is None else f"{phase.kendall_tau:.2f}"
    return (f"MAPE {pct(phase.mape_pct, 1)} · within ±5% {pct(phase.within_5_pct)} · within ±10% "
            f"{pct(phase.within_10_pct)} · Kendall τ {tau} · n={len(phase.measured_ms)}")


def plot_parity(parity: Parity, out_dir: Path) -> list[Path]:
    n = len(parity.phases)
    fig = _figure(5.4 * n, 5.2)
    axes = fig.subplots(1, n, squeeze=False).ravel()
    for ax, phase in zip(axes, parity.phases):
        lo = min(min(phase.measured_ms), min(phase.predicted_ms))
        hi = max(max(phase.measured_ms), max(phase.predicted_ms))
        lo, hi = lo / 1.15, hi * 1.15
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="#9ecae1", alpha=0.35,
                        label="±10%")
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="predicted = measured")
        ax.scatter(phase.measured_ms, phase.predicted_ms, s=16, color=FRONT_COLOR, alpha=0.75, zorder=3)
        if lo > 0 and hi / lo > 8:
            _plain_log(ax, "x")
            _plain_log(ax, "y")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(f"measured {phase.phase} latency (ms)")
        ax.set_ylabel(f"predicted {phase.phase} latency (ms)")
        ax.set_title(f"{phase.phase}\n{parity_caption(phase)}", fontsize=8.8)
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(loc="upper left", fontsize=8)
    title = ("published vs predicted, each architecture left out of the fit"
             if Path(parity.path).name == "published_fit.json" else "predictor on held-out shapes")
    fig.suptitle(f"{parity.target}: {title}", fontsize=12, fontweight="bold")
    return _save(fig, out_dir, f"parity_{_safe(parity.target)}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
