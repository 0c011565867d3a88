"""The ask/tell loop of the latency stage.

An Optuna sampler (NSGA-II by default) proposes configs; each trial is evaluated with the vectorised functions
of `nas.search.problem` on a 1-row batch, and carries its `TrialRecord` in user attrs and its constraint values
through `Trial.set_constraint` (> 0 = violated; infeasible trials are kept with their reasons). A config
already evaluated (same arch id) is never predicted again: the trial copies the earlier trial's values and
records `duplicate_of`. A combination the space rejects fails its trial alone, with `fail_reason`. After the
loop, configs of the exact front the sampler did not reach are added as trials with `found_by = "exact_front"`,
so the study's Pareto set is exact.

Storage: the sampler works on an in-memory copy of the study and every finished trial is written to the
user's storage at once, in one `Study.add_trial` (one transaction instead of one per attribute). The stored
study is an ordinary Optuna study: trials with params, distributions, values, constraints and user attrs,
readable by optuna-dashboard. `kill -9` loses no finished trial, and no trial is ever left RUNNING in the
storage. A resumed run loads the stored trials into the working copy first, and reseeds the sampler with
(seed, trials so far), so it does not replay the first run's proposals. One process writes a study at a time
(the pipeline runs the latency stage under a storage-wide lock).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np

from nas.core.arch import ArchBatch
from nas.core.errors import NasUserError
from nas.search.exact import EXACT_LIMIT, ExactFront
from nas.search.problem import SearchProblem
from nas.study import schema
from nas.study.pareto import pareto_mask, to_minimisation

STALL_ASKS = 100  # proposals in a row without a new config before a search stops early
MAX_ASKS_PER_TRIAL = 5  # proposals per budgeted evaluation before stopping early (random needs ~4 on subbillion)


class AskTell:
    """One run of the loop on a stored study: the working copy, the configs seen, and what the run did."""

    def __init__(self, problem: SearchProblem, study, storage):
        import optuna
        from optuna.trial import TrialState

        self.problem, self.study = problem, study
        stored = [t for t in study.get_trials(deepcopy=False)
                  if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)]
        settings = problem.settings
        self.remaining = max(0, settings.trials - sum(1 for t in stored if t.user_attrs.get(schema.COUNTED)))
        seed = settings.seed if not stored else hash_seed(settings.seed, len(stored))
        sampler = make_sampler(settings.sampler, settings.population, seed, settings.trials)
        self.mirrored = not isinstance(storage, optuna.storages.InMemoryStorage)
        if self.mirrored:
            self.working = optuna.create_study(directions=problem.directions, sampler=sampler)
            self.working.add_trials(stored)
        else:
            self.working = study
            study.sampler = sampler
        self.seen: dict[str, Any] = {}  # arch id -> the COMPLETE FrozenTrial that evaluated it
        for t in self.working.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            aid = t.user_attrs.get(schema.ARCH_ID)
            if aid is not None and aid not in self.seen and schema.DUPLICATE_OF not in t.user_attrs:
                self.seen[aid] = t
        self.evaluations = 0  # configs predicted one by one (duplicates are not)
        self.asked = 0
        self.new = 0  # counted trials this run added
        self.stop_reason: str | None = None  # why the run ended before its budget, if it did

    # ------------------------------------------------------------------------------------------ the loop
    def run(self, exact: ExactFront | None, progress: bool) -> bool:
        """Ask and tell until the budget is spent or the sampler stalls; True when interrupted (Ctrl-C).

        Only new configs inside the space count toward the budget: a rejected combination or a duplicate costs
        no evaluation (it is still a recorded trial the sampler learns from). A sampler that keeps proposing
        those (a converged NSGA-II on a small space) stops after STALL_ASKS of them in a row, and a space with
        fewer configs than the budget stops when every config has been evaluated."""
        from optuna.trial import TrialState

        bar = _bar(self.remaining) if progress and self.remaining else None
        tracker = _FrontTracker(self.problem.objectives, exact)
        for t in self.working.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            tracker.add(t)
        max_asks = MAX_ASKS_PER_TRIAL * self.remaining + STALL_ASKS
        space_size = exact.space_size if exact is not None else self.problem.space.size(limit=EXACT_LIMIT)
        in_space = sum(1 for t in self.seen.values() if not t.constraints.get("space"))
        since_new = 0
        try:
            while self.new < self.remaining and self.asked < max_asks:
                self.stop_reason = _stop_reason(space_size, in_space + self.new, since_new)
                if self.stop_reason:
                    break
                frozen = self._ask_and_tell(tracker)
                since_new += 1
                if frozen.user_attrs.get(schema.COUNTED):
                    self.new += 1
                    since_new = 0
                    if bar is not None:
                        bar.set_postfix_str(tracker.postfix(self.asked), refresh=False)
                        bar.update(1)
            if self.new < self.remaining and self.asked >= max_asks:
                self.stop_reason = (f"stopped early: {self.asked} proposals gave only {self.new} new shapes (limit "
                                    f"{MAX_ASKS_PER_TRIAL} proposals per --trials)")
        except KeyboardInterrupt:
            return True
        finally:
            if bar is not None:
                bar.close()
        return False

    def _ask_and_tell(self, tracker: "_FrontTracker"):
        """One proposal, evaluated and told; the finished trial is written to the storage at once."""
        from optuna.trial import TrialState

        trial = self.working.ask()
        self.asked += 1
        try:
            values = self._objective(trial)
        except _TrialFailed:
            frozen = self.working.tell(trial, state=TrialState.FAIL)
        except KeyboardInterrupt:
            self.working.tell(trial, state=TrialState.FAIL)
            raise
        else:
            frozen = self.working.tell(trial, values)
            if schema.DUPLICATE_OF not in frozen.user_attrs:
                self.seen.setdefault(frozen.user_attrs[schema.ARCH_ID], frozen)
            tracker.add(frozen)
        if self.mirrored:
            self.study.add_trial(schema.with_constraint_list(frozen))
        return frozen

    def _objective(self, trial) -> list[float]:
        """Evaluate one trial; raises _TrialFailed for a combination the space rejects. A trial that predicted
        a new config inside the space gets user attr `counted` (it counts toward --trials)."""
        trial.set_user_attr(schema.FOUND_BY, schema.FOUND_BY_SAMPLER)
        try:
            arch = self.problem.space.build(self._suggest(trial))
        except NasUserError as exc:
            trial.set_user_attr(schema.FAIL_REASON, str(exc))
            raise _TrialFailed(str(exc)) from None
        earlier = self.seen.get(arch.arch_id)
        if earlier is not None:
            for key, value in earlier.user_attrs.items():
                if key not in (schema.FOUND_BY, schema.DUPLICATE_OF, schema.COUNTED):
                    trial.set_user_attr(key, value)
            trial.set_user_attr(schema.DUPLICATE_OF, earlier.number)
            for key, value in schema.named_constraints(earlier.system_attrs).items():
                trial.set_constraint(key, value)
            return list(earlier.values)
        rec, objective_values, constraint_values = self.problem.record(
            arch, self.problem.figures(ArchBatch.from_configs([arch])))
        self.evaluations += 1
        for key, value in rec.to_user_attrs().items():
            trial.set_user_attr(key, value)
        if constraint_values["space"] == 0:
            trial.set_user_attr(schema.COUNTED, True)
        for key, value in constraint_values.items():
            trial.set_constraint(key, value)
        return objective_values

    def _suggest(self, trial) -> dict[str, Any]:
        values = {}
        for name, dim in self.problem.space.dimensions.items():
            if _is_range(dim):
                values[name] = trial.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step))
            else:
                values[name] = trial.suggest_categorical(name, list(dim.choices))
        return values

    # ------------------------------------------------------------------------------------------ the exact front
    def add_exact_front(self, exact: ExactFront) -> int:
        """Add the exact front's configs the study does not hold yet, as complete trials; returns how many."""
        import optuna

        added = 0
        for i, arch in enumerate(exact.configs):
            if arch.arch_id in self.seen:
                continue
            rec, values, constraint_values = self.problem.record(arch, exact.figures.row(i))
            params, dists = self._params_of(arch, exact.params[i])
            trial = optuna.trial.create_trial(
                values=values, params=params, distributions=dists,
                user_attrs={schema.FOUND_BY: schema.FOUND_BY_EXACT, **rec.to_user_attrs()},
                system_attrs={f"constraints:{k}": v for k, v in constraint_values.items()})
            self.working.add_trial(trial)
            if self.mirrored:
                self.study.add_trial(schema.with_constraint_list(trial))
            self.seen[arch.arch_id] = self.working.get_trials(deepcopy=False)[-1]
            added += 1
        return added

    def _params_of(self, arch, known: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sampler params (with their distributions) that build `arch`: `known` when the space gave them,
        else the ArchConfig fields when every dimension is one; checked by building. Else none: the trial
        then carries the config in its user attrs only."""
        import optuna

        params, dists = {}, {}
        for name, dim in self.problem.space.dimensions.items():
            if known is not None and name in known:
                value = known[name]
            elif hasattr(arch, name):
                value = getattr(arch, name)
            else:
                return {}, {}
            if _is_range(dim):
                dists[name] = optuna.distributions.IntDistribution(int(dim.low), int(dim.high), step=int(dim.step))
            elif value in dim.choices:
                dists[name] = optuna.distributions.CategoricalDistribution(list(dim.choices))
            else:
                return {}, {}
            params[name] = value
        try:
            if self.problem.space.build(params).arch_id != arch.arch_id:
                return {}, {}
        except NasUserError:
            return {}, {}
        return params, dists


class _TrialFailed(Exception):
    """A candidate the space rejects: its trial fails alone, the search goes on."""


def _is_range(dim) -> bool:
    """A stepped integer range (else a list of choices)."""
    return getattr(dim, "step", None) is not None and getattr(dim, "low", None) is not None


def _stop_reason(space_size: int | None, evaluated: int, since_new: int) -> str | None:
    """Why the loop stops before its budget: the whole space evaluated, or a sampler that proposes nothing new."""
    if space_size is not None and evaluated >= space_size:
        return f"every config of the space ({space_size}) has been evaluated"
    if since_new >= STALL_ASKS:
        return f"stopped early: the sampler proposed only known or rejected shapes {STALL_ASKS} times in a row"
    return None


def _bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="search", unit="trial", file=sys.stderr, dynamic_ncols=True, leave=True)


# ---------------------------------------------------------------------------------------------- samplers
def make_sampler(name: str, population: int | None, seed: int | None, budget: int):
    """The Optuna sampler `--sampler` names, seeded."""
    import optuna

    if name == "nsga2":
        # BLX-alpha crossover: numeric dimensions (width, depth) of a child are drawn around and between
        # its parents' values instead of copied from one of them; categorical ones are swapped as before.
        # On the sub-billion preset it reached more of the exact front's hypervolume at 100 / 300 / 1000
        # trials than uniform, SBX, polynomial mutation or a higher mutation rate (see
        # benchmarks/bench_search_efficiency.py).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            crossover = optuna.samplers.nsgaii.BLXAlphaCrossover()
        return optuna.samplers.NSGAIISampler(population_size=population or default_population(budget), seed=seed,
                                             crossover=crossover)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GPSampler(seed=seed)  # scipy, which it needs, is a dependency of nas


def hash_seed(seed: int, n: int) -> int:
    """A seed for a resumed run: deterministic in (seed, trials so far), different from the first run's."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, n]).generate_state(1)[0])


def default_population(budget: int) -> int:
    """NSGA-II population for a trial budget: ~15 generations, between 10 and 50 (Optuna's default).
    On the sub-billion preset, 20 for 300 trials reached a larger share of the exact hypervolume than
    10, 30 or 50 (benchmarks/bench_search_efficiency.py)."""
    return int(min(50, max(10, budget // 15)))


class _FrontTracker:
    """Best-so-far for the progress bar: feasible count, front size, and hypervolume vs the exact front."""

    def __init__(self, objectives, exact: ExactFront | None):
        self.objectives = objectives
        self.directions = [o.direction for o in objectives]
        self.exact = exact
        self.points: list[list[float]] = []
        self.front: np.ndarray | None = None

    def add(self, trial) -> None:
        if trial.values is None or any(v > 0 for v in trial.constraints.values()):
            return
        if trial.user_attrs.get(schema.FOUND_BY) == schema.FOUND_BY_EXACT:
            return
        self.points.append(list(to_minimisation(np.array([trial.values]), self.directions)[0]))
        self.front = None

    def postfix(self, asked: int) -> str:
        if not self.points:
            return f"asked {asked}, feasible 0"
        if self.front is None:
            pts = np.array(self.points)
            self.front = pts[pareto_mask(pts)]
        text = f"asked {asked}, feasible {len(self.points)}, front {len(np.unique(self.front, axis=0))}"
        if self.exact is not None and self.exact.hypervolume > 0:
            text += f", hv {self.exact.normaliser.hypervolume(self.front) / self.exact.hypervolume:.3f} of exact"
        else:
            best = self.front[:, 1].min()
            text += f", best {self.objectives[1].label} {-best if self.directions[1] == 'maximize' else best:.4g}"
        return text
