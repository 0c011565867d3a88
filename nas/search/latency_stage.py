"""The latency stage of `nas search`: a multi-objective Optuna search over a search space, under device
constraints, on the cheap objectives (predicted loss or parameter count, speed, memory).

Its rooms, in the order a run goes through them:
1. `nas.search.settings.SearchSettings`: the flags, checked on construction.
2. `nas.search.problem.SearchProblem`: targets, space, latency and quality models, objectives, constraints and
   the study meta, resolved (unknown names fail here, before anything is written); it evaluates candidates.
3. `nas.search.exact`: the exact front of an enumerable space (an impossible constraint is refused there).
4. `nas.study.resume`: the study, created or resumed (one of other settings is refused, or, under a default
   name, searched under a name of its own).
5. `nas.search.sampling.AskTell`: the sampler's ask/tell loop, then the exact front's missing members.
6. The result: the study's Pareto set (`nas.study.read.pareto_set`), as rows to print, with the share of the
   exact front's hypervolume the sampler reached.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np

from nas.core.arch import ArchBatch
from nas.search.advice import ShapeTable
from nas.search.exact import ExactFront, exact_front
from nas.search.output import pareto_row
from nas.search.problem import SearchProblem
from nas.search.sampling import AskTell
from nas.search.settings import SearchSettings
from nas.study import schema
from nas.study.pareto import to_minimisation
from nas.study.read import pareto_set, state_counts, trial_points
from nas.study.resume import open_study, settle_name
from nas.study.storage import open_storage


@dataclass
class SearchResult:
    study_name: str
    storage: str
    meta: schema.StudyMeta
    trials_total: int  # counted sampler trials in the study (new configs inside the space)
    trials_new: int  # counted sampler trials this run added
    pareto: list[dict[str, Any]]  # one row per Pareto-optimal architecture
    exact: ExactFront | None
    exact_added: int  # exact-front configs added as trials this run
    hypervolume_ratio: float | None  # the sampler's front vs the exact front (same normalisation)
    interrupted: bool
    seconds: float
    states: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # predictions outside where a latency model is known to hold
    proxy: Any = None  # nas.search.pipeline.ProxySummary when the proxy stage ran (or was planned)
    recommendation: dict[str, Any] | None = None  # nas.search.pipeline.Search.recommendation


class LatencyStage:
    """The latency stage of one `nas search` run. Construct (resolves and validates), then `run()`."""

    def __init__(self, settings: SearchSettings, log: Callable[[str], None] | None = None):
        self.settings = settings
        self.log = log or (lambda line: print(line, file=sys.stderr))
        self.problem = SearchProblem(settings)
        self.loop: AskTell | None = None  # the last run's loop: its working study, what it evaluated

    @cached_property
    def exact(self) -> ExactFront | None:
        """The exact stage, computed once: every refusal that needs no storage (an impossible constraint), so
        that it comes before the storage is opened (which creates a new database)."""
        return exact_front(self.problem, self.log)

    def run(self, progress: bool = True, storage=None, study_name: str | None = None) -> SearchResult:
        """Search (or resume) the study. `storage` and `study_name`: an opened storage and a settled name (the
        pipeline's); by default the settings' storage is opened and the name settled here."""
        import optuna

        t0 = time.perf_counter()
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            # TPE's multivariate mode and GP are marked experimental; say nothing about it on every run.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return self._run(progress, storage, study_name, t0)
            finally:
                optuna.logging.set_verbosity(verbosity)

    def _run(self, progress: bool, storage, name: str | None, t0: float) -> SearchResult:
        problem, exact = self.problem, self.exact
        if storage is None:
            storage = open_storage(problem.storage_url)
            name = settle_name(storage, problem.storage_url, problem.study_name, self.settings.named_by_user,
                               problem.meta, self.log)
        study = open_study(storage, problem.storage_url, name, problem.meta)
        self._record(study)
        loop = self.loop = AskTell(problem, study, storage)
        interrupted = loop.run(exact, progress)
        added = 0 if interrupted or exact is None else loop.add_exact_front(exact)
        return self._result(study, loop, added, interrupted, time.perf_counter() - t0)

    def _record(self, study) -> None:
        """What the report reads beside the trials: the exact stage's summary, each target's parity record
        and the landmarks as this search predicts them (the same every run: the latency models are checked)."""
        if self.exact is not None:
            study.set_user_attr(schema.STUDY_EXACT, self.exact.to_user_attrs())
        study.set_user_attr(schema.STUDY_PARITY, {t: m.parity() for t, m in self.problem.models.items()})
        study.set_user_attr(schema.STUDY_LANDMARKS, self.problem.landmarks())

    def _result(self, study, loop: AskTell, added: int, interrupted: bool, seconds: float) -> SearchResult:
        problem, exact = self.problem, self.exact
        trials = loop.working.get_trials(deepcopy=False)
        states = state_counts(trials)
        points, _ = trial_points(trials)
        front = pareto_set(points.values(), problem.directions)
        by_number = {t.number: t for t in trials}
        rows = [{**pareto_row(by_number[n], problem.objectives), "twins": [points[m].arch_id for m in group[1:]]}
                for n, group in front.items()]
        rows.sort(key=lambda r: (-r["quality"], r["trial"]))
        shapes = [points[m].record.arch for group in front.values() for m in group]
        warnings_ = problem.extrapolation_warnings(shapes, "Pareto") if shapes else []
        hv_ratio = None
        searched = [p.values for p in points.values() if p.feasible and p.found_by != schema.FOUND_BY_EXACT]
        if exact is not None and searched and exact.hypervolume > 0:
            hv_ratio = exact.normaliser.hypervolume(to_minimisation(np.array(searched), problem.directions)) \
                / exact.hypervolume
        summary = {"trials": sum(1 for t in trials if t.user_attrs.get(schema.COUNTED)), "optuna_trials": len(trials),
                   "pareto_size": len(rows), "hypervolume_ratio": hv_ratio, "interrupted": interrupted,
                   "warnings": warnings_}
        study.set_user_attr(schema.STUDY_SEARCH,
                            {**summary, "sampler": self.settings.sampler, "seed": self.settings.seed})
        return SearchResult(study_name=study.study_name, storage=problem.storage_url, meta=problem.meta,
                            trials_total=summary["trials"], trials_new=loop.new, pareto=rows, exact=exact,
                            exact_added=added, hypervolume_ratio=hv_ratio, interrupted=interrupted,
                            seconds=seconds, states=states, notes=[loop.stop_reason] if loop.stop_reason else [],
                            warnings=warnings_)

    # ------------------------------------------------------------------------------------------ for the proxy stage
    def candidates(self) -> tuple[ArchBatch, np.ndarray, np.ndarray, Callable[[int], tuple[Any, list[float]]]]:
        """The feasible shapes the latency stage knows, for the proxy stage to choose from: an ArchBatch of
        them, their speeds (the first speed objective, higher is better), their quality (higher is better), and
        a function giving row i's schema.TrialRecord and its values of the speed objectives. All of an enumerated space;
        else every feasible config the sampler evaluated (after `run`)."""
        problem = self.problem
        speed_obj = problem.speed_objective()
        sign = 1.0 if speed_obj.direction == "maximize" else -1.0
        speed_positions = [j for j, o in enumerate(problem.objectives) if not o.is_quality]
        every = self.exact.every if self.exact is not None else None
        if every is not None:
            chosen = every.batch.subset(every.index)

            def record_of(i: int):
                rec, values, _ = problem.record(chosen.config(i), every.figures.row(int(every.index[i])))
                return rec, [values[j] for j in speed_positions]

            return (chosen, sign * every.figures.metric(speed_obj)[every.index], every.figures.quality[every.index],
                    record_of)
        trials = [t for t in self.loop.working.get_trials(deepcopy=False)
                  if t.state.name == "COMPLETE" and schema.TrialRecord.present_in(t.user_attrs)
                  and schema.DUPLICATE_OF not in t.user_attrs and all(v <= 0 for v in t.constraints.values())]
        records = [schema.TrialRecord.from_user_attrs(t.user_attrs) for t in trials]
        position = [o.label for o in problem.objectives].index(speed_obj.label)
        speeds = np.array([sign * t.values[position] for t in trials], dtype=float)
        return (ArchBatch.from_configs([r.arch for r in records]), speeds, np.array([r.quality for r in records]),
                lambda i: (records[i], [float(trials[i].values[j]) for j in speed_positions]))

    def shape_table(self, target: str) -> ShapeTable | None:
        """The feasible shapes the stage knows, with decode tokens/s on `target` and predicted loss (None without
        the law: --quality params)."""
        if self.problem.quality_model is None:
            return None
        every = self.exact.every if self.exact is not None else None
        if every is not None:
            return ShapeTable(every.batch.subset(every.index),
                              every.figures.per_target("decode_tokens_per_s", target)[every.index],
                              every.figures.predicted_loss[every.index], target)
        batch, _, _, record_of = self.candidates()
        records = [record_of(i)[0] for i in range(len(batch))]
        return ShapeTable(batch, np.array([r.figures[target].decode_tokens_per_s for r in records]),
                          np.array([r.loss for r in records]), target)
