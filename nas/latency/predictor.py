"""Fitted per-device latency predictors: fitting, accuracy, saving and checked loading.

A predictor is, per phase, a non-negative combination of the work counts in `nas.latency.features`
(ms = sum_k coef_k * feature_k, coef_k >= 0). It is fitted by non-negative least squares on the *relative*
error (each row divided by its measured time), which is what MAPE and "within +-10%" judge, so a 2 ms model
counts as much as a 2 s one. Non-negative rates make every prediction a sum of positive costs: positive
whenever a strictly positive feature (layers, weight bytes) has a non-zero rate, which fitting requires.

The saved JSON carries everything needed to trust or refuse it: target, execution provider, precision,
threads, ONNX Runtime (and onnxruntime-genai) version, the graph-builder version of the measurements and the
feature-formula version (`nas.latency.provenance`; another of either is refused on load), package version, the
feature list with units, coefficients, training ranges, and the held-out evaluation (metrics and the raw
predicted/measured arrays for a parity plot).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import NasUserError
from nas.core.limits import MAX_TOKENS, is_finite_number, is_int, shown
from nas.core.paths import ensure_folder, write_atomic
from nas.core.userfiles import parse_json, read_user_bytes
from nas.core.version import __version__
from nas.latency.features import DEFAULT_FEATURES, FEATURES, PHASES, feature_matrix, feature_units, phase_flops
from nas.latency.provenance import FEATURE_VERSION, GENAI_VERSION, GRAPH_BUILDER, GRAPH_BUILDER_VERSION

FORMAT = "nas-latency-predictor"
SCHEMA = 1
METRIC_UNITS = {"mape": "%", "within_5": "% of held-out points", "within_10": "% of held-out points",
                "kendall_tau": "mean over lengths of Kendall's tau-b within one length", "n": "points"}


# ----------------------------------------------------------------------------------------------------------
# accuracy
# ----------------------------------------------------------------------------------------------------------

def _pair(a, b, names: str) -> tuple[np.ndarray, np.ndarray]:
    """Two equally long float64 vectors (`names`: how an error calls them)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"{names} differ in length: {a.size} vs {b.size}")
    return a, b


def _check_pair(predicted, measured) -> tuple[np.ndarray, np.ndarray]:
    p, m = _pair(predicted, measured, "predicted and measured")
    if m.size and (not np.all(np.isfinite(m)) or m.min() <= 0):
        raise ValueError("measured latencies must be positive and finite")
    return p, m


def mape(predicted, measured) -> float:
    """Mean absolute percentage error, in percent."""
    p, m = _check_pair(predicted, measured)
    if not m.size:
        return float("nan")
    return float(np.mean(np.abs(p - m) / m) * 100.0)


def within(predicted, measured, tolerance: float) -> float:
    """Share of points (in percent) whose prediction is within +-tolerance (0.05 = 5%) of the measurement."""
    p, m = _check_pair(predicted, measured)
    if not m.size:
        return float("nan")
    return float(np.mean(np.abs(p - m) / m <= tolerance + 1e-12) * 100.0)


def kendall_tau(x, y) -> float:
    """Kendall's tau-b (tie-corrected) rank correlation, `scipy.stats.kendalltau`'s: the one definition nas
    reports everywhere (predictor accuracy, report parity plots, benchmarks). NaN when undefined (fewer than two
    points, or one side constant)."""
    from scipy.stats import kendalltau

    x, y = _pair(x, y, "x and y")
    if x.size < 2:
        return float("nan")
    with warnings.catch_warnings():  # a constant side: scipy warns and returns NaN, which is the answer
        warnings.simplefilter("ignore")
        return float(kendalltau(x, y).statistic)


def accuracy(predicted, measured, lengths=None) -> dict[str, float]:
    """MAPE, within +-5% / +-10% and Kendall tau. With `lengths`, tau is ranked within each length (the
    search compares configs at one prompt or context length) and averaged weighted by points."""
    p, m = _check_pair(predicted, measured)
    out = {"n": int(m.size), "mape": mape(p, m), "within_5": within(p, m, 0.05), "within_10": within(p, m, 0.10)}
    if lengths is None:
        out["kendall_tau"] = kendall_tau(p, m)
    else:
        lengths = np.asarray(lengths).ravel()
        taus, weights = [], []
        for value in np.unique(lengths):
            sel = lengths == value
            tau = kendall_tau(p[sel], m[sel])
            if not math.isnan(tau):
                taus.append(tau)
                weights.append(int(sel.sum()))
        out["kendall_tau"] = float(np.average(taus, weights=weights)) if taus else float("nan")
    out["kendall_tau_pooled"] = kendall_tau(p, m)
    return out


