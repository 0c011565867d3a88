"""Fidelity of the default proxy: does it rank candidates as a longer, wider proxy does, inside equal-size groups too?

Candidates come from a preset space: GROUPS groups of GROUP_SIZE shapes at equal non-embedding parameters
(within +-3%) that differ in depth, width, FFN ratio and kv heads (chosen by farthest-point sampling, at most
--max-layers deep), plus
EXTRA shapes of other sizes. Each is scored by
- the default proxy (nas.proxy defaults: every width / 16, the default search's last rung budget), seeds 0 and 1;
- the reference: proxies 2x wider (every width / 8) trained 8x longer than the default proxy (--reference-tokens,
  983,040 tokens: about 55 minutes for the 12 candidates on 2 quiet cores), seed 0, and with
  `--reference-seeds 2` seed 1 too;
and the script prints Kendall's tau against the reference, overall and inside each equal-size group, for the
default proxy (the mean of its two seeds, as the search scores its last rung, and seed 0 alone), the seed-noise
ceiling (seed 0 against seed 1 of the default proxy), parameter count and, where
the reference was trained with two seeds, the reference's own ceiling (its seed 0 against its seed 1: no proxy
can agree with the reference better than the reference agrees with itself).

Every run is appended to a JSONL file as it finishes; re-running skips what is there, so the benchmark can
be stopped and resumed. Run it alone (it times nothing, but it fills both cores for a long while):

    python benchmarks/bench_proxy_fidelity.py --out fidelity.jsonl --lock /work/scratch/bench.lock
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _lock import machine_lock

from nas.core.arch import ArchConfig
from nas.latency.predictor import kendall_tau
from nas.proxy.corpus import load_corpus
from nas.proxy.scaling import ProxyRule
from nas.proxy.train import ProxyTrainer, TrainSettings
from nas.search.settings import DEFAULT_RUNG_TOKENS
from nas.spaces import load_space

GROUPS = (110e6, 250e6)  # non-embedding parameters of the equal-size groups
GROUP_SIZE = 5
EXTRA = (60e6, 400e6)
TOLERANCE = 0.03
MAX_LAYERS = 32  # deeper proxies cost too much at the reference budget on a 2-core machine (--max-layers)


def farthest(points: np.ndarray, k: int) -> list[int]:
    chosen = [int(np.argmin(points[:, 0]))]
    while len(chosen) < min(k, len(points)):
        dist = np.min(np.linalg.norm(points[:, None, :] - points[chosen][None, :, :], axis=2), axis=1)
        chosen.append(int(np.argmax(dist)))
    return chosen


def candidates(space_name: str, max_layers: int = MAX_LAYERS) -> list[tuple[str, ArchConfig]]:
    batch = load_space(space_name).enumerate()
    batch = batch.subset(np.flatnonzero(batch.columns["num_layers"] <= max_layers))
    c = batch.columns
    params = np.asarray(batch.num_non_embedding_params, dtype=float)
    shape = np.column_stack([np.log2(c["num_layers"]), np.log2(c["hidden_size"]),
                             np.log2(c["num_heads"] // c["num_kv_heads"]), c["intermediate_size"] / c["hidden_size"]])
    shape = (shape - shape.min(0)) / np.where(np.ptp(shape, 0) > 0, np.ptp(shape, 0), 1)
    out = []
    for g, target in enumerate(GROUPS):
        rows = np.flatnonzero(np.abs(params - target) <= TOLERANCE * target)
        rows = rows[(c["tie_embeddings"][rows] == 1) & (batch.ffn_kinds[rows] == "swiglu")]
        for i in farthest(shape[rows], GROUP_SIZE):
            out.append((f"group{g}", batch.config(int(rows[i]))))
    for target in EXTRA:
        rows = np.flatnonzero((np.abs(params - target) <= TOLERANCE * target) & (c["tie_embeddings"] == 1))
        out.append(("extra", batch.config(int(rows[len(rows) // 2]))))
    return out


def score(arch: ArchConfig, corpus, rule: ProxyRule, tokens: int, seed: int) -> dict:
    trainer = ProxyTrainer(arch, corpus, rule, TrainSettings(seed=seed))
    start = time.perf_counter()
    result = trainer.train_to(tokens)
    return {"val_bpb": result.val_bpb, "seconds": round(time.perf_counter() - start, 1), "tokens": result.tokens,
            "proxy": trainer.proxy.short_tag}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="subbillion")
    parser.add_argument("--out", default="fidelity.jsonl")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lock", help="a lock file to hold during each run (others' benchmarks interleave)")
    parser.add_argument("--max-layers", type=int, default=MAX_LAYERS, help="deepest candidate (cost grows with depth)")
    parser.add_argument("--reverse", action="store_true",
                        help="take the candidates last first (a second process on the same --out meets the first)")
    parser.add_argument("--reference-tokens", type=int, default=8 * DEFAULT_RUNG_TOKENS[-1],
                        help="the reference proxies' budget (default 8x the default proxy's)")
    parser.add_argument("--reference-seeds", type=int, choices=(1, 2), default=1,
                        help="2: train the reference with a second seed too (its own noise ceiling)")
    parser.add_argument("--only", choices=("all", "group0", "group1", "extra"), default="all",
                        help="score only these candidates")
    parser.add_argument("--report-only", action="store_true", help="print the report of --out; train nothing")
    args = parser.parse_args()
    if args.report_only:
        return report(Path(args.out))
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    corpus = load_corpus()
    default_tokens = DEFAULT_RUNG_TOKENS[-1]
    runs = {"default": (ProxyRule(), default_tokens, 0), "seed1": (ProxyRule(), default_tokens, 1),
            "reference": (ProxyRule(shrink=ProxyRule().shrink // 2), args.reference_tokens, 0)}
    if args.reference_seeds == 2:
        runs["reference_seed1"] = (ProxyRule(shrink=ProxyRule().shrink // 2), args.reference_tokens, 1)
    out = Path(args.out)
    cands = [(g, a) for g, a in candidates(args.space, args.max_layers) if args.only in ("all", g)]
    for group, arch in reversed(cands) if args.reverse else cands:  # one candidate's runs before the next
        for run, (rule, tokens, seed) in runs.items():
            if (arch.arch_id, run) in _done(out):  # read again each time: another process may have done it
                continue
            with machine_lock(args.lock):
                scored = score(arch, corpus, rule, tokens, seed)
            row = {"arch_id": arch.arch_id, "shape": arch.short_tag, "group": group, "run": run,
                   "non_embedding_params": arch.num_non_embedding_params, **scored}
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    report(out)


def _done(out: Path) -> set[tuple[str, str]]:
    return {(r["arch_id"], r["run"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()


def report(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    table: dict[str, dict[str, dict]] = {}
    for r in rows:
        table.setdefault(r["arch_id"], {})[r["run"]] = r
    complete = {a: t for a, t in table.items() if {"default", "seed1", "reference"} <= set(t)}
    groups = sorted({t["default"]["group"] for t in complete.values()})
    print(f"\n{len(complete)} candidates scored by all three runs")
    print("Kendall tau against the reference: search = the mean of seeds 0 and 1 at the default budget (what the "
          "search scores at its last rung), 1 seed = seed 0 alone, params = non-embedding parameter count; "
          "ceilings: seeds = seed 0 against seed 1 of the default proxy, ref-seeds = the reference's seed 0 against "
          "its seed 1 (n shapes)")
    print("ref-mean = the search's score against the mean of the reference's two seeds (only where every shape "
          "has both)")
    print(f"{'set':8} {'n':>3} {'search':>7} {'1 seed':>7} {'params':>7} {'seeds':>7} {'ref-seeds':>9} {'ref-mean':>8}")
    for name in ["all"] + [g for g in groups if g.startswith("group")]:
        members = [t for t in complete.values() if name == "all" or t["default"]["group"] == name]
        if len(members) < 2:
            continue
        ref = [-m["reference"]["val_bpb"] for m in members]
        proxy = [-m["default"]["val_bpb"] for m in members]
        seed1 = [-m["seed1"]["val_bpb"] for m in members]
        search = [(a + b) / 2 for a, b in zip(proxy, seed1)]
        params = [m["default"]["non_embedding_params"] for m in members]
        twice = [m for m in members if "reference_seed1" in m]
        ref0 = [-m["reference"]["val_bpb"] for m in twice]
        ref1 = [-m["reference_seed1"]["val_bpb"] for m in twice]
        ceiling = f"{kendall_tau(ref0, ref1):.3f} ({len(twice)})" if len(twice) >= 2 else "-"
        ref_mean = (f"{kendall_tau(search, [(a + b) / 2 for a, b in zip(ref0, ref1)]):.3f}"
                    if len(twice) == len(members) else "-")
        print(f"{name:8} {len(members):>3} {kendall_tau(search, ref):>7.3f} {kendall_tau(proxy, ref):>7.3f} "
              f"{kendall_tau(params, ref):>7.3f} {kendall_tau(proxy, seed1):>7.3f} {ceiling:>9} {ref_mean:>8}")
    spread = [abs(t["default"]["val_bpb"] - t["seed1"]["val_bpb"]) for t in complete.values()]
    if spread:
        print(f"seed noise: median |seed0 - seed1| = {np.median(spread):.4f} bits/byte; default proxy time "
              f"median {np.median([t['default']['seconds'] for t in complete.values()]):.0f} s, reference "
              f"{np.median([t['reference']['seconds'] for t in complete.values()]):.0f} s per shape")
    ref_spread = [abs(t["reference"]["val_bpb"] - t["reference_seed1"]["val_bpb"])
                  for t in complete.values() if "reference_seed1" in t]
    if ref_spread:
        print(f"reference seed noise: median |seed0 - seed1| = {np.median(ref_spread):.4f} bits/byte "
              f"over {len(ref_spread)} shapes")
    for t in sorted(complete.values(), key=lambda t: (t["default"]["group"], t["default"]["non_embedding_params"])):
        d = t["default"]
        again = f"  reference seed1 {t['reference_seed1']['val_bpb']:.4f}" if "reference_seed1" in t else ""
        print(f"  {d['group']:7} {d['shape']:28} {d['non_embedding_params'] / 1e6:7.1f}M  default {d['val_bpb']:.4f}  "
              f"seed1 {t['seed1']['val_bpb']:.4f}  reference {t['reference']['val_bpb']:.4f}{again}")


if __name__ == "__main__":
    main()
