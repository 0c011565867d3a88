"""Multi-objective successive halving: which proxy runs go on to the next, larger budget.

Optuna's pruners only judge single-objective studies, and a proxy run has two things that matter: its loss at
the current rung (lower is better) and the device speed of its candidate (higher is better, known before any
training). This is asynchronous successive halving in the spirit of MO-ASHA (Schmucker et al. 2021,
"Multi-objective asynchronous successive halving", arXiv:2106.12639): when a run finishes a rung it is compared
with every run that has finished that rung so far, and

    it continues  if no other run dominates it (lower or equal loss AND higher or equal speed, one of them
                  strictly), or if it ranks among the best ceil(n / eta) of the n runs at that rung;
    it stops      otherwise: others dominate it, and it is not among the best 1/eta.

The ranking is NSGA-II's: non-dominated sorting into fronts, then crowding distance inside a front (points in
sparse regions first), then the lower loss. So a run is never stopped while it is on the front of its rung
(the issue's rule: stopped only if others dominate it on both axes), and a rung keeps at most about 1/eta of the
dominated ones, which is what makes it halving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nas.study.pareto import pareto_mask


@dataclass(frozen=True)
class Decision:
    keep: bool
    rank: int  # position in the NSGA-II order of the rung (0 = best)
    peers: int  # runs at this rung, this one included
    dominated_by: int  # how many of them dominate it
    reason: str


def _fronts(points: np.ndarray) -> list[np.ndarray]:
    """Indices of each non-dominated front, best first (points minimised)."""
    remaining = np.arange(len(points))
    fronts = []
    while len(remaining):
        mask = pareto_mask(points[remaining])
        fronts.append(remaining[mask])
        remaining = remaining[~mask]
    return fronts


def _crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each point within its front (inf at the ends)."""
    n, k = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(k):
        order = np.argsort(points[:, j], kind="stable")
        span = points[order[-1], j] - points[order[0], j]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / span
    return distance


def nsga_order(losses: Sequence[float], speeds: Sequence[float]) -> list[int]:
    """Indices of the runs from best to worst: front, then crowding distance (larger first), then loss."""
    points = np.column_stack([np.asarray(losses, float), -np.asarray(speeds, float)])
    order: list[int] = []
    for front in _fronts(points):
        crowd = _crowding(points[front])
        order += [int(front[i]) for i in sorted(range(len(front)), key=lambda i: (-crowd[i], points[front[i], 0]))]
    return order


def decide(loss: float, speed: float, peer_losses: Sequence[float], peer_speeds: Sequence[float],
           eta: float = 3.0) -> Decision:
    """Whether a run with `loss` at this rung and candidate `speed` goes on, given the runs that finished this
    rung before it (`peer_*`, excluding itself)."""
    if eta <= 1:
        raise ValueError(f"eta must be above 1, got {eta}")
    losses = [float(loss), *map(float, peer_losses)]
    speeds = [float(speed), *map(float, peer_speeds)]
    n = len(losses)
    dominated_by = sum(1 for loss, s in zip(losses[1:], speeds[1:])
                       if loss <= losses[0] and s >= speeds[0] and (loss < losses[0] or s > speeds[0]))
    rank = nsga_order(losses, speeds).index(0)
    quota = math.ceil(n / eta)
    if dominated_by == 0:
        return Decision(True, rank, n, 0, "on the front of its rung")
    if rank < quota:
        return Decision(True, rank, n, dominated_by, f"among the best {quota} of {n} at its rung")
    return Decision(False, rank, n, dominated_by,
                    f"dominated by {dominated_by} of {n - 1} others on loss and speed, and ranked {rank + 1} of {n}")
