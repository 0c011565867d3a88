"""What nas tells a user about a front ranked by predicted loss: the best shape at fixed speeds, how stable the
recommended shape is under the law's uncertainty, and where published models sit.

Everything works on a `ShapeTable`: the feasible shapes the latency stage knows (every feasible config of an
enumerated space, else every feasible config the sampler evaluated), with their decode speed on the target the
recommendation is for and their predicted loss. Losses closer than the law's band are ties, won by the faster
shape (`nas.study.pareto.knee_pick`, `fastest_within`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nas.study.pareto import knee_pick, pareto_mask_max

STABILITY_POOL = 4000  # shapes (the best at each speed first) whose bootstrap knees are compared
SPEED_STEPS = (1.0, 2.0, 5.0)  # fixed speeds: 1-2-5 series inside the front's speed range


@dataclass(frozen=True)
class ShapeTable:
    """Feasible shapes: an ArchBatch, decode tokens/s on one target, and predicted loss (nats)."""

    batch: Any  # nas.core.arch.ArchBatch
    speed: np.ndarray  # decode tokens/s on `target`
    loss: np.ndarray
    target: str

    def __len__(self) -> int:
        return len(self.speed)

    def describe(self, i: int) -> dict[str, Any]:
        arch = self.batch.config(int(i))
        return {"shape": arch.short_tag, "arch_id": arch.arch_id, "num_params": arch.num_params,
                "num_layers": arch.num_layers, "decode_tokens_per_s": float(self.speed[i]),
                "predicted_loss": float(self.loss[i]), "arch": arch.to_dict()}


def knee_of(speed: np.ndarray, loss: np.ndarray, band: float) -> int:
    """The knee as `nas.study.pareto.picks` takes it (losses within `band` tie, the faster wins)."""
    return knee_pick(speed, -np.asarray(loss), band)


def best_at_speed(speed: np.ndarray, loss: np.ndarray, band: float, at_least: float) -> int | None:
    """The shape to train if it must decode at least `at_least` tokens/s: the best predicted loss among those
    fast enough, and of those within `band` of it, the fastest."""
    fast = np.flatnonzero(speed >= at_least)
    if not len(fast):
        return None
    best = loss[fast].min()
    tied = fast[loss[fast] <= best + band]
    return int(tied[np.argmax(speed[tied])])


def speed_levels(speed: np.ndarray, front: Sequence[int], most: int = 5) -> list[float]:
    """Round speeds (1-2-5 series) inside the front's speed range, at most `most` of them, spread evenly."""
    lo, hi = float(speed[list(front)].min()), float(speed[list(front)].max())
    if not lo > 0:
        return []
    levels = [step * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
              for step in SPEED_STEPS]
    levels = [v for v in levels if lo <= v <= hi]
    if len(levels) > most:
        index = np.unique(np.round(np.linspace(0, len(levels) - 1, most)).astype(int))
        levels = [levels[i] for i in index]
    return levels


def fixed_speed_picks(table: ShapeTable, band: float) -> list[dict[str, Any]]:
    """The best shape at each of a few fixed decode speeds (see `best_at_speed`)."""
    front = np.flatnonzero(pareto_mask_max(np.column_stack([table.speed, -table.loss]), [True, True]))
    out = []
    for level in speed_levels(table.speed, front):
        i = best_at_speed(table.speed, table.loss, band, level)
        if i is not None:
            out.append({"at_least_tokens_per_s": level, **table.describe(i)})
    return out


def _pool(table: ShapeTable, band: float) -> np.ndarray:
    """Shapes whose bootstrap fits could make them the knee: within 3 bands of the best loss at their speed or
    faster (the rest are dominated by far under any fit), at most STABILITY_POOL of them (best first)."""
    order = np.argsort(-table.speed, kind="stable")
    best = np.minimum.accumulate(table.loss[order])
    gap = np.empty(len(table))
    gap[order] = table.loss[order] - best
    near = np.flatnonzero(gap <= 3 * band)
    return near[np.argsort(gap[near], kind="stable")][:STABILITY_POOL]


