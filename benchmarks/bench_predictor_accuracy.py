"""Accuracy of host-cpu's fitted latency predictor on whole models it was not fitted on.

Samples fit + held-out configs from a preset space (default hostcal: 20M-200M models), measures both phases
with ONNX Runtime at the target's default precision (rows already in --out are reused, so an interrupted run
resumes), holds out whole architectures, fits, and prints per phase the predictor's MAPE, share within
+-5% / +-10% and Kendall tau (within each length) on the held-out configs, beside a FLOPs-only and a
params-only linear model fitted on the same rows and the analytic roofline fed by this host's probes.
Then re-measures a few held-out configs --repeats times (fresh sessions) for the run-to-run spread: the
floor no predictor can beat on this machine.

Goals (issue "Latency models"): >= 95% of held-out points within +-10%, MAPE <= 5%, tau >= 0.9. Run on a
quiet machine: other processes on the cores inflate both the spread and the error.
One line per figure; the headline (both phases pooled) last.

    .venv/bin/python benchmarks/bench_predictor_accuracy.py [--quick] [--n-fit 60] [--n-holdout 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latency_models import calibrate as cal  # noqa: E402
from latency_models.measure import Protocol  # noqa: E402
from latency_models.predictor import accuracy, spread_floor  # noqa: E402
from latency_models.probes import host_probes  # noqa: E402
from latency_models.profile import ProfileSettings, profile_configs, read_measurements  # noqa: E402
from latency_models.registry import host_threads  # noqa: E402
from search_spaces import load_space  # noqa: E402
from targets import load_target  # noqa: E402

FULL = dict(n_fit=60, n_holdout=30, prompt_lens=(64, 128), context_lens=(128, 512), warmup=2, runs=7,
            repeat_configs=6, repeats=3)
QUICK = dict(n_fit=12, n_holdout=6, prompt_lens=(64, 128), context_lens=(128, 512), warmup=1, runs=3,
             repeat_configs=2, repeats=2)


def _fmt(v, unit="%"):
    return "n/a" if v is None or v != v else (f"{v:.1f}{unit}" if unit else f"{v:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (~16 configs, fewer runs)")
    parser.add_argument("--space", default="hostcal")
    parser.add_argument("--n-fit", type=int)
    parser.add_argument("--n-holdout", type=int)
    parser.add_argument("--threads", type=int, help="intra-op threads (default: host-cpu's)")
    parser.add_argument("--repeats", type=int, help="re-measurements of a few held-out configs for the spread")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench/predictor_accuracy.jsonl",
                        help="measurements JSONL (reused across runs; repeats go to <out>.repeatN.jsonl)")
    args = parser.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("n_fit", "n_holdout", "repeats"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)

    target = load_target("host-cpu")
    threads = args.threads or host_threads(target)
    precision, provider = target.default_precision, target.execution_providers[0]
    configs = load_space(args.space).sample(cfg["n_fit"] + cfg["n_holdout"], seed=args.seed)
    settings = ProfileSettings(precision=precision, provider=provider, prompt_lens=cfg["prompt_lens"],
                               context_lens=cfg["context_lens"],
                               protocol=Protocol(threads=threads, warmup=cfg["warmup"], runs=cfg["runs"]),
                               seed=args.seed)
    out = Path(args.out)
    probes = host_probes(threads)
    est = cal.estimate_seconds(target, configs, precision=precision, prompt_lens=settings.prompt_lens,
                               context_lens=settings.context_lens, warmup=cfg["warmup"], runs=cfg["runs"],
                               probes=probes)
    print(f"# {len(configs)} configs from {args.space} on host-cpu ({provider}, {precision}, {threads} threads), "
          f"P {list(settings.prompt_lens)}, C {list(settings.context_lens)}, warmup {cfg['warmup']} runs "
          f"{cfg['runs']}; estimated <= {est['total_s'] / 60:.1f} min before repeats; measurements in {out}",
          flush=True)
    start = time.perf_counter()
    rows = [r for r in profile_configs(target, configs, settings, out, progress=sys.stderr.isatty())
            if r["status"] == "ok"]
    rows = cal.select_rows(rows, target=target.name, precision=precision, provider=provider, threads=threads,
                           source=str(out))
    predictor = cal.calibrate_rows(target, rows, precision=precision, provider=provider,
                                   holdout=cfg["n_holdout"], seed=args.seed, probes=probes)
    held = predictor.evaluation["holdout_arch_ids"]

    # Run-to-run spread: the first few held-out configs measured again in fresh sessions.
    repeat_ids = set(held[:cfg["repeat_configs"]])
    repeat_configs = [c for c in configs if c.arch_id in repeat_ids]
    repeat_rows = [r for r in rows if r["arch_id"] in repeat_ids]
    for i in range(1, cfg["repeats"]):
        path = out.with_name(f"{out.stem}.repeat{i}.jsonl")
        profile_configs(target, repeat_configs, settings, path, progress=False)
        repeat_rows += read_measurements(path, target=target.name)
    elapsed = time.perf_counter() - start

    summary = cal.summary(predictor)
    print(f"configs: {summary['n_configs_fit']} fitted, {summary['n_configs_held_out']} held out; "
          f"measuring and fitting took {elapsed / 60:.1f} min")
    for phase, entry in summary["phases"].items():
        for name, m in entry["models"].items():
            label = cal.MODEL_NAMES.get(name, name)
            print(f"{phase} {label}: MAPE {_fmt(m['mape'])}, within ±5% {_fmt(m['within_5'])}, "
                  f"within ±10% {_fmt(m['within_10'])}, Kendall tau {_fmt(m['kendall_tau'], '')} (n={m['n']})")
        spread = spread_floor(repeat_rows, phase)
        print(f"{phase} run-to-run spread: median cv of timed runs {_fmt(entry['spread']['median_cv_pct'])}, "
              f"repeated sessions deviate by {_fmt(spread['repeat_median_dev_pct'])} "
              f"(median over {spread['repeated_points']} points)")
    for phase, coefs in summary["coefficients"].items():
        print(f"{phase} coefficients (ms per unit): " + ", ".join(f"{k} {v:.4g}" for k, v in coefs.items() if v))
    # Headline: both phases pooled.
    pred, meas, lens = [], [], []
    for phase in ("prefill", "decode"):
        ev = predictor.evaluation["phases"][phase]
        pred += ev["predicted_ms"]
        meas += ev["measured_ms"]
        lens += [f"{phase}{v}" for v in ev["prompt_len" if phase == "prefill" else "context_len"]]
    acc = accuracy(pred, meas, lens)
    ok = acc["within_10"] >= 95 and acc["mape"] <= 5 and acc["kendall_tau"] >= 0.9
    print(f"headline: held-out predictor, both phases (n={acc['n']}): within ±10% {_fmt(acc['within_10'])} "
          f"(goal >= 95%), MAPE {_fmt(acc['mape'])} (goal <= 5%), Kendall tau {_fmt(acc['kendall_tau'], '')} "
          f"(goal >= 0.9): {'goals met' if ok else 'goals NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
