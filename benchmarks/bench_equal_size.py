"""At equal size, which shape is faster? Families of shapes with equal non-embedding parameters (+-3%) that
differ in depth, width, FFN ratio and kv heads, measured on this host as ONNX Runtime GenAI deploys them
(nas.latency.graphs, int4 by default, decode with the shared in-place KV buffer), and ranked by the analytic
model on this host's probes and by parameter count.

    flock /work/scratch/bench.lock python benchmarks/bench_equal_size.py [--threads 2] [--precision int4]

Prints per family: every shape with its measured prefill / decode ms (median of two measuring rounds, each
the median of `--runs` timed runs in a fresh session), the measured spread (slowest / fastest), the re-measure
noise (median |round1 - round2| / mean over the family's shapes), and Kendall tau against measured of the
analytic model (host probes), of the total parameter count and, when `nas calibrate --target host-cpu` has fitted
a predictor at this precision (in NAS_HOME), of that predictor, for prefill and decode. The script checks that
none of these shapes was in the predictor's calibration set (its measurements file), and says so.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._lock import machine_lock  # noqa: E402
from nas.core.arch import ArchBatch, ArchConfig  # noqa: E402
from nas.core.paths import measurements_path  # noqa: E402
from nas.latency import analytic, graphs, measure  # noqa: E402
from nas.latency import probes as probing  # noqa: E402
from nas.latency.predictor import kendall_tau  # noqa: E402
from nas.latency.registry import MEASURED, load_latency_model  # noqa: E402

VOCAB = 32000
HEAD_DIM = 64
FAMILIES_M = (40, 80, 160)  # non-embedding parameters, millions
HIDDEN = (384, 512, 640, 768, 896, 1024, 1280)
FFN_RATIOS = (2.0, 2.75, 4.0)
GROUPS = ("mha", "gqa4", "mqa")


def _candidate(hidden: int, ratio: float, group: str, target: float) -> ArchConfig | None:
    heads = hidden // HEAD_DIM
    kv = {"mha": heads, "gqa4": max(1, heads // 4), "mqa": 1}[group]
    if heads % kv:
        return None
    inter = 64 * round(ratio * hidden / 64)
    base = ArchConfig(hidden_size=hidden, num_layers=1, num_heads=heads, num_kv_heads=kv, intermediate_size=inter,
                      vocab_size=VOCAB, max_seq_len=2048)
    per_layer = base.num_non_embedding_params
    layers = round(target / per_layer)
    if layers < 2 or layers > 64:
        return None
    arch = base.replace(num_layers=layers)
    return arch if abs(arch.num_non_embedding_params - target) <= 0.03 * target else None


def family(target_m: int, size: int = 6) -> list[ArchConfig]:
    """`size` shapes at target_m M non-embedding params, as different from each other as the grid allows."""
    target = target_m * 1e6
    found = [a for h, r, g in itertools.product(HIDDEN, FFN_RATIOS, GROUPS) if (a := _candidate(h, r, g, target))]

    def key(a: ArchConfig) -> np.ndarray:
        return np.array([math.log2(a.hidden_size), math.log2(a.num_layers), math.log2(a.num_heads / a.num_kv_heads),
                         a.intermediate_size / a.hidden_size])

    chosen = [min(found, key=lambda a: a.hidden_size)]
    while len(chosen) < min(size, len(found)):
        rest = [a for a in found if a not in chosen]
        chosen.append(max(rest, key=lambda a: min(np.abs(key(a) - key(c)).sum() for c in chosen)))
    return sorted(chosen, key=lambda a: (a.num_layers, a.hidden_size))


def describe(a: ArchConfig) -> str:
    kind = "mha" if a.num_kv_heads == a.num_heads else ("mqa" if a.num_kv_heads == 1 else f"gqa{a.num_kv_heads}")
    return (f"L{a.num_layers:>2} h{a.hidden_size:>4} ffn{a.intermediate_size / a.hidden_size:4.2f} "
            f"heads {a.num_heads:>2}/{kind:<5} N={a.num_non_embedding_params / 1e6:6.1f}M total={a.num_params / 1e6:6.1f}M")


def measure_one(arch: ArchConfig, precision: str, prompt: int, context: int, protocol: measure.Protocol):
    model = graphs.build_graph(arch, precision=precision)
    source = model.SerializeToString()
    del model
    feeds = {"prefill": graphs.graph_feeds(arch, "prefill", prompt_len=prompt, precision=precision),
             "decode": graphs.graph_feeds(arch, "decode", context_len=context, precision=precision)}
    session = measure.make_session(source, measure.CPU_PROVIDER, None, protocol)
    return {phase: measure.time_session(session, f, protocol)["median"] for phase, f in feeds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="int4")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--context-len", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--families", type=int, nargs="*", default=list(FAMILIES_M))
    parser.add_argument("--lock", default="/work/scratch/bench.lock")
    args = parser.parse_args()
    print(f"precision {args.precision}, prompt {args.prompt_len}, decode at context {args.context_len} "
          f"({args.context_len} cached + 1), {args.threads} threads, ORT {measure.ort_version()}, "
          f"graph builder {graphs.BUILDER_VERSION}; machine: {measure.cpu_model()}, {measure.os.cpu_count()} cores")
    with machine_lock(args.lock):  # held for the whole run: others' long benchmarks hold it minutes at a time
        run(args)


def run(args) -> None:
    protocol = measure.Protocol(threads=args.threads, warmup=1, runs=args.runs, sessions=1)
    probes = probing.host_probes(args.threads)
    roofline = analytic.RooflineModel(analytic.params_from_probes(probes), args.precision)
    print(f"host probes: matmul {probes['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s, bandwidth "
          f"{probes['mem_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s", flush=True)
    fitted = load_latency_model("host-cpu", args.precision)
    fitted = fitted if fitted.source == MEASURED else None
    calibrated_ids = set()
    if fitted is not None:
        path = measurements_path("host-cpu")
        if path.exists():
            import json

            calibrated_ids = {json.loads(line).get("arch_id") for line in path.read_text().splitlines() if line}
        print(f"fitted predictor: {fitted.details.get('predictor_path')} (calibration set: {len(calibrated_ids)} "
              "configs)", flush=True)
    else:
        print("no fitted host-cpu predictor at this precision: only analytic and params are ranked", flush=True)
    summary = []
    start = time.perf_counter()
    for target in args.families:
        shapes = family(target)
        rounds = []
        for _ in range(2):  # two measuring rounds: the second is the re-measure that gives the noise
            got = []
            for arch in shapes:
                got.append(measure_one(arch, args.precision, args.prompt_len, args.context_len, protocol))
            rounds.append(got)
        batch = ArchBatch.from_configs(shapes)
        predicted = roofline.predict(batch, args.prompt_len, args.context_len)
        overlap = [a.arch_id for a in shapes if a.arch_id in calibrated_ids]
        if overlap:
            print(f"  warning: {len(overlap)} of these shapes were in the calibration set: {overlap}")
        by_fit = fitted.predict(batch, args.prompt_len, args.context_len) if fitted is not None else None
        params = np.array([a.num_params for a in shapes], dtype=float)
        print(f"\nfamily {target}M non-embedding params ({len(shapes)} shapes)")
        print(f"  {'shape':<72} {'prefill ms':>10} {'decode ms':>10} {'analytic p/d ms':>16}")
        row = {"family": target}
        measured = {}
        for phase in graphs.PHASES:
            r1 = np.array([r[phase] for r in rounds[0]])
            r2 = np.array([r[phase] for r in rounds[1]])
            measured[phase] = (r1 + r2) / 2
            noise = float(np.median(np.abs(r1 - r2) / ((r1 + r2) / 2)))
            spread = float(measured[phase].max() / measured[phase].min())
            tau_analytic = kendall_tau(predicted[f"{phase}_ms"], measured[phase])
            tau_params = kendall_tau(params, measured[phase])
            tau_fit = kendall_tau(by_fit[f"{phase}_ms"], measured[phase]) if by_fit is not None else float("nan")
            row[phase] = (spread, noise, tau_analytic, tau_params, tau_fit)
        for i, arch in enumerate(shapes):
            print(f"  {describe(arch):<72} {measured['prefill'][i]:>10.1f} {measured['decode'][i]:>10.2f} "
                  f"{predicted['prefill_ms'][i]:>7.1f}/{predicted['decode_ms'][i]:<7.2f}")
        for phase in graphs.PHASES:
            spread, noise, ta, tp, tf = row[phase]
            print(f"  {phase:<8} spread {spread:5.2f}x  re-measure noise {100 * noise:4.1f}%  "
                  f"Kendall tau: fitted {tf:+.2f}, analytic {ta:+.2f}, params {tp:+.2f}")
        summary.append(row)
        sys.stdout.flush()
    print(f"\nsummary ({time.perf_counter() - start:.0f} s)")
    for row in summary:
        print("  " + f"{row['family']}M: " + "; ".join(
            f"{phase} spread {row[phase][0]:.2f}x noise {100 * row[phase][1]:.1f}% tau fitted {row[phase][4]:+.2f} "
            f"analytic {row[phase][2]:+.2f} params {row[phase][3]:+.2f}" for phase in graphs.PHASES))


if __name__ == "__main__":
    main()
