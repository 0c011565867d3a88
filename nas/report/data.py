"""Compute a report's data from a finished study: records, fronts, picks, hypervolume history, table rows.

Nothing here draws. Every structure is small, named and tested directly (compute, then draw);
`nas.report.plots` and `nas.report.html` only render what this module returns. The study itself is read
through `nas.study.read` (trials, Pareto set, picks), with the definitions given there; what the search recorded
beside the trials (each target's parity data, the published models' predicted figures) is read as recorded,
never re-derived from files that may have changed since.

- A *2-D front* (what the plots show) is the Pareto idea on two axes only: quality (up) against decode or
  prefill tokens/s on one target (right), both maximised.
- The *search progress* plot shows the same quantity the search reports: the hypervolume of the feasible
  trials the sampler found, over the study's own objectives, normalised as the exact stage normalised them
  (`nas.study.pareto.Normaliser`), as a share of the exact front's hypervolume. The exact front's members
  the sampler missed are added after the search; they are not search progress, so the plot marks where they
  were added instead of counting them. A study without an exact stage is normalised over its own feasible
  trials, and the plot says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.counts import format_count
from nas.core.errors import NasUserError
from nas.latency.uncertainty import band_for
from nas.quality.model import load_quality_model
from nas.study import schema
from nas.study.pareto import PICKS, Normaliser, pareto_mask, pareto_mask_max, to_minimisation
from nas.study.read import StudyTrials, compute_picks, failure_reason, study_pareto_set

SPEED_METRICS = ("decode_tokens_per_s", "prefill_tokens_per_s")
MAX_LABELS = 9  # front points labelled per panel; more than this stops being readable at phone width


# ----------------------------------------------------------------------------------------------- fronts
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
    mask = pareto_mask_max([xy[n] for n in feasible], [True, True])
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


# ----------------------------------------------------------------------------------------------- search progress
@dataclass(frozen=True)
class SearchProgress:
    """Hypervolume of the sampler's feasible trials after each of them (see the module docstring)."""

    numbers: tuple[int, ...]  # feasible trials the sampler found, in trial-number order
    values: tuple[float, ...]  # hypervolume after each of them, in `unit`
    unit: str  # what `values` measure, for the axis label
    exact_added: int  # exact-front trials added after the search (0: none)
    final_with_exact: float | None  # the value once they are added (1.0 of the exact front's), or None


def search_progress(trials: StudyTrials) -> SearchProgress:
    feasible = sorted((p for p in trials.points.values() if p.feasible and len(p.values) == len(trials.directions)),
                      key=lambda p: p.number)
    sampled = [p for p in feasible if p.found_by != schema.FOUND_BY_EXACT]
    added = len(feasible) - len(sampled)
    exact = trials.exact or {}
    norm = exact.get("normalisation")
    if norm and exact.get("hypervolume"):
        normaliser = Normaliser(tuple(norm["best"]), tuple(norm["worst"]))
        total = float(exact["hypervolume"])
        unit = "share of the exact front's hypervolume"
    else:
        if not feasible:
            return SearchProgress((), (), "hypervolume", 0, None)
        normaliser = Normaliser.from_points(to_minimisation([p.values for p in feasible], trials.directions))
        total, unit = 1.0, "hypervolume, normalised to the feasible trials' range"
    values, front = [], np.zeros((0, len(trials.directions)))
    for p in sampled:
        front = np.vstack([front, to_minimisation([p.values], trials.directions)])
        front = front[pareto_mask(front)]  # only the front adds volume
        values.append(normaliser.hypervolume(front) / total)
    final = None
    if added:
        every = to_minimisation([p.values for p in feasible], trials.directions)
        final = normaliser.hypervolume(every) / total
    return SearchProgress(tuple(p.number for p in sampled), tuple(values), unit, added, final)


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


