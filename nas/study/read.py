"""Reading a stored study back: the read model every job above the study layer uses.

- `load_study(storage, name)`: an existing study, or one line naming the known ones.
- `read_study(study) -> StudyTrials`: its meta and every COMPLETE trial that carries a nas record, as
  `TrialPoint`s, plus state counts.
- `pareto_set` / `study_pareto_set`: the feasible trials no other feasible trial dominates on the study's own
  objectives, one per architecture (lowest trial number kept) and one per twin group (`twin_groups`).
- `failure_reason(trial, trials)`: why a FAIL trial failed: its `fail_reason`, or for a trial Optuna failed
  when its worker's heartbeats stopped (which leaves no reason), that, and which trial retried it.
- `compute_picks`: the three picks of the Pareto set a user chooses from, on the study's first target:
  `fastest` (highest decode tokens/s), `best-quality` (highest quality) and `knee` (`nas.study.pareto.knee_index`
  of the (decode tokens/s, quality) front, both axes on a log scale). Ties go to the higher quality; qualities
  closer than the study's tie (`StudyTrials.tie`: a proxy study's seed noise, the quality law's band) are ties,
  won by the faster shape.

A trial is *feasible* when its record has no violations and its Optuna constraint values are all <= 0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Iterable, Sequence

from nas.core.errors import NasUserError
from nas.study import schema
from nas.study.pareto import pareto_mask_max, picks
from nas.study.storage import open_storage

PICK_TITLES = {"knee": "knee (recommended)", "fastest": "fastest", "best-quality": "best quality"}


def load_study(storage: str, study_name: str):
    """Open an existing study by name; an unknown name is one line listing the known ones."""
    import optuna

    schema.check_study_name(study_name, proxy_ok=True)  # before the storage is opened: nothing stored is touched
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage, must_exist=True) if isinstance(storage, str) else storage
    try:
        return optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False))
        known = ", ".join(names) if names else "none"
        raise NasUserError(f"study {study_name!r} is not in {storage}; known studies: {known}") from None


def proxy_stage_of(storage, study_name: str):
    """The proxy stage's study beside `study_name` (`<study>:proxy`), or None when it had none."""
    import optuna

    store = open_storage(storage, must_exist=True) if isinstance(storage, str) else storage
    try:
        return optuna.load_study(study_name=schema.proxy_study_name(study_name), storage=store)
    except KeyError:
        return None


@dataclass(frozen=True)
class TrialPoint:
    """One COMPLETE trial with its nas record."""

    number: int
    record: schema.TrialRecord
    values: tuple[float, ...]
    feasible: bool
    found_by: str = schema.FOUND_BY_SAMPLER

    @property
    def arch_id(self) -> str:
        return self.record.arch.arch_id

    @property
    def shape(self) -> str:
        return self.record.arch.short_tag

    @property
    def quality(self) -> float:
        return self.record.quality

    def speed(self, target: str, metric: str) -> float | None:
        fig = self.record.figures.get(target)
        return None if fig is None else float(getattr(fig, metric))


def _constraints_ok(trial) -> bool:
    """Optuna's own constraint values (Trial.set_constraint; > 0 means violated) all satisfied."""
    return all(v <= 0 for v in trial.constraints.values())


@dataclass
class StudyTrials:
    """What a study holds, read once: its meta, its recorded complete trials, and state counts."""

    name: str
    meta: schema.StudyMeta
    directions: tuple[str, ...]
    points: dict[int, TrialPoint]
    states: dict[str, int]  # "COMPLETE", "FAIL", "PRUNED", "RUNNING", ... -> count
    unrecorded: int = 0  # COMPLETE trials without a nas record (written by another tool)
    trial_states: dict[int, str] = field(default_factory=dict)  # trial number -> state name
    exact: dict[str, Any] | None = None  # the exact stage's summary (schema.STUDY_EXACT), when the search had one
    search: dict[str, Any] | None = None  # the last run's summary (schema.STUDY_SEARCH): trials, warnings, ...
    quality_noise: float = 0.0  # a proxy study's seed noise (`seed_noise`); 0 for a deterministic quality
    parity: dict[str, Any] | None = None  # target -> parity record, as the search saw it (schema.STUDY_PARITY)
    landmarks: list[dict[str, Any]] | None = None  # published models as the search predicted them (STUDY_LANDMARKS)

    @property
    def tie(self) -> float:
        """Quality differences below this are ties: a proxy study's seed noise, or the quality law's band for a
        study ranked by predicted loss (0: none)."""
        if any(p.record.quality_source == schema.QUALITY_LAW for p in self.points.values()):
            return self.meta.band
        return self.quality_noise


