"""Compute a report's data from a finished study: records, fronts, picks, hypervolume history, table rows.

Nothing here draws. Every structure is small, named and tested directly (STYLE.md "Compute, then draw");
`reports.plots` and `reports.html` only render what this module returns.

Definitions used throughout (also printed in the report's notes):
- A trial counts when it is COMPLETE and carries a nas `TrialRecord`. It is *feasible* when its record has no
  violations and its Optuna constraint values (if any) are all <= 0.
- The *Pareto set* is the set of feasible trials that no other feasible trial dominates on the study's own
  objectives (`trial.values`, `study.directions`), one row per architecture (lowest trial number kept).
- A *2-D front* (what the plots show) is the same idea on two axes only: quality (up) against decode or
  prefill tokens/s on one target (right), both maximised.
- *Picks* are chosen among the Pareto set, on the first target: `fastest` has the highest decode tokens/s,
  `best-quality` the highest quality, and `knee` is the point of their 2-D (quality, decode tokens/s) front
  farthest from the straight line joining the front's two extremes, on the side of the ideal corner, with both
  axes on a log scale (when positive) and then scaled to [0, 1]. Log, because speed and size trade by ratios:
  on linear axes a front like tokens/s ~ 1/params always bows away from the ideal corner and the "knee" would
  collapse onto an extreme. Ties go to the higher quality.
- *Hypervolume* (per target) is the share of the unit square dominated by the 2-D (quality, decode tokens/s)
  front of the feasible trials seen so far, both axes on a log scale (when positive, as for the knee) and
  scaled to [0, 1] by the range over all feasible trials, reference point at the worst corner. It never
  decreases.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from nas.errors import NasUserError
from nas.records import StudyMeta, TargetFigures, TrialRecord

PICKS = ("knee", "fastest", "best-quality")
PICK_TITLES = {"knee": "knee (recommended)", "fastest": "fastest", "best-quality": "best quality"}
SPEED_METRICS = ("decode_tokens_per_s", "prefill_tokens_per_s")
MAX_LABELS = 9  # front points labelled per panel; more than this stops being readable at phone width


# ----------------------------------------------------------------------------------------------- loading
def open_storage(storage: str):
    """An existing study storage (nas.storage.open_storage with must_exist)."""
    from nas.storage import open_storage as _open

    return _open(storage, must_exist=True)


def load_study(storage: str, study_name: str):
    """Open an existing study by name; an unknown name is one line listing the known ones."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage) if isinstance(storage, str) else storage
    try:
        return optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False))
        known = ", ".join(names) if names else "none"
        raise NasUserError(f"study {study_name!r} is not in {storage}; known studies: {known}") from None


@dataclass(frozen=True)
class TrialPoint:
    """One COMPLETE trial with its nas record."""

    number: int
    record: TrialRecord
    values: tuple[float, ...]
    feasible: bool

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
    meta: StudyMeta
    directions: tuple[str, ...]
    points: dict[int, TrialPoint]
    states: dict[str, int]  # "COMPLETE", "FAIL", "PRUNED", "RUNNING", ... -> count
    unrecorded: int = 0  # COMPLETE trials without a nas record (written by another tool)
    trial_states: dict[int, str] = field(default_factory=dict)  # trial number -> state name


def read_study(study) -> StudyTrials:
    """Turn an Optuna study written by `nas search` into `StudyTrials`."""
    from optuna.trial import TrialState

    meta = StudyMeta.from_user_attrs(study.user_attrs)
    if meta is None:
        raise NasUserError(f"study {study.study_name!r} was not written by `nas search` (it has no nas_meta user "
                           "attribute); nas can only report and export its own studies")
    directions = tuple(d.name.lower() for d in study.directions)
    states: dict[str, int] = {}
    points: dict[int, TrialPoint] = {}
    unrecorded = 0
    trial_states: dict[int, str] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
        trial_states[trial.number] = trial.state.name
        if trial.state != TrialState.COMPLETE:
            continue
        if "arch" not in trial.user_attrs or "predictions" not in trial.user_attrs:
            unrecorded += 1
            continue
        record = TrialRecord.from_user_attrs(trial.user_attrs)
        values = tuple(float(v) for v in (trial.values or ()))
        points[trial.number] = TrialPoint(trial.number, record, values, record.feasible and _constraints_ok(trial))
    return StudyTrials(study.study_name, meta, directions, points, states, unrecorded, trial_states)


