"""Does one learning rate suit every proxy shape? The best LR of a small sweep, across proxy widths and depths.

For proxies of width 32, 64 and 128 (depth 4) and depth 4, 16 and 32 (width 64), trained for the default
search's last rung budget, sweep the learning rate over a x2 grid and print the best per shape, under
muP + CompleteP (nas's default) and under standard parametrisation. The goal: under nas's parametrisation the
best LR moves by at most one grid step across width and depth.

    python benchmarks/bench_proxy_lr.py --lock /work/scratch/bench.lock
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from _lock import machine_lock

from nas.core.arch import ArchConfig
from nas.proxy.corpus import load_corpus
from nas.proxy.scaling import ProxyRule
from nas.proxy.train import ProxyDiverged, ProxyTrainer, TrainSettings
from nas.search.settings import DEFAULT_RUNG_TOKENS

# (label, candidate, shrink): candidates whose proxies differ in width only, or in depth only (the default rule
# shrinks a d1024 candidate to width 64).
WIDE = dict(hidden_size=1024, num_heads=16, intermediate_size=2816)
SHAPES = [
    ("width 32, L4", ArchConfig(num_layers=4, **WIDE), 32),
    ("width 64, L4", ArchConfig(num_layers=4, **WIDE), 16),
    ("width 128, L4", ArchConfig(num_layers=4, **WIDE), 8),
    ("width 64, L16", ArchConfig(num_layers=16, **WIDE), 16),
    ("width 64, L32", ArchConfig(num_layers=32, **WIDE), 16),
]
LOG2_LRS = (-12, -11, -10, -9, -8, -7, -6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--params", default="completep,sp", help="parametrisations to sweep, comma-separated")
    parser.add_argument("--tokens", type=int, default=DEFAULT_RUNG_TOKENS[-1])
    parser.add_argument("--lock", help="a lock file to hold during each run (others' benchmarks interleave)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    corpus = load_corpus()
    best: dict[tuple[str, str], int] = {}
    params = args.params.split(",")
    for param in params:
        for label, arch, shrink in SHAPES:
            scores = {}
            for e in LOG2_LRS:
                rule = ProxyRule(shrink=shrink, parametrisation=param)
                try:
                    with machine_lock(args.lock):
                        bpb = ProxyTrainer(arch, corpus, rule, TrainSettings(lr=2.0 ** e)).train_to(args.tokens).val_bpb
                except ProxyDiverged:
                    bpb = math.inf
                scores[e] = bpb
                print(json.dumps({"param": param, "shape": label, "log2_lr": e, "val_bpb": bpb}), flush=True)
            best[(param, label)] = min(scores, key=scores.get)
    print(f"\nbest log2(lr) after {args.tokens:,} tokens (grid step = x2):")
    print(f"{'proxy':16} " + " ".join(f"{p:>10}" for p in params))
    for label, _, _ in SHAPES:
        print(f"{label:16} " + " ".join(f"{best[(p, label)]:>10}" for p in params))
    for param in params:
        values = [best[(param, label)] for label, _, _ in SHAPES]
        print(f"{param}: best LR moves by {max(values) - min(values)} grid steps across these shapes")


if __name__ == "__main__":
    main()