def read_study(study) -> StudyTrials:
    """Turn an Optuna study written by `nas search` into `StudyTrials`."""
    meta = schema.StudyMeta.from_user_attrs(study.user_attrs)
    if meta is None:
        raise NasUserError(f"study {study.study_name!r} was not written by `nas search` (it has no "
                           f"{schema.STUDY_META} user "
                           "attribute); nas can only report and export its own studies")
    directions = tuple(d.name.lower() for d in study.directions)
    trials = study.get_trials(deepcopy=False)
    states = state_counts(trials)
    points, unrecorded = trial_points(trials)
    complete = [t.user_attrs for t in trials if t.state.name == "COMPLETE"]  # for the seed noise
    attrs = study.user_attrs
    return StudyTrials(study.study_name, meta, directions, points, states, unrecorded,
                       {t.number: t.state.name for t in trials}, attrs.get(schema.STUDY_EXACT),
                       attrs.get(schema.STUDY_SEARCH),
                       seed_noise(complete) or 0.0, attrs.get(schema.STUDY_PARITY), attrs.get(schema.STUDY_LANDMARKS))


def state_counts(trials: Iterable[Any]) -> dict[str, int]:
    """How many trials are in each state ("COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING")."""
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    return states


def trial_points(trials: Iterable[Any]) -> tuple[dict[int, TrialPoint], int]:
    """Every COMPLETE trial that carries a nas record, as a TrialPoint by number; and how many COMPLETE trials
    carry none (written by another tool)."""
    points: dict[int, TrialPoint] = {}
    unrecorded = 0
    for trial in trials:
        if trial.state.name != "COMPLETE":
            continue
        if not schema.TrialRecord.present_in(trial.user_attrs):
            unrecorded += 1
            continue
        record = schema.TrialRecord.from_user_attrs(trial.user_attrs)
        values = tuple(float(v) for v in (trial.values or ()))
        points[trial.number] = TrialPoint(trial.number, record, values, record.feasible and _constraints_ok(trial),
                                          str(trial.user_attrs.get(schema.FOUND_BY, schema.FOUND_BY_SAMPLER)))
    return points, unrecorded


def seed_noise(user_attrs: Iterable[dict]) -> float | None:
    """The seed noise of proxy scores, in bits per byte: the median, over the shapes trained to the last rung
    with two or more seeds, of the spread (max - min) of their seeds' scores there; None without such shapes.
    For two seeds this is |seed 0 - seed 1|, about the standard deviation of the difference between two
    shapes' two-seed means: quality differences below it are not told apart from noise."""
    spreads = []
    for attrs in user_attrs:
        history = attrs.get(schema.PROXY_HISTORY) or []
        each = history[-1].get("val_bpb_each", []) if history else []
        if len(each) >= 2:
            spreads.append(max(each) - min(each))
    return float(median(spreads)) if spreads else None


