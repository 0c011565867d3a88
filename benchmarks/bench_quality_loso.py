"""Leave-one-study-out accuracy of the quality law on published training runs, beside its baselines and the
data's own noise floor.

Each study is held out in turn: the law is fitted on the other studies, the held-out study gets only its own
group parameters (where its losses sit, how they fall with tokens), and its runs are predicted. Scored on pairs
of the held-out study's finished runs at equal training tokens (within 10%):

- equal size: total parameters within 10%;
- matched non-embedding parameters (within 1.25x);
- neighbours: non-embedding parameters within 2x (the pairs the band is drawn from).

Per pair set: order accuracy, the same on pairs whose published difference exceeds twice the noise floor (the
others are coin flips for any ranking), median |error of the predicted difference| (nats), and the share of
differences inside the band: the printed band (the 90% quantile of every study's held-out neighbour errors) and,
stricter, a band computed without the held-out study (nested). Beside the chosen law: the shape-blind law (the
shape-blind form the same rule would choose) and the parameter count (more total parameters = lower loss).

Nested choice: the form is itself chosen by leave-one-study-out, so its own figures are slightly optimistic.
The nested row repeats the whole procedure for each held-out study (choose the form on the other studies alone,
fit it there, predict the held-out one) and scores those predictions: the accuracy to expect of the procedure on
a study it has not seen. `--no-nested` skips it (it is most of the run time).

Band by depth ratio: the neighbour pairs' held-out errors binned by how different the two shapes' depths are.

Noise floor: for each shape with 4+ finished runs, its losses are fitted by a + b * (D / 1e10) ** -beta (beta of
its group in the chosen law); the residual spread is one loss's noise, and sqrt(2) times it a difference's.

    python benchmarks/bench_quality_loso.py            # the shipped law's form, the shape-blind one, nested
    python benchmarks/bench_quality_loso.py --json --no-nested
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from nas.quality.law import FittedLaw, candidate_forms, fit_groups, fit_law, run_groups
from nas.quality.model import choose, load_fit
from nas.quality.runs import load_runs
from nas.quality.validate import (
    PAIR_KINDS,
    difference_errors,
    evaluate,
    held_out_predictions,
    pairs,
    predict_runs,
    score_pairs,
)

DEPTH_BINS = (1.0, 1.35, 2.0, 3.3, float("inf"))  # ratio of the deeper shape's layers to the shallower's


def noise_floor(runs, law: FittedLaw) -> dict[str, float]:
    """Per study: the median, over shapes with 4+ runs, of the residual std of a per-shape token curve."""
    groups = run_groups(runs)
    out: dict[str, list[float]] = {}
    for k in np.unique(runs.shape):
        mine = np.flatnonzero(runs.shape == k)
        if len(mine) < 4:
            continue
        group = law.groups.get(groups[mine[0]])
        beta = (group or {}).get("beta", law.params.get("beta", 0.3))
        x = (runs.tokens[mine] / 1e10) ** -beta
        design = np.column_stack([np.ones(len(mine)), x])
        coef, *_ = np.linalg.lstsq(design, runs.loss[mine], rcond=None)
        resid = runs.loss[mine] - design @ coef
        out.setdefault(runs.studies[runs.study[mine[0]]].name, []).append(
            float(np.sqrt((resid ** 2).sum() / max(len(mine) - 2, 1))))
    return {s: float(np.median(v)) for s, v in out.items()}


def nested_predictions(runs, forms, log=lambda _: None) -> tuple[np.ndarray, dict[str, str]]:
    """Each study's runs predicted by the form chosen (`model.choose`) and fitted on the other studies alone."""
    names = runs.study_names()
    out, chosen = np.full(len(runs), np.nan), {}
    for s in sorted(set(runs.study.tolist())):
        inside = runs.study == s
        others = runs.subset(~inside)
        log(f"nested: choosing without {names[s]}")
        form = choose([evaluate(others, f) for f in forms]).form
        chosen[names[s]] = form.name
        out[inside] = predict_runs(fit_groups(fit_law(others, form), runs.subset(inside)), runs.subset(inside))
    return out, chosen


def depth_bins(runs, pred: np.ndarray) -> list[dict]:
    """Held-out neighbour-pair errors binned by the pair's depth ratio."""
    p = pairs(runs, "neighbours")
    p = p.where(np.isfinite(pred[p.i]) & np.isfinite(pred[p.j]))
    layers = runs.column("num_layers")
    ratio = np.maximum(layers[p.i], layers[p.j]) / np.minimum(layers[p.i], layers[p.j])
    errors = difference_errors(pred, runs.loss, p)
    out = []
    for low, high in zip(DEPTH_BINS, DEPTH_BINS[1:]):
        mine = (ratio >= low) & (ratio < high)
        if mine.any():
            out.append({"depth_ratio": [low, high], "pairs": int(mine.sum()),
                        "median_abs_error": float(np.median(errors[mine])),
                        "q90_abs_error": float(np.quantile(errors[mine], 0.9))})
    return out


