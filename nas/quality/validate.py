"""How well a law ranks shapes it was not fitted on: leave one study out, pairs of equal size, the band.

For each study in turn, the law is fitted on the other studies; the held-out study gets only its own group parameters
(`law.fit_groups`: where its losses sit and how they fall with tokens, not how its shapes rank), and its runs
are predicted. What counts is how
the law orders pairs of the held-out study's runs at matched training tokens (within TOKENS_RATIO):

- equal size: total parameters within TOTAL_RATIO (what "shapes of the same size" means to a user);
- matched non-embedding parameters within NONEMB_RATIO;
- neighbours: non-embedding parameters within NEIGHBOUR_RATIO (shapes a front puts side by side), whose
  prediction errors set the band.

Per pair set: order accuracy (the share of pairs whose predicted order is the published one; a predicted or a
published tie counts half) and the median |error of the predicted loss difference|, in nats. The band is the
BAND_QUANTILE quantile of |difference error| over neighbour pairs of held-out studies; its coverage is checked study by
study with a band computed without that study (nested), so the figure is not the band's own calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from nas.quality.law import Features, FittedLaw, Form, fit_groups, fit_law, run_groups, shape_weights
from nas.quality.runs import RunTable

TOKENS_RATIO = 1.1
TOTAL_RATIO = 1.1
NONEMB_RATIO = 1.25
NEIGHBOUR_RATIO = 2.0
BAND_QUANTILE = 0.9


@dataclass(frozen=True)
class Pairs:
    """Index pairs (i, j) into a RunTable: two runs of one study, different shapes, matched tokens."""

    i: np.ndarray
    j: np.ndarray

    def __len__(self) -> int:
        return len(self.i)

    def where(self, mask: np.ndarray) -> "Pairs":
        return Pairs(self.i[mask], self.j[mask])


def pairs(runs: RunTable, kind: str) -> Pairs:
    """The pairs of `kind` ("equal_size", "nonemb", "neighbours") over all studies of `runs`."""
    total = runs.column("num_params")
    nonemb = runs.column("num_non_embedding_params")
    i, j = np.triu_indices(len(runs), k=1)
    keep = (runs.study[i] == runs.study[j]) & (runs.shape[i] != runs.shape[j]) & (runs.cooled[i] == runs.cooled[j])
    keep &= _ratio(runs.tokens[i], runs.tokens[j]) <= TOKENS_RATIO
    if kind == "equal_size":
        keep &= _ratio(total[i], total[j]) <= TOTAL_RATIO
    elif kind == "nonemb":
        keep &= _ratio(nonemb[i], nonemb[j]) <= NONEMB_RATIO
    elif kind == "neighbours":
        keep &= _ratio(nonemb[i], nonemb[j]) <= NEIGHBOUR_RATIO
    else:
        raise ValueError(kind)
    return Pairs(i[keep], j[keep])


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(a, b) / np.minimum(a, b)


@dataclass(frozen=True)
class PairScore:
    n: int
    order_accuracy: float | None
    median_abs_error: float | None  # of the predicted difference, nats (None for a ranking without a scale)
    within_band: float | None = None  # share of |difference errors| inside the band (nested)

    def to_dict(self) -> dict:
        return {"pairs": self.n, "order_accuracy": self.order_accuracy, "median_abs_error": self.median_abs_error,
                "within_band": self.within_band}


def score_pairs(predicted: np.ndarray, actual: np.ndarray, p: Pairs, scaled: bool = True) -> PairScore:
    """Order accuracy and median |difference error| of `predicted` (lower = better) against `actual`."""
    if len(p) == 0:
        return PairScore(0, None, None)
    dp, da = predicted[p.i] - predicted[p.j], actual[p.i] - actual[p.j]
    agree = np.where((dp == 0) | (da == 0), 0.5, (np.sign(dp) == np.sign(da)).astype(float))
    errors = np.abs(dp - da)
    return PairScore(len(p), float(agree.mean()), float(np.median(errors)) if scaled else None)


def difference_errors(predicted: np.ndarray, actual: np.ndarray, p: Pairs) -> np.ndarray:
    return np.abs((predicted[p.i] - predicted[p.j]) - (actual[p.i] - actual[p.j]))


def held_out_predictions(runs: RunTable, form: Form, fit: Callable[..., FittedLaw] = fit_law) -> np.ndarray:
    """Each run's loss as predicted by the law fitted without its study (offset fitted on the study alone)."""
    out = np.full(len(runs), np.nan)
    for s in sorted(set(runs.study.tolist())):
        inside = runs.study == s
        if len(set(runs.shape[inside].tolist())) < 2:
            continue  # a study of one shape ranks nothing
        held = runs.subset(inside)
        out[inside] = predict_runs(fit_groups(fit(runs.subset(~inside), form), held), held)
    return out