def settings_digest(identity: dict[str, Any]) -> str:
    """12 hex digits over a proxy study's training identity: a stored landmark score is reused only under it."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def landmark_scores(proxy_study) -> dict[str, dict[str, Any]]:
    """The landmarks' proxy scores stored on a proxy study (schema.STUDY_LANDMARK_PROXY, `nas.proxy.landmarks`) that
    are still valid for its settings, by landmark name."""
    meta = schema.StudyMeta.from_user_attrs(proxy_study.user_attrs)
    if meta is None or not meta.proxy:
        return {}
    digest = settings_digest(meta.proxy)
    stored = proxy_study.user_attrs.get(schema.STUDY_LANDMARK_PROXY) or {}
    return {name: row for name, row in stored.items() if row.get("settings") == digest}


def preference(arch) -> tuple:
    """How a user chooses among twins (shapes with identical objective values, e.g. the same shape with SwiGLU
    or gated ReLU, tied or untied): tied embeddings (less memory, the small-model norm), then SwiGLU (every
    trainer builds it), then fewer total parameters. Smaller sorts first."""
    return (not arch.tie_embeddings, arch.ffn_kind != "swiglu", arch.num_params)


def twin_groups(values: Sequence[Sequence[float]], archs: Sequence[Any],
                order: Sequence[Any] | None = None) -> dict[int, list[int]]:
    """Twins grouped: shapes with identical objective values (to 12 decimals), e.g. the same shape with SwiGLU or
    gated ReLU, tied or untied. Position of each group's preferred member (`preference`, then `order`, default
    the position) -> every member's position, itself first. The one twin rule of the search, its exact front and
    the report."""
    order = list(range(len(values))) if order is None else list(order)
    groups: dict[tuple, list[int]] = {}
    for i, v in enumerate(values):
        groups.setdefault(tuple(round(float(x), 12) for x in v), []).append(i)
    out = {}
    for members in groups.values():
        members.sort(key=lambda i: (preference(archs[i]), order[i]))
        out[members[0]] = members
    return out


def pareto_set(points: Iterable[TrialPoint], directions: Sequence[str]) -> dict[int, list[int]]:
    """The feasible trials no other feasible trial dominates on the study's objectives, one per arch_id (the
    lowest trial number) and one per twin group (its preferred member): kept trial number -> the numbers of its
    twin group (itself first), by kept number. The one Pareto set of the search's output, its proxy stage, the
    report and export."""
    feasible = [p for p in points if p.feasible and len(p.values) == len(directions)]
    mask = pareto_mask_max([p.values for p in feasible], [d == "maximize" for d in directions])
    seen: set[str] = set()
    unique = []
    for p in sorted((p for p, m in zip(feasible, mask) if m), key=lambda p: p.number):
        if p.arch_id not in seen:
            seen.add(p.arch_id)
            unique.append(p)
    groups = twin_groups([p.values for p in unique], [p.record.arch for p in unique], [p.number for p in unique])
    return {unique[i].number: [unique[j].number for j in members] for i, members in sorted(groups.items())}


def study_pareto_set(trials: StudyTrials) -> tuple[int, ...]:
    """Trial numbers of a study's Pareto set (`pareto_set`), by number."""
    return tuple(pareto_set(trials.points.values(), trials.directions))


def compute_picks(trials: StudyTrials, pareto: Sequence[int], target: str | None = None) -> dict[str, int]:
    """{"knee": n, "fastest": n, "best-quality": n} among the Pareto set, on `target` (default: the first)."""
    target = target or trials.meta.targets[0]
    cands = [trials.points[n] for n in pareto if trials.points[n].speed(target, "decode_tokens_per_s") is not None]
    return picks([p.number for p in cands], [p.speed(target, "decode_tokens_per_s") for p in cands],
                 [p.quality for p in cands], tie=trials.tie)


def failure_reason(trial, trials: Sequence[Any]) -> str:
    """Why a FAIL trial failed (see the module docstring); `trials` are its study's, to find its retry."""
    reason = trial.user_attrs.get(schema.FAIL_REASON)
    if reason:
        return str(reason)
    retried = [t.number for t in trials if t.system_attrs.get("failed_trial") == trial.number
               or trial.number in (t.system_attrs.get("retry_history") or [])]
    text = "its worker stopped sending heartbeats (killed or lost)"
    return text + (f"; retried as trial {', '.join(map(str, retried))}" if retried else "")
