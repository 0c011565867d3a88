"""The latency stage of `nas search`: a multi-objective Optuna search over a search space, under device
constraints, on the cheap objectives (predicted speed, memory, parameter count).

How a search runs (each step is a method of `Search`):
1. Resolve: targets, space, latency models (one per target at its precision), objectives, constraints and the
   `StudyMeta` that says what the study's trials mean. Unknown names fail here, before anything is written.
2. Exact stage: when the space has at most EXACT_LIMIT configs, enumerate it, predict every config with the
   vectorised latency model and compute the exact Pareto front of the feasible configs. A constraint no config
   can meet is refused here, naming the closest config. The front's size, hypervolume and arch ids go into the
   study's user attrs (`nas_exact`).
3. Search: an Optuna sampler (NSGA-II by default) proposes configs; each trial is evaluated with the same
   vectorised functions on a 1-row batch, and carries its `TrialRecord` in user attrs and its constraint values
   through `Trial.set_constraint` (> 0 = violated; infeasible trials are kept with their reasons). A config
   already evaluated (same arch id) is never predicted again: the trial copies the earlier trial's values and
   records `duplicate_of`. A combination the space rejects fails its trial alone, with `fail_reason`.
4. Exact front: configs of the exact front the sampler did not reach are added as trials with
   `found_by = "exact_front"`, so the study's Pareto set is exact; output says which rows the sampler found.

Storage: the sampler works on an in-memory copy of the study and every finished trial is written to the
user's storage at once, in one `Study.add_trial` (one transaction on SQLite instead of ~25; ~16 ms per trial
instead of ~75 ms). The stored study is an ordinary Optuna study: trials with params, distributions, values,
constraints and user attrs, readable by optuna-dashboard. `kill -9` loses no finished trial, and no trial is
ever left RUNNING in the storage. Re-running with the same storage and study continues: the stored trials are
loaded into the working copy first, and the sampler is reseeded with (seed, trials so far), so a resumed run
does not replay the first run's proposals. One writer per study at a time (workers on one study: later).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from nas.core.arch import ArchBatch
from nas.core.errors import NasUserError
from nas.core.landmarks import load_landmarks
from nas.core.limits import MAX_COUNT, MAX_TOKENS, check_int
from nas.core.paths import default_storage
from nas.core.trainers import RULES, buildable, check_trainer, missing
from nas.core.version import __version__
from nas.latency.registry import load_latency_model
from nas.quality.model import DEFAULT_TRAIN_TOKENS, load_quality_model
from nas.search.advice import ShapeTable
from nas.search.output import group_twins, pareto_row
from nas.spaces import ENUMERATION_LIMIT, load_space
from nas.study import schema as S
from nas.study.objectives import (
    QUALITY_SOURCE,
    Constraints,
    Figures,
    parse_objectives,
    parse_params_range,
    predict_figures,
)
from nas.study.pareto import Normaliser, pareto_mask, to_minimisation
from nas.study.read import preference
from nas.study.schema import (FOUND_BY_EXACT, FOUND_BY_SAMPLER, StudyMeta, TargetFigures, TrialRecord,
                              check_study_name)
from nas.study.storage import STORAGE_ERRORS, open_storage
from nas.study.storage import first_line as _first_line
from nas.targets import load_target

SAMPLERS = ("nsga2", "tpe", "gp", "random")
DEFAULT_SPACE = "subbillion"
DEFAULT_TRIALS = 200  # the default pixel8 run on subbillion: ~25 s of SQLite writes here, report included < 60 s
DEFAULT_PROMPT_LEN = 512
DEFAULT_CONTEXT_LEN = 2048
DEFAULT_SEED = 0
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take 32-bit seeds
EXACT_LIMIT = ENUMERATION_LIMIT  # configs; enumeration + prediction stays within seconds and ~1 GB up to here
FEASIBILITY_SAMPLE = 2000  # random configs checked when a space is too large to enumerate
STALL_ASKS = 100  # proposals in a row without a new config before a search stops early
MAX_ASKS_PER_TRIAL = 5  # proposals per budgeted evaluation before stopping early (random needs ~4 on subbillion)


@dataclass
class SearchSettings:
    """Everything `nas search` takes; the defaults are the CLI's."""

    targets: tuple[str, ...]
    space: str = DEFAULT_SPACE
    trials: int = DEFAULT_TRIALS
    prompt_len: int = DEFAULT_PROMPT_LEN
    context_len: int = DEFAULT_CONTEXT_LEN
    precision: str | None = None  # None: each target's default precision
    objectives: Sequence[str] | None = None  # None: quality, decode_tps
    multi_target: str | None = None  # "each" | "worst" | None (each for <= 2 targets)
    max_memory_mb: float | None = None  # None: each target's memory budget
    min_decode_tps: float | None = None
    max_ttft_ms: float | None = None
    params: str | None = None  # "LOW:HIGH", e.g. "450M:550M"
    sampler: str = "nsga2"
    population: int | None = None  # NSGA-II population; None: chosen from the trial budget
    seed: int = DEFAULT_SEED
    storage: str | None = None  # None: nas.paths.default_storage()
    study: str | None = None  # None: "<targets>-<space>"
    exact: bool = True
    trainer: str | None = None  # only shapes this trainer can build (nas.core.trainers)
    quality: str = "law"  # "law": predicted loss after train_tokens (nas.quality); "params": parameter count
    train_tokens: int = DEFAULT_TRAIN_TOKENS  # the pretraining budget the loss is predicted at


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

    def to_user_attrs(self) -> dict[str, Any]:
        return {"space_size": self.space_size, "feasible": self.feasible, "front_size": len(self.arch_ids),
                "twins_left_out": self.twins,
                "hypervolume": self.hypervolume, "normalisation": self.normaliser.to_dict(),
                "seconds": round(self.seconds, 3)}


