"""Pareto sets and hypervolume: the one implementation every layer above uses.

Points are [n, k] arrays of objective values oriented so that smaller is better on every axis
(`to_minimisation` flips maximised columns). `pareto_mask` is exact and O(n log n) for k <= 2 (sort and
sweep) and a cull for k > 2; `hypervolume` is exact (sweep for k <= 2, slicing for k > 2); `Normaliser`
maps a front into [0, 1] per axis so hypervolumes of different runs compare; `knee_index` picks the knee of
a 2-D front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


def to_minimisation(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """[n, k] values with maximised columns negated, so smaller is better everywhere."""
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(values, dtype=np.float64) * sign


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `points` ([n, k], all minimised). Rows equal to a
    non-dominated row are kept too (weak ties are not dominated)."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if n == 0:
        return np.zeros(0, dtype=bool)
    uniq, inverse = np.unique(points, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    keep = np.zeros(len(uniq), dtype=bool)
    if uniq.shape[1] == 1:
        keep[np.argmin(uniq[:, 0])] = True
    elif uniq.shape[1] == 2:
        # np.unique sorted rows by (x, y): a row is dominated iff an earlier row has y <= its y.
        prev_min = np.minimum.accumulate(np.concatenate([[np.inf], uniq[:-1, 1]]))
        keep = uniq[:, 1] < prev_min
    else:
        # Cull: the row with the smallest sum is non-dominated; drop everything it dominates; repeat.
        order = np.argsort(uniq.sum(axis=1), kind="stable")
        alive = uniq[order]
        idx = order
        while len(alive):
            p = alive[0]
            keep[idx[0]] = True
            dominated = np.all(alive >= p, axis=1)  # rows are unique, so >= everywhere means dominated
            alive, idx = alive[~dominated], idx[~dominated]
    return keep[inverse]


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by `points` ([n, k], minimised) and bounded by `reference`.
    Sweep for k <= 2, slicing on the last axis for k > 2 (fine for fronts of a few hundred points)."""
    ref = np.asarray(reference, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = np.unique(pts[pareto_mask(pts)], axis=0)
    return _hv(pts, ref)


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    k = len(ref)
    if k == 1:
        return float(ref[0] - pts[:, 0].min())
    if k == 2:
        order = np.argsort(pts[:, 0])
        x, y = pts[order, 0], pts[order, 1]
        y_best = np.minimum.accumulate(y)
        widths = np.diff(np.concatenate([x, [ref[0]]]))
        return float(np.sum(widths * (ref[1] - y_best)))
    order = np.argsort(pts[:, -1])
    pts = pts[order]
    total = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        depth = upper - pts[i, -1]
        if depth > 0:
            sub = pts[: i + 1, :-1]
            sub = sub[pareto_mask(sub)]
            total += depth * _hv(np.unique(sub, axis=0), ref[:-1])
    return float(total)


HV_REFERENCE = 1.1  # in normalised units: 10% beyond the worst feasible value, so extreme points count


@dataclass(frozen=True)
class Normaliser:
    """Maps minimised objective values to [0, 1] per axis: 0 = best, 1 = worst value over a reference set
    (the enumerated feasible space when the exact front is known). Hypervolumes use the point
    (HV_REFERENCE, ..., HV_REFERENCE), so a front's hypervolume lies in [0, HV_REFERENCE**k]."""

    best: tuple[float, ...]
    worst: tuple[float, ...]

    @classmethod
    def from_points(cls, points: np.ndarray) -> "Normaliser":
        points = np.asarray(points, dtype=np.float64)
        return cls(tuple(points.min(axis=0).tolist()), tuple(points.max(axis=0).tolist()))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        best, worst = np.asarray(self.best), np.asarray(self.worst)
        span = np.where(worst > best, worst - best, 1.0)
        return (np.asarray(points, dtype=np.float64) - best) / span

    def hypervolume(self, points: np.ndarray) -> float:
        points = np.asarray(points, dtype=np.float64).reshape(-1, len(self.best))
        return hypervolume(self(points), [HV_REFERENCE] * len(self.best))

    def to_dict(self) -> dict[str, Any]:
        return {"best": list(self.best), "worst": list(self.worst), "reference": HV_REFERENCE}


def pareto_mask_max(values: Sequence[Sequence[float]], maximize: Sequence[bool]) -> np.ndarray:
    """`pareto_mask` for values in their own directions (maximize[i]: column i is maximised)."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), len(maximize))
    return pareto_mask(to_minimisation(values, ["maximize" if m else "minimize" for m in maximize]))


def log_if_positive(values: Sequence[float]) -> list[float]:
    """Natural logs when every value is positive (speed and size trade by ratios), else the values as they are."""
    values = [float(v) for v in values]
    return [math.log(v) for v in values] if values and min(values) > 0 else values


def knee_index(xs: Sequence[float], ys: Sequence[float], log: bool = False) -> int:
    """Index of the knee of a 2-D maximise/maximise front; ties go to the higher y.

    The knee is the point farthest from the straight line joining the front's two extremes, on the side of
    the ideal corner, with both axes scaled to [0, 1] (after taking logs with `log`, for each axis whose
    values are all positive: on linear axes a front like tokens/s ~ 1/params always bows away from the
    ideal corner and the knee would collapse onto an extreme).
    """
    n = len(xs)
    if n == 0:
        raise ValueError("knee of an empty front")
    if n <= 2:
        return max(range(n), key=lambda i: (ys[i], xs[i]))

    def scale(v):
        v = log_if_positive(v) if log else list(v)
        lo, hi = min(v), max(v)
        return [0.5 if hi == lo else (a - lo) / (hi - lo) for a in v]

    u, w = scale(xs), scale(ys)
    a = max(range(n), key=lambda i: (u[i], w[i]))  # fastest extreme
    b = max(range(n), key=lambda i: (w[i], u[i]))  # best-quality extreme
    dx, dy = u[b] - u[a], w[b] - w[a]
    norm = math.hypot(dx, dy) or 1.0
    # Signed distance from the line a->b; positive on the side of the ideal corner (1, 1).
    sign = 1.0 if (dx * (1 - w[a]) - dy * (1 - u[a])) >= 0 else -1.0
    dist = [sign * (dx * (w[i] - w[a]) - dy * (u[i] - u[a])) / norm for i in range(n)]
    return max(range(n), key=lambda i: (round(dist[i], 12), ys[i]))


PICKS = ("knee", "fastest", "best-quality")
PICK_REASONS = {
    "knee": "the knee: the point of the quality-vs-speed front farthest from the line joining its two ends "
            "(log axes scaled to 0-1), where a little more speed starts to cost a lot of quality",
    "fastest": "the fastest shape of the Pareto set",
    "best-quality": "the best quality of the Pareto set",
}
TIE_NOTE = "quality differences below {what} ({tie:.3f} {unit}) count as ties, won by the faster shape"
ALL_TIED = ("every other shape of the Pareto set scores within {what} ({tie:.3f} {unit}) of this one or "
            "worse, and this one is the fastest: no slower shape earns its cost in quality that nas can tell")


def fastest_within(speeds: Sequence[float], qualities: Sequence[float], quality: float, tie: float) -> int:
    """The fastest point whose quality is no more than `tie` below `quality` (ties: the higher quality, then the
    lower index): how nas breaks a tie the quality cannot resolve."""
    return max((i for i in range(len(speeds)) if qualities[i] >= quality - tie),
               key=lambda i: (speeds[i], qualities[i], -i))


def knee_pick(speeds: Sequence[float], qualities: Sequence[float], tie: float = 0.0) -> int:
    """Index of the knee: the knee of the Pareto front (`knee_index`, log axes), then, when `tie` > 0, the
    fastest point within `tie` of its quality (a slower shape must beat a faster one by more than `tie`)."""
    speeds, qualities = [float(v) for v in speeds], [float(v) for v in qualities]
    mask = pareto_mask_max(list(zip(speeds, qualities)), [True, True])
    front = sorted((int(i) for i in np.flatnonzero(mask)), key=lambda i: (speeds[i], i))
    seen, unique = set(), []
    for i in front:  # one point per distinct value (equal points: the first stands)
        if (speeds[i], qualities[i]) not in seen:
            seen.add((speeds[i], qualities[i]))
            unique.append(i)
    knee = unique[knee_index([speeds[i] for i in unique], [qualities[i] for i in unique], log=True)]
    return fastest_within(speeds, qualities, qualities[knee], tie) if tie > 0 else knee


def all_tied(speeds: Sequence[float], qualities: Sequence[float], tie: float) -> bool:
    """True when no point is better than the fastest one by more than `tie`: nothing earns a slower shape."""
    fastest = max(range(len(speeds)), key=lambda i: (speeds[i], qualities[i], -i))
    return max(qualities) - qualities[fastest] <= tie


def picks(keys: Sequence, speeds: Sequence[float], qualities: Sequence[float], tie: float = 0.0) -> dict:
    """{"knee", "fastest", "best-quality"} -> key, among candidates given by parallel lists (both axes
    maximised). Ties go to the higher quality, then the earlier key. `tie` > 0 (the quality's noise or band, e.g.
    the proxy's seed noise or the quality law's band): qualities closer than `tie` are ties, won by the faster
    shape: best-quality is the fastest shape within `tie` of the best, and the knee the fastest within `tie` of
    the Pareto front's knee (`knee_pick`)."""
    n = len(keys)
    if n == 0:
        return {}
    fastest = max(range(n), key=lambda i: (speeds[i], qualities[i], -i))
    best = fastest_within(speeds, qualities, max(qualities), tie)
    return {"knee": keys[knee_pick(speeds, qualities, tie)], "fastest": keys[fastest], "best-quality": keys[best]}
