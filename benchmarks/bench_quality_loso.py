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
differences inside the band computed without the held-out study. Beside the chosen law: the shape-blind law
(size and tokens only) and the parameter count (more total parameters = lower loss).

Noise floor: for each shape with 4+ finished runs, its losses are fitted by a + b * (D / 1e10) ** -beta (beta of
its group in the chosen law); the residual spread is one loss's noise, and sqrt(2) times it a difference's.

    python benchmarks/bench_quality_loso.py            # the shipped law's form and the shape-blind one
    python benchmarks/bench_quality_loso.py --json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from nas.quality.law import FittedLaw, Form, run_groups
from nas.quality.model import load_fit
from nas.quality.runs import load_runs
from nas.quality.validate import PAIR_KINDS, difference_errors, evaluate, held_out_predictions, pairs, score_pairs


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


def report(runs, form: Form, noise: dict[str, float]) -> dict:
    pred = held_out_predictions(runs, form)
    e = evaluate(runs, form, pred)
    names = runs.study_names()
    result = {"form": form.name, "band_nats": e.band, "kinds": {}}
    for kind in PAIR_KINDS:
        p = pairs(runs, kind)
        ok = np.isfinite(pred[p.i]) & np.isfinite(pred[p.j])
        p = p.where(ok)
        floor = np.array([2 * np.sqrt(2) * noise.get(names[s], 0.0) for s in runs.study[p.i]])
        resolved = p.where(np.abs(runs.loss[p.i] - runs.loss[p.j]) > floor)
        size = score_pairs(-np.log(runs.column("num_params")), runs.loss, p, scaled=False)
        result["kinds"][kind] = {
            **e.overall[kind].to_dict(),
            "resolved": score_pairs(pred, runs.loss, resolved).to_dict(),
            "params_baseline": size.to_dict(),
            "params_baseline_resolved": score_pairs(-np.log(runs.column("num_params")), runs.loss, resolved,
                                                    scaled=False).to_dict(),
            "q90_abs_error": float(np.quantile(difference_errors(pred, runs.loss, p), 0.9)) if len(p) else None,
            "per_study": {s: e.per_study[s][kind].to_dict() for s in e.per_study},
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    runs = load_runs()
    runs = runs.subset(runs.finished())
    shipped = load_fit()
    law = FittedLaw.from_dict(shipped["law"])
    noise = noise_floor(runs, law)
    forms = [law.form, Form(None, law.form.count, law.form.tokens)]
    results = {"noise_floor_nats": noise, "runs": len(runs), "forms": [report(runs, f, noise) for f in forms]}
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
        return 0
    print(f"finished published runs: {len(runs)}; noise floor of one loss (median residual std of a per-shape "
          "token curve): " + ", ".join(f"{s} {v:.4f}" for s, v in noise.items()) + " nats")
    head = f"{'pairs':<11} {'law':<44} {'n':>5} {'order':>6} {'resolved':>14} {'med|err|':>9} {'q90':>7} {'in band':>8}"
    print(head)
    for r in results["forms"]:
        for kind, k in r["kinds"].items():
            res = k["resolved"]
            print(f"{kind:<11} {r['form']:<44} {k['pairs']:>5} {k['order_accuracy']:>6.3f} "
                  f"{res['order_accuracy'] or 0:>6.3f} (n={res['pairs']:>4}) {k['median_abs_error']:>9.4f} "
                  f"{k['q90_abs_error']:>7.4f} {k['within_band'] or 0:>8.0%}")
        print(f"{'':<11} band {r['band_nats']:.4f} nats")
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