# ----------------------------------------------------------------------------------------------------------
# fitting
# ----------------------------------------------------------------------------------------------------------

def fit_relative_nnls(X: np.ndarray, y: np.ndarray, robust: bool = True, iterations: int = 8) -> np.ndarray:
    """Non-negative coefficients minimising sum(w * ((X c - y) / y)^2), solved on unit-norm columns
    (`scipy.optimize.nnls`).

    With `robust`, the weights w come from Huber's function of the relative residuals (iteratively
    reweighted): a measurement that another process slowed down by 30% pulls the fit far less than under
    plain least squares, while clean data gets w = 1 everywhere and the same answer.
    """
    from scipy.optimize import nnls

    A = X / y[:, None]
    norms = np.linalg.norm(A, axis=0)
    norms[norms == 0] = 1.0
    A = A / norms
    ones = np.ones_like(y)
    coef = nnls(A, ones)[0]
    if robust:
        for _ in range(iterations):
            r = A @ coef - ones
            scale = 1.4826 * np.median(np.abs(r - np.median(r)))  # MAD -> standard deviation
            if scale < 1e-9:
                break
            k = 1.345 * scale  # Huber's constant: 95% efficiency on Gaussian noise
            w = np.sqrt(np.minimum(1.0, k / np.maximum(np.abs(r), 1e-300)))
            new = nnls(A * w[:, None], w)[0]
            if np.allclose(new, coef, rtol=1e-6, atol=1e-12):
                coef = new
                break
            coef = new
    return coef / norms


def fit_relative_lstsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unconstrained least squares on the relative error (the baselines' fit)."""
    A = X / y[:, None]
    norms = np.linalg.norm(A, axis=0)
    norms[norms == 0] = 1.0
    return np.linalg.lstsq(A / norms, np.ones_like(y), rcond=None)[0] / norms


@dataclass
class PhaseData:
    """The measurements of one phase as columns: configs, their lengths and measured medians."""

    phase: str
    batch: ArchBatch
    lengths: np.ndarray
    measured_ms: np.ndarray
    arch_ids: list[str]
    cv: np.ndarray  # coefficient of variation of each measurement's timed runs (NaN when unknown)

    def __len__(self) -> int:
        return len(self.measured_ms)

    def subset(self, mask: np.ndarray) -> "PhaseData":
        idx = np.flatnonzero(mask)
        return PhaseData(self.phase, self.batch.subset(idx), self.lengths[idx], self.measured_ms[idx],
                         [self.arch_ids[i] for i in idx], self.cv[idx])


def length_key(phase: str) -> str:
    return "prompt_len" if phase == "prefill" else "context_len"


def phase_data(rows: Sequence[Mapping[str, Any]], phase: str) -> PhaseData:
    """Gather the successful rows of `phase` into columns (rows must be already checked)."""
    configs: list[ArchConfig] = []
    lengths, measured, ids, cvs = [], [], [], []
    cache: dict[str, ArchConfig] = {}
    key = length_key(phase)
    for row in rows:
        if row.get("phase") != phase or row.get("status", "ok") != "ok":
            continue
        arch = row["arch"]
        cache_key = json.dumps(arch, sort_keys=True)
        config = cache.get(cache_key)
        if config is None:
            config = cache[cache_key] = ArchConfig.from_dict(arch)
        configs.append(config)
        lengths.append(int(row[key]))
        stats = row["latency_ms"]
        measured.append(float(stats["median"]))
        ids.append(config.arch_id)
        cv = stats.get("cv")
        cvs.append(float("nan") if cv is None else float(cv))
    batch = ArchBatch.from_configs(configs) if configs else ArchBatch.from_configs([])
    return PhaseData(phase, batch, np.asarray(lengths, dtype=np.int64), np.asarray(measured, dtype=np.float64),
                     ids, np.asarray(cvs, dtype=np.float64))


@dataclass
class PhaseModel:
    """ms = X @ coef for one phase; coefficients in ms per feature unit, all >= 0."""

    phase: str
    features: tuple[str, ...]
    coef: np.ndarray

    @property
    def units(self) -> dict[str, str]:
        return feature_units(self.phase, self.features)

    def predict(self, batch: ArchBatch, length, precision: str) -> np.ndarray:
        X = feature_matrix(batch, self.phase, length, precision, self.features)
        return X @ self.coef

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "units": self.units,
                "coef_ms_per_unit": [float(c) for c in self.coef],
                "fit": "non-negative least squares on relative error"}


