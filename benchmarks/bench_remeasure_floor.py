"""How far this machine lets a latency predictor's accuracy be judged: two measurement files of the same
points (e.g. two `nas calibrate --target host-cpu` runs with fresh NAS_HOMEs, minutes or hours apart), compared
with each other and with the predictor fitted on either.

    python benchmarks/bench_remeasure_floor.py RUN1.jsonl RUN2.jsonl [--holdout 16] [--seed 0]

Prints per phase, over the points both files measured ("ok" rows with the same config and length):
- re-measure disagreement: |run1 - run2| / their mean (mean, median, share within 10%) for several ways of
  reducing one point's timed runs to one figure (the rows keep every sample), and run1 used as a "predictor"
  of run2 (MAPE and within +-10%, the figures the predictor's goal is stated in);
- the fitted predictor (features chosen by cross-validation on the fit configs, as `nas calibrate` does) on
  the held-out configs (the same split as `nas calibrate --seed`), fitted on one run and judged against the
  same run and against the other, and fitted and judged on the two runs' geometric mean (noise / sqrt 2).

A perfect predictor of the true latency scores about the re-measure MAPE divided by sqrt(2) against one run
(each run carries its own noise); a goal below that cannot be shown to be met on this machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.core.accounting import PHASES  # noqa: E402
from nas.latency.calibrate import default_holdout  # noqa: E402
from nas.latency.predictor import LatencyPredictor, accuracy, fit_predictor, length_key, split_arch_ids  # noqa: E402

ESTIMATORS = {
    "median of session medians (nas)": lambda r: r["latency_ms"]["median"],
    "min of session medians": lambda r: min(r["latency_ms"]["session_medians"]),
    "median of all runs": lambda r: float(np.median(r["samples_ms"])),
    "p10 of all runs": lambda r: r["latency_ms"]["p10"],
    "fastest run": lambda r: r["latency_ms"]["min"],
}


def load(path: str) -> dict[tuple, dict]:
    rows = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("status", "ok") == "ok":
                rows[row["arch_id"], row["phase"], row["prompt_len"] or row["context_len"]] = row
    return rows


def geometric_mean_rows(a: dict, b: dict, keys) -> list[dict]:
    out = []
    for key in keys:
        row = copy.deepcopy(a[key])
        row["latency_ms"]["median"] = float(np.sqrt(a[key]["latency_ms"]["median"] * b[key]["latency_ms"]["median"]))
        out.append(row)
    return out


def judged(predictor: LatencyPredictor, phase: str, against: dict | None) -> dict:
    ev = predictor.evaluation["phases"][phase]
    predicted = np.asarray(ev["predicted_ms"])
    if against is None:
        measured = np.asarray(ev["measured_ms"])
    else:
        lengths = ev[length_key(phase)]
        measured = np.array([against[aid, phase, n]["latency_ms"]["median"] for aid, n in zip(ev["arch_ids"], lengths)])
    return accuracy(predicted, measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run1")
    parser.add_argument("run2")
    parser.add_argument("--holdout", type=int, default=None, help="held-out configs (default: as nas calibrate)")
    parser.add_argument("--seed", type=int, default=0, help="the held-out split's seed (as nas calibrate --seed)")
    args = parser.parse_args()
    a, b = load(args.run1), load(args.run2)
    keys = sorted(set(a) & set(b))
    ids = sorted({k[0] for k in keys})
    if len(ids) < 4:
        sys.exit(f"only {len(ids)} configs measured in both files: nothing to compare")
    holdout = default_holdout(len(ids)) if args.holdout is None else args.holdout
    _, held = split_arch_ids(ids, holdout, args.seed)
    print(f"{len(keys)} points ({len(ids)} configs) in both files; {len(held)} configs held out (seed {args.seed})")
    for phase in PHASES:
        ks = [k for k in keys if k[1] == phase]
        print(f"\n{phase} ({len(ks)} points): re-measure disagreement |run1 - run2| / mean")
        for name, figure in ESTIMATORS.items():
            x = np.array([figure(a[k]) for k in ks])
            y = np.array([figure(b[k]) for k in ks])
            d = np.abs(x - y) / ((x + y) / 2)
            print(f"  {name:<32} mean {100 * d.mean():5.1f}%  median {100 * np.median(d):5.1f}%  within 10% "
                  f"{100 * np.mean(d <= 0.1):5.1f}%  run2/run1 median {np.median(y / x):.3f}")
        x = np.array([a[k]["latency_ms"]["median"] for k in ks])
        y = np.array([b[k]["latency_ms"]["median"] for k in ks])
        acc = accuracy(x, y)
        print(f"  run1 as a predictor of run2: MAPE {acc['mape']:.1f}%, within +-10% {acc['within_10']:.1f}%")
    fits = {"run1": list(a.values()), "run2": list(b.values()), "geometric mean": geometric_mean_rows(a, b, keys)}
    judges = {"run1": a, "run2": b}
    print("\nfitted predictor on the held-out configs (MAPE / within +-10%)")
    for fit_name, rows in fits.items():
        predictor = fit_predictor(rows, target="host-cpu", provider="CPUExecutionProvider", precision="fp32",
                                    ort_version="-", holdout_ids=held)
        against = {"itself": None} if fit_name == "geometric mean" else {
            "the same run": None, "the other run": judges["run2" if fit_name == "run1" else "run1"]}
        for judge_name, judge in against.items():
            cells = []
            for phase in PHASES:
                acc = judged(predictor, phase, judge)
                cells.append(f"{phase} {acc['mape']:4.1f}% / {acc['within_10']:5.1f}%")
            print(f"  fitted on {fit_name:<15} judged against {judge_name:<14} " + "   ".join(cells))


if __name__ == "__main__":
    main()
