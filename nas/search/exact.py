"""The exact stage of a latency search: when the space has at most EXACT_LIMIT configs, enumerate it, predict
every config with the vectorised latency and quality models and compute the exact Pareto front of the feasible
configs. A constraint no config can meet is refused here, naming the closest config; a space too large to
enumerate is checked on a random sample instead (a warning, since a sample proves nothing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from nas.core.arch import ArchBatch
from nas.core.errors import NasUserError
from nas.core.trainers import RULES, buildable
from nas.search.problem import SearchProblem
from nas.spaces import ENUMERATION_LIMIT
from nas.study.objectives import Figures
from nas.study.pareto import Normaliser, pareto_mask, to_minimisation
from nas.study.read import twin_groups

EXACT_LIMIT = ENUMERATION_LIMIT  # configs; enumeration and prediction stay within seconds and ~1 GB up to here
FEASIBILITY_SAMPLE = 2000  # random configs checked when a space is too large to enumerate


@dataclass(frozen=True)
class FeasibleConfigs:
    """Every feasible config of an enumerated space: what the proxy stage chooses from."""

    batch: ArchBatch  # the enumerated (trainer-filtered) space
    figures: Figures  # of every row of `batch`
    index: np.ndarray  # the feasible rows


@dataclass
class ExactFront:
    """The exact Pareto front of the feasible configs of an enumerated space (cheap objectives only)."""

    space_size: int
    feasible: int
    arch_ids: list[str]  # of the front, best quality first
    values: np.ndarray  # [front, k] objective values in their own directions
    normaliser: Normaliser  # over the feasible configs
    hypervolume: float
    configs: list  # ArchConfig of each front member
    figures: Figures  # of the front members
    params: list  # sampler params (dimension values) that build each front member, or None
    seconds: float
    twins: int = 0  # front configs left out as twins of a kept member (identical objective values)
    every: FeasibleConfigs | None = None

    def to_user_attrs(self) -> dict[str, Any]:
        return {"space_size": self.space_size, "feasible": self.feasible, "front_size": len(self.arch_ids),
                "twins_left_out": self.twins,
                "hypervolume": self.hypervolume, "normalisation": self.normaliser.to_dict(),
                "seconds": round(self.seconds, 3)}


def exact_front(problem: SearchProblem, log: Callable[[str], None]) -> ExactFront | None:
    """Enumerate and predict the whole space when it is small enough; refuse impossible constraints.
    Returns None (after a sampled feasibility check) for larger spaces or with exact=False."""
    size = problem.space.size(limit=EXACT_LIMIT) if problem.settings.exact else None
    if size is None:
        check_sampled_feasibility(problem, log)
        return None
    t0 = time.perf_counter()
    batch, space_rows = _enumerate(problem, log)
    figs = problem.figures(batch)
    names, matrix = problem.constraints.evaluate(figs)
    feasible = np.all(matrix <= 0, axis=1) if matrix.shape[1] else np.ones(len(batch), dtype=bool)
    if not feasible.any():
        raise NasUserError(infeasible_message(problem, names, matrix, figs, batch.config, exhaustive=True))
    index = np.flatnonzero(feasible)
    minimised = to_minimisation(figs.values(problem.objectives)[index], problem.directions)
    front = index[pareto_mask(minimised)]
    front_values = figs.values(problem.objectives)[front]
    # Best quality first (the first objective), so a table of the front reads top-down.
    order = np.argsort(to_minimisation(front_values, problem.directions)[:, 0], kind="stable")
    front, front_values = front[order], front_values[order]
    configs = [batch.config(int(i)) for i in front]
    # Twins are one point of the front: only the member a user would choose becomes a trial.
    chosen = sorted(twin_groups(front_values, configs))
    front, front_values, configs = front[chosen], front_values[chosen], [configs[j] for j in chosen]
    normaliser = Normaliser.from_points(minimised)
    return ExactFront(space_size=len(batch) if problem.settings.trainer else size, feasible=int(feasible.sum()),
                      arch_ids=[c.arch_id for c in configs],
                      values=front_values, normaliser=normaliser,
                      hypervolume=normaliser.hypervolume(to_minimisation(front_values, problem.directions)),
                      configs=configs, figures=problem.figures(batch.subset(front)),
                      params=[problem.space.values_of(int(space_rows[i])) for i in front],
                      seconds=time.perf_counter() - t0, twins=len(order) - len(chosen),
                      every=FeasibleConfigs(batch, figs, index))


def _enumerate(problem: SearchProblem, log: Callable[[str], None]) -> tuple[ArchBatch, np.ndarray]:
    """The space's configs (only those --trainer can build), and each one's row in the space's enumeration."""
    batch = problem.space.enumerate()
    trainer = problem.settings.trainer
    if not trainer:
        return batch, np.arange(len(batch))
    keep = buildable(batch, trainer)
    log(f"--trainer {trainer}: {int((~keep).sum()):,} of {len(batch):,} shapes of the space are ones it cannot "
        f"build ({'; '.join(r.needs for r in RULES[trainer])}); searching the rest")
    if not keep.any():
        raise NasUserError(f"--trainer {trainer} can build no shape of space {problem.space.name!r}")
    rows = np.flatnonzero(keep)
    return batch.subset(rows), rows