@dataclass
class SearchResult:
    study_name: str
    storage: str
    meta: StudyMeta
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


# ------------------------------------------------------------------------------------------------ the stage
class LatencyStage:
    """The latency stage of one `nas search` run. Construct (resolves and validates), then `run()`."""

    def __init__(self, settings: SearchSettings, log: Callable[[str], None] | None = None):
        self.settings = s = settings
        self.log = log or (lambda line: print(line, file=sys.stderr))
        if not s.targets:
            raise NasUserError("give at least one --target")
        if len(set(s.targets)) != len(s.targets):
            raise NasUserError(f"--target listed twice: {', '.join(s.targets)}")
        for name, value, high in (("--trials", s.trials, MAX_COUNT), ("--prompt-len", s.prompt_len, MAX_TOKENS),
                                  ("--context-len", s.context_len, MAX_TOKENS)):
            check_int(value, name, 1, high)
        if isinstance(s.seed, bool) or not isinstance(s.seed, int) or not 0 <= s.seed <= MAX_SEED:
            raise NasUserError(f"--seed must be an integer from 0 to {MAX_SEED} (2**32 - 1), got {s.seed!r}")
        if s.sampler not in SAMPLERS:
            raise NasUserError(f"unknown sampler {s.sampler!r}; known: {', '.join(SAMPLERS)}")
        if s.population is not None and s.population < 2:
            raise NasUserError(f"--population must be at least 2, got {s.population}")
        for name, value in (("--max-memory-mb", s.max_memory_mb), ("--min-decode-tps", s.min_decode_tps),
                            ("--max-ttft-ms", s.max_ttft_ms)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise NasUserError(f"{name} must be a positive number, got {value!r}")

        self.targets = {name: load_target(name) for name in s.targets}
        self.target_names = tuple(t.name for t in self.targets.values())
        self.space = load_space(s.space)
        self.precisions = {}
        self.models = {}
        for name, target in zip(self.target_names, self.targets.values()):
            precision = s.precision or target.default_precision
            self.models[name] = load_latency_model(target, precision)
            self.precisions[name] = precision
        self.objectives = parse_objectives(s.objectives, self.target_names, s.multi_target, s.quality)
        self.quality_model = load_quality_model(s.train_tokens) if s.quality == "law" else None
        self.directions = [o.direction for o in self.objectives]
        lo, hi = parse_params_range(s.params)
        if s.max_memory_mb is not None:
            memory = {t: float(s.max_memory_mb) for t in self.target_names}
        else:
            memory = {name: t.memory_budget_bytes / 2**20 for name, t in zip(self.target_names, self.targets.values())
                      if t.memory_budget_bytes}
        check_trainer(s.trainer)
        self.constraints = Constraints(memory, s.min_decode_tps, s.max_ttft_ms, lo, hi)
        self.constraint_names = self.constraints.names(self.target_names)
        self.storage_url = s.storage or default_storage()
        self.study_name = check_study_name(
            s.study if s.study is not None else f"{'+'.join(self.target_names)}-{self.space.name}",
            "--study" if s.study is not None else "the default study name (from the targets and the space's name; "
                                                  "pass --study NAME)")
        self.named_by_user = s.study is not None
        self.meta = StudyMeta(
            space=self.space.name, space_fingerprint=self.space.fingerprint, targets=self.target_names,
            precision=dict(self.precisions), prompt_len=s.prompt_len, context_len=s.context_len,
            objectives=self.objectives, constraints={**self.constraints.to_dict(), "trainer": s.trainer},
            latency_sources={t: m.source for t, m in self.models.items()}, nas_version=__version__,
            latency_errors={t: m.error_band() for t, m in self.models.items()},
            latency_models={t: {"fingerprint": m.fingerprint(), "provenance": m.provenance()}
                            for t, m in self.models.items()},
            quality=self._quality_meta(),
        )
        self.stop_reason: str | None = None  # why a run ended before its budget, if it did
        self._feasible = None  # (batch, figures, feasible rows) of an enumerated space, after exact_front()
        self.storage = None  # an opened storage to use instead of opening storage_url (the pipeline's)
        self.study = None  # the stored study, after run()
        self._seen: dict[str, Any] = {}  # arch id -> the COMPLETE FrozenTrial that evaluated it
        self.evaluations = 0  # configs predicted one by one (duplicates are not)

    def _quality_meta(self) -> dict[str, Any]:
        q = self.quality_model
        if q is None:
            return {"source": S.QUALITY_PARAMS}
        return {"source": S.QUALITY_LAW, "train_tokens": q.train_tokens, "fingerprint": q.fingerprint,
                "band_nats": q.band, "reference": q.reference, "form": q.law.form.name, "description": q.describe()}

    # -------------------------------------------------------------------------------- evaluation
    def figures(self, batch) -> Figures:
        return predict_figures(batch, self.models, self.precisions, self.settings.prompt_len,
                               self.settings.context_len, self.quality_model)

    def record(self, arch, figs: Figures) -> tuple[TrialRecord, list[float], dict[str, float]]:
        """TrialRecord, objective values and named constraint values of one config (figs is 1 row)."""
        s = self.settings
        per_target = {
            t: TargetFigures(prefill_ms=float(figs.prefill_ms[t][0]), decode_ms=float(figs.decode_ms[t][0]),
                             memory_mb=float(figs.memory_mb[t][0]), latency_source=self.models[t].source,
                             prompt_len=s.prompt_len)
            for t in self.target_names
        }
        names, matrix = self.constraints.evaluate(figs)
        violations = list(self.constraints.violations(figs, 0))
        space_violations = list(self.space.check(arch))
        if self.settings.trainer:
            needs = missing(arch, self.settings.trainer)
            space_violations += [f"{self.settings.trainer} cannot build it: it needs {n}" for n in needs]
        violations += space_violations
        constraint_values = {n: float(matrix[0, j]) for j, n in enumerate(names)}
        constraint_values["space"] = self._space_violation(arch, space_violations)
        rec = TrialRecord(arch=arch, figures=per_target, quality=float(figs.quality[0]),
                          quality_source=QUALITY_SOURCE[s.quality], violations=tuple(violations))
        return rec, [float(v) for v in figs.values(self.objectives)[0]], constraint_values

    def _space_violation(self, arch, reasons: list[str]) -> float:
        """The "space" constraint value: 0 inside the space; outside it, graded so that constrained domination
        can tell near misses from far ones: the relative distance to the params range (as for --params),
        plus 1 per other reason (a shape no dimension value gives)."""
        if not reasons:
            return 0.0
        low, high = self.space.params_range
        params = float(arch.num_params)
        excess = 0.0
        if low is not None and params < low:
            excess = (low - params) / low
        elif high is not None and params > high:
            excess = (params - high) / high
        other = len(reasons) - (1 if excess > 0 else 0)
        return float(other) + max(excess, 1e-9 if other == 0 else 0.0)

    def _suggest(self, trial) -> dict[str, Any]:
        values = {}
        for name, dim in self.space.dimensions.items():
            if getattr(dim, "step", None) is not None and getattr(dim, "low", None) is not None:
                values[name] = trial.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step))
            else:
                values[name] = trial.suggest_categorical(name, list(dim.choices))
        return values

    def _objective(self, trial) -> list[float]:
        """Evaluate one trial; raises _TrialFailed for a combination the space rejects. A trial that predicted
        a new config inside the space gets user attr `counted` (it counts toward --trials)."""
        trial.set_user_attr(S.FOUND_BY, FOUND_BY_SAMPLER)
        values = self._suggest(trial)
        try:
            arch = self.space.build(values)
        except NasUserError as exc:
            trial.set_user_attr(S.FAIL_REASON, str(exc))
            raise _TrialFailed(str(exc)) from None
        earlier = self._seen.get(arch.arch_id)
        if earlier is not None:
            for key, value in earlier.user_attrs.items():
                if key not in (S.FOUND_BY, S.DUPLICATE_OF, S.COUNTED):
                    trial.set_user_attr(key, value)
            trial.set_user_attr(S.DUPLICATE_OF, earlier.number)
            for key, value in S.named_constraints(earlier.system_attrs).items():
                trial.set_constraint(key, value)
            return list(earlier.values)
        rec, objective_values, constraint_values = self.record(arch, self.figures(ArchBatch.from_configs([arch])))
        self.evaluations += 1
        for key, value in rec.to_user_attrs().items():
            trial.set_user_attr(key, value)
        if constraint_values["space"] == 0:
            trial.set_user_attr(S.COUNTED, True)
        for key, value in constraint_values.items():
            trial.set_constraint(key, value)
        return objective_values

    # -------------------------------------------------------------------------------- exact stage
    def exact_front(self) -> ExactFront | None:
        """Enumerate and predict the whole space when it is small enough; refuse impossible constraints.
        Returns None (after a sampled feasibility check) for larger spaces or with exact=False."""
        size = self.space.size(limit=EXACT_LIMIT) if self.settings.exact else None
        if size is None:
            self._check_sampled_feasibility()
            return None
        t0 = time.perf_counter()
        batch = self.space.enumerate()
        space_rows = np.arange(len(batch))  # row in the space's enumeration of each row of `batch`
        if self.settings.trainer:
            keep = buildable(batch, self.settings.trainer)
            self.log(f"--trainer {self.settings.trainer}: {int((~keep).sum()):,} of {len(batch):,} shapes of the space "
                     f"are ones it cannot build ({'; '.join(r[0] for r in RULES[self.settings.trainer])}); "
                     "searching the rest")
            if not keep.any():
                raise NasUserError(f"--trainer {self.settings.trainer} can build no shape of space {self.space.name!r}")
            space_rows = np.flatnonzero(keep)
            batch = batch.subset(space_rows)
            size = len(batch)
        figs = self.figures(batch)
        names, matrix = self.constraints.evaluate(figs)
        feasible = np.all(matrix <= 0, axis=1) if matrix.shape[1] else np.ones(len(batch), dtype=bool)
        if not feasible.any():
            raise NasUserError(self._infeasible_message(names, matrix, figs, batch.config, exhaustive=True))
        index = np.flatnonzero(feasible)
        self._feasible = (batch, figs, index)  # every feasible config: what the proxy stage chooses from
        values = figs.values(self.objectives)[index]
        minimised = to_minimisation(values, self.directions)
        front = index[pareto_mask(minimised)]
        normaliser = Normaliser.from_points(minimised)
        front_values = figs.values(self.objectives)[front]
        # Best quality first (the first objective), so a table of the front reads top-down.
        order = np.argsort(to_minimisation(front_values, self.directions)[:, 0], kind="stable")
        front, front_values = front[order], front_values[order]
        configs = [batch.config(int(i)) for i in front]
        # Twins (identical objective values: the same shape tied or untied, with SwiGLU or gated ReLU) are one
        # point of the front: only the member a user would choose (nas.study.read.preference) becomes a trial.
        keep: dict[tuple, int] = {}
        for j, arch in enumerate(configs):
            key = tuple(np.round(front_values[j], 12))
            if key not in keep or preference(arch) < preference(configs[keep[key]]):
                keep[key] = j
        chosen = sorted(keep.values())
        twins = len(front) - len(chosen)
        front, front_values, configs = front[chosen], front_values[chosen], [configs[j] for j in chosen]
        front_figs = self.figures(batch.subset(front))
        params = [self.space.values_of(int(space_rows[i])) for i in front]
        hv = normaliser.hypervolume(to_minimisation(front_values, self.directions))
        return ExactFront(space_size=size, feasible=int(feasible.sum()), arch_ids=[c.arch_id for c in configs],
                          values=front_values, normaliser=normaliser, hypervolume=hv, configs=configs,
                          figures=front_figs, params=params, seconds=time.perf_counter() - t0, twins=twins)

    def _check_sampled_feasibility(self) -> None:
        """For a space too large to enumerate: check constraints on random configs; warn (not refuse) when
        none of them is feasible, since a sample cannot prove that no config is."""
        if not self.constraint_names:
            return
        rng = np.random.default_rng(self.settings.seed)
        configs = []
        dims = list(self.space.dimensions.values())
        for _ in range(FEASIBILITY_SAMPLE * 3):
            values = {}
            for dim in dims:
                if getattr(dim, "step", None) is not None and getattr(dim, "low", None) is not None:
                    values[dim.name] = int(rng.choice(np.arange(dim.low, dim.high + 1, dim.step)))
                else:
                    values[dim.name] = dim.choices[int(rng.integers(len(dim.choices)))]
            try:
                configs.append(self.space.build(values))
            except NasUserError:
                continue
            if len(configs) >= FEASIBILITY_SAMPLE:
                break
        if not configs:
            return
        figs = self.figures(ArchBatch.from_configs(configs))
        names, matrix = self.constraints.evaluate(figs)
        if not np.all(matrix <= 0, axis=1).any():
            self.log("warning: " + self._infeasible_message(names, matrix, figs, lambda i: configs[i],
                                                             exhaustive=False) + "; searching anyway")

    def _infeasible_message(self, names, matrix, figs, config_of, exhaustive: bool) -> str:
        where = (f"no config in space {self.space.name!r}" if exhaustive
                 else f"none of {len(figs)} random configs of space {self.space.name!r}")
        for j, name in enumerate(names):  # a single constraint nobody meets: name it and its closest config
            if np.all(matrix[:, j] > 0):
                i = int(np.argmin(matrix[:, j]))
                arch = config_of(i)
                return (f"{where} meets {self.constraints.flag_of(name)} ({name}); the closest is "
                        f"{arch.short_tag} ({arch.arch_id}): {self.constraints.describe(name, figs, i)}")
        excess = np.clip(matrix, 0, None).sum(axis=1)
        i = int(np.argmin(excess))
        arch = config_of(i)
        broken = "; ".join(self.constraints.describe(n, figs, i) for j, n in enumerate(names) if matrix[i, j] > 0)
        return (f"{where} meets all constraints together; the closest is {arch.short_tag} ({arch.arch_id}): "
                f"{broken}")

    def plan(self) -> ExactFront | None:
        """The exact stage, once: every refusal that needs no storage (an impossible constraint), so that it
        comes before the storage is opened (which creates a new database)."""
        if not hasattr(self, "_exact"):
            self._exact = self.exact_front()
        return self._exact

    def prepare(self) -> ExactFront | None:
        """Everything that can refuse the run before anything is written: the exact stage (an impossible
        constraint), and an existing study searched with other settings. Done once; `run` reuses it."""
        if not hasattr(self, "_prepared"):
            exact = self.plan()
            self.check_existing_study()
            self._prepared = exact
        return self._prepared

    def check_existing_study(self) -> None:
        """Open the storage and check a study already under this name: one searched with other settings
        moves a default-named search to a name of its own; a user-named one must match (else NasUserError)."""
        import optuna

        self._storage = self.storage if self.storage is not None else open_storage(self.storage_url)
        try:
            study = optuna.load_study(study_name=self.study_name, storage=self._storage)
        except KeyError:
            return
        except STORAGE_ERRORS as exc:
            raise NasUserError(f"cannot read study storage {self.storage_url!r}: {_first_line(exc)}") from None
        old = StudyMeta.from_user_attrs(study.user_attrs)
        if old is not None and self.meta.differences(old) and not self.named_by_user:
            # The default name holds a study of other settings: these settings get a name of their own (the same
            # one every time, so running them again resumes it) instead of an error.
            base, self.study_name = self.study_name, f"{self.study_name}-{self.meta.digest()}"
            self.named_by_user = True  # one rename at most
            shown = "; ".join(self.meta.differences(old)[:3])
            self.log(f"note: study {base!r} holds a search with other settings ({shown}); this one is study "
                     f"{self.study_name!r}")
            return self.check_existing_study()
        if old is not None:
            self._check_identity(study)

    # -------------------------------------------------------------------------------- candidates
    def speed_objective(self):
        """The first speed objective (what the proxy stage spreads its shapes along)."""
        return next(o for o in self.objectives if not o.is_quality)

    def candidates(self) -> tuple[ArchBatch, np.ndarray, np.ndarray, Callable[[int], tuple[TrialRecord, list[float]]]]:
        """The feasible shapes the latency stage knows, for the proxy stage to choose from: an ArchBatch of
        them, their speeds (the first speed objective, higher is better), their quality (higher is better), and
        a function giving row i's TrialRecord and its values of the speed objectives. All of an enumerated space;
        else every feasible config the sampler evaluated."""
        speed_obj = self.speed_objective()
        sign = 1.0 if speed_obj.direction == "maximize" else -1.0
        speed_positions = [j for j, o in enumerate(self.objectives) if not o.is_quality]
        if self._feasible is not None:
            batch, figs, index = self._feasible
            chosen = batch.subset(index)

            def record_of(i: int):
                row = figs.row(int(index[i]))
                rec, values, _ = self.record(chosen.config(i), row)
                return rec, [values[j] for j in speed_positions]

            return chosen, sign * figs.metric(speed_obj)[index], figs.quality[index], record_of
        trials = [t for t in self._working.get_trials(deepcopy=False)
                  if t.state.name == "COMPLETE" and TrialRecord.present_in(t.user_attrs)
                  and S.DUPLICATE_OF not in t.user_attrs and all(v <= 0 for v in t.constraints.values())]
        records = [TrialRecord.from_user_attrs(t.user_attrs) for t in trials]
        position = [o.label for o in self.objectives].index(speed_obj.label)
        speeds = np.array([sign * t.values[position] for t in trials], dtype=float)
        return (ArchBatch.from_configs([r.arch for r in records]), speeds, np.array([r.quality for r in records]),
                lambda i: (records[i], [float(trials[i].values[j]) for j in speed_positions]))

    def shape_table(self, target: str) -> ShapeTable | None:
        """The feasible shapes the stage knows, with decode tokens/s on `target` and predicted loss (None without
        the law: --quality params)."""
        if self.quality_model is None:
            return None
        if self._feasible is not None:
            batch, figs, index = self._feasible
            return ShapeTable(batch.subset(index), figs.per_target("decode_tokens_per_s", target)[index],
                              figs.predicted_loss[index], target)
        batch, _, _, record_of = self.candidates()
        records = [record_of(i)[0] for i in range(len(batch))]
        return ShapeTable(batch, np.array([r.figures[target].decode_tokens_per_s for r in records]),
                          np.array([r.loss for r in records]), target)

    def landmark_rows(self, target: str) -> list[dict[str, Any]]:
        """Published models (reports/landmarks.toml) with their predicted loss and decode speed on `target`,
        from this study's own quality and latency models at its lengths."""
        if self.quality_model is None:
            return []
        s = self.settings
        marks = load_landmarks()
        configs = [arch.replace(max_seq_len=max(arch.max_seq_len, s.context_len + 1, s.prompt_len))
                   for _, arch, _ in marks]
        figs = self.figures(ArchBatch.from_configs(configs))
        speeds = figs.per_target("decode_tokens_per_s", target)
        return [{"name": name, "source": source, "num_params": arch.num_params, "shape": arch.short_tag,
                 "predicted_loss": float(figs.predicted_loss[i]), "decode_tokens_per_s": float(speeds[i])}
                for i, (name, arch, source) in enumerate(marks)]

    # -------------------------------------------------------------------------------- study
    def open_study(self, exact: ExactFront | None):
        """The stored study (created, or loaded and checked against this run's settings)."""
        import optuna

        self._storage = self.storage if self.storage is not None else open_storage(self.storage_url)
        try:
            study = optuna.load_study(study_name=self.study_name, storage=self._storage)
        except KeyError:
            study = None
        except STORAGE_ERRORS as exc:  # a corrupt or foreign database, a lost connection
            raise NasUserError(f"cannot read study storage {self.storage_url!r}: {_first_line(exc)}") from None
        if study is not None:
            self._check_identity(study)
        else:
            try:
                study = optuna.create_study(study_name=self.study_name, storage=self._storage,
                                            directions=self.directions)
            except STORAGE_ERRORS as exc:  # a read-only file, a lost connection
                raise NasUserError(f"cannot create study {self.study_name!r} in {self.storage_url!r}: "
                                   f"{_first_line(exc)}") from None
            for key, value in self.meta.to_user_attrs().items():
                study.set_user_attr(key, value)
            with warnings.catch_warnings():  # experimental in Optuna; it names the objectives in optuna-dashboard
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([o.label for o in self.objectives])
        if exact is not None:
            study.set_user_attr(S.STUDY_EXACT, exact.to_user_attrs())
        return study

    def _check_identity(self, study) -> None:
        old = StudyMeta.from_user_attrs(study.user_attrs)
        if old is None:
            if study.get_trials(deepcopy=False):
                raise NasUserError(f"study {self.study_name!r} in {self.storage_url} was not created by nas search; "
                                   "pass another --study name")
            for key, value in self.meta.to_user_attrs().items():
                study.set_user_attr(key, value)
            return
        diffs = self.meta.differences(old)
        if diffs:
            raise NasUserError(f"study {self.study_name!r} in {self.storage_url} was searched with other settings "
                               f"({'; '.join(diffs)}); pass --study NEW_NAME for a new study, or the same settings "
                               "to resume it")
        changed = self.meta.latency_model_change(old, self.study_name)
        if changed:
            raise NasUserError(changed)
        if old.latency_models is None:  # written before the fingerprints were recorded: record them from now on
            study.set_user_attr(S.STUDY_META, self.meta.to_user_attrs()[S.STUDY_META])

    def _make_sampler(self, seed: int | None, budget: int):
        import optuna

        name = self.settings.sampler
        if name == "nsga2":
            pop = self.settings.population or default_population(budget)
            # BLX-alpha crossover: numeric dimensions (width, depth) of a child are drawn around and between
            # its parents' values instead of copied from one of them; categorical ones are swapped as before.
            # On the sub-billion preset it reached more of the exact front's hypervolume at 100 / 300 / 1000
            # trials than uniform, SBX, polynomial mutation or a higher mutation rate (see
            # benchmarks/bench_search_efficiency.py).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                crossover = optuna.samplers.nsgaii.BLXAlphaCrossover()
            return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed, crossover=crossover)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        import importlib.util

        if importlib.util.find_spec("scipy") is None:
            raise NasUserError("--sampler gp needs scipy, which is not installed (pip install scipy); "
                               "or use --sampler nsga2, tpe or random")
        return optuna.samplers.GPSampler(seed=seed)

    # -------------------------------------------------------------------------------- run
    def run(self, progress: bool = True) -> SearchResult:
        import optuna

        t0 = time.perf_counter()
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            # TPE's multivariate mode and GP are marked experimental; say nothing about it on every run.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return self._run(progress, t0)
            finally:
                optuna.logging.set_verbosity(verbosity)

    def _run(self, progress: bool, t0: float) -> SearchResult:
        import optuna
        from optuna.trial import TrialState

        exact = self.prepare()
        study = self.study = self.open_study(exact)
        stored = [t for t in study.get_trials(deepcopy=False)
                  if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)]
        counted = sum(1 for t in stored if t.user_attrs.get(S.COUNTED))
        remaining = max(0, self.settings.trials - counted)
        seed = self.settings.seed if not stored else hash_seed(self.settings.seed, len(stored))
        sampler = self._make_sampler(seed, self.settings.trials)
        mirrored = not isinstance(self._storage, optuna.storages.InMemoryStorage)
        if mirrored:
            self._working = optuna.create_study(directions=self.directions, sampler=sampler)
            self._working.add_trials(stored)
        else:
            self._working = study
            study.sampler = sampler
        for t in self._working.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            aid = t.user_attrs.get(S.ARCH_ID)
            if aid is not None and aid not in self._seen and S.DUPLICATE_OF not in t.user_attrs:
                self._seen[aid] = t
        interrupted, new = self._loop(study, remaining, mirrored, exact, progress)
        added = 0 if interrupted or exact is None else self._add_exact_front(study, exact, mirrored)
        return self._result(study, exact, new, added, interrupted, time.perf_counter() - t0)

    def _loop(self, study, remaining: int, mirrored: bool, exact: ExactFront | None, progress: bool):
        from optuna.trial import TrialState

        bar = None
        if progress and remaining:
            from tqdm import tqdm

            bar = tqdm(total=remaining, desc="search", unit="trial", file=sys.stderr, dynamic_ncols=True,
                       leave=True)
        tracker = _FrontTracker(self.objectives, exact)
        for t in self._working.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            tracker.add(t)
        new = 0
        interrupted = False
        # Only new configs inside the space count toward the budget: a rejected combination or a duplicate
        # costs no evaluation (it is still a recorded trial the sampler learns from). A sampler that keeps
        # proposing those (a converged NSGA-II on a small space) stops after STALL_ASKS of them in a row, and
        # a space with fewer configs than the budget stops when every config has been evaluated.
        max_asks = MAX_ASKS_PER_TRIAL * remaining + STALL_ASKS
        since_new = 0
        space_size = exact.space_size if exact is not None else self.space.size(limit=EXACT_LIMIT)
        in_space = sum(1 for t in self._seen.values() if not t.constraints.get("space"))
        asked = 0
        try:
            while new < remaining and asked < max_asks:
                if space_size is not None and in_space + new >= space_size:
                    self.stop_reason = f"every config of the space ({space_size}) has been evaluated"
                    break
                if since_new >= STALL_ASKS:
                    self.stop_reason = (f"stopped early: the sampler proposed only known or rejected shapes "
                                        f"{STALL_ASKS} times in a row")
                    break
                trial = self._working.ask()
                asked += 1
                try:
                    values = self._objective(trial)
                except _TrialFailed:
                    frozen = self._working.tell(trial, state=TrialState.FAIL)
                except KeyboardInterrupt:
                    self._working.tell(trial, state=TrialState.FAIL)
                    raise
                else:
                    frozen = self._working.tell(trial, values)
                    if S.DUPLICATE_OF not in frozen.user_attrs:
                        self._seen.setdefault(frozen.user_attrs[S.ARCH_ID], frozen)
                    tracker.add(frozen)
                if mirrored:
                    study.add_trial(S.with_constraint_list(frozen))
                since_new += 1
                if frozen.user_attrs.get(S.COUNTED):
                    new += 1
                    since_new = 0
                    if bar is not None:
                        bar.set_postfix_str(tracker.postfix(asked), refresh=False)
                        bar.update(1)
            if new < remaining and asked >= max_asks:
                self.stop_reason = (f"stopped early: {asked} proposals gave only {new} new shapes (limit "
                                    f"{MAX_ASKS_PER_TRIAL} proposals per --trials)")
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if bar is not None:
                bar.close()
        self.asked = asked
        return interrupted, new

    def _add_exact_front(self, study, exact: ExactFront, mirrored: bool) -> int:
        """Add the exact front's configs the study does not hold yet, as complete trials."""
        import optuna

        added = 0
        for i, arch in enumerate(exact.configs):
            if arch.arch_id in self._seen:
                continue
            rec, values, constraint_values = self.record(arch, exact.figures.row(i))
            params, dists = self._params_of(arch, exact.params[i])
            attrs = {S.FOUND_BY: FOUND_BY_EXACT, **rec.to_user_attrs()}
            system_attrs = {f"constraints:{k}": v for k, v in constraint_values.items()}
            trial = optuna.trial.create_trial(values=values, params=params, distributions=dists,
                                              user_attrs=attrs, system_attrs=system_attrs)
            self._working.add_trial(trial)
            if mirrored:
                study.add_trial(S.with_constraint_list(trial))
            self._seen[arch.arch_id] = self._working.get_trials(deepcopy=False)[-1]
            added += 1
        return added

    def _params_of(self, arch, known: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sampler params (with their distributions) that build `arch`: `known` when the space gave them,
        else the ArchConfig fields when every dimension is one; checked by building. Else none: the trial
        then carries the config in its user attrs only."""
        import optuna

        params, dists = {}, {}
        for name, dim in self.space.dimensions.items():
            if known is not None and name in known:
                value = known[name]
            elif hasattr(arch, name):
                value = getattr(arch, name)
            else:
                return {}, {}
            if getattr(dim, "step", None) is not None and getattr(dim, "low", None) is not None:
                dists[name] = optuna.distributions.IntDistribution(int(dim.low), int(dim.high), step=int(dim.step))
            else:
                if value not in dim.choices:
                    return {}, {}
                dists[name] = optuna.distributions.CategoricalDistribution(list(dim.choices))
            params[name] = value
        try:
            if self.space.build(params).arch_id != arch.arch_id:
                return {}, {}
        except NasUserError:
            return {}, {}
        return params, dists

    def _result(self, study, exact, new, added, interrupted, seconds) -> SearchResult:
        from optuna.trial import TrialState

        trials = self._working.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for t in trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
        complete = [t for t in trials if t.state == TrialState.COMPLETE and S.ARCH_ID in t.user_attrs]
        feasible = [t for t in complete if all(v <= 0 for v in t.constraints.values())]
        rows = []
        hv_ratio = None
        warnings_: list[str] = []
        if feasible:
            minimised = to_minimisation(np.array([t.values for t in feasible]), self.directions)
            mask = pareto_mask(minimised)
            warnings_ = self.extrapolation_warnings([TrialRecord.from_user_attrs(t.user_attrs).arch
                                                     for t, m in zip(feasible, mask) if m], "Pareto")
            seen: set[str] = set()
            for t in sorted((t for t, m in zip(feasible, mask) if m), key=lambda t: t.number):
                if t.user_attrs[S.ARCH_ID] not in seen:
                    seen.add(t.user_attrs[S.ARCH_ID])
                    rows.append(pareto_row(t, self.objectives))
            rows.sort(key=lambda r: (-r["quality"], r["trial"]))
            rows = group_twins(rows)
            if exact is not None:
                searched = [t for t in feasible if t.user_attrs.get(S.FOUND_BY) != FOUND_BY_EXACT]
                if searched and exact.hypervolume > 0:
                    pts = to_minimisation(np.array([t.values for t in searched]), self.directions)
                    hv_ratio = exact.normaliser.hypervolume(pts) / exact.hypervolume
        summary = {"trials": sum(1 for t in trials if t.user_attrs.get(S.COUNTED)),
                   "optuna_trials": len(trials),
                   "pareto_size": len(rows), "hypervolume_ratio": hv_ratio, "interrupted": interrupted,
                   "warnings": warnings_}
        study.set_user_attr(S.STUDY_SEARCH, {**summary, "sampler": self.settings.sampler, "seed": self.settings.seed})
        return SearchResult(study_name=self.study_name, storage=self.storage_url, meta=self.meta,
                            trials_total=summary["trials"], trials_new=new, pareto=rows, exact=exact,
                            exact_added=added, hypervolume_ratio=hv_ratio, interrupted=interrupted,
                            seconds=seconds, states=states, notes=[self.stop_reason] if self.stop_reason else [],
                            warnings=warnings_)

    def extrapolation_warnings(self, configs, what: str) -> list[str]:
        """Per target, where predicting `configs` (e.g. the Pareto set's shapes) at the study's lengths lies outside
        what its latency model is known to hold for (`LatencyModel.extrapolation`), one line each."""
        if not configs:
            return []
        batch = ArchBatch.from_configs(list(configs))
        s = self.settings
        out = [f"{target}: {note} ({what} shapes)" for target, model in self.models.items()
               for note in model.extrapolation(batch, s.prompt_len, s.context_len)]
        if self.quality_model is not None:
            out += [f"predicted loss: {note} ({what} shapes)" for note in self.quality_model.extrapolation(batch)]
        return out


class _TrialFailed(Exception):
    """A candidate the space rejects: its trial fails alone, the search goes on."""


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
        if trial.user_attrs.get(S.FOUND_BY) == FOUND_BY_EXACT:
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