# ----------------------------------------------------------------------------------------------- fronts
def pareto_mask(values: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[bool]:
    """True for each row no other row dominates (>= on every axis, > on one, after orienting to maximise).

    Identical rows do not dominate each other, so duplicates of a front point all stay on the front.
    """
    import numpy as np

    if len(values) == 0:
        return []
    v = np.asarray(values, dtype=float) * np.where(np.asarray(maximize), 1.0, -1.0)
    geq = (v[:, None, :] >= v[None, :, :]).all(axis=2)  # geq[j, i]: row j >= row i everywhere
    gt = (v[:, None, :] > v[None, :, :]).any(axis=2)
    dominated = (geq & gt).any(axis=0)
    return [not d for d in dominated]


def study_pareto_set(trials: StudyTrials) -> tuple[int, ...]:
    """Trial numbers of the feasible Pareto set on the study's objectives, one per arch_id, by number."""
    feasible = [p for p in trials.points.values() if p.feasible and len(p.values) == len(trials.directions)]
    mask = pareto_mask([p.values for p in feasible], [d == "maximize" for d in trials.directions])
    seen: set[str] = set()
    out = []
    for p in sorted((p for p, m in zip(feasible, mask) if m), key=lambda p: p.number):
        if p.arch_id not in seen:
            seen.add(p.arch_id)
            out.append(p.number)
    return tuple(out)


@dataclass(frozen=True)
class Front2D:
    """One plot panel's data: quality (y) against a speed metric (x) on one target, both maximised."""

    target: str
    metric: str  # "decode_tokens_per_s" | "prefill_tokens_per_s"
    latency_source: str
    xy: dict[int, tuple[float, float]]  # trial number -> (speed, quality) for every plotted trial
    front: tuple[int, ...]  # feasible non-dominated trials, one per arch, by increasing speed
    dominated: tuple[int, ...]  # feasible, not on the front (including duplicates of front archs)
    infeasible: tuple[int, ...]
    labelled: tuple[int, ...]  # front trials that get a shape label (all picks among them, then every k-th)


def front_2d(trials: StudyTrials, target: str, metric: str, picks: Mapping[str, int] | None = None,
             max_labels: int = MAX_LABELS) -> Front2D:
    xy: dict[int, tuple[float, float]] = {}
    for p in trials.points.values():
        x = p.speed(target, metric)
        if x is not None and math.isfinite(x) and math.isfinite(p.quality):
            xy[p.number] = (x, p.quality)
    feasible = sorted(n for n in xy if trials.points[n].feasible)
    infeasible = tuple(sorted(n for n in xy if not trials.points[n].feasible))
    mask = pareto_mask([xy[n] for n in feasible], [True, True])
    front, seen = [], set()
    for n, m in zip(feasible, mask):
        if m and trials.points[n].arch_id not in seen:
            seen.add(trials.points[n].arch_id)
            front.append(n)
    front.sort(key=lambda n: (xy[n][0], -xy[n][1]))
    on_front = set(front)
    dominated = tuple(n for n in feasible if n not in on_front)
    source = trials.meta.latency_sources.get(target) or _source_of(trials, target)
    return Front2D(target, metric, source, xy, tuple(front), dominated, infeasible,
                   label_subset(front, picks or {}, max_labels))


def _source_of(trials: StudyTrials, target: str) -> str:
    for p in trials.points.values():
        if target in p.record.figures:
            return p.record.figures[target].latency_source
    return "unknown"


def label_subset(front: Sequence[int], picks: Mapping[str, int], max_labels: int = MAX_LABELS) -> tuple[int, ...]:
    """Which front points get a label: all of them when few; else the picks plus evenly spaced others.

    `front` is ordered along the front, so even spacing spreads labels over its whole length.
    """
    if len(front) <= max_labels:
        return tuple(front)
    chosen = [n for n in picks.values() if n in front]
    room = max(max_labels - len(set(chosen)), 0)
    if room:
        step = (len(front) - 1) / max(room - 1, 1)
        chosen += [front[round(i * step)] for i in range(room)]
    chosen_set = set(chosen)
    return tuple(n for n in front if n in chosen_set)


# ----------------------------------------------------------------------------------------------- picks
def knee_index(xs: Sequence[float], ys: Sequence[float], log: bool = False) -> int:
    """Index of the knee of a 2-D maximise/maximise front (see module docstring); ties to higher y.

    With `log`, each axis whose values are all positive is taken on a log scale before scaling to [0, 1].
    """
    n = len(xs)
    if n == 0:
        raise ValueError("knee of an empty front")
    if n <= 2:
        return max(range(n), key=lambda i: (ys[i], xs[i]))

    def scale(v):
        if log:
            v = _log_if_positive(list(v))
        lo, hi = min(v), max(v)
        return [0.5 if hi == lo else (a - lo) / (hi - lo) for a in v]

    u, w = scale(xs), scale(ys)
    a = max(range(n), key=lambda i: (u[i], w[i]))  # fastest extreme
    b = max(range(n), key=lambda i: (w[i], u[i]))  # best-quality extreme
    dx, dy = u[b] - u[a], w[b] - w[a]
    norm = math.hypot(dx, dy) or 1.0
    # Signed distance from the line a->b; positive on the side of the ideal corner (1, 1).
    sign = 1.0 if (dx * (1 - w[a]) - dy * (1 - u[a])) >= 0 else -1.0
    dist = [sign * (dx * (w[i] - w[a]) - dy * (u[i] - u[a])) / norm for i in range(n)]
    return max(range(n), key=lambda i: (round(dist[i], 12), ys[i]))


def compute_picks(trials: StudyTrials, pareto: Sequence[int], target: str | None = None) -> dict[str, int]:
    """{"knee": n, "fastest": n, "best-quality": n} among the Pareto set, on `target` (default: the first)."""
    target = target or trials.meta.targets[0]
    cands = [trials.points[n] for n in pareto if trials.points[n].speed(target, "decode_tokens_per_s") is not None]
    if not cands:
        return {}
    speed = {p.number: p.speed(target, "decode_tokens_per_s") for p in cands}
    fastest = max(cands, key=lambda p: (speed[p.number], p.quality, -p.number)).number
    best = max(cands, key=lambda p: (p.quality, speed[p.number], -p.number)).number
    mask = pareto_mask([(speed[p.number], p.quality) for p in cands], [True, True])
    front = sorted((p for p, m in zip(cands, mask) if m), key=lambda p: (speed[p.number], p.number))
    knee = front[knee_index([speed[p.number] for p in front], [p.quality for p in front], log=True)].number
    return {"knee": knee, "fastest": fastest, "best-quality": best}


# ----------------------------------------------------------------------------------------------- hypervolume
def hypervolume_2d(points: Iterable[tuple[float, float]], ref: tuple[float, float] = (0.0, 0.0)) -> float:
    """Area dominated by maximise/maximise points above-right of `ref` (exact, sweep over x)."""
    pts = sorted(((x, y) for x, y in points if x > ref[0] and y > ref[1]), key=lambda p: (-p[0], -p[1]))
    area, y_top = 0.0, ref[1]
    for x, y in pts:
        if y > y_top:
            area += (x - ref[0]) * (y - y_top)
            y_top = y
    return area


def _log_if_positive(values: list[float]) -> list[float]:
    return [math.log(v) for v in values] if min(values) > 0 else list(values)


@dataclass(frozen=True)
class HypervolumeHistory:
    target: str
    numbers: tuple[int, ...]  # feasible trials in trial-number order
    values: tuple[float, ...]  # hypervolume (share of the unit square) after each of them


def hypervolume_history(trials: StudyTrials, target: str) -> HypervolumeHistory:
    pts = sorted((p.number, p.speed(target, "decode_tokens_per_s"), p.quality)
                 for p in trials.points.values() if p.feasible and p.speed(target, "decode_tokens_per_s") is not None)
    if not pts:
        return HypervolumeHistory(target, (), ())
    xs, ys = _log_if_positive([p[1] for p in pts]), _log_if_positive([p[2] for p in pts])
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx, sy = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    seen: list[tuple[float, float]] = []
    values = []
    for x, y in zip(xs, ys):
        seen.append(((x - x0) / sx, (y - y0) / sy))
        mask = pareto_mask(seen, [True, True])
        seen = [s for s, m in zip(seen, mask) if m]  # keep only the front: same area, less work
        values.append(hypervolume_2d(seen))
    return HypervolumeHistory(target, tuple(p[0] for p in pts), tuple(values))


# ----------------------------------------------------------------------------------------------- parity
@dataclass(frozen=True)
class ParityPhase:
    phase: str  # "prefill" | "decode"
    predicted_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]
    mape_pct: float | None  # percent
    within_5_pct: float | None  # percent of held-out points
    within_10_pct: float | None
    kendall_tau: float | None