def report(runs, form, noise: dict[str, float], pred: np.ndarray | None = None, label: str | None = None) -> dict:
    pred = held_out_predictions(runs, form) if pred is None else pred
    e = evaluate(runs, form, pred)
    names = runs.study_names()
    result = {"form": label or form.name, "band_nats": e.band, "kinds": {}, "by_depth_ratio": depth_bins(runs, pred)}
    for kind in PAIR_KINDS:
        p = pairs(runs, kind)
        ok = np.isfinite(pred[p.i]) & np.isfinite(pred[p.j])
        p = p.where(ok)
        floor = np.array([2 * np.sqrt(2) * noise.get(names[s], 0.0) for s in runs.study[p.i]])
        resolved = p.where(np.abs(runs.loss[p.i] - runs.loss[p.j]) > floor)
        size = score_pairs(-np.log(runs.column("num_params")), runs.loss, p, scaled=False)
        errors = difference_errors(pred, runs.loss, p)
        result["kinds"][kind] = {
            **e.overall[kind].to_dict(),
            "resolved": score_pairs(pred, runs.loss, resolved).to_dict(),
            "params_baseline": size.to_dict(),
            "params_baseline_resolved": score_pairs(-np.log(runs.column("num_params")), runs.loss, resolved,
                                                    scaled=False).to_dict(),
            "q90_abs_error": float(np.quantile(errors, 0.9)) if len(p) else None,
            "within_printed_band": float((errors <= e.band).mean()) if len(p) else None,
            "per_study": {s: e.per_study[s][kind].to_dict() for s in e.per_study},
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-nested", action="store_true", help="skip the nested choice of the form")
    args = parser.parse_args(argv)
    runs = load_runs()
    runs = runs.subset(runs.finished())
    shipped = load_fit()
    law = FittedLaw.from_dict(shipped["law"])
    noise = noise_floor(runs, law)
    blind = choose([evaluate(runs, f) for f in candidate_forms() if f.shape_blind]).form
    results = {"noise_floor_nats": noise, "runs": len(runs),
               "forms": [report(runs, law.form, noise),
                         report(runs, blind, noise, label=f"{blind.name} (shape-blind)")]}
    if not args.no_nested:
        log = (lambda m: print(m, file=sys.stderr)) if not args.json else (lambda _: None)
        pred, chosen = nested_predictions(runs, candidate_forms(), log)
        results["forms"].append(report(runs, law.form, noise, pred, label="nested: form chosen without the study"))
        results["nested_choices"] = chosen
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
        return 0
    print(f"finished published runs: {len(runs)}; noise floor of one loss (median residual std of a per-shape "
          "token curve): " + ", ".join(f"{s} {v:.4f}" for s, v in noise.items()) + " nats")
    head = (f"{'pairs':<11} {'law':<58} {'n':>5} {'order':>6} {'resolved':>14} {'med|err|':>9} {'q90':>7} "
            f"{'in band':>8} {'nested':>7}")
    print(head)
    for r in results["forms"]:
        for kind, k in r["kinds"].items():
            res = k["resolved"]
            print(f"{kind:<11} {r['form']:<58} {k['pairs']:>5} {k['order_accuracy']:>6.3f} "
                  f"{res['order_accuracy'] or 0:>6.3f} (n={res['pairs']:>4}) {k['median_abs_error']:>9.4f} "
                  f"{k['q90_abs_error']:>7.4f} {k['within_printed_band'] or 0:>8.0%} {k['within_band'] or 0:>7.0%}")
        print(f"{'':<11} band {r['band_nats']:.4f} nats; neighbour errors by depth ratio: " + "; ".join(
            f"{b['depth_ratio'][0]:g}-{b['depth_ratio'][1]:g}x q90 {b['q90_abs_error']:.3f} (n={b['pairs']})"
            for b in r["by_depth_ratio"]))
    if "nested_choices" in results:
        print("nested choices: " + "; ".join(f"without {s}: {f}" for s, f in results["nested_choices"].items()))
    print("('in band': inside the printed band; 'nested': inside a band computed without the held-out study)")
    first = results["forms"][0]["kinds"]
    for kind, k in first.items():
        b, br = k["params_baseline"], k["params_baseline_resolved"]
        print(f"{kind:<11} {'parameter count':<44} {b['pairs']:>5} {b['order_accuracy']:>6.3f} "
              f"{br['order_accuracy'] or 0:>6.3f} (n={br['pairs']:>4})")
    print("per study (chosen law; order accuracy / median |err| / in band):")
    for kind, k in first.items():
        print(f"  {kind}: " + "; ".join(f"{s} {v['order_accuracy']:.3f} / {v['median_abs_error']:.4f} / "
                                        f"{(v['within_band'] or 0):.0%} (n={v['pairs']})"
                                        for s, v in k["per_study"].items() if v["pairs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
