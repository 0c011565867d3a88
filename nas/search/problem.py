"""What a latency stage searches, resolved from its settings: targets, space, latency and quality models,
objectives, constraints and the `StudyMeta` that says what the study's trials mean. Unknown names fail here,
before anything is written. It evaluates candidates too: a batch's predicted figures, and one config's
`TrialRecord`, objective values and named constraint values, by the same vectorised functions for one shape
or a whole enumerated space (so a trial's values and the exact front never disagree).
"""

from __future__ import annotations

from typing import Any

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.landmarks import landmark_configs
from nas.core.paths import default_storage
from nas.core.trainers import check_trainer, missing
from nas.core.version import __version__
from nas.latency.registry import load_latency_model
from nas.quality.model import DEFAULT_TRAIN_TOKENS, load_quality_model
from nas.search.settings import SearchSettings
from nas.spaces import load_space
from nas.study.objectives import (
    QUALITY_SOURCE_OF,
    Constraints,
    Figures,
    parse_objectives,
    parse_params_range,
    predict_figures,
)
from nas.study.schema import QUALITY_LAW, QUALITY_PARAMS, StudyMeta, TargetFigures, TrialRecord, check_study_name
from nas.targets import load_target


class SearchProblem:
    """Resolve once, then evaluate any number of candidates (see the module docstring)."""

    def __init__(self, settings: SearchSettings):
        self.settings = s = settings
        self.targets = {name: load_target(name) for name in s.targets}
        self.target_names = tuple(t.name for t in self.targets.values())
        self.space = load_space(s.space)
        self.precisions = {name: s.precision or t.default_precision
                           for name, t in zip(self.target_names, self.targets.values())}
        self.models = {name: load_latency_model(t, self.precisions[name])
                       for name, t in zip(self.target_names, self.targets.values())}
        self.objectives = parse_objectives(s.objectives, self.target_names, s.multi_target, s.quality)
        self.quality_model = (load_quality_model(DEFAULT_TRAIN_TOKENS if s.train_tokens is None else s.train_tokens)
                              if s.quality == "law" else None)
        self.directions = [o.direction for o in self.objectives]
        check_trainer(s.trainer)
        self.constraints = Constraints(self._memory_limits(), s.min_decode_tps, s.max_ttft_ms,
                                       *parse_params_range(s.params))
        self.constraint_names = self.constraints.names(self.target_names)
        self.storage_url = s.storage or default_storage()
        self.study_name = check_study_name(
            s.study if s.named_by_user else f"{'+'.join(self.target_names)}-{self.space.name}",
            "--study" if s.named_by_user else "the default study name (from the targets and the space's name; "
                                              "pass --study NAME)")
        self.meta = self._meta()

    def _memory_limits(self) -> dict[str, float]:
        """MiB per target: --max-memory-mb on every target, else each target's own budget (where it has one)."""
        if self.settings.max_memory_mb is not None:
            return {t: float(self.settings.max_memory_mb) for t in self.target_names}
        return {name: t.memory_budget_bytes / 2**20 for name, t in zip(self.target_names, self.targets.values())
                if t.memory_budget_bytes}

    def _meta(self) -> StudyMeta:
        s = self.settings
        return StudyMeta(
            space=self.space.name, space_fingerprint=self.space.fingerprint, targets=self.target_names,
            precision=dict(self.precisions), prompt_len=s.prompt_len, context_len=s.context_len,
            objectives=self.objectives, constraints={**self.constraints.to_dict(), "trainer": s.trainer},
            latency_sources={t: m.source for t, m in self.models.items()}, nas_version=__version__,
            latency_errors={t: m.error_band() for t, m in self.models.items()},
            latency_models={t: {"fingerprint": m.fingerprint(), "provenance": m.provenance()}
                            for t, m in self.models.items()},
            quality=self._quality_meta(),
        )

    def _quality_meta(self) -> dict[str, Any]:
        q = self.quality_model
        if q is None:
            return {"source": QUALITY_PARAMS}
        return {"source": QUALITY_LAW, "train_tokens": q.train_tokens, "fingerprint": q.fingerprint,
                "band_nats": q.band, "reference": q.reference, "form": q.law.form.name, "description": q.describe()}

    # ---------------------------------------------------------------------------------------- evaluation
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
        space_violations = list(self.space.check(arch))
        if s.trainer:
            space_violations += [f"{s.trainer} cannot build it: it needs {n}" for n in missing(arch, s.trainer)]
        violations = list(self.constraints.violations(figs, 0)) + space_violations
        constraint_values = {n: float(matrix[0, j]) for j, n in enumerate(names)}
        constraint_values["space"] = self._space_violation(arch, space_violations)
        rec = TrialRecord(arch=arch, figures=per_target, quality=float(figs.quality[0]),
                          quality_source=QUALITY_SOURCE_OF[s.quality], violations=tuple(violations))
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

    def speed_objective(self):
        """The first speed objective (what the proxy stage spreads its shapes along)."""
        return next(o for o in self.objectives if not o.is_quality)

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

    def landmarks(self) -> list[dict[str, Any]]:
        """Published models (reports/landmarks.toml) as this search predicts them at its lengths, with their
        predicted loss (None with --quality params): what the study keeps for its report (STUDY_LANDMARKS)."""
        s = self.settings
        marks = landmark_configs(s.prompt_len, s.context_len)
        figs = self.figures(ArchBatch.from_configs([arch for _, arch, _ in marks]))
        return [{"name": name, "source": source, "arch": arch.to_dict(),
                 "figures": {t: TargetFigures(prefill_ms=float(figs.prefill_ms[t][i]),
                                              decode_ms=float(figs.decode_ms[t][i]),
                                              memory_mb=float(figs.memory_mb[t][i]),
                                              latency_source=self.models[t].source, prompt_len=s.prompt_len).to_dict()
                             for t in self.target_names},
                 "predicted_loss": None if figs.predicted_loss is None else float(figs.predicted_loss[i])}
                for i, (name, arch, source) in enumerate(marks)]

    def landmark_rows(self, target: str) -> list[dict[str, Any]]:
        """The landmarks with their predicted loss and decode speed on `target` (none without the law)."""
        if self.quality_model is None:
            return []
        return [{"name": m["name"], "source": m["source"], "num_params": arch.num_params, "shape": arch.short_tag,
                 "predicted_loss": m["predicted_loss"],
                 "decode_tokens_per_s": m["figures"][target]["decode_tokens_per_s"]}
                for m in self.landmarks() for arch in [ArchConfig.from_dict(m["arch"])]]
