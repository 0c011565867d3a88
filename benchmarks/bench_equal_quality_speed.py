"""Speed at equal quality: how much faster than a published model is the fastest shape nas finds at the same
predicted loss?

For each target (default pixel8 and host-cpu) the latency stage enumerates the default space (subbillion) at
the search's lengths and predicts every shape's decode speed and its loss after --train-tokens (the quality
law); for each published model (MobileLLM-125M and -350M by default) it finds the fastest feasible shape whose
predicted loss is no worse than the model's, and prints the predicted speedup. On host-cpu it also measures:
both shapes are built as ONNX Runtime GenAI deploys them (nas.latency.graphs, host-cpu's precision) and timed
here at the same lengths, in --rounds interleaved rounds (a fresh session per shape and round), so the
measured speedup stands beside the predicted one, with the rounds' spread as its noise.

    python benchmarks/bench_equal_quality_speed.py [--targets pixel8 host-cpu] [--rounds 5] [--no-measure]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._lock import machine_lock  # noqa: E402
from nas.core.arch import ArchConfig  # noqa: E402
from nas.core.counts import format_count  # noqa: E402
from nas.core.landmarks import load_landmarks  # noqa: E402
from nas.latency import graphs, measure  # noqa: E402
from nas.search.advice import landmark_matches  # noqa: E402
from nas.search.latency_stage import LatencyStage  # noqa: E402
from nas.search.settings import SearchSettings  # noqa: E402


def equal_quality(target: str, names: list[str], train_tokens: str) -> tuple[LatencyStage, list[dict]]:
    from nas.quality.model import parse_train_tokens

    stage = LatencyStage(SearchSettings(targets=(target,), storage=":memory:",
                                        train_tokens=parse_train_tokens(train_tokens)), log=lambda _: None)
    stage.exact
    table = stage.shape_table(target)
    marks = [m for m in stage.problem.landmark_rows(target) if m["name"] in names]
    return stage, landmark_matches(marks, table)


def measure_pairs(pairs: list[tuple[str, ArchConfig]], stage: LatencyStage, rounds: int, runs: int,
                  threads: int) -> dict[str, list[float]]:
    """Decode ms of each shape per round (rounds interleaved over the shapes, a fresh session each)."""
    s = stage.settings
    precision = stage.problem.precisions[s.targets[0]]
    protocol = measure.Protocol(threads=threads, warmup=1, runs=runs, sessions=1)
    sources = {name: graphs.build_graph(arch, precision=precision).SerializeToString() for name, arch in pairs}
    feeds = {name: graphs.graph_feeds(arch, "decode", context_len=s.context_len, precision=precision)
             for name, arch in pairs}
    out: dict[str, list[float]] = {name: [] for name, _ in pairs}
    for _ in range(rounds):
        for name, _ in pairs:
            session = measure.make_session(sources[name], measure.CPU_PROVIDER, None, protocol)
            out[name].append(measure.time_session(session, feeds[name], protocol)["median"])
            del session
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["pixel8", "host-cpu"])
    parser.add_argument("--landmarks", nargs="+", default=["MobileLLM-125M", "MobileLLM-350M"])
    parser.add_argument("--train-tokens", default="1T")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="timed decode steps per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-measure", dest="measure", action="store_false", help="predictions only")
    parser.add_argument("--lock", default="/work/scratch/bench.lock")
    args = parser.parse_args()
    known = [name for name, _, _ in load_landmarks()]
    for name in args.landmarks:
        if name not in known:
            parser.error(f"unknown landmark {name!r}; known: {', '.join(known)}")
    for target in args.targets:
        stage, rows = equal_quality(target, args.landmarks, args.train_tokens)
        law = stage.problem.quality_model
        problem = stage.problem
        print(f"{target} ({problem.precisions[target]}; latency {problem.models[target].source}); loss after "
              f"{format_count(law.train_tokens)} tokens, band {law.band:.3f} nats")
        for r in rows:
            m = r["fastest_match"]
            print(f"  {r['name']:<16} loss {r['predicted_loss']:.3f}  {r['decode_tokens_per_s']:7.1f} tok/s  ->  "
                  + ("no feasible shape reaches it" if m is None else
                     f"{m['shape']} ({format_count(m['num_params'])}) loss {m['predicted_loss']:.3f} "
                     f"{m['decode_tokens_per_s']:7.1f} tok/s: predicted {m['speedup']:.2f}x"))
        if not (args.measure and stage.problem.targets[target].measured_here):
            continue
        marks = {name: arch for name, arch, _ in load_landmarks()}
        context = stage.settings.context_len
        pairs = []
        for r in rows:
            if r["fastest_match"] is None:
                continue
            landmark = marks[r["name"]]
            pairs.append((r["name"], landmark.replace(max_seq_len=max(landmark.max_seq_len, context + 1))))
            pairs.append((f"match of {r['name']}", ArchConfig.from_dict(r["fastest_match"]["arch"])))
        start = time.perf_counter()
        with machine_lock(args.lock):
            times = measure_pairs(pairs, stage, args.rounds, args.runs, args.threads)
        print(f"  measured here ({measure.cpu_model()}, {args.threads} threads, {problem.precisions[target]}, decode "
              f"after {context} cached tokens, {args.rounds} interleaved rounds x {args.runs} runs, "
              f"{time.perf_counter() - start:.0f} s):")
        for r in rows:
            if r["fastest_match"] is None:
                continue
            a, b = np.array(times[r["name"]]), np.array(times[f"match of {r['name']}"])
            ratios = a / b
            print(f"    {r['name']:<16} {1000 / np.median(a):7.1f} tok/s (rounds {1000 / a.max():.1f}-"
                  f"{1000 / a.min():.1f})   match {1000 / np.median(b):7.1f} tok/s (rounds {1000 / b.max():.1f}-"
                  f"{1000 / b.min():.1f})   measured speedup {np.median(ratios):.2f}x (rounds {ratios.min():.2f}-"
                  f"{ratios.max():.2f}) vs predicted {r['fastest_match']['speedup']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