# ----------------------------------------------------------------------------------------------- landmarks
@dataclass(frozen=True)
class Landmark:
    """A published model placed on the plots: its shape and nas's predicted figures for it on each target."""

    name: str
    arch: ArchConfig
    figures: dict[str, schema.TargetFigures]
    source: str
    proxy_bpb: float | None = None  # its proxy's held-out bits per byte under a proxy study's settings, if trained
    predicted_loss: float | None = None  # the quality law's prediction at the study's training tokens

    def quality(self, source: str) -> float | None:
        """Its value on a front of quality `source` (higher is better), None where it has none."""
        if source == schema.QUALITY_LAW:
            return None if self.predicted_loss is None else -self.predicted_loss
        if source == schema.QUALITY_PROXY:
            return None if self.proxy_bpb is None else -self.proxy_bpb
        return float(self.arch.num_non_embedding_params)

    def speed(self, target: str, metric: str) -> float | None:
        fig = self.figures.get(target)
        return None if fig is None else float(getattr(fig, metric))


def study_quality_model(meta, train_tokens: int | None = None):
    """The quality model a study's losses were predicted with (at `train_tokens` instead of the study's, when
    given), or None for a study ranked by parameter count. A law refitted since the search is one line."""
    q = meta.quality or {}
    if q.get("source") != schema.QUALITY_LAW:
        return None
    model = load_quality_model(train_tokens or int(q["train_tokens"]))
    if model.fingerprint != q.get("fingerprint"):
        raise NasUserError(f"the quality law is now {model.fingerprint}, the study was searched with "
                           f"{q.get('fingerprint')}: its predicted losses would mix both laws")
    return model


def recorded_landmarks(trials: StudyTrials, quality_model=None) -> list[Landmark] | str:
    """The landmarks as the search predicted them (STUDY_LANDMARKS), their loss predicted again by
    `quality_model` when given (a report at another budget); or why there are none."""
    if trials.landmarks is None:
        return (f"study {trials.name!r} recorded none (it was searched before nas recorded them; search again to "
                "record them)")
    out = []
    for m in trials.landmarks:
        figures = {t: schema.TargetFigures.from_dict(f) for t, f in m["figures"].items()}
        out.append(Landmark(m["name"], ArchConfig.from_dict(m["arch"]), figures, m["source"],
                            predicted_loss=m.get("predicted_loss")))
    if quality_model is not None and out:
        losses = quality_model.predict(ArchBatch.from_configs([lm.arch for lm in out]))
        out = [replace(lm, predicted_loss=float(loss)) for lm, loss in zip(out, losses)]
    return out


def at_train_tokens(trials: StudyTrials, quality_model) -> StudyTrials:
    """The study's points with their loss predicted at `quality_model`'s training tokens (a study searched at
    another budget, reported at this one): quality and the quality objective's value replaced."""
    position = next(j for j, o in enumerate(trials.meta.objectives) if o.metric == schema.QUALITY_LAW)
    points = dict(trials.points)
    if points:
        numbers = list(points)
        losses = quality_model.predict(ArchBatch.from_configs([points[n].record.arch for n in numbers]))
        for n, loss in zip(numbers, losses):
            p = points[n]
            values = tuple(float(loss) if j == position else v for j, v in enumerate(p.values))
            points[n] = replace(p, record=replace(p.record, quality=-float(loss)), values=values)
    quality = {**(trials.meta.quality or {}), "train_tokens": quality_model.train_tokens,
               "description": quality_model.describe()}
    return replace(trials, points=points, meta=replace(trials.meta, quality=quality))


@dataclass(frozen=True)
class Parity:
    target: str
    path: str
    phases: tuple[ParityPhase, ...]


def recorded_parity(trials: StudyTrials, target: str) -> Parity | str:
    """The parity data the search recorded for `target` (STUDY_PARITY: its latency model's held-out
    predictions beside their measurements), or why there is none."""
    record = (trials.parity or {}).get(target)
    if record is None:
        return (f"study {trials.name!r} recorded no parity data for {target} (it was searched before nas recorded "
                "them; search again to record them)")
    if "none" in record:
        return str(record["none"])
    phases = tuple(ParityPhase(p["phase"], tuple(p["predicted_ms"]), tuple(p["measured_ms"]), p.get("mape_pct"),
                               p.get("within_5_pct"), p.get("within_10_pct"), p.get("kendall_tau"))
                   for p in record["phases"])
    return Parity(target, str(record["source"]), phases)