def knee_stability(table: ShapeTable, quality_model, knee: int) -> dict[str, Any]:
    """How often the knee stays the same shape when the law is refitted on resampled shapes (the fit file's
    bootstrap fits): the share of fits whose knee is this shape, and the depths their knees have."""
    if not quality_model.bootstrap:
        return {"fits": 0}
    pool = _pool(table, quality_model.band)
    if knee not in pool:
        pool = np.append(pool, knee)
    losses = quality_model.bootstrap_losses(table.batch.subset(pool))
    layers = table.batch.columns["num_layers"][pool]
    knees = [int(pool[knee_of(table.speed[pool], loss, quality_model.band)]) for loss in losses]
    # Twins (the same shape tied or untied, SwiGLU or gated ReLU) are one point: the same speed and loss.
    same = sum(table.speed[k] == table.speed[knee] and table.loss[k] == table.loss[knee] for k in knees)
    depths = sorted(int(layers[list(pool).index(k)]) for k in knees)
    return {"fits": len(knees), "same_shape": same / len(knees),
            "depths": {"min": depths[0], "median": depths[len(depths) // 2], "max": depths[-1],
                       "p10": depths[int(0.1 * (len(depths) - 1))], "p90": depths[int(0.9 * (len(depths) - 1))]}}


def landmark_matches(landmarks: Sequence[dict[str, Any]], table: ShapeTable) -> list[dict[str, Any]]:
    """For each published model ({name, predicted_loss, decode_tokens_per_s}): the fastest feasible shape whose
    predicted loss is no worse than the model's, and how much faster it decodes."""
    out = []
    for lm in landmarks:
        good = np.flatnonzero(table.loss <= lm["predicted_loss"])
        match = None
        if len(good):
            i = int(good[np.argmax(table.speed[good])])
            match = {**table.describe(i), "speedup": float(table.speed[i] / lm["decode_tokens_per_s"])
                     if lm["decode_tokens_per_s"] > 0 else None}
        out.append({**lm, "fastest_match": match})
    return out


def trade_words(knee: dict[str, Any], best: dict[str, Any], fastest: dict[str, Any], band: float) -> str:
    """What the knee trades, in words: against the best-quality and the fastest pick."""
    parts = []
    if best["arch_id"] != knee["arch_id"]:
        parts.append(f"{knee['predicted_loss'] - best['predicted_loss']:.3f} nats worse than the best-quality "
                     f"{best['shape']} and {knee['decode_tokens_per_s'] / best['decode_tokens_per_s']:.1f}x faster")
    if fastest["arch_id"] != knee["arch_id"]:
        parts.append(f"{fastest['predicted_loss'] - knee['predicted_loss']:.3f} nats better than the fastest "
                     f"{fastest['shape']}, at {fastest['decode_tokens_per_s'] / knee['decode_tokens_per_s']:.1f}x "
                     "less speed")
    if not parts:
        return "it is both the fastest and the best-quality shape"
    return "; ".join(parts) + f" (differences within {band:.3f} nats are ties)"


# ------------------------------------------------------------------------------------------------ the proxy check
PROXY_RESOLVES = 2.0  # a proxy difference counts when it exceeds this many times the study's seed noise


@dataclass(frozen=True)
class ProxyScore:
    """One shape's proxy training on the user's text, beside the law's prediction for it."""

    arch_id: str
    shape: str
    state: str  # COMPLETE (trained to the last rung) | PRUNED | FAIL
    bpb: float | None  # held-out bits per byte (mean of the final seeds) at the last rung it reached
    predicted_loss: float
    decode_tokens_per_s: float | None
    trial: int  # in the proxy study
    reason: str = ""  # why it was stopped or failed


def law_check(scores: Sequence[ProxyScore], noise: float | None, band: float) -> dict[str, Any]:
    """How the proxies on the user's text agree with the law: Kendall tau between proxy bits per byte and
    predicted loss over the shapes trained to the last rung, and a flag on every pair the law orders beyond its
    band while the proxy orders it the other way beyond PROXY_RESOLVES x the seed noise (and on every shape that
    failed to train)."""
    from scipy.stats import kendalltau

    done = [s for s in scores if s.state == "COMPLETE" and s.bpb is not None]
    out: dict[str, Any] = {"trained": len(done), "seed_noise_bpb": noise, "band_nats": band, "kendall_tau": None,
                           "flags": [], "shapes": [{"shape": s.shape, "arch_id": s.arch_id, "state": s.state,
                                                    "proxy_bpb": s.bpb, "predicted_loss": s.predicted_loss,
                                                    "decode_tokens_per_s": s.decode_tokens_per_s}
                                                   for s in sorted(scores, key=lambda s: s.predicted_loss)]}
    if len(done) >= 3:
        tau = kendalltau([s.bpb for s in done], [s.predicted_loss for s in done]).statistic
        out["kendall_tau"] = None if tau is None or not math.isfinite(tau) else float(tau)
    if noise:
        for a in done:
            for b in done:
                law_says = b.predicted_loss - a.predicted_loss  # > band: the law says a is better
                proxy_says = a.bpb - b.bpb  # > resolved: the proxy says b is better
                if law_says > band and proxy_says > PROXY_RESOLVES * noise:
                    out["flags"].append(f"{a.shape} vs {b.shape}: the law predicts {a.shape} {law_says:.3f} nats "
                                        f"better, its proxy scores {proxy_says:.3f} bits/byte worse "
                                        f"(> {PROXY_RESOLVES:g}x the seed noise)")
    for s in scores:
        if s.state == "FAIL":
            out["flags"].append(f"{s.shape} failed to train on your text: {s.reason}")
    return out


def proxy_move(pick_arch_id: str, scores: Sequence[ProxyScore], noise: float | None, band: float) \
        -> tuple[ProxyScore | None, str]:
    """Whether the proxy moves a pick, by the one rule nas has: among shapes the law ties with the pick (predicted
    losses within the band), a proxy that scores better than the pick's by more than PROXY_RESOLVES x the seed
    noise takes its place (the best such proxy). Returns (the shape it moves to, why) or (None, "")."""
    by_id = {s.arch_id: s for s in scores}
    pick = by_id.get(pick_arch_id)
    if pick is None or pick.state != "COMPLETE" or pick.bpb is None or not noise:
        return None, ""
    better = [s for s in scores if s.state == "COMPLETE" and s.bpb is not None and s.arch_id != pick.arch_id
              and abs(s.predicted_loss - pick.predicted_loss) <= band and s.bpb < pick.bpb - PROXY_RESOLVES * noise]
    if not better:
        return None, ""
    to = min(better, key=lambda s: (s.bpb, s.trial))
    return to, (f"moved by the proxy check: the law ties {to.shape} with {pick.shape} (predicted losses "
                f"{to.predicted_loss:.3f} and {pick.predicted_loss:.3f}, within the {band:.3f} band) and on your "
                f"text its proxy scores {pick.bpb - to.bpb:.3f} bits/byte better, more than {PROXY_RESOLVES:g}x "
                f"the seed noise ({noise:.3f})")