def predict_runs(law: FittedLaw, runs: RunTable) -> np.ndarray:
    """Each run's loss predicted in its own group's terms."""
    x, groups = Features.of_runs(runs), run_groups(runs)
    out = np.empty(len(runs))
    for g in set(groups.tolist()):
        mine = np.flatnonzero(groups == g)
        out[mine] = law.predict(_rows(x, mine), g)
    return out


@dataclass(frozen=True)
class Evaluation:
    """Leave-one-study-out figures of one form (and the parameter-count ranking on the same pairs)."""

    form: Form
    per_study: dict[str, dict[str, PairScore]]  # study -> pair kind -> score
    overall: dict[str, PairScore]
    band: float  # BAND_QUANTILE of |difference error| over neighbour pairs, nats
    params_baseline: dict[str, PairScore]  # "larger total parameters = lower loss" on the same pairs

    def to_dict(self) -> dict:
        return {"form": self.form.name, "band_nats": self.band,
                "overall": {k: v.to_dict() for k, v in self.overall.items()},
                "params_baseline": {k: v.to_dict() for k, v in self.params_baseline.items()},
                "per_study": {s: {k: v.to_dict() for k, v in d.items()} for s, d in self.per_study.items()}}


PAIR_KINDS = ("equal_size", "nonemb", "neighbours")


def evaluate(runs: RunTable, form: Form, predicted: np.ndarray | None = None) -> Evaluation:
    """Leave-one-study-out evaluation of `form` on `runs` (`predicted`: held-out predictions already made)."""
    pred = held_out_predictions(runs, form) if predicted is None else predicted
    ok = np.isfinite(pred)
    all_pairs = {k: _valid(pairs(runs, k), ok) for k in PAIR_KINDS}
    size_rank = -np.log(runs.column("num_params"))
    names = runs.study_names()
    errors_by_study = {}
    for s in sorted(set(runs.study[ok].tolist())):
        p = all_pairs["neighbours"]
        errors_by_study[s] = difference_errors(pred, runs.loss, p.where(runs.study[p.i] == s))
    per_study: dict[str, dict[str, PairScore]] = {}
    for s in errors_by_study:
        others = np.concatenate([e for t, e in errors_by_study.items() if t != s] or [np.zeros(0)])
        band_without = float(np.quantile(others, BAND_QUANTILE)) if len(others) else None
        scores = {}
        for kind, p in all_pairs.items():
            mine = p.where(runs.study[p.i] == s)
            score = score_pairs(pred, runs.loss, mine)
            if band_without is not None and len(mine):
                inside = float((difference_errors(pred, runs.loss, mine) <= band_without).mean())
                score = PairScore(score.n, score.order_accuracy, score.median_abs_error, inside)
            scores[kind] = score
        per_study[names[s]] = scores
    every = np.concatenate(list(errors_by_study.values()) or [np.zeros(0)])
    band = float(np.quantile(every, BAND_QUANTILE)) if len(every) else float("nan")
    overall = {}
    for kind, p in all_pairs.items():
        score = score_pairs(pred, runs.loss, p)
        studies = [per_study[n][kind] for n in per_study if per_study[n][kind].within_band is not None]
        covered = (sum(x.within_band * x.n for x in studies) / sum(x.n for x in studies)) if studies else None
        overall[kind] = PairScore(score.n, score.order_accuracy, score.median_abs_error, covered)
    baseline = {k: score_pairs(size_rank, runs.loss, p, scaled=False) for k, p in all_pairs.items()}
    return Evaluation(form, per_study, overall, band, baseline)


def _rows(x: Features, rows: np.ndarray) -> Features:
    return Features(*(getattr(x, f)[rows] for f in ("layers", "hidden", "non_embedding", "vocab", "tokens")))


def _valid(p: Pairs, ok: np.ndarray) -> Pairs:
    return p.where(ok[p.i] & ok[p.j])


def bootstrap_fits(runs: RunTable, form: Form, n: int, seed: int = 0) -> list[FittedLaw]:
    """`n` fits on shapes resampled with replacement within each study (all runs of a drawn shape go together;
    a shape drawn k times weighs k times)."""
    rng = np.random.default_rng(seed)
    base = shape_weights(runs)
    out = []
    for _ in range(n):
        multiplicity = np.zeros(len(runs.shapes))
        for s in range(len(runs.studies)):
            mine = np.unique(runs.shape[runs.study == s])
            if len(mine):
                drawn = rng.choice(mine, size=len(mine), replace=True)
                np.add.at(multiplicity, drawn, 1.0)
        w = base * multiplicity[runs.shape]
        keep = w > 0
        out.append(fit_law(runs.subset(keep), form, weights=w[keep]))
    return out