# ----------------------------------------------------------------------------------------------- table
@dataclass(frozen=True)
class Column:
    key: str
    title: str  # with units
    fmt: str  # format spec for Markdown/HTML (APPROXIMATE: "~" and 2 significant digits); CSV keeps full precision


APPROXIMATE = "approximate"  # a predicted figure whose error nothing bounds (nas.latency.uncertainty)


def quality_axis(trials: StudyTrials) -> tuple[str, float]:
    """Axis label and the factor to multiply quality by for display."""
    sources = {p.record.quality_source for p in trials.points.values()}
    source = sources.pop() if len(sources) == 1 else "mixed"
    if source == schema.QUALITY_LAW:
        tokens = (trials.meta.quality or {}).get("train_tokens")
        return (f"predicted loss after {format_count(tokens) if tokens else '?'} tokens (nats/token, lower is "
                "better)", -1.0)
    if source == schema.QUALITY_PARAMS:
        return "quality: non-embedding parameters (M)", 1e-6
    if source == schema.QUALITY_PROXY:  # stored as minus the loss so that higher is better; shown as the loss itself
        return "proxy: held-out bits per byte (lower is better)", -1.0
    return f"quality: {source.replace('_', ' ')} (higher is better)", 1.0


def table_columns(trials: StudyTrials) -> list[Column]:
    label, scale = quality_axis(trials)
    cols = [Column("pick", "pick", ""), Column("trial", "trial", "d"), Column("shape", "shape", ""),
            Column("attention", "attention", ""), Column("heads", "heads q/kv × dim", ""),
            Column("ffn", "FFN, LM head", ""),
            Column("params_m", "params (M)", ".1f"),
            Column("quality", label, {1e-6: ".1f", -1.0: ".3f"}.get(scale, ".4g"))]
    for t in trials.meta.targets:
        ctx = trials.meta.context_len
        band = trials.meta.latency_errors.get(t)

        def speed(key: str, title: str, fmt: str) -> Column:
            rel = band_for(key, band)
            return Column(f"{t}.{key}", title.replace(")", f", +-{rel:.0%})") if rel is not None else title,
                          fmt if rel is not None else APPROXIMATE)

        cols += [Column(f"{t}.memory_mb", f"{t} memory @ctx {ctx} (MB)", ".0f"),
                 speed("ttft_ms", f"{t} TTFT @{trials.meta.prompt_len} tok (ms)", ".1f"),
                 speed("prefill_tokens_per_s", f"{t} prefill (tok/s)", ".0f"),
                 speed("decode_tokens_per_s", f"{t} decode (tok/s)", ".1f")]
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
            fig: schema.TargetFigures | None = p.record.figures.get(t)
            for key in ("memory_mb", "ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s"):
                row[f"{t}.{key}"] = None if fig is None else float(getattr(fig, key))
        rows.append(row)
    rows.sort(key=lambda r: (-r["quality"] * (1 if qscale > 0 else -1), r["trial"]))
    return rows


# ----------------------------------------------------------------------------------------------- proxy runs
@dataclass(frozen=True)
class ProxyRun:
    """One shape's proxy training: its rungs, how it ended, and its training-loss curve."""

    number: int
    shape: str
    arch_id: str
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    rungs: tuple[tuple[int, float], ...]  # (tokens, held-out bits per byte) per finished rung
    curve: tuple[tuple[int, float], ...]  # (tokens, training bits per byte)
    pruned_at: int | None
    reason: str  # why it was stopped or failed ("" otherwise)
    speed: float | None  # its first speed objective


