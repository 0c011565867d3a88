"""Search efficiency with predictor objectives: hypervolume after 100 / 300 / 1000 trials, as a share of the
exact front's hypervolume, mean over seeds, per sampler (random sampling is the baseline).

Setting: the sub-billion preset on pixel8 (analytic latency, int4), default objectives (quality = non-embedding
parameters vs decode tokens/s) and constraints (the target's memory budget), prompt 512 / context 2048.
The exact front comes from enumerating and predicting the whole space (nas.search.exact.exact_front).
Hypervolume: both objectives minimised and scaled to [0, 1] by the best and worst values over the feasible
space, reference point 1.1 (nas.objectives.Normaliser). Trials run on an in-memory storage, without the
exact-front trials nas search adds at the end (this measures the sampler alone).

Each budget is its own run, as `nas search --trials B` makes it (NSGA-II's population follows the budget:
10 / 20 / 50 here); --cumulative reads one run of the largest budget at each budget instead.
Budget = trials as `nas search --trials` counts them: new configs inside the space that were evaluated.
Proposals the space rejects (invalid head/width combinations, out of the params range) and duplicates cost
no evaluation; they are still Optuna trials the sampler learns from, and their number is printed too.

Goal (issue "Search"): >= 0.99 of the exact front within 300 trials, ahead of random at every budget.
One line per (sampler, budget); the headline (NSGA-II at 300 trials) last.

    .venv/bin/python benchmarks/bench_search_efficiency.py [--seeds 5] [--samplers nsga2,tpe,random]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BUDGETS = (100, 300, 1000)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--samplers", default="nsga2,tpe,random")
    parser.add_argument("--space", default="subbillion")
    parser.add_argument("--target", default="pixel8")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--cumulative", action="store_true",
                        help="one run of the largest budget per seed, read at each budget (default: a run per budget)")
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]

    import numpy as np
    from optuna.trial import TrialState

    from nas.search import LatencyStage, SearchSettings, sampling
    from nas.study.pareto import to_minimisation

    # Measure the samplers, not nas search's stop rule for samplers that keep proposing rejected shapes
    # (random proposes ~55% invalid or out-of-range shapes in this space).
    sampling.MAX_ASKS_PER_TRIAL = 20
    sampling.STALL_ASKS = 10**9

    base = LatencyStage(SearchSettings(targets=(args.target,), space=args.space, storage=":memory:"),
                        log=lambda _: None)
    t0 = time.perf_counter()
    exact = base.exact
    print(f"exact front: {args.space} on {args.target}: {exact.space_size} configs, {exact.feasible} feasible, "
          f"front {len(exact.arch_ids)} shapes, hypervolume {exact.hypervolume:.4f} "
          f"(enumerate + predict + front {time.perf_counter() - t0:.2f} s)")
    directions = base.problem.directions
    results: dict[str, dict[int, list[float]]] = {}
    asked: dict[str, dict[int, list[int]]] = {}
    for sampler in args.samplers.split(","):
        results[sampler] = {b: [] for b in budgets}
        asked[sampler] = {b: [] for b in budgets}
        t1 = time.perf_counter()
        for seed in range(args.seeds):
            for b in budgets:
                # One run per budget, as `nas search --trials B` would make it (the NSGA-II population follows
                # the budget), unless --cumulative: one run of the largest budget, read at each budget.
                if args.cumulative and b != budgets[0]:
                    pass
                else:
                    trials_run = max(budgets) if args.cumulative else b
                    settings = SearchSettings(targets=(args.target,), space=args.space, trials=trials_run,
                                              sampler=sampler, seed=seed, storage=":memory:", exact=False,
                                              study=f"{sampler}-{seed}-{b}")
                    search = LatencyStage(settings, log=lambda _: None)
                    search.run(progress=False)
                    trials = sorted(search.loop.working.get_trials(deepcopy=False), key=lambda t: t.number)
                    counted = [i for i, t in enumerate(trials) if t.user_attrs.get("counted")]
                cut = counted[b - 1] + 1 if len(counted) >= b else len(trials)
                asked[sampler][b].append(cut)
                pts = [t.values for t in trials[:cut] if t.state == TrialState.COMPLETE
                       and all(v <= 0 for v in t.constraints.values())]
                hv = exact.normaliser.hypervolume(to_minimisation(np.array(pts), directions)) if pts else 0.0
                results[sampler][b].append(hv / exact.hypervolume)
        print(f"  ({sampler}: {args.seeds} seeds x {'+'.join(map(str, budgets))} trials in "
              f"{time.perf_counter() - t1:.0f} s)",
              file=sys.stderr)
    for sampler, by_budget in results.items():
        for b, ratios in by_budget.items():
            r = np.array(ratios)
            print(f"{sampler:>7} @ {b:>4} trials: hypervolume {r.mean():.4f} of exact (min {r.min():.4f}, "
                  f"max {r.max():.4f}, {len(r)} seeds; {np.mean(asked[sampler][b]):.0f} Optuna trials incl. "
                  "rejected and duplicate proposals)")
    if "random" in results:
        for sampler in results:
            if sampler != "random":
                ahead = all(np.mean(results[sampler][b]) > np.mean(results["random"][b]) for b in budgets)
                print(f"{sampler} ahead of random at every budget: {'yes' if ahead else 'no'}")
    head = "nsga2" if "nsga2" in results else next(iter(results))
    b = 300 if 300 in budgets else budgets[-1]
    print(f"HEADLINE {head} hypervolume at {b} trials: {np.mean(results[head][b]):.4f} of the exact front "
          f"(goal >= 0.99; {args.seeds} seeds)")


if __name__ == "__main__":
    sys.exit(main())
