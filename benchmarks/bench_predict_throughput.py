"""How many configs per second LatencyModel.predict scores (what the search's cheap stage runs on).

The batch is the subbillion preset's whole enumerated space (ArchBatch, vectorised accounting). Measured for a
fitted predictor (host-cpu, fitted here on synthetic rows so no measurement is needed) and for the analytic
roofline (pixel8); median of --repeats timed calls after one warm-up, both phases per call.
Goal (issue "Latency models"): >= 100,000 configs/s. One line per model; the headline (slower model) last.

    .venv/bin/python benchmarks/bench_predict_throughput.py [--space subbillion] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _synthetic_predictor(target, batch):
    """A predictor fitted on rows from a known cost model: same code path as a calibrated one."""
    import numpy as np

    from nas.latency.features import DEFAULT_FEATURES, feature_matrix
    from nas.latency.predictor import fit_predictor

    rates = {"prefill": {"one": 1.0, "layers": 0.1, "linear_gflop": 10.0, "score_melems": 0.02,
                         "streamed_weight_mb": 0.002},
             "decode": {"one": 0.5, "layers": 0.05, "streamed_weight_mb": 0.06, "kv_mb": 0.1}}
    rows = []
    for i in range(0, min(len(batch), 4000), 100):
        arch = batch.config(i)
        one = batch.subset(np.array([i]))
        for phase, length in (("prefill", 128), ("prefill", 512), ("decode", 512), ("decode", 2048)):
            coef = np.array([rates[phase].get(k, 0.0) for k in DEFAULT_FEATURES[phase]])
            ms = float((feature_matrix(one, phase, length, target.default_precision) @ coef)[0])
            rows.append({"arch": arch.to_dict(), "arch_id": arch.arch_id, "phase": phase, "status": "ok",
                         "prompt_len": length if phase == "prefill" else None,
                         "context_len": length if phase == "decode" else None,
                         "latency_ms": {"median": ms, "cv": 0.0}, "threads": target.threads, "env": {}})
    return fit_predictor(rows, target=target.name, provider=target.execution_providers[0],
                         precision=target.default_precision, ort_version="synthetic", threads=target.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="subbillion")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--context-len", type=int, default=2048)
    args = parser.parse_args()
    os.environ["NAS_HOME"] = tempfile.mkdtemp(prefix="nas_bench_")  # keep the user's predictors out of it

    from nas.latency.registry import FittedLatencyModel, load_latency_model
    from nas.spaces import load_space
    from nas.targets import load_target

    t0 = time.perf_counter()
    batch = load_space(args.space).enumerate()
    print(f"# {args.space}: {len(batch):,} configs enumerated in {time.perf_counter() - t0:.2f} s")
    host = load_target("host-cpu")
    fitted = FittedLatencyModel(host.name, host.default_precision, host.execution_providers[0], "measured",
                                _synthetic_predictor(host, batch), "(synthetic)")
    models = {"fitted predictor (host-cpu)": fitted, "analytic roofline (pixel8)": load_latency_model("pixel8")}
    rates = {}
    for name, model in models.items():
        model.predict(batch, args.prompt_len, args.context_len)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.predict(batch, args.prompt_len, args.context_len)
            times.append(time.perf_counter() - start)
        rates[name] = len(batch) / statistics.median(times)
        print(f"{name}: {rates[name]:,.0f} configs/s ({statistics.median(times) * 1e3:.1f} ms per "
              f"{len(batch):,} configs, prefill + decode)")
    slowest = min(rates, key=rates.get)
    print(f"headline: LatencyModel.predict throughput {rates[slowest]:,.0f} configs/s ({slowest}; goal >= 100,000)")


if __name__ == "__main__":
    sys.exit(main())
