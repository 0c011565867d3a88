"""The study schema: every key nas stores in an Optuna study, what it means, and the records built from them.

This is the contract between the search (the writer) and everything that reads a study (reports, exports,
later stages, other processes on the same storage). Everything is stored as Optuna user attrs (plain JSON),
so `optuna-dashboard` and any Optuna API can read a study without nas installed. No module writes or reads
a nas user attr by a string of its own: they use the constants below.

Study user attrs: `StudyMeta` (what was searched, for which targets, under which settings), the exact stage's
summary and the last run's summary (see STUDY_ATTRS). Trial user attrs: `TrialRecord` (the ArchConfig, its
accounting and per-target predicted figures) plus how the search came by the trial (see TRIAL_ATTRS).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.core.limits import shown

SCHEMA_VERSION = 1

# ----- trial user attrs -----
# Written by TrialRecord.to_user_attrs:
SCHEMA = "schema_version"
ARCH = "arch"
ARCH_ID = "arch_id"
SHAPE = "shape"
ATTENTION_TYPE = "attention_type"
NUM_PARAMS = "num_params"
NUM_NON_EMBEDDING_PARAMS = "num_non_embedding_params"
QUALITY = "quality"
QUALITY_SOURCE = "quality_source"
PREDICTIONS = "predictions"
FEASIBLE = "feasible"
VIOLATIONS = "violations"
# Written by the search about how it came by the trial:
FOUND_BY = "found_by"
COUNTED = "counted"
DUPLICATE_OF = "duplicate_of"
FAIL_REASON = "fail_reason"

# Written by the proxy stage (trials of the `<study>:proxy` study):
PROXY_SPEED = "proxy_speed"
PROXY_RUNGS = "proxy_rungs"
PROXY_WORKER = "proxy_worker"
PROXY_ARCH = "proxy_arch"
PROXY_HISTORY = "proxy_history"
PROXY_PICK = "proxy_pick"
PRUNED_AT_RUNG = "pruned_at_rung"
PRUNE_REASON = "prune_reason"

# What TrialRecord.quality measures (QUALITY_SOURCE), higher always better:
QUALITY_LAW = "predicted_loss"  # the latency stage: minus the law's predicted pretraining loss (nats/token)
QUALITY_PARAMS = "non_embedding_params"  # the latency stage with --quality params: non-embedding parameter count
QUALITY_PROXY = "proxy_bpb"  # the proxy stage: minus the trained proxy's held-out bits per byte
# Objective metrics that are a quality (the others are per-target speeds and memory): the latency stage's
# "quality" objective is QUALITY_LAW (minimised) or "quality" (the parameter count, maximised); the proxy stage's
# is QUALITY_PROXY (minimised).
QUALITY_METRICS = ("quality", QUALITY_LAW, QUALITY_PROXY)
# Sources whose quality is stored as minus a loss (shown as the loss itself)
LOSS_SOURCES = (QUALITY_LAW, QUALITY_PROXY)

# The choices a study's objectives are made of (nas.study.objectives.parse_objectives; the CLI's choices):
DEFAULT_OBJECTIVES = ("quality", "decode_tps")
MULTI_TARGET_MODES = ("each", "worst")  # several targets: speed objectives per target, or the worst case
QUALITY_CHOICES = ("law", "params")  # --quality: the predicted loss (QUALITY_LAW), or QUALITY_PARAMS

FOUND_BY_SAMPLER = "sampler"  # proposed by the Optuna sampler
FOUND_BY_EXACT = "exact_front"  # a member of the exact front the sampler missed, added after the search

TRIAL_ATTRS: dict[str, str] = {
    SCHEMA: "version of this schema the trial was written with (SCHEMA_VERSION)",
    ARCH: "ArchConfig.to_dict() of the candidate: the one vocabulary, every field filled",
    ARCH_ID: "ArchConfig.arch_id: first 16 hex digits of the SHA-256 of the canonical JSON",
    SHAPE: "ArchConfig.short_tag, e.g. 'L24 d1024 f4864 gqa4' (for tables and plots)",
    ATTENTION_TYPE: "'mha', 'gqa' or 'mqa'",
    NUM_PARAMS: "exact total parameters (what transformers instantiates)",
    NUM_NON_EMBEDDING_PARAMS: "parameters without the token embedding and LM head",
    QUALITY: "the quality (higher is better): minus the predicted or proxy loss, or the parameter count",
    QUALITY_SOURCE: f"what quality measures: {QUALITY_LAW!r}, {QUALITY_PARAMS!r} or {QUALITY_PROXY!r}",
    PREDICTIONS: "target -> TargetFigures.to_dict(): prefill/decode ms and tokens/s, memory MiB, latency source",
    FEASIBLE: "true when the candidate breaks no constraint (violations is empty)",
    VIOLATIONS: "one human-readable line per broken constraint",
    FOUND_BY: f"{FOUND_BY_SAMPLER!r} (proposed by the sampler) or {FOUND_BY_EXACT!r} (added from the exact front)",
    COUNTED: "true on a trial that evaluated a new config inside the space: these count toward --trials",
    DUPLICATE_OF: "number of the trial that first evaluated this arch id; the values were copied from it",
    FAIL_REASON: "why a FAIL trial failed, in one line (e.g. a combination the space rejects)",
    PROXY_SPEED: "proxy stage: the candidate's values of the speed objectives, in the study's order",
    PROXY_RUNGS: "proxy stage: the token budget of each rung",
    PROXY_WORKER: "proxy stage: host:pid of the worker that claimed the trial",
    PROXY_ARCH: "proxy stage: ArchConfig.to_dict() of the proxy actually trained (nas.proxy.scaling)",
    PROXY_HISTORY: "proxy stage: per rung, tokens, held-out bits per byte (mean over repeats, and each), seconds, "
                   "the training-loss curve and the halving decision",
    PROXY_PICK: "proxy stage: true on a shape the latency stage picked (knee, fastest, best quality): halving never "
                "stops it, so the check of the quality law has its last-rung score",
    PRUNED_AT_RUNG: "proxy stage: the rung after which successive halving stopped the trial (PRUNED)",
    PRUNE_REASON: "proxy stage: why halving stopped it, in one line",
}

# ----- studies -----
PROXY_SUFFIX = ":proxy"  # the proxy stage's study is the latency stage's name plus this
# A study name, however it enters (--study, derived from targets and space, read back by report and export):
# letters, digits and . _ + - , starting with a letter or digit. No ':' (nas names a search's own studies
# <name>:proxy and <name>:lock, so `--study m:proxy` beside a study m would be read as m's proxy stage), no path
# separators or '..' (a name is a folder under runs/reports), no spaces or control characters (printed on one line).
STUDY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_study_name(name: Any, source: str = "--study", proxy_ok: bool = False) -> str:
    """`name` when it is a study name (STUDY_NAME_RE), else one line saying what is allowed. `proxy_ok`
    (commands that read studies): also a search's own proxy study, <name>:proxy, which only nas can create,
    since no study name it accepts holds a ':'."""
    base = name[:-len(PROXY_SUFFIX)] if proxy_ok and isinstance(name, str) and name.endswith(PROXY_SUFFIX) else name
    if isinstance(base, str) and STUDY_NAME_RE.fullmatch(base) and ".." not in base:
        return name
    reserved = isinstance(name, str) and ":" in name
    raise NasUserError(f"{source} {shown(name)} is not a study name: use letters, digits and . _ + - (starting with "
                       "a letter or digit, at most 128 characters)"
                       + ("; ':' is reserved for the studies nas keeps beside a search (<study>:proxy)" if reserved
                          else ""))


def proxy_study_name(study: str) -> str:
    """The name of the proxy stage's study beside the latency stage's study `study`."""
    return study + PROXY_SUFFIX


# ----- study user attrs -----
STUDY_SCHEMA = "nas_schema_version"
STUDY_META = "nas_meta"
STUDY_EXACT = "nas_exact"
STUDY_SEARCH = "nas_search"
STUDY_LATENCY_DONE = "nas_latency_done"
STUDY_PROXY_PLAN = "nas_proxy_plan"
STUDY_LANDMARK_PROXY = "nas_landmark_proxy"
STUDY_PARITY = "nas_latency_parity"
STUDY_LANDMARKS = "nas_landmarks"

STUDY_ATTRS: dict[str, str] = {
    STUDY_SCHEMA: "version of this schema the study was created with (SCHEMA_VERSION)",
    STUDY_META: "StudyMeta: space, targets, precision, lengths, objectives, constraints, latency sources and "
                "each target's latency-model fingerprint (latency_models) and error band (latency_errors), and the "
                "quality the latency stage ranks by (quality: the law's fingerprint, training tokens, band); a "
                "resumed search must match its identity() and the fingerprints",
    STUDY_EXACT: "the exact stage's summary: space size, feasible configs, front size, hypervolume, the "
                 "normalisation it was measured in (no per-shape lists: the front's members are trials)",
    STUDY_SEARCH: "the last run's summary: counted trials, Optuna trials, Pareto-set size, the sampler's share "
                  "of the exact hypervolume, sampler and seed, and warnings: where the Pareto set's predictions "
                  "lie outside what a target's latency model was fitted on (LatencyModel.extrapolation)",
    STUDY_LATENCY_DONE: "set when the latency stage finished its budget; workers of the proxy stage wait for it",
    STUDY_PROXY_PLAN: "on the proxy study: the shapes chosen for training (arch ids), how many candidates they "
                      "were chosen from, and when",
    STUDY_LANDMARK_PROXY: "on the proxy study: published models (report landmarks) trained as proxies under the "
                          "study's own rule, settings, corpus and last-rung budget (`nas report --landmark-quality`): "
                          "name -> arch id, held-out bits per byte (mean of the final seeds), each seed's, seconds",
    STUDY_PARITY: "target -> its latency model's held-out predictions beside their measurements and their accuracy "
                  "(LatencyModel.parity: {source, phases: [{phase, predicted_ms, measured_ms, mape_pct, "
                  "within_5_pct, within_10_pct, kendall_tau}]}), or {none: why there are none}: the report's "
                  "parity plots, as the search saw them",
    STUDY_LANDMARKS: "published models (reports/landmarks.toml) as the search predicted them at its lengths: a list "
                     "of {name, source, arch, figures: target -> TargetFigures.to_dict(), predicted_loss}; the "
                     "report places them on its fronts",
}


@dataclass(frozen=True)
class TargetFigures:
    """Predicted figures of one ArchConfig on one target. Units are in the names."""

    prefill_ms: float  # time to first token for a prompt of prompt_len tokens
    decode_ms: float  # one decode step with context_len tokens in the KV cache
    memory_mb: float  # weights at the precision + KV cache + working memory (MiB = 2**20 bytes)
    latency_source: str  # "measured" | "calibrated" | "analytic, uncalibrated"
    prompt_len: int  # the P that prefill_ms is for

    @property
    def ttft_ms(self) -> float:
        return self.prefill_ms

    @property
    def prefill_tokens_per_s(self) -> float:
        return 0.0 if self.prefill_ms <= 0 else self.prompt_len * 1000.0 / self.prefill_ms

    @property
    def decode_tokens_per_s(self) -> float:
        return 0.0 if self.decode_ms <= 0 else 1000.0 / self.decode_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefill_ms": self.prefill_ms,
            "ttft_ms": self.ttft_ms,
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "decode_ms": self.decode_ms,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "memory_mb": self.memory_mb,
            "latency_source": self.latency_source,
            "prompt_len": self.prompt_len,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TargetFigures":
        return cls(prefill_ms=float(data["prefill_ms"]), decode_ms=float(data["decode_ms"]),
                   memory_mb=float(data["memory_mb"]), latency_source=str(data["latency_source"]),
                   prompt_len=int(data["prompt_len"]))


@dataclass(frozen=True)
class TrialRecord:
    """Everything nas knows about one evaluated candidate."""

    arch: ArchConfig
    figures: dict[str, TargetFigures]  # target name -> figures
    quality: float  # higher is better
    quality_source: str  # QUALITY_LAW or QUALITY_PARAMS (latency stage), QUALITY_PROXY (proxy stage)
    violations: tuple[str, ...] = ()  # human-readable reasons the candidate breaks a constraint

    @property
    def feasible(self) -> bool:
        return not self.violations

    @property
    def loss(self) -> float | None:
        """The loss behind the quality (predicted nats/token, or proxy bits/byte), None for a parameter count."""
        return -self.quality if self.quality_source in LOSS_SOURCES else None

    def to_user_attrs(self) -> dict[str, Any]:
        return {
            SCHEMA: SCHEMA_VERSION,
            ARCH: self.arch.to_dict(),
            ARCH_ID: self.arch.arch_id,
            SHAPE: self.arch.short_tag,
            ATTENTION_TYPE: self.arch.attention_type,
            NUM_PARAMS: self.arch.num_params,
            NUM_NON_EMBEDDING_PARAMS: self.arch.num_non_embedding_params,
            QUALITY: self.quality,
            QUALITY_SOURCE: self.quality_source,
            PREDICTIONS: {t: f.to_dict() for t, f in self.figures.items()},
            FEASIBLE: self.feasible,
            VIOLATIONS: list(self.violations),
        }

    @staticmethod
    def present_in(attrs: Mapping[str, Any]) -> bool:
        """Whether a trial's user attrs carry a record (trials of other tools, and failed ones, do not)."""
        return ARCH in attrs and PREDICTIONS in attrs

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> "TrialRecord":
        return cls(
            arch=ArchConfig.from_dict(attrs[ARCH]),
            figures={t: TargetFigures.from_dict(f) for t, f in attrs[PREDICTIONS].items()},
            quality=float(attrs[QUALITY]),
            quality_source=str(attrs[QUALITY_SOURCE]),
            violations=tuple(attrs.get(VIOLATIONS, ())),
        )