# Candidate feature sets per phase, from the fewest physical terms to all of them. Fitting picks the set with the
# lowest cross-validated error on the fit configs (grouped by architecture), so a term is kept only when it
# predicts configs it was not fitted on; the held-out configs are never looked at.
CANDIDATE_FEATURES = {
    "prefill": (
        ("one", "layers", "linear_gflop", "streamed_weight_mb"),
        ("one", "layers", "linear_gflop", "streamed_weight_mb", "score_melems"),
        ("one", "layers", "linear_gflop", "streamed_weight_mb", "score_melems", "act_melems"),
        DEFAULT_FEATURES["prefill"],
    ),
    "decode": (
        ("one", "layers", "streamed_weight_mb"),
        ("one", "layers", "streamed_weight_mb", "kv_mb"),
        ("one", "layers", "layer_weight_mb", "lm_head_mb", "kv_mb"),
        ("one", "layers", "layer_weight_mb", "lm_head_mb", "kv_mb", "score_kelems"),
        ("one", "layers", "layer_weight_mb", "lm_head_mb", "kv_mb", "score_kelems", "linear_gflop",
         "attention_gflop"),
    ),
}
CV_FOLDS = 5


def _group_folds(arch_ids: Sequence[str], folds: int, seed: int = 0) -> np.ndarray:
    ids = sorted(set(arch_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    fold_of = {ids[i]: k % folds for k, i in enumerate(order)}
    return np.array([fold_of[a] for a in arch_ids])


def cross_validated_mape(data: PhaseData, precision: str, names: Sequence[str], folds: int = CV_FOLDS) -> float:
    """MAPE (%) of the feature set `names` predicting configs left out of its fit, `folds` groups of configs."""
    X = feature_matrix(data.batch, data.phase, data.lengths, precision, names)
    fold = _group_folds(data.arch_ids, folds)
    errors = np.empty(len(data))
    for k in range(folds):
        test = fold == k
        if not test.any():
            continue
        if (~test).sum() < len(names):
            return float("inf")
        coef = fit_relative_nnls(X[~test], data.measured_ms[~test])
        errors[test] = np.abs(X[test] @ coef - data.measured_ms[test]) / data.measured_ms[test]
    return float(np.mean(errors) * 100)


# A column whose share of the design matrix (unit-norm columns) left after projecting out the columns before it
# is below this is treated as a combination of them: its coefficient would be arbitrary. Exact combinations
# (streamed = layer weights + LM head) leave ~1e-15; columns that differ only by a few norm weights (decode
# linear_gflop vs layer_weight_mb) or by one position (attention FLOPs vs score elements at one head_dim)
# leave 1e-5..3e-4 on the old hostcal space: their split is as arbitrary. Independent features leave > 0.05.
RANK_TOLERANCE = 1e-3


def independent_columns(X: np.ndarray, names: Sequence[str], y: np.ndarray | None = None
                        ) -> tuple[tuple[str, ...], dict[str, str]]:
    """The columns of X (named `names`, in order) that are not linear combinations of the columns kept before
    them, and, for each dropped column, why: 'k x a + m x b' (it equals that combination on these rows).
    Columns are judged as the fit sees them: relative to `y` (the measured times) when given, unit norm."""
    A = np.asarray(X, dtype=np.float64)
    if y is not None:
        A = A / np.asarray(y, dtype=np.float64)[:, None]
    norms = np.linalg.norm(A, axis=0)
    kept: list[int] = []
    dropped: dict[str, str] = {}
    for j, name in enumerate(names):
        if norms[j] == 0:
            dropped[name] = "it is zero on every measurement"
            continue
        col = A[:, j] / norms[j]
        if kept:
            basis = A[:, kept] / norms[kept]
            coef, *_ = np.linalg.lstsq(basis, col, rcond=None)
            residual = float(np.linalg.norm(col - basis @ coef))
            if residual < RANK_TOLERANCE:
                raw, *_ = np.linalg.lstsq(X[:, kept], X[:, j], rcond=None)
                terms = [f"{c:.4g} x {names[k]}" for c, k in zip(raw, kept) if abs(c) * norms[k] > 1e-9 * norms[j]]
                dropped[name] = f"it equals {' + '.join(terms) or '0'} on these measurements"
                continue
        kept.append(j)
    return tuple(names[k] for k in kept), dropped


def fit_phase(data: PhaseData, precision: str, names: Sequence[str] | None = None
              ) -> tuple[PhaseModel, dict[str, Any]]:
    """Fit one phase. With `names` None, choose among CANDIDATE_FEATURES by grouped cross-validation.
    Returns the model and how it was chosen (each candidate's cross-validated MAPE).

    The design matrix's rank is checked first: a feature that is a linear combination of the ones before it on
    these measurements (e.g. two columns proportional because the calibration space never varies what tells
    them apart) has no identifiable rate. Given `names`, such a set is refused (one line naming the column and
    the combination); among the candidates, the column is dropped and the selection records which and why
    (`dropped_columns`), which `nas calibrate` prints."""
    dropped_all: dict[str, str] = {}
    smallest = len(names) if names is not None else min(len(c) for c in CANDIDATE_FEATURES[data.phase])
    if len(data) < smallest:
        raise NasUserError(f"{data.phase}: {len(data)} measurements cannot fit {smallest} coefficients; "
                           f"measure at least {smallest} (more configs or lengths)")
    if names is not None:
        X = feature_matrix(data.batch, data.phase, data.lengths, precision, names)
        _, dropped = independent_columns(X, tuple(names), data.measured_ms if len(data) else None)
        if dropped and len(data):
            name, why = next(iter(dropped.items()))
            raise NasUserError(f"{data.phase}: feature {name!r} cannot be fitted: {why} (the design matrix has "
                               f"rank {len(names) - len(dropped)} of {len(names)}); measure configs that vary it "
                               "independently, or leave the feature out")
        candidates = [tuple(names)]
    else:
        candidates = []
        for cand in CANDIDATE_FEATURES[data.phase]:
            if len(data):
                X = feature_matrix(data.batch, data.phase, data.lengths, precision, cand)
                kept, dropped = independent_columns(X, cand, data.measured_ms)
                for name, why in dropped.items():
                    dropped_all.setdefault(name, why)
                cand = kept
            if cand not in candidates:
                candidates.append(cand)
    selection: dict[str, Any] = {"method": "fixed", "cv_mape": {}}
    chosen = candidates[0]
    n_configs = len(set(data.arch_ids))
    if len(candidates) > 1 and n_configs >= 2 * CV_FOLDS:
        scores = {" + ".join(c): cross_validated_mape(data, precision, c) for c in candidates if len(c) <= len(data)}
        # The simplest set within 2% (relative) of the best score: extra terms must earn their place.
        best = min(scores.values())
        chosen = next(c for c in candidates if scores.get(" + ".join(c), np.inf) <= best * 1.02)
        selection = {"method": f"{CV_FOLDS}-fold cross-validation grouped by architecture", "cv_mape": scores}
    elif len(candidates) > 1:
        selection = {"method": "too few configs to cross-validate: the fewest terms", "cv_mape": {}}
    if dropped_all:
        selection["dropped_columns"] = dropped_all
    X = feature_matrix(data.batch, data.phase, data.lengths, precision, chosen)
    coef = fit_relative_nnls(X, data.measured_ms)
    # Every feature is strictly positive for a valid config, so one positive rate keeps predictions > 0.
    if not np.any(coef > 0):
        raise NasUserError(f"{data.phase}: fitting found no positive cost rate; the measurements do not grow "
                           "with model size (check they are from one device and protocol)")
    return PhaseModel(data.phase, chosen, coef), selection


def fit_baseline(data: PhaseData, kind: str) -> dict[str, Any]:
    """A one-variable linear model (intercept + slope) on FLOPs or on parameter count, same rows."""
    x = _baseline_x(data.batch, data.phase, data.lengths, kind)
    coef = fit_relative_lstsq(np.stack([np.ones_like(x), x], axis=1), data.measured_ms)
    return {"kind": kind, "intercept_ms": float(coef[0]), "slope_ms_per_unit": float(coef[1]),
            "unit": "1e9 FLOP" if kind == "flops_only" else "1e6 parameters"}


def _baseline_x(batch: ArchBatch, phase: str, lengths, kind: str) -> np.ndarray:
    if kind == "flops_only":
        return phase_flops(batch, phase, lengths) / 1e9
    if kind == "params_only":
        return np.asarray(batch.num_params, dtype=np.float64) / 1e6
    raise ValueError(f"unknown baseline {kind!r}")


def predict_baseline(model: Mapping[str, Any], batch: ArchBatch, phase: str, lengths) -> np.ndarray:
    x = _baseline_x(batch, phase, lengths, model["kind"])
    return model["intercept_ms"] + model["slope_ms_per_unit"] * x


# ----------------------------------------------------------------------------------------------------------
# the predictor
# ----------------------------------------------------------------------------------------------------------

@dataclass
class LatencyPredictor:
    """Per-phase fitted models plus the metadata that says where they may be used."""

    target: str
    provider: str
    precision: str
    ort_version: str
    phases: dict[str, PhaseModel]
    nas_version: str = ""
    threads: int | None = None
    cpu_model: str | None = None
    protocol: Any = None
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    graph_builder: str | None = None  # graph-builder version of the measurements it was fitted on
    feature_version: str | None = None  # version of the feature formulas its coefficients are rates of
    ort_genai_version: str | None = None  # of the measurements, when onnxruntime-genai was installed there
    digest: str = ""  # SHA-256 of the file it was loaded from ("" when not loaded from a file)

    def predict_phase(self, batch: ArchBatch, phase: str, length) -> np.ndarray:
        if phase not in self.phases:
            raise NasUserError(f"predictor for {self.target} has no {phase} model; it has {', '.join(self.phases)}")
        out = self.phases[phase].predict(batch, length, self.precision)
        return check_latencies(out, f"{self.target} {phase}")

    def predict(self, batch: ArchBatch, prompt_len: int, context_len: int) -> dict[str, np.ndarray]:
        return {"prefill_ms": self.predict_phase(batch, "prefill", prompt_len),
                "decode_ms": self.predict_phase(batch, "decode", context_len)}

    def parity(self, source: str) -> dict[str, Any]:
        """Its held-out evaluation as a parity record (`parity_record`), `source` naming the file."""
        phases = [parity_phase(phase, ev["predicted_ms"], ev["measured_ms"], ev.get("predictor") or {})
                  for phase, ev in (self.evaluation.get("phases") or {}).items() if ev.get("predicted_ms")]
        if not phases:
            return {"none": f"predictor {source} has no held-out evaluation (no configs were held out)"}
        return {"source": source, "phases": phases}

    # ----- serialisation -----
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "schema": SCHEMA,
            "target": self.target,
            "provider": self.provider,
            "precision": self.precision,
            "ort_version": self.ort_version,
            "ort_genai_version": self.ort_genai_version,
            "graph_builder": self.graph_builder,
            "feature_version": self.feature_version,
            "nas_version": self.nas_version,
            "threads": self.threads,
            "cpu_model": self.cpu_model,
            "protocol": self.protocol,
            "created": self.created,
            "units": {"latency": "ms", "coefficients": "ms per feature unit", "metrics": METRIC_UNITS},
            "phases": {name: model.to_dict() for name, model in self.phases.items()},
            "training": json_safe(self.training),
            "evaluation": json_safe(self.evaluation),
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file, then rename) so a crash never leaves half a predictor."""
        path = Path(path)
        ensure_folder(path.parent, "the folder for predictors")
        return write_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "predictor") -> "LatencyPredictor":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise NasUserError(f"{source}: not a nas latency predictor (format is not {FORMAT!r})")
        if data.get("schema") != SCHEMA:
            raise NasUserError(f"{source}: predictor schema {data.get('schema')!r} is not supported "
                               f"(expected {SCHEMA})")
        missing = [k for k in ("target", "provider", "precision", "ort_version", "nas_version", "phases",
                               "training", "evaluation") if k not in data]
        if missing:
            raise NasUserError(f"{source}: predictor is missing field(s) {', '.join(missing)}")
        for key in ("target", "provider", "precision", "ort_version"):
            if not isinstance(data[key], str):
                raise NasUserError(f"{source}: predictor field {key!r} must be a string, got {shown(data[key])}")
        for key in ("phases", "training", "evaluation"):
            if not isinstance(data[key], Mapping):
                raise NasUserError(f"{source}: predictor field {key!r} must be an object, got {shown(data[key])}")
        _check_training_ranges(data["training"], source)
        phases = {}
        for name, spec in data["phases"].items():
            if name not in PHASES:
                raise NasUserError(f"{source}: unknown phase {name!r}; known: {', '.join(PHASES)}")
            try:
                names = tuple(spec["features"])
                coef = np.asarray(spec["coef_ms_per_unit"], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as exc:
                raise NasUserError(f"{source}: {name} model is malformed ({exc})") from None
            unknown = [n for n in names if n not in FEATURES[name]]
            if unknown:
                raise NasUserError(f"{source}: {name} uses unknown feature(s) {', '.join(unknown)}; "
                                   f"this nas knows {', '.join(FEATURES[name])}")
            if coef.shape != (len(names),) or not np.all(np.isfinite(coef)) or coef.min(initial=0) < 0 \
                    or not np.any(coef > 0):
                raise NasUserError(f"{source}: {name} coefficients must be {len(names)} finite non-negative "
                                   "numbers, not all zero")
            phases[name] = PhaseModel(name, names, coef)
        if set(phases) != set(PHASES):
            raise NasUserError(f"{source}: predictor must have phases {', '.join(PHASES)}; has "
                               f"{', '.join(phases) or 'none'}")
        return cls(target=data["target"], provider=data["provider"], precision=data["precision"],
                   ort_version=data["ort_version"], phases=phases, nas_version=data["nas_version"],
                   threads=data.get("threads"), cpu_model=data.get("cpu_model"), protocol=data.get("protocol"),
                   training=dict(data["training"]), evaluation=dict(data["evaluation"]),
                   created=data.get("created", ""), graph_builder=data.get("graph_builder"),
                   feature_version=data.get("feature_version"), ort_genai_version=data.get("ort_genai_version"))

    def provenance(self) -> dict[str, Any]:
        """What the predictor's numbers stand on: graphs, runtime, provider, threads, feature formulas."""
        return {"graph_builder": self.graph_builder, "ort_version": self.ort_version,
                "ort_genai_version": self.ort_genai_version, "provider": self.provider, "threads": self.threads,
                "feature_version": self.feature_version}

    def check(self, source: str, target: str | None = None, provider: str | None = None,
              precision: str | None = None, ort_version: str | None = None, cpu_model: str | None = None,
              threads: int | None = None) -> None:
        """Refuse use where the predictor does not apply, naming the mismatch. A predictor fitted on other graphs
        (graph-builder version) or with other feature formulas is always refused: its rates describe neither."""
        for what, want, have in (("graph builder", GRAPH_BUILDER_VERSION, self.graph_builder),
                                 ("feature formulas", FEATURE_VERSION, self.feature_version)):
            if have != want:
                raise NasUserError(f"{source}: predictor was fitted on {what} version {have or 'unrecorded'}, this "
                                   f"nas uses {want}; re-run `nas calibrate --target {self.target}` (for a "
                                   "device, on measurements of a new `nas bundle`)")
        for what, want, have in (("target", target, self.target), ("execution provider", provider, self.provider),
                                 ("precision", precision, self.precision),
                                 ("ONNX Runtime version", ort_version, self.ort_version),
                                 ("CPU", cpu_model, self.cpu_model), ("threads", threads, self.threads)):
            if want is not None and have is not None and want != have:
                hint = " (re-run `nas calibrate`)" if what in ("ONNX Runtime version", "CPU", "threads") else ""
                raise NasUserError(f"{source}: predictor is for {what} {have!r}, not {want!r}{hint}")


def load_predictor(path: str | Path, **expect: Any) -> LatencyPredictor:
    """Read and check a predictor file; `expect` as in `LatencyPredictor.check`. One-line errors."""
    path = Path(path)
    try:
        text = read_user_bytes(path, "predictor").decode("utf-8")
    except UnicodeDecodeError:
        raise NasUserError(f"cannot read predictor {path}: not UTF-8 text") from None
    data = parse_json(text, str(path), what="predictor JSON")
    predictor = LatencyPredictor.from_dict(data, str(path))
    predictor.digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    predictor.check(str(path), **expect)
    return predictor


def _check_training_ranges(training: Mapping[str, Any], source: str) -> None:
    """The measured ranges a predictor file records (what its extrapolation warnings compare against): per
    phase, a list of lengths (integers) and a [low, high] parameter range, when present."""
    for phase in PHASES:
        info = training.get(phase)
        if info is None:
            continue
        if not isinstance(info, Mapping):
            raise NasUserError(f"{source}: training.{phase} must be an object, got {shown(info)}")
        for key in ("prompt_len", "context_len"):
            lengths = info.get(key)
            if lengths is not None and (not isinstance(lengths, list) or not all(
                    is_int(v) and 0 < v <= MAX_TOKENS for v in lengths)):
                raise NasUserError(f"{source}: training.{phase}.{key} must be a list of token lengths, got "
                                   f"{shown(lengths)}")
        span = info.get("num_params")
        if span is not None and (not isinstance(span, list) or len(span) != 2
                                 or not all(is_finite_number(v) for v in span)):
            raise NasUserError(f"{source}: training.{phase}.num_params must be [low, high], got {shown(span)}")


def parity_phase(phase: str, predicted_ms: Sequence[float], measured_ms: Sequence[float],
                 metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One phase of a parity record: held-out predictions beside their measurements (ms) and their accuracy
    (`accuracy`: MAPE and shares within +-5% / +-10% in percent, Kendall's tau-b), computed when not given.

    A parity record is what a study keeps of its latency model's accuracy for the report's parity plots:
    {"source": where the data comes from, "phases": [parity_phase, ...]}, or {"none": why there is none}."""
    metrics = metrics or accuracy(predicted_ms, measured_ms)
    return json_safe({"phase": phase, "predicted_ms": [float(v) for v in predicted_ms],
                      "measured_ms": [float(v) for v in measured_ms], "mape_pct": metrics.get("mape"),
                      "within_5_pct": metrics.get("within_5"), "within_10_pct": metrics.get("within_10"),
                      "kendall_tau": metrics.get("kendall_tau")})


def json_safe(obj: Any) -> Any:
    """`obj` with NaN and infinities replaced by None (strict JSON; e.g. tau of a single point is undefined)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def check_latencies(values: np.ndarray, what: str) -> np.ndarray:
    """Latencies must be positive and finite: raise (never return 0 or NaN) otherwise."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise NasUserError(f"{what}: latency model gave {values[i]!r} ms for config #{i} "
                           f"({int(bad.sum())} of {values.size} bad); refusing to use it")
    return values


# ----------------------------------------------------------------------------------------------------------
# fit + evaluate from measurement rows
# ----------------------------------------------------------------------------------------------------------

def split_arch_ids(arch_ids: Iterable[str], holdout: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split distinct architectures (never rows) into fit and held-out sets, reproducibly."""
    ids = sorted(set(arch_ids))
    if holdout < 0:
        raise NasUserError(f"--holdout must be >= 0, got {holdout}")
    if holdout >= len(ids):
        raise NasUserError(f"--holdout {holdout} leaves no configs to fit: only {len(ids)} distinct configs "
                           "were measured")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    held = sorted(ids[i] for i in order[:holdout])
    fit = sorted(ids[i] for i in order[holdout:])
    return fit, held


def _range(values) -> list[float] | None:
    values = np.asarray(values)
    return [values.min().item(), values.max().item()] if values.size else None


def spread_floor(rows: Sequence[Mapping[str, Any]], phase: str) -> dict[str, Any]:
    """Run-to-run noise of the measurements: median within-measurement cv, and, where the same config and
    length was measured more than once, the median relative deviation of repeats from their median."""
    data = phase_data(rows, phase)
    out: dict[str, Any] = {"median_cv_pct": float(np.nanmedian(data.cv) * 100) if np.isfinite(data.cv).any()
                           else None}
    groups: dict[tuple[str, int], list[float]] = {}
    for aid, length, ms in zip(data.arch_ids, data.lengths, data.measured_ms):
        groups.setdefault((aid, int(length)), []).append(float(ms))
    devs = []
    for values in groups.values():
        if len(values) > 1:
            med = float(np.median(values))
            devs.extend(abs(v - med) / med * 100 for v in values)
    out["repeat_median_dev_pct"] = float(np.median(devs)) if devs else None
    out["repeated_points"] = sum(len(v) for v in groups.values() if len(v) > 1)
    return out


def fit_predictor(rows: Sequence[Mapping[str, Any]], *, target: str, provider: str, precision: str,
                  ort_version: str, holdout_ids: Iterable[str] = (), threads: int | None = None,
                  cpu_model: str | None = None, protocol: Any = None,
                  extra_models: Mapping[str, Any] | None = None,
                  feature_sets: Mapping[str, Sequence[str]] | None = None) -> LatencyPredictor:
    """Fit both phases on rows whose arch is not held out; evaluate on held-out archs beside the baselines
    (and any `extra_models`: name -> callable(batch, phase, lengths) -> ms, e.g. the analytic model).
    `feature_sets` (phase -> names) fixes the features; by default they are chosen by cross-validation."""
    held = set(holdout_ids)
    phases: dict[str, PhaseModel] = {}
    evaluation: dict[str, Any] = {"holdout_arch_ids": sorted(held), "metric_units": METRIC_UNITS, "phases": {}}
    training: dict[str, Any] = {}
    for phase in PHASES:
        data = phase_data(rows, phase)
        if not len(data):
            raise NasUserError(f"no successful {phase} measurements to fit")
        is_held = np.array([a in held for a in data.arch_ids], dtype=bool)
        fit_data, test_data = data.subset(~is_held), data.subset(is_held)
        model, selection = fit_phase(fit_data, precision, (feature_sets or {}).get(phase))
        phases[phase] = model
        training[phase] = {
            "feature_selection": selection,
            "n_points": len(fit_data), "n_configs": len(set(fit_data.arch_ids)),
            length_key(phase): sorted({int(v) for v in fit_data.lengths}),
            "num_params": _range(np.asarray(fit_data.batch.num_params)) if len(fit_data) else None,
        }
        ev: dict[str, Any] = {"n_configs": len(set(test_data.arch_ids)), "spread": spread_floor(
            [r for r in rows if _row_arch_id(r) in held] if held else rows, phase)}
        if len(test_data):
            predicted = model.predict(test_data.batch, test_data.lengths, precision)
            ev["predictor"] = accuracy(predicted, test_data.measured_ms, test_data.lengths)
            ev["predicted_ms"] = [float(v) for v in predicted]
            ev["measured_ms"] = [float(v) for v in test_data.measured_ms]
            ev["arch_ids"] = list(test_data.arch_ids)
            ev[length_key(phase)] = [int(v) for v in test_data.lengths]
            ev["baselines"] = {}
            for kind in ("flops_only", "params_only"):
                base = fit_baseline(fit_data, kind)
                pred = predict_baseline(base, test_data.batch, phase, test_data.lengths)
                ev["baselines"][kind] = {**accuracy(pred, test_data.measured_ms, test_data.lengths), "model": base}
            for name, fn in (extra_models or {}).items():
                pred = np.asarray(fn(test_data.batch, phase, test_data.lengths), dtype=np.float64)
                ev["baselines"][name] = accuracy(pred, test_data.measured_ms, test_data.lengths)
        evaluation["phases"][phase] = ev
    first = next(iter(rows), {})
    env = first.get("env") or {}
    training["num_rows"] = sum(training[p]["n_points"] for p in PHASES)
    training["n_configs"] = len({_row_arch_id(r) for r in rows} - held)
    return LatencyPredictor(
        target=target, provider=provider, precision=precision, ort_version=ort_version, phases=phases,
        nas_version=__version__, threads=threads, cpu_model=cpu_model or env.get("cpu_model"), protocol=protocol,
        training=training, evaluation=evaluation,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        graph_builder=env.get(GRAPH_BUILDER), feature_version=FEATURE_VERSION,
        ort_genai_version=env.get(GENAI_VERSION),
    )


def _row_arch_id(row: Mapping[str, Any]) -> str:
    aid = row.get("arch_id")
    if aid:
        return aid
    return ArchConfig.from_dict(row["arch"]).arch_id
