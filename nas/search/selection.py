"""Which shapes the proxy stage trains, chosen from the latency stage's feasible shapes.

The proxy stage checks the latency stage's quality (the law's predicted loss, or the parameter count) on the
user's text, so it trains shapes the quality cannot tell apart as well as the ones it ranks first: the choice
covers the speed axis and, at each speed, the different ways of being about that good:

0. `first`: shapes that must be trained (the latency stage's picks), fastest first.
1. The quality front (best quality at each speed) spans the speeds worth training; its log-speed range is cut
   into `n // per_bin` equal bins (at least one).
2. A shape is *near* the front when its quality is within `slack` of the best quality of the shapes at least
   as fast (quality in additive units: minus the predicted loss with slack = the law's band, or log parameters
   with slack -log(0.85): 85% of the parameters): nearly as good for its speed, but perhaps deeper, thinner,
   with other attention grouping or another FFN ratio.
3. In each bin: the front's best shape first, then near shapes of that bin chosen by farthest-point sampling in
   a shape space (log depth, log width, log query heads per kv head, FFN ratio, FFN kind, tying), so the picks
   differ in shape, not just in size. Bins left short are topped up from the whole near set.

Deterministic: the same inputs give the same picks (ties by index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nas.search.settings import DEFAULT_PROXY_SHAPES
from nas.study.pareto import pareto_mask

PER_BIN = 3
PARAMS_SLACK = -float(np.log(0.85))  # in log parameters: 85% of the parameters of the largest shape as fast


@dataclass(frozen=True)
class Candidates:
    """The latency stage's feasible shapes as columns (one row per distinct shape)."""

    speed: np.ndarray  # the first speed objective (e.g. decode tokens/s on the first target), higher is better
    quality: np.ndarray  # higher is better, additive: minus the predicted loss, or log non-embedding parameters
    layers: np.ndarray
    hidden: np.ndarray
    group: np.ndarray  # query heads per kv head
    ffn_ratio: np.ndarray
    ffn_kind: np.ndarray  # integer codes
    tied: np.ndarray  # 0 / 1

    def __len__(self) -> int:
        return len(self.speed)

    @classmethod
    def of(cls, batch, speed, quality=None) -> "Candidates":
        """From an ArchBatch, the speed of each row (higher is better) and its quality (higher is better, additive;
        None: log non-embedding parameters)."""
        c = batch.columns
        kinds = sorted(set(batch.ffn_kinds.tolist()))
        if quality is None:
            quality = np.log(np.asarray(batch.num_non_embedding_params, dtype=float))
        return cls(speed=np.asarray(speed, dtype=float), quality=np.asarray(quality, dtype=float),
                   layers=c["num_layers"].astype(float), hidden=c["hidden_size"].astype(float),
                   group=(c["num_heads"] // c["num_kv_heads"]).astype(float),
                   ffn_ratio=c["intermediate_size"] / c["hidden_size"],
                   ffn_kind=np.array([kinds.index(k) for k in batch.ffn_kinds]), tied=c["tie_embeddings"])

    def shape_space(self) -> np.ndarray:
        cols = [np.log2(self.layers), np.log2(self.hidden), np.log2(self.group), self.ffn_ratio,
                self.ffn_kind.astype(float), self.tied.astype(float)]
        x = np.column_stack([np.asarray(c, dtype=float) for c in cols])
        span = x.max(axis=0) - x.min(axis=0)
        return (x - x.min(axis=0)) / np.where(span > 0, span, 1.0)


def near_front(c: Candidates, slack: float) -> np.ndarray:
    """Mask of shapes whose quality is within `slack` of the best quality of the shapes at least as fast."""
    order = np.argsort(-c.speed, kind="stable")  # fastest first
    best_so_far = np.maximum.accumulate(c.quality[order])
    best = np.empty(len(c))
    best[order] = best_so_far
    return c.quality >= best - slack


def _farthest(points: np.ndarray, chosen: list[int], pool: np.ndarray, k: int) -> list[int]:
    picks: list[int] = []
    for _ in range(k):
        candidates = [i for i in pool if i not in chosen and i not in picks]
        if not candidates:
            break
        taken = chosen + picks
        if not taken:
            picks.append(candidates[0])
            continue
        dist = np.min(np.linalg.norm(points[candidates][:, None, :] - points[taken][None, :, :], axis=2), axis=1)
        picks.append(candidates[int(np.argmax(dist))])  # argmax keeps the first (lowest index) of ties
    return picks


def select_shapes(c: Candidates, n: int = DEFAULT_PROXY_SHAPES, per_bin: int = PER_BIN, slack: float = PARAMS_SLACK,
                  first: tuple[int, ...] = ()) -> list[int]:
    """Row indices of up to `n` shapes to train (see the module docstring), fastest first."""
    if n <= 0 or len(c) == 0:
        return []
    front = np.flatnonzero(pareto_mask(np.column_stack([-c.quality, -c.speed.astype(float)])))
    near = np.flatnonzero(near_front(c, slack))
    log_speed = np.log(np.maximum(c.speed, 1e-12))
    lo, hi = log_speed[front].min(), log_speed[front].max()
    bins = max(1, n // per_bin)
    edges = np.linspace(lo, hi, bins + 1)
    which = np.clip(np.searchsorted(edges, log_speed, side="right") - 1, 0, bins - 1)
    points = c.shape_space()
    chosen: list[int] = list(dict.fromkeys(int(i) for i in first))[:n]
    for b in range(bins - 1, -1, -1):  # fastest bin first
        in_front = [int(i) for i in front if which[i] == b and lo <= log_speed[i] <= hi]
        if not in_front:
            continue
        largest = max(in_front, key=lambda i: (c.quality[i], -i))
        if largest not in chosen:
            chosen.append(largest)
        pool = np.array([i for i in near if which[i] == b and lo <= log_speed[i] <= hi], dtype=int)
        chosen += _farthest(points, chosen, pool, per_bin - 1)
    if len(chosen) < n:
        chosen += _farthest(points, chosen, near, n - len(chosen))
    chosen = chosen[:n]
    return sorted(chosen, key=lambda i: (-c.speed[i], i))