@dataclass(frozen=True)
class Parity:
    target: str
    path: str
    phases: tuple[ParityPhase, ...]


def _find_phase_dicts(node: Any, parent: str = "", depth: int = 0) -> list[tuple[str, Mapping[str, Any]]]:
    """Every dict holding both `predicted_ms` and `measured_ms` lists, with the key it sits under."""
    if depth > 6:
        return []
    found = []
    if isinstance(node, Mapping):
        if isinstance(node.get("predicted_ms"), list) and isinstance(node.get("measured_ms"), list):
            found.append((str(node.get("phase") or parent or "latency"), node))
        else:
            for key, value in node.items():
                found += _find_phase_dicts(value, str(key), depth + 1)
    return found


def _find_key(node: Any, key: str, depth: int = 0) -> Any:
    if depth > 6 or not isinstance(node, Mapping):
        return None
    if key in node:
        return node[key]
    for value in node.values():
        hit = _find_key(value, key, depth + 1)
        if hit is not None:
            return hit
    return None


def _num(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parity_from_predictor(target: str, path: Path) -> Parity | str:
    """A predictor file's held-out evaluation as `Parity`, or the reason there is none (a string).

    Read leniently: each phase's dict holds `predicted_ms` and `measured_ms` lists, and its accuracy figures
    (mape, within_5, within_10, kendall_tau) either beside them or in a `predictor` sub-dict. Shares are in
    percent when the file's `metric_units` say so (as `nas calibrate` writes), else guessed (<= 1: fractions).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return f"predictor file {path} could not be read ({exc.__class__.__name__})"
    units = _find_key(data, "metric_units")
    declared = None
    if isinstance(units, Mapping) and isinstance(units.get("mape"), str):
        declared = "%" in units["mape"]
    phases = []
    for phase, d in _find_phase_dicts(data):
        pred = [_num(v) for v in d["predicted_ms"]]
        meas = [_num(v) for v in d["measured_ms"]]
        pairs = [(p, m) for p, m in zip(pred, meas) if p is not None and m is not None]
        if not pairs:
            continue
        metrics = d.get("predictor") if isinstance(d.get("predictor"), Mapping) else d
        mape, w5, w10 = (_num(metrics.get(k)) for k in ("mape", "within_5", "within_10"))
        percent = declared
        if percent is None:
            shares = [v for v in (w5, w10) if v is not None]
            percent = any(v > 1.0 for v in shares) if shares else (mape is not None and mape >= 1.0)
        k = 1.0 if percent else 100.0
        phases.append(ParityPhase(phase, tuple(p for p, _ in pairs), tuple(m for _, m in pairs),
                                  *(None if v is None else v * k for v in (mape, w5, w10)),
                                  _num(metrics.get("kendall_tau"))))
    if not phases:
        return f"predictor file {path} has no held-out evaluation (predicted_ms / measured_ms)"
    return Parity(target, str(path), tuple(phases))


def find_parity(target: str, precision: str | None) -> Parity | str:
    """Look up the target's predictor (first execution provider, deployment precision) and read its evaluation."""
    try:
        from targets import load_target  # written by the targets helper; optional here

        spec = load_target(target)
        provider = spec.execution_providers[0]
        precision = precision or spec.default_precision
    except Exception as exc:  # unknown target, or targets package not there: no parity plot, said why
        return f"target {target!r} could not be loaded to find its predictor ({exc.__class__.__name__})"
    from nas.paths import find_predictor

    path = find_predictor(target, provider, precision)
    if path is None:
        return f"no fitted predictor for {target} ({provider}, {precision}); run `nas calibrate --target {target}`"
    return parity_from_predictor(target, path)


# ----------------------------------------------------------------------------------------------- table
@dataclass(frozen=True)
class Column:
    key: str
    title: str  # with units
    fmt: str  # format spec for Markdown/HTML; CSV keeps full precision


def quality_axis(trials: StudyTrials) -> tuple[str, float]:
    """Axis label and the factor to multiply quality by for display."""
    sources = {p.record.quality_source for p in trials.points.values()}
    source = sources.pop() if len(sources) == 1 else "mixed"
    if source == "non_embedding_params":
        return "quality: non-embedding parameters (M)", 1e-6
    return f"quality: {source.replace('_', ' ')} (higher is better)", 1.0


def table_columns(trials: StudyTrials) -> list[Column]:
    label, scale = quality_axis(trials)
    cols = [Column("pick", "pick", ""), Column("trial", "trial", "d"), Column("shape", "shape", ""),
            Column("attention", "attention", ""), Column("heads", "heads q/kv × dim", ""),
            Column("ffn", "FFN, LM head", ""),
            Column("params_m", "params (M)", ".1f"), Column("quality", label, ".1f" if scale == 1e-6 else ".4g")]
    for t in trials.meta.targets:
        ctx = trials.meta.context_len
        cols += [Column(f"{t}.memory_mb", f"{t} memory @ctx {ctx} (MB)", ".0f"),
                 Column(f"{t}.ttft_ms", f"{t} TTFT @{trials.meta.prompt_len} tok (ms)", ".1f"),
                 Column(f"{t}.prefill_tokens_per_s", f"{t} prefill (tok/s)", ".0f"),
                 Column(f"{t}.decode_tokens_per_s", f"{t} decode (tok/s)", ".1f")]
    cols.append(Column("arch_id", "arch id", ""))
    return cols


def table_rows(trials: StudyTrials, pareto: Sequence[int], picks: Mapping[str, int]) -> list[dict[str, Any]]:
    """One row per Pareto-set trial, best quality first; picks named in the `pick` column."""
    _, qscale = quality_axis(trials)
    pick_of: dict[int, list[str]] = {}
    for name in PICKS:
        if name in picks:
            pick_of.setdefault(picks[name], []).append(name)
    rows = []
    for n in pareto:
        p = trials.points[n]
        arch = p.record.arch
        row: dict[str, Any] = {
            "pick": ", ".join(pick_of.get(n, [])), "trial": n, "shape": p.shape,
            "attention": arch.attention_type, "heads": f"{arch.num_heads}/{arch.num_kv_heads} × {arch.head_dim}",
            "ffn": ", ".join([arch.ffn_kind, "tied" if arch.tie_embeddings else "untied"]
                             + (["qkv bias"] if arch.qkv_bias else [])),
            "params_m": arch.num_params / 1e6,
            "quality": p.quality * qscale, "arch_id": p.arch_id,
        }
        for t in trials.meta.targets:
            fig: TargetFigures | None = p.record.figures.get(t)
            for key in ("memory_mb", "ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s"):
                row[f"{t}.{key}"] = None if fig is None else float(getattr(fig, key))
        rows.append(row)
    rows.sort(key=lambda r: (-r["quality"], r["trial"]))
    return rows


# ----------------------------------------------------------------------------------------------- all together
@dataclass
class ReportData:
    trials: StudyTrials
    pareto: tuple[int, ...]
    picks: dict[str, int]
    fronts: dict[str, list[Front2D]]  # metric -> one Front2D per target
    hypervolume: list[HypervolumeHistory]
    parity: dict[str, Parity | str]  # target -> parity data, or why there is none
    columns: list[Column]
    rows: list[dict[str, Any]]
    quality_label: str
    quality_scale: float
    notes: list[str] = field(default_factory=list)

    @property
    def first_target(self) -> str:
        return self.trials.meta.targets[0]


def compute_report(trials: StudyTrials, with_parity: bool = True) -> ReportData:
    if not trials.points:
        states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(trials.states.items())) or "no trials"
        raise NasUserError(f"study {trials.name!r} has no complete nas trials to report ({states})")
    pareto = study_pareto_set(trials)
    picks = compute_picks(trials, pareto)
    fronts = {m: [front_2d(trials, t, m, picks) for t in trials.meta.targets] for m in SPEED_METRICS}
    hv = [hypervolume_history(trials, t) for t in trials.meta.targets]
    parity: dict[str, Parity | str] = {}
    for t in trials.meta.targets:
        source = trials.meta.latency_sources.get(t) or _source_of(trials, t)
        if source.startswith("analytic"):
            parity[t] = f"{t} latency is {source}: there are no measurements to compare predictions with"
        elif with_parity:
            parity[t] = find_parity(t, trials.meta.precision.get(t))
    label, scale = quality_axis(trials)
    notes = []
    if not pareto:
        notes.append("No feasible trial: every complete trial breaks a constraint, so there is no Pareto set "
                     "and nothing to recommend. Loosen the constraints or widen the search space.")
    if trials.unrecorded:
        notes.append(f"{trials.unrecorded} complete trial(s) carry no nas record and are left out.")
    return ReportData(trials, pareto, picks, fronts, hv, parity, table_columns(trials),
                      table_rows(trials, pareto, picks), label, scale, notes)