@dataclass(frozen=True)
class Objective:
    """One study objective: a metric, its direction, and the target it is measured on (None: target-free)."""

    metric: str  # a QUALITY_METRICS member, "decode_tokens_per_s", "prefill_tokens_per_s", "ttft_ms", "memory_mb"
    direction: str  # "maximize" | "minimize"
    target: str | None = None  # None for quality; "worst" for the worst case over all targets

    @property
    def label(self) -> str:
        return self.metric if self.target is None else f"{self.metric}@{self.target}"

    @property
    def is_quality(self) -> bool:
        return self.metric in QUALITY_METRICS


@dataclass(frozen=True)
class StudyMeta:
    """Settings of a search, stored once per study; a resumed search must match them."""

    space: str
    space_fingerprint: str  # hash of the space definition: resuming with a changed space is refused
    targets: tuple[str, ...]
    precision: dict[str, str]  # target -> deployment precision
    prompt_len: int
    context_len: int
    objectives: tuple[Objective, ...]
    constraints: dict[str, Any]
    latency_sources: dict[str, str]
    nas_version: str
    proxy: dict[str, Any] | None = None  # the proxy study's training settings (ProxyOptions.identity)
    latency_errors: dict[str, Any] = field(default_factory=dict)  # target -> LatencyModel.error_band()
    # target -> {"fingerprint": LatencyModel.fingerprint(), "provenance": its phrase}: the latency model each
    # target was searched with (None in studies written before it was recorded)
    latency_models: dict[str, dict[str, str]] | None = None
    # What the latency stage's quality is: {"source": QUALITY_LAW or QUALITY_PARAMS, and for the law
    # "train_tokens", "fingerprint" (of the fit file), "band_nats", "reference", "form"} (None: written before
    # the law, quality was the parameter count)
    quality: dict[str, Any] | None = None

    def to_user_attrs(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = list(self.targets)
        data["objectives"] = [asdict(o) for o in self.objectives]
        return {STUDY_SCHEMA: SCHEMA_VERSION, STUDY_META: data}

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> "StudyMeta | None":
        """None when the study was not written by nas."""
        data = attrs.get(STUDY_META)
        if data is None:
            return None
        return cls(**{**data, "targets": tuple(data["targets"]),
                      "objectives": tuple(Objective(**o) for o in data["objectives"])})

    def digest(self) -> str:
        """8 hex digits naming these settings (identity and constraints): default study names use it."""
        blob = json.dumps({**self.identity(), "constraints": self.constraints}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def differences(self, other: "StudyMeta") -> list[str]:
        """What differs from `other`, in words: 'constraints.max_params: 1,000,000,000 there, 550,000,000 here'."""
        mine = _flatten({**self.identity(), "constraints": self.constraints})
        theirs = _flatten({**other.identity(), "constraints": other.constraints})
        return [f"{key}: {_show(theirs.get(key))} there, {_show(mine.get(key))} here"
                for key in sorted(set(mine) | set(theirs)) if mine.get(key) != theirs.get(key)]

    def latency_model_change(self, old: StudyMeta, study: str) -> str | None:
        """One line saying which target's latency model differs from the one `old` was searched with (None
        when they agree, or when `old` predates the record). Kept out of identity(): a recalibrated target must
        not silently rename a default study, it is refused with this line."""
        if not old.latency_models or not self.latency_models:
            return None
        for target in self.targets:
            was, now = old.latency_models.get(target), self.latency_models.get(target)
            if was and now and was.get("fingerprint") != now.get("fingerprint"):
                return (f"study {study!r} was searched with {target}'s latency model {was.get('fingerprint')} "
                        f"({was.get('provenance')}); now it is {now.get('fingerprint')} ({now.get('provenance')}): "
                        "its figures would mix both models; start a new study (--study NAME), or restore that "
                        "latency model to resume it")
        return None

    def identity(self) -> dict[str, Any]:
        """The settings that define what a study's trials mean; resuming with any of these changed is refused."""
        return {"space": self.space, "space_fingerprint": self.space_fingerprint, "targets": list(self.targets),
                "precision": self.precision, "prompt_len": self.prompt_len, "context_len": self.context_len,
                "objectives": [o.label for o in self.objectives], "proxy": self.proxy,
                "quality": {k: v for k, v in (self.quality or {}).items()
                            if k in ("source", "train_tokens", "fingerprint")} or None}

    @property
    def band(self) -> float:
        """The latency stage's quality band (nats): predicted losses closer than this are ties (0: none)."""
        return float((self.quality or {}).get("band_nats") or 0.0)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


# Optuna 5 stores each constraint as its own system attr, "constraints:<name>" (Trial.set_constraint);
# optuna-dashboard (0.21) still reads only the older list under "constraints", and without it counts infeasible
# trials among its best trials and draws them as feasible. Stored trials carry both.
CONSTRAINTS_PREFIX = "constraints:"
LEGACY_CONSTRAINTS = "constraints"


def named_constraints(system_attrs: Mapping[str, Any]) -> dict[str, float]:
    """The named constraint values of a trial (not the legacy list's positional copies)."""
    return {k[len(CONSTRAINTS_PREFIX):]: v for k, v in system_attrs.items()
            if k.startswith(CONSTRAINTS_PREFIX) and not k[len(CONSTRAINTS_PREFIX):].isdigit()}


def with_constraint_list(trial):
    """A copy of a FrozenTrial whose system attrs also hold its named constraints as the legacy list (names
    sorted), so optuna-dashboard's Pareto front and best trials see which trials are infeasible."""
    named = named_constraints(trial.system_attrs)
    if not named:
        return trial
    out = copy.copy(trial)
    out.system_attrs = {**trial.system_attrs, LEGACY_CONSTRAINTS: [float(named[k]) for k in sorted(named)]}
    return out