def check_sampled_feasibility(problem: SearchProblem, log: Callable[[str], None]) -> None:
    """For a space too large to enumerate: check constraints on random configs; warn (not refuse) when
    none of them is feasible, since a sample cannot prove that no config is."""
    if not problem.constraint_names:
        return
    configs = _random_configs(problem)
    if not configs:
        return
    figs = problem.figures(ArchBatch.from_configs(configs))
    names, matrix = problem.constraints.evaluate(figs)
    if not np.all(matrix <= 0, axis=1).any():
        log("warning: " + infeasible_message(problem, names, matrix, figs, lambda i: configs[i], exhaustive=False)
            + "; searching anyway")


def _random_configs(problem: SearchProblem) -> list:
    """Up to FEASIBILITY_SAMPLE configs the space builds, drawn uniformly per dimension (seeded)."""
    space = problem.space
    rng = np.random.default_rng(problem.settings.seed)
    configs = []
    for _ in range(FEASIBILITY_SAMPLE * 3):
        values = {}
        for dim in space.dimensions.values():
            if getattr(dim, "step", None) is not None and getattr(dim, "low", None) is not None:
                values[dim.name] = int(rng.choice(np.arange(dim.low, dim.high + 1, dim.step)))
            else:
                values[dim.name] = dim.choices[int(rng.integers(len(dim.choices)))]
        try:
            configs.append(space.build(values))
        except NasUserError:
            continue
        if len(configs) >= FEASIBILITY_SAMPLE:
            break
    return configs


def infeasible_message(problem: SearchProblem, names, matrix, figs, config_of, exhaustive: bool) -> str:
    """Why no config (of the space, or of a sample) is feasible: a constraint nobody meets, with its closest
    config; else the config closest to meeting them all together, with what it breaks."""
    space, constraints = problem.space, problem.constraints
    where = (f"no config in space {space.name!r}" if exhaustive
             else f"none of {len(figs)} random configs of space {space.name!r}")
    for j, name in enumerate(names):
        if np.all(matrix[:, j] > 0):
            i = int(np.argmin(matrix[:, j]))
            arch = config_of(i)
            return (f"{where} meets {constraints.flag_of(name)} ({name}); the closest is "
                    f"{arch.short_tag} ({arch.arch_id}): {constraints.describe(name, figs, i)}")
    i = int(np.argmin(np.clip(matrix, 0, None).sum(axis=1)))
    arch = config_of(i)
    broken = "; ".join(constraints.describe(n, figs, i) for j, n in enumerate(names) if matrix[i, j] > 0)
    return f"{where} meets all constraints together; the closest is {arch.short_tag} ({arch.arch_id}): {broken}"