def proxy_runs(study) -> list[ProxyRun]:
    """Every trial of a proxy study as a ProxyRun, by trial number."""
    runs = []
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        a = t.user_attrs
        history = a.get(schema.PROXY_HISTORY) or []
        curve = tuple((int(x), float(y)) for h in history for x, y in h.get("curve", []))
        speed = a.get(schema.PROXY_SPEED)
        reason = a.get(schema.PRUNE_REASON) or (failure_reason(t, trials) if t.state.name == "FAIL" else "")
        runs.append(ProxyRun(t.number, str(a.get(schema.SHAPE, "?")), str(a.get(schema.ARCH_ID, "?")), t.state.name,
                             tuple((int(h["tokens"]), float(h["val_bpb"])) for h in history), curve,
                             a.get(schema.PRUNED_AT_RUNG), str(reason), float(speed[0]) if speed else None))
    return runs


# ----------------------------------------------------------------------------------------------- all together
@dataclass
class ReportData:
    trials: StudyTrials
    pareto: tuple[int, ...]
    picks: dict[str, int]
    fronts: dict[str, list[Front2D]]  # metric -> one Front2D per target
    progress: SearchProgress
    parity: dict[str, Parity | str]  # target -> parity data, or why there is none
    columns: list[Column]
    rows: list[dict[str, Any]]
    quality_label: str
    quality_scale: float
    notes: list[str] = field(default_factory=list)
    landmarks: list[Landmark] = field(default_factory=list)
    proxy: "ReportData | None" = None  # the proxy stage's report data, when the study has a proxy stage
    runs: list[ProxyRun] = field(default_factory=list)  # the proxy stage's trainings

    @property
    def first_target(self) -> str:
        return self.trials.meta.targets[0]

    @property
    def quality_source(self) -> str:
        """What quality measures on this report's fronts (nas.study.schema QUALITY_*), or "mixed"."""
        sources = {p.record.quality_source for p in self.trials.points.values()}
        return sources.pop() if len(sources) == 1 else "mixed"


def compute_report(trials: StudyTrials, with_parity: bool = True, with_landmarks: bool = True,
                   quality_model=None) -> ReportData:
    if not trials.points:
        states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(trials.states.items())) or "no trials"
        raise NasUserError(f"study {trials.name!r} has no complete nas trials to report ({states})")
    pareto = study_pareto_set(trials)
    picks = compute_picks(trials, pareto)
    fronts = {m: [front_2d(trials, t, m, picks) for t in trials.meta.targets] for m in SPEED_METRICS}
    progress = search_progress(trials)
    parity = {t: recorded_parity(trials, t) for t in trials.meta.targets} if with_parity else {}
    label, scale = quality_axis(trials)
    notes = []
    if not pareto:
        notes.append("No feasible trial: every complete trial breaks a constraint, so there is no Pareto set "
                     "and nothing to recommend. Loosen the constraints or widen the search space.")
    if trials.unrecorded:
        notes.append(f"{trials.unrecorded} complete trial(s) carry no nas record and are left out.")
    if trials.quality_noise > 0:
        notes.append(f"Proxy seed noise: {trials.quality_noise:.3f} bits/byte (median |seed 0 - seed 1| of the shapes "
                     "trained to the last rung). The picks count smaller quality differences as ties and, of tied "
                     "shapes, pick the faster.")
    quality = trials.meta.quality or {}
    if quality.get("source") == schema.QUALITY_LAW:
        notes.append(f"Quality: {quality.get('description', 'predicted loss')}. Predicted losses within "
                     f"{trials.meta.band:.3f} nats of each other are ties, won by the faster shape; kv heads, FFN "
                     "kind and ratio, head_dim, tying and the vocabulary earn nothing beyond the parameters they add "
                     "(no published evidence; `nas quality`).")
    for warning in (trials.search or {}).get("warnings") or ():
        what = "Quality" if warning.startswith("predicted loss:") else "Latency"
        notes.append(f"{what} extrapolated, {warning}.")
    landmarks: list[Landmark] = []
    if with_landmarks:
        recorded = recorded_landmarks(trials, quality_model)
        if isinstance(recorded, str):
            notes.append(f"Published models are not drawn: {recorded}.")
        else:
            landmarks = recorded
    return ReportData(trials, pareto, picks, fronts, progress, parity, table_columns(trials),
                      table_rows(trials, pareto, picks), label, scale, notes, landmarks)
