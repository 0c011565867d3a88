"""At equal size, which shape is faster? Families of shapes with equal non-embedding parameters (+-3%) that
differ in depth, width, FFN ratio and kv heads, measured on this host as ONNX Runtime GenAI deploys them
(nas.latency.graphs, decode with the shared in-place KV buffer) at the search's default lengths, and ranked by
the fitted host-cpu predictor, the analytic model on this host's probes and parameter count.

    python benchmarks/bench_equal_size.py [--threads 2] [--precision fp32] [--rounds 3] [--out rows.jsonl]
    python benchmarks/bench_equal_size.py --report-only --out rows.jsonl   # re-print a saved run's report

Each shape's graph is built once; then `--rounds` rounds each create a fresh session for every shape in turn
(rounds interleaved over the shapes, so a slow minute of the machine lands on one round of several shapes,
not on every round of one) and time prefill and decode (`--runs` timed runs after one warm-up; the round's
figure is their median). A shape's figure is the median over rounds. Printed per family: every shape with
its measured prefill / decode ms, the measured spread (slowest / fastest), the re-measure noise (median over
shapes and pairs of rounds of |round i - round j| / their mean), the measurement's own ceilings (mean Kendall
tau of one round against another, and with 4+ rounds the tau between the medians of the even and of the odd
rounds: no predictor can be shown to rank better than the measurements agree with themselves), and Kendall
tau against the measured figures of the fitted predictor (when `nas calibrate --target host-cpu` has fitted
one at this precision, in NAS_HOME), the analytic model and the total parameter count, for prefill and
decode. The script checks that none of these shapes was in the predictor's
calibration set (its measurements file), and says so. With `--out`, every round's figures are written as
JSON lines (one per shape and round), which `--report-only` re-reads (the predictions are recomputed from
the current predictor and probes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._lock import machine_lock  # noqa: E402
from benchmarks.bench_builder_vs_direct import time_graph  # noqa: E402
from nas.core.arch import ArchBatch, ArchConfig  # noqa: E402
from nas.core.paths import measurements_path  # noqa: E402
from nas.latency import analytic, graphs, measure  # noqa: E402
from nas.latency.predictor import kendall_tau  # noqa: E402
from nas.latency.probes import host_probes  # noqa: E402
from nas.latency.registry import MEASURED, load_latency_model  # noqa: E402
from nas.search.settings import DEFAULT_CONTEXT_LEN, DEFAULT_PROMPT_LEN  # noqa: E402
from nas.targets import load_target  # noqa: E402

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
                      vocab_size=VOCAB, max_seq_len=4096)
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
            f"heads {a.num_heads:>2}/{kind:<5} N={a.num_non_embedding_params / 1e6:6.1f}M "
            f"total={a.num_params / 1e6:6.1f}M")


def build_source(arch: ArchConfig, precision: str) -> bytes:
    return graphs.build_graph(arch, precision=precision).SerializeToString()


def measure_round(source: bytes, arch: ArchConfig, precision: str, prompt: int, context: int,
                  protocol: measure.Protocol) -> dict[str, float]:
    """One round: a fresh session, prefill and decode timed in it (median of the timed runs each)."""
    feeds = {"prefill": graphs.graph_feeds(arch, "prefill", prompt_len=prompt, precision=precision),
             "decode": graphs.graph_feeds(arch, "decode", context_len=context, precision=precision)}
    return time_graph(source, feeds, protocol)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default=None, help="weight precision (default: host-cpu's, fp32, the one "
                        "its fitted predictor is calibrated at)")
    parser.add_argument("--prompt-len", type=int, default=DEFAULT_PROMPT_LEN)
    parser.add_argument("--context-len", type=int, default=DEFAULT_CONTEXT_LEN)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per round")
    parser.add_argument("--rounds", type=int, default=3, help="measuring rounds, each a fresh session per shape")
    parser.add_argument("--families", type=int, nargs="*", default=list(FAMILIES_M))
    parser.add_argument("--out", help="JSONL file for every round's figures (appended; --report-only reads it)")
    parser.add_argument("--report-only", action="store_true", help="measure nothing: report the rows in --out")
    parser.add_argument("--lock", default="/work/scratch/bench.lock")
    args = parser.parse_args()
    args.precision = args.precision or load_target("host-cpu").default_precision
    if args.report_only and not args.out:
        parser.error("--report-only needs --out")
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (the re-measure noise needs two)")
    print(f"precision {args.precision}, prompt {args.prompt_len}, decode at context {args.context_len} "
          f"({args.context_len} cached + 1), {args.threads} threads, {args.rounds} rounds x {args.runs} runs, "
          f"ORT {measure.ort_version()}, graph builder {graphs.BUILDER_VERSION}; machine: {measure.cpu_model()}, "
          f"{measure.os.cpu_count()} cores")
    if args.report_only:
        report(args, read_rows(Path(args.out), args))
        return
    with machine_lock(args.lock):  # held for the whole run: others' long benchmarks hold it minutes at a time
        report(args, measure_families(args))


def read_rows(path: Path, args) -> dict[int, list[dict]]:
    rows: dict[int, list[dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if (row["precision"], row["prompt_len"], row["context_len"]) == (args.precision, args.prompt_len,
                                                                             args.context_len):
                rows.setdefault(row["family"], []).append(row)
    if not rows:
        sys.exit(f"{path}: no rows at precision {args.precision}, prompt {args.prompt_len}, context "
                 f"{args.context_len}")
    return rows


def measure_families(args) -> dict[int, list[dict]]:
    protocol = measure.Protocol(threads=args.threads, warmup=1, runs=args.runs, sessions=1)
    out = Path(args.out).open("a") if args.out else None
    rows: dict[int, list[dict]] = {}
    start = time.perf_counter()
    for target in args.families:
        shapes = family(target)
        sources = [build_source(arch, args.precision) for arch in shapes]
        for r in range(args.rounds):
            for arch, source in zip(shapes, sources):
                got = measure_round(source, arch, args.precision, args.prompt_len, args.context_len, protocol)
                row = {"family": target, "round": r, "arch": arch.to_dict(), "arch_id": arch.arch_id,
                       "precision": args.precision, "prompt_len": args.prompt_len, "context_len": args.context_len,
                       "threads": args.threads, "runs": args.runs, "prefill_ms": got["prefill"],
                       "decode_ms": got["decode"], "cpu": measure.cpu_model(), "ort": measure.ort_version()}
                rows.setdefault(target, []).append(row)
                if out:
                    out.write(json.dumps(row) + "\n")
                    out.flush()
        del sources
        print(f"family {target}M measured ({time.perf_counter() - start:.0f} s so far)", flush=True)
    if out:
        out.close()
    return rows


def round_noise(per_round: np.ndarray) -> float:
    """Median over shapes and pairs of rounds of |round i - round j| / their mean ([rounds, shapes])."""
    devs = [np.abs(a - b) / ((a + b) / 2) for a, b in itertools.combinations(per_round, 2)]
    return float(np.median(np.concatenate(devs)))


def round_ceiling(per_round: np.ndarray) -> float:
    """Mean Kendall tau of one round's ranking against another's."""
    return float(np.mean([kendall_tau(a, b) for a, b in itertools.combinations(per_round, 2)]))


def split_half_ceiling(per_round: np.ndarray) -> float:
    """Kendall tau between the median of the even rounds and the median of the odd ones: how well a figure made
    of half the rounds ranks the shapes like the other half's (the reported figure, a median of all rounds, is
    steadier still). NaN with fewer than 4 rounds."""
    if len(per_round) < 4:
        return float("nan")
    return kendall_tau(np.median(per_round[0::2], axis=0), np.median(per_round[1::2], axis=0))


def report(args, rows: dict[int, list[dict]]) -> None:
    probes = host_probes(args.threads)
    roofline = analytic.RooflineModel(analytic.params_from_probes(probes), args.precision)
    print(f"host probes: matmul {probes['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s, bandwidth "
          f"{probes['mem_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, "
          f"per layer {probes.get('per_layer_overhead_ms', 0):.3f} ms", flush=True)
    fitted = load_latency_model("host-cpu", args.precision)
    fitted = fitted if fitted.source == MEASURED else None
    calibrated_ids = set()
    if fitted is not None:
        path = measurements_path("host-cpu")
        if path.exists():
            calibrated_ids = {json.loads(line).get("arch_id") for line in path.read_text().splitlines() if line}
        print(f"fitted predictor: {fitted.details.get('predictor_path')} (calibration set: {len(calibrated_ids)} "
              "configs)", flush=True)
    else:
        print("no fitted host-cpu predictor at this precision: only analytic and params are ranked", flush=True)
    summary = []
    for target, family_rows in rows.items():
        ids = list(dict.fromkeys(r["arch_id"] for r in family_rows))
        shapes = [ArchConfig.from_dict(next(r["arch"] for r in family_rows if r["arch_id"] == i)) for i in ids]
        rounds = sorted({r["round"] for r in family_rows})
        batch = ArchBatch.from_configs(shapes)
        predicted = roofline.predict(batch, args.prompt_len, args.context_len)
        overlap = [a.arch_id for a in shapes if a.arch_id in calibrated_ids]
        if overlap:
            print(f"  warning: {len(overlap)} of these shapes were in the calibration set: {overlap}")
        by_fit = fitted.predict(batch, args.prompt_len, args.context_len) if fitted is not None else None
        params = np.array([a.num_params for a in shapes], dtype=float)
        print(f"\nfamily {target}M non-embedding params ({len(shapes)} shapes, {len(rounds)} rounds)")
        print(f"  {'shape':<72} {'prefill ms':>10} {'decode ms':>10} {'fitted p/d ms':>16} {'analytic p/d ms':>16}")
        row = {"family": target}
        measured = {}
        for phase in graphs.PHASES:
            per_round = np.array([[next(r[f"{phase}_ms"] for r in family_rows if r["arch_id"] == i and r["round"] == k)
                                   for i in ids] for k in rounds])
            measured[phase] = np.median(per_round, axis=0)
            spread = float(measured[phase].max() / measured[phase].min())
            tau_fit = kendall_tau(by_fit[f"{phase}_ms"], measured[phase]) if by_fit is not None else float("nan")
            row[phase] = dict(spread=spread, noise=round_noise(per_round), ceiling=round_ceiling(per_round),
                              split_half=split_half_ceiling(per_round),
                              fitted=tau_fit, analytic=kendall_tau(predicted[f"{phase}_ms"], measured[phase]),
                              params=kendall_tau(params, measured[phase]))
        for i, arch in enumerate(shapes):
            fit_text = (f"{by_fit['prefill_ms'][i]:>7.1f}/{by_fit['decode_ms'][i]:<7.2f}" if by_fit is not None
                        else f"{'-':>16}")
            print(f"  {describe(arch):<72} {measured['prefill'][i]:>10.1f} {measured['decode'][i]:>10.2f} "
                  f"{fit_text:>16} {predicted['prefill_ms'][i]:>7.1f}/{predicted['decode_ms'][i]:<7.2f}")
        for phase in graphs.PHASES:
            f = row[phase]
            print(f"  {phase:<8} spread {f['spread']:5.2f}x  re-measure noise {100 * f['noise']:4.1f}%  "
                  f"round-vs-round tau {f['ceiling']:+.2f}, split-half {f['split_half']:+.2f}  "
                  f"Kendall tau: fitted {f['fitted']:+.2f}, "
                  f"analytic {f['analytic']:+.2f}, params {f['params']:+.2f}")
        summary.append(row)
        sys.stdout.flush()
    print("\nsummary (goal: fitted tau >= 0.8 wherever spread - 1 > 2 x noise; analytic >= 0.6)")
    for row in summary:
        for phase in graphs.PHASES:
            f = row[phase]
            judged = f["spread"] - 1 > 2 * f["noise"]
            print(f"  {row['family']:>4}M {phase:<8} spread {f['spread']:.2f}x noise {100 * f['noise']:4.1f}% "
                  f"{'(judged)' if judged else '(within noise)'} ceiling {f['ceiling']:+.2f} split-half "
                  f"{f['split_half']:+.2f} | fitted "
                  f"{f['fitted']:+.2f} analytic {f['analytic']:+.2f} params {f['params']:+.2f}")


if __name__ == "__main__":
    main()
