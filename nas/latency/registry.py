"""Which latency model answers for a target, and how its latency is known.

Labels (shown everywhere a latency figure appears):
- "measured": host-cpu with a predictor fitted on ORT measurements taken on this machine;
- "calibrated": a described device with a predictor fitted on measurements imported from that device;
- "analytic, uncalibrated": a roofline from the target's spec sheet (or, for host-cpu, this host's probes),
  no latency measurements behind it;
- "analytic, fitted to N published measurements (runtimes)": the same roofline with its efficiencies and
  overheads fitted to published measurements of that device (`nas.latency.published`,
  latency_models/published_fit.json); a user's own calibration still wins.

`load_latency_model(target, precision, provider)` is the one entry point the search and `nas predict` use:
a fitted predictor (the user's in NAS_HOME, else one shipped in latency_models/predictors/) wins when present and
must pass its metadata check; otherwise the analytic model answers, labelled as such.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import numpy as np

from nas.core import accounting
from nas.core.arch import ArchBatch, ArchConfig
from nas.core.counts import format_count
from nas.core.errors import NasUserError
from nas.core.limits import MAX_TOKENS, check_int
from nas.core.paths import find_predictor
from nas.latency import analytic, probes, published
from nas.latency.measure import cpu_model, ort_version
from nas.latency.predictor import check_latencies, load_predictor
from nas.latency.provenance import FEATURE_VERSION, GRAPH_BUILDER_VERSION, genai_version
from nas.latency.uncertainty import band_from_evaluation, unknown_band
from nas.targets import load_target

MEASURED = "measured"
CALIBRATED = "calibrated"
ANALYTIC = "analytic, uncalibrated"
FITTED = "analytic, fitted"  # the label goes on: "... to N published measurements (runtimes)"
SOURCES = (MEASURED, CALIBRATED, ANALYTIC, FITTED)


def resolve_deployment(target, precision: str | None = None, provider: str | None = None):
    """(Target, precision, provider) with the target's defaults filled in; a precision the target does not
    deploy at, or a provider it does not have, is one line naming what it has."""
    if isinstance(target, str):
        target = load_target(target)
    precision = precision or target.default_precision
    provider = provider or target.execution_providers[0]
    if precision not in target.precisions:
        raise NasUserError(f"target {target.name} does not run precision {precision!r}; "
                           f"it runs: {', '.join(target.precisions)}")
    if provider not in target.execution_providers:
        raise NasUserError(f"target {target.name} has no execution provider {provider!r}; "
                           f"it has: {', '.join(target.execution_providers)}")
    return target, precision, provider


def latency_source(target, precision: str | None = None, provider: str | None = None) -> str:
    """How `target`'s latency is known at `precision` (default: the target's) on `provider` (default: its first)."""
    target, precision, provider = resolve_deployment(target, precision, provider)
    if find_predictor(target.name, provider, precision) is not None:
        return MEASURED if target.measured_here else CALIBRATED
    fit = None if target.measured_here else published_fit(target, precision)
    return fit["label"] if fit else ANALYTIC


def published_fit(target, precision: str) -> dict[str, Any] | None:
    """The published-measurement fit for the compute unit that runs `precision` on `target`, or None."""
    return published.fitted_group(target.name, target.compute_unit.get(precision, "cpu"))


class LatencyModel:
    """Latency of one target at one precision on one execution provider, for a whole ArchBatch at once.

    `source` is one of SOURCES; `note` says anything the user should know (e.g. how to calibrate);
    `details` describes what stands behind the numbers (predictor file and its accuracy, or roofline inputs).
    """

    target: str
    precision: str
    provider: str
    source: str
    note: str = ""

    def __init__(self, target: str, precision: str, provider: str, source: str, note: str = "",
                 details: dict[str, Any] | None = None):
        self.target, self.precision, self.provider, self.source = target, precision, provider, source
        self.note = note
        self.details = details or {}

    def _predict(self, batch, prompt_len: int, context_len: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(self, batch, prompt_len: int, context_len: int) -> dict[str, np.ndarray]:
        """{"prefill_ms": [n], "decode_ms": [n]} float64, positive and finite (raises otherwise)."""
        for name, value in (("prompt_len", prompt_len), ("context_len", context_len)):
            check_int(int(value) if isinstance(value, np.integer) else value, name, 1, MAX_TOKENS)
        out = self._predict(batch, int(prompt_len), int(context_len))
        return {key: check_latencies(np.asarray(out[key], dtype=np.float64), f"{self.target} {key}")
                for key in ("prefill_ms", "decode_ms")}

    def error_band(self) -> dict[str, Any]:
        """How far predictions can be off: {"prefill": rel | None, "decode": rel | None, "basis": words}
        (`nas.latency.uncertainty`); None where nothing measures it."""
        return unknown_band()

    def parity(self) -> dict[str, Any]:
        """Held-out predictions beside their measurements, for a report's parity plot: a parity record
        (`nas.latency.predictor.parity_phase`), or {"none": why there is none}. A study keeps it."""
        return {"none": f"{self.target} latency is {self.source}: there are no measurements to compare "
                        "predictions with"}

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "precision": self.precision, "provider": self.provider,
                "latency_source": self.source, "note": self.note, "error_band": self.error_band(),
                "fingerprint": self.fingerprint(),
                "provenance": self.provenance(), **self.details}

    # ----- identity: what decides the predictions -----
    def _fingerprint_parts(self) -> dict[str, Any]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """12 hex digits of a SHA-256 over everything that decides this model's predictions: target,
        precision, provider, source, and the predictor file's content (fitted) or the roofline's parameters
        with the graph-builder and feature versions (analytic). Equal fingerprints predict equal numbers; a
        study records it per target and refuses to resume under another one."""
        data = {"target": self.target, "precision": self.precision, "provider": self.provider,
                "source": self.source, **self._fingerprint_parts()}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def provenance(self) -> str:
        """A short phrase for people: 'analytic, uncalibrated (spec sheet)', 'measured (predictor ... fitted ...)'."""
        raise NotImplementedError

    # ----- where the model is on firm ground -----
    def extrapolation(self, batch, prompt_len: int, context_len: int) -> list[str]:
        """Human-readable notes on what of predicting `batch` (an ArchBatch or ArchConfig) at these lengths lies
        outside where this model is known to hold: lengths beyond the configs' max_seq_len (a decode step after
        C cached tokens needs C + 1 positions), and, for a fitted predictor, lengths and sizes outside what it
        was measured on. [] when nothing does."""
        batch = _as_batch(batch)
        notes = []
        if len(batch):
            max_seq = np.asarray(batch.extra["max_seq_len"]) if "max_seq_len" in batch.extra else \
                np.full(len(batch), np.iinfo(np.int64).max)
            over = int(np.sum((prompt_len > max_seq) | (context_len + 1 > max_seq)))
            if over:
                notes.append(f"{_count(over, len(batch))} a max_seq_len below the lengths (prompt {prompt_len}, "
                             f"decode after {context_len} cached tokens needs {context_len + 1}): predicted with "
                             "the same formulas, but such a model cannot run these lengths")
            odd = int(np.sum(np.asarray(batch.columns["head_dim"]) % accounting.HEAD_DIM_MULTIPLE != 0))
            if odd:
                notes.append(f"{_count(odd, len(batch))} a head_dim {accounting.HEAD_DIM_RULE}: predicted with the "
                             "same "
                             "formulas, but the deployed graph cannot be built")
        return notes + self._extrapolation(batch, prompt_len, context_len)

    def _extrapolation(self, batch, prompt_len: int, context_len: int) -> list[str]:
        return []

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(target={self.target!r}, precision={self.precision!r}, "
                f"provider={self.provider!r}, source={self.source!r})")


class FittedLatencyModel(LatencyModel):
    """A predictor fitted on measurements ("measured" on this host, "calibrated" for a device)."""

    def __init__(self, target, precision, provider, source, predictor, path, note=""):
        evaluation = {phase: ev.get("predictor") for phase, ev in predictor.evaluation.get("phases", {}).items()}
        ranges = {phase: {k: v for k, v in info.items() if k in ("prompt_len", "context_len", "num_params")}
                  for phase, info in predictor.training.items() if phase in predictor.phases}
        super().__init__(target, precision, provider, source, note,
                         {"predictor_path": str(path), "ort_version": predictor.ort_version,
                          "threads": predictor.threads, "held_out_accuracy": evaluation, "training_ranges": ranges})
        self.predictor = predictor

    def _predict(self, batch, prompt_len, context_len):
        return self.predictor.predict(batch, prompt_len, context_len)

    def error_band(self) -> dict[str, Any]:
        return band_from_evaluation(self.predictor.evaluation)

    def parity(self) -> dict[str, Any]:
        return self.predictor.parity(self.details["predictor_path"])

    def _fingerprint_parts(self):
        p = self.predictor
        return {"predictor_sha256": p.digest or hashlib.sha256(json.dumps(p.to_dict(), sort_keys=True).encode())
                .hexdigest(), **p.provenance()}

    def provenance(self) -> str:
        how = "measured here" if self.source == MEASURED else "calibrated on device measurements"
        created = self.predictor.created or "at an unrecorded time"
        return (f"{how}: predictor {self.details['predictor_path']} fitted {created}, graph builder "
                f"{self.predictor.graph_builder}")

    def _extrapolation(self, batch, prompt_len, context_len):
        notes = []
        ranges = self.details.get("training_ranges") or {}
        for phase, key, value, what in (("prefill", "prompt_len", prompt_len, "prompt length"),
                                        ("decode", "context_len", context_len, "context length")):
            lengths = (ranges.get(phase) or {}).get(key)
            if lengths and not min(lengths) <= value <= max(lengths):
                notes.append(f"{what} {value} is outside the measured {_span(lengths)}: {self.target}'s {phase} "
                             "time is extrapolated")
        params = (ranges.get("prefill") or {}).get("num_params")
        if params and len(batch):
            n = np.asarray(batch.num_params, dtype=np.float64)
            outside = int(np.sum((n < params[0]) | (n > params[1])))
            if outside:
                notes.append(f"{_count(outside, len(batch))} {format_count(n.min(), 3)}-{format_count(n.max(), 3)} "
                             f"parameters, outside the {format_count(params[0], 3)}-{format_count(params[1], 3)} "
                             f"{self.target}'s predictor was measured on: extrapolated")
        return notes


class AnalyticLatencyModel(LatencyModel):
    """The roofline, from the target's spec sheet or this host's probes."""

    def __init__(self, target, precision, provider, roofline, note="", source=ANALYTIC, details=None, band=None,
                 parity=None):
        super().__init__(target, precision, provider, source, note,
                         {"roofline": roofline.params.to_dict(), **(details or {})})
        self.roofline = roofline
        self.band = band  # a fit to published measurements knows its left-out error; a bare roofline does not
        self._parity = parity  # and its left-out predictions (a parity record)

    def error_band(self) -> dict[str, Any]:
        return dict(self.band) if self.band else unknown_band()

    def parity(self) -> dict[str, Any]:
        return self._parity or super().parity()

    def _predict(self, batch, prompt_len, context_len):
        return self.roofline.predict(batch, prompt_len, context_len)

    def _fingerprint_parts(self):
        # The roofline follows the graphs' structure and the accounting's byte counts.
        return {"roofline": self.roofline.params.to_dict(), "graph_builder": GRAPH_BUILDER_VERSION,
                "feature_version": FEATURE_VERSION}

    def provenance(self) -> str:
        return f"{self.source} ({self.roofline.params.inputs})"


def _as_batch(batch):
    return ArchBatch.from_configs([batch]) if isinstance(batch, ArchConfig) else batch


def _count(k: int, n: int) -> str:
    return ("the config has" if n == 1 else f"all {n} configs have" if k == n else f"{k} of {n} configs have")


def _span(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def host_threads(target) -> int:
    import os

    return int(getattr(target, "threads", None) or os.cpu_count() or 1)


def load_latency_model(target, precision: str | None = None, provider: str | None = None) -> LatencyModel:
    """The latency model for `target` (a Target or its name) at `precision` on `provider` (defaults: the
    target's). Raises NasUserError for a precision the target does not deploy at or a predictor file that
    does not match."""
    target, precision, provider = resolve_deployment(target, precision, provider)
    path = find_predictor(target.name, provider, precision)
    if path is not None:
        expect: dict[str, Any] = {"target": target.name, "provider": provider, "precision": precision,
                                  "threads": getattr(target, "threads", None)}
        if target.measured_here:
            expect["ort_version"] = ort_version()
            expect["cpu_model"] = cpu_model()
        predictor = load_predictor(path, **expect)
        if target.measured_here and predictor.ort_genai_version != genai_version():
            raise NasUserError(f"{path}: predictor was measured with onnxruntime-genai "
                               f"{predictor.ort_genai_version or 'absent'}, here it is "
                               f"{genai_version() or 'absent'} (re-run `nas calibrate`)")
        return FittedLatencyModel(target.name, precision, provider, MEASURED if target.measured_here else CALIBRATED,
                                  predictor, path)

    if target.measured_here:
        measured = probes.host_probes(host_threads(target))
        note = (f"no fitted predictor for {target.name} ({provider}, {precision}): roofline from this host's "
                f"probes; run `nas calibrate --target {target.name}` to measure")
        if precision != "fp32":
            note += "; the probes measure fp32 matmuls, used for every precision"
        roofline = analytic.RooflineModel(analytic.params_from_probes(measured), precision)
    else:
        fit = published_fit(target, precision)
        if fit:
            params = analytic.params_from_specs(target, precision, fit["params"])
            roofline = analytic.RooflineModel(replace(params, inputs="spec sheet + published fit"), precision)
            note = (f"roofline from the spec sheet with efficiencies and overheads fitted to {fit['n_rows']} "
                    f"published measurements of this device "
                    f"({', '.join(fit['runtimes'])}); leave-one-model-out error {published.loo_text(fit)}; "
                    f"measure it yourself with `nas calibrate --target {target.name} --measurements FILE`")
            details = {"published_fit": {k: fit[k] for k in ("n_rows", "models", "runtimes", "params", "loo",
                                                             "baseline", "spec_params")}}
            return AnalyticLatencyModel(target.name, precision, provider, roofline, note, fit["label"], details,
                                        published.error_band(fit), published.parity(fit, str(published.fit_path())))
        note = (f"from {target.name}'s spec sheet, no measurements behind it; import device measurements with "
                f"`nas calibrate --target {target.name} --measurements FILE`")
        roofline = analytic.RooflineModel(analytic.params_from_specs(target, precision), precision)
    return AnalyticLatencyModel(target.name, precision, provider, roofline, note)
