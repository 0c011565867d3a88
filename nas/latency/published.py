"""Published on-device measurements: read and check them, fit each device's analytic parameters to them, and
read the fitted file back.

The data file (`latency_models/published.toml`) holds [[model]] tables (a published architecture's config.json
facts) and [[measurement]] tables (one published figure each: device, runtime, quantisation format, lengths,
prefill and/or decode tokens/s, and where it was read). `load_published` refuses a malformed or inconsistent
file with `path:line: key: message` (exit 2 through the CLI).

The fit (`fit_published`) uses the analytic roofline itself (`nas.latency.analytic.RooflineModel.phase_terms`,
so FLOPs and bytes are nas's own accounting) at efficiency 1 and no overheads to get each row's compute time at
the spec-sheet peak and memory time at the spec-sheet bandwidth; then, per device and compute unit, it finds

    phase_ms = max(compute_ms / compute_efficiency, memory_ms * bytes_ratio / bandwidth_efficiency)
               + num_layers * per_layer_overhead_ms + per_run_overhead_ms

by robust least squares on log(time) (Huber loss, scale SIGMA; `scipy.optimize.least_squares`) with a weak
log-normal prior towards the spec-sheet defaults (PRIOR_WIDTH), so a parameter no row informs (compute efficiency
with decode-only rows) stays at its default. `bytes_ratio` is the published format's bits per weight over nas's
for the same precision (QUANT_FORMATS). Settings are fixed constants, chosen before any leave-one-out figure was
looked at and not tuned on them.

Leave-one-model-out: for each architecture, fit on the device's other architectures and predict its rows; the
median absolute % error of tokens/s is reported per phase, beside the same figure for the spec-sheet defaults.
A device/unit with at least MIN_ROWS rows of at least MIN_MODELS architectures is "fitted"; its parameters then
replace the defaults in the analytic model (`nas.latency.registry`), labelled
"analytic, fitted to N published measurements (runtimes)". Proxy rows (a relative of the device) are predicted
and shown, never fitted. Nothing is fitted on import: `nas targets fit` writes
`latency_models/published_fit.json`, and a failed fit leaves an existing file untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import ArchConfigError, NasUserError
from nas.core.limits import MAX_THREADS, MAX_TOKENS, is_finite_number
from nas.core.paths import shipped, write_atomic
from nas.core.userfiles import TomlFile, TomlTable, parse_json, read_toml, read_user_bytes
from nas.latency import analytic
from nas.latency.predictor import parity_phase
from nas.latency.uncertainty import BAND_QUANTILE, relative_band
from nas.targets import COMPUTE_UNITS, known_target_names, load_target

DATA_FILE = "published.toml"
FIT_FILE = "published_fit.json"
FIT_FORMAT = "nas-published-fit/1"
FIT_COMMAND = "nas targets fit"  # what writes the fit file, named in every message about it

# Published quantisation formats -> (nas precision, bits per weight of the format / nas's for that precision,
# what the format is). nas int4 = 4.5 bits (4-bit, one fp16 scale per 32), int8 ~ 8 bits (one fp16 scale per row).
QUANT_FORMATS: dict[str, tuple[str, float, str]] = {
    "f32": ("fp32", 1.0, "32-bit floats"),
    "f16": ("fp16", 1.0, "16-bit floats"),
    "bf16": ("fp16", 1.0, "bfloat16 weights (2 bytes, as fp16)"),
    "q8_0": ("int8", 8.5 / 8.0, "GGUF Q8_0: blocks of 32 int8 weights with one fp16 scale, 8.5 bits/weight"),
    "q4_0": ("int4", 1.0, "GGUF Q4_0: blocks of 32 4-bit weights with one fp16 scale, 4.5 bits/weight (= nas int4)"),
    "q4_k_m": ("int4", 4.85 / 4.5, ("GGUF Q4_K_M: mostly Q4_K (4.5 bits) with some tensors in Q6_K; ~4.85 "
                                    "bits/weight on average (the mix per tensor is not modelled)")),
    "8da4w-g32": ("int4", 1.0, ("ExecuTorch: 4-bit weights in groups of 32, 8-bit dynamic activations; the 8-bit "
                                "embedding/LM head of Llama 3.2's scheme is not modelled (under-counts its bytes)")),
    "8da4w-g128": ("int4", (4 + 16 / 128) / 4.5, "ExecuTorch: 4-bit weights in groups of 128, 4.125 bits/weight"),
    "8da4w-g256": ("int4", (4 + 16 / 256) / 4.5, "ExecuTorch: 4-bit weights in groups of 256, 4.06 bits/weight"),
    "q4f16_ft": ("int4", 1.0, "MLC-LLM 4-bit weights with fp16 scales (FasterTransformer kernels)"),
    "q4f16_1": ("int4", 1.0, "MLC-LLM 4-bit weights, groups of 32 with fp16 scales"),
    "int4-block32": ("int4", 1.0, "ONNX Runtime MatMulNBits, blocks of 32 (= nas int4)"),
}

PARAM_NAMES = ("compute_efficiency", "bandwidth_efficiency", "per_layer_overhead_ms", "per_run_overhead_ms")
# Fit settings (fixed a priori, see the module docstring).
SIGMA = 0.15  # residual scale of log(time): ~15% is what published figures of one device scatter by
HUBER_K = 1.345  # Huber threshold in units of SIGMA
PRIOR_WIDTH = {"compute_efficiency": math.log(4.0), "bandwidth_efficiency": math.log(4.0),
               "per_layer_overhead_ms": math.log(10.0), "per_run_overhead_ms": math.log(10.0)}
MIN_ROWS, MIN_MODELS = 4, 2

_MODEL_REQUIRED = ("name", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                   "vocab_size", "tie_embeddings")
_MODEL_KEYS = set(_MODEL_REQUIRED) | {"head_dim", "ffn_kind", "qkv_bias", "config"}
_ROW_REQUIRED = ("device", "hardware", "runtime", "runtime_version", "compute_unit", "model", "quant", "source",
                 "where", "date")
_ROW_KEYS = set(_ROW_REQUIRED) | {"proxy", "threads", "prompt_len", "context_len", "lengths_assumed",
                                  "prefill_tok_s", "decode_tok_s", "notes"}
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def fit_path() -> Path:
    return shipped("latency_models") / FIT_FILE


# ----------------------------------------------------------------------------------------------------------
# reading and checking the data file

@dataclass(frozen=True)
class PublishedModel:
    name: str
    arch: ArchConfig
    config: str
    line: int


@dataclass(frozen=True)
class Measurement:
    index: int  # position among [[measurement]] tables, 0-based
    line: int  # line of its [[measurement]] header
    device: str
    hardware: str
    proxy: bool
    runtime: str
    runtime_version: str
    compute_unit: str
    model: str
    quant: str
    threads: int | None
    prompt_len: int | None
    context_len: int | None
    lengths_assumed: bool
    prefill_tok_s: float | None
    decode_tok_s: float | None
    source: str
    where: str
    date: str
    notes: str = ""

    @property
    def precision(self) -> str:
        return QUANT_FORMATS[self.quant][0]

    @property
    def bytes_ratio(self) -> float:
        return QUANT_FORMATS[self.quant][1]

    def describe(self) -> str:
        return f"{self.model} {self.quant} {self.runtime} on {self.hardware}"


@dataclass(frozen=True)
class PublishedData:
    path: Path
    sha256: str
    models: dict[str, PublishedModel]
    measurements: tuple[Measurement, ...] = field(default_factory=tuple)


def _positive_int(b: TomlTable, key: str) -> int | None:
    return b.integer(key, 1, MAX_TOKENS if key.endswith("_len") else MAX_THREADS, default=None)


def _rate(b: TomlTable, key: str) -> float | None:
    value = b.data.get(key)
    if value is not None and not (is_finite_number(value) and value > 0):
        raise b.fail(key, f"must be a positive number of tokens per second, got {value!r}")
    return None if value is None else float(value)


def _blocks(c: TomlFile, kind: str) -> list[TomlTable]:
    allowed, required = (_MODEL_KEYS, _MODEL_REQUIRED) if kind == "model" else (_ROW_KEYS, _ROW_REQUIRED)
    return c.tables(kind, allowed, required, kinds=("model", "measurement"))


def _parse_model(b: TomlTable) -> PublishedModel:
    name = b.string("name")
    fields = {k: b.data[k] for k in _MODEL_KEYS - {"name", "config"} if k in b.data}
    try:
        arch = ArchConfig(**fields)
    except ArchConfigError as exc:
        key = exc.field if getattr(exc, "field", None) in b.data else ""
        raise b.fail(key, str(exc)) from None
    except TypeError as exc:
        raise b.fail("", str(exc)) from None
    config = b.data.get("config", "")
    if not isinstance(config, str):
        raise b.fail("config", f"must be a string (where the shape was read), got {config!r}")
    return PublishedModel(name, arch, config, b.start)


def _parse_row(b: TomlTable, models: dict[str, PublishedModel], devices: list[str]) -> Measurement:
    device = b.one_of("device", devices, "is not a described target; known:")
    model = b.one_of("model", sorted(models), "has no [[model]] table; defined:")
    quant = b.one_of("quant", QUANT_FORMATS, "is not a format nas knows; known:")
    unit = b.one_of("compute_unit", COMPUTE_UNITS)
    prefill, decode = _rate(b, "prefill_tok_s"), _rate(b, "decode_tok_s")
    if prefill is None and decode is None:
        raise b.fail("", "gives neither prefill_tok_s nor decode_tok_s")
    prompt_len, context_len = _positive_int(b, "prompt_len"), _positive_int(b, "context_len")
    if prefill is not None and prompt_len is None:
        raise b.fail("prefill_tok_s", "needs prompt_len (the prompt tokens behind it)")
    if decode is not None and context_len is None:
        raise b.fail("decode_tok_s", "needs context_len (tokens in the KV cache during those decode steps)")
    date = b.string("date")
    if not _DATE.match(date):
        raise b.fail("date", f"must be YYYY, YYYY-MM or YYYY-MM-DD, got {date!r}")
    notes = b.data.get("notes", "")
    if not isinstance(notes, str):
        raise b.fail("notes", f"must be a string, got {notes!r}")
    return Measurement(
        index=b.index, line=b.start, device=device, hardware=b.string("hardware"), proxy=b.boolean("proxy", False),
        runtime=b.string("runtime"), runtime_version=b.string("runtime_version"), compute_unit=unit, model=model,
        quant=quant, threads=_positive_int(b, "threads"), prompt_len=prompt_len, context_len=context_len,
        lengths_assumed=b.boolean("lengths_assumed", False), prefill_tok_s=prefill, decode_tok_s=decode,
        source=b.string("source"), where=b.string("where"), date=date, notes=notes)


def _identity(row: Measurement) -> tuple:
    return (row.device, row.hardware, row.runtime, row.runtime_version, row.compute_unit, row.model, row.quant,
            row.threads, row.prompt_len, row.context_len, row.source, row.where)


def load_published(path: str | Path | None = None) -> PublishedData:
    """The measurement file, checked; any problem is one `path:line: key: message` NasUserError."""
    path = Path(path) if path is not None else shipped("latency_models") / DATA_FILE
    c = read_toml(path, "published-measurements file")
    c.keys(c.data, "", {"model", "measurement"}, {"model", "measurement"})
    devices = [name for name in known_target_names() if not load_target(name).measured_here]
    models: dict[str, PublishedModel] = {}
    for b in _blocks(c, "model"):
        m = _parse_model(b)
        if m.name in models:
            raise b.fail("name", f"model {m.name!r} is defined twice (first at line {models[m.name].line})")
        models[m.name] = m
    rows: list[Measurement] = []
    seen: dict[tuple, Measurement] = {}
    for b in _blocks(c, "measurement"):
        row = _parse_row(b, models, devices)
        key = _identity(row)
        if key in seen:
            raise b.fail("", f"duplicates the measurement at line {seen[key].line} (same device, hardware, runtime, "
                             "version, unit, model, quant, threads, lengths, source and place)")
        seen[key] = row
        rows.append(row)
    digest = hashlib.sha256(c.text.encode("utf-8")).hexdigest()
    return PublishedData(path, digest, models, tuple(rows))


# ----------------------------------------------------------------------------------------------------------
# the fit

@dataclass(frozen=True)
class Observation:
    """One published time (a row's prefill or decode) with the roofline terms at peak and full bandwidth."""

    row: Measurement
    phase: str  # "prefill" | "decode"
    tokens: int  # tokens the time covers (prompt_len for prefill, 1 for decode)
    observed_ms: float
    compute_ms: float  # at the spec-sheet peak, efficiency 1
    memory_ms: float  # at the spec-sheet bandwidth, efficiency 1, times the format's bytes ratio
    layers: int

    def tok_s(self, ms: float) -> float:
        return self.tokens * 1000.0 / ms

    @property
    def published_tok_s(self) -> float:
        return self.tok_s(self.observed_ms)


def observations(data: PublishedData, rows=None) -> list[Observation]:
    """Every (row, phase) with a published rate, with the roofline terms nas's accounting gives it."""
    out = []
    for row in data.measurements if rows is None else rows:
        target = load_target(row.device)
        arch = data.models[row.model].arch
        peak = target.peak_flops.get(row.precision)
        if not peak or not target.mem_bandwidth_bytes_per_s:
            raise NasUserError(f"{data.path}:{row.line}: target {row.device} has no spec-sheet peak for "
                               f"{row.precision} or no bandwidth, so its rows cannot be fitted")
        unit_params = analytic.RooflineParams(
            peak_flops_per_s=float(peak), bandwidth_bytes_per_s=float(target.mem_bandwidth_bytes_per_s),
            compute_efficiency=1.0, bandwidth_efficiency=1.0, per_layer_overhead_ms=0.0, per_run_overhead_ms=0.0)
        model = analytic.RooflineModel(unit_params, row.precision)
        batch = ArchBatch.from_configs([arch])
        for phase, rate, length, tokens in (("prefill", row.prefill_tok_s, row.prompt_len, row.prompt_len),
                                            ("decode", row.decode_tok_s, row.context_len, 1)):
            if rate is None:
                continue
            terms = model.phase_terms(batch, phase, int(length))
            out.append(Observation(row=row, phase=phase, tokens=int(tokens), observed_ms=tokens * 1000.0 / rate,
                                   compute_ms=float(np.asarray(terms["compute_ms"]).ravel()[0]),
                                   memory_ms=float(np.asarray(terms["memory_ms"]).ravel()[0]) * row.bytes_ratio,
                                   layers=arch.num_layers))
    return out


def _arrays(obs: list[Observation]):
    return (np.array([o.compute_ms for o in obs]), np.array([o.memory_ms for o in obs]),
            np.array([o.layers for o in obs], dtype=np.float64), np.array([o.observed_ms for o in obs]))


def predict_ms(params: dict[str, float], obs: list[Observation]) -> np.ndarray:
    compute, memory, layers, _ = _arrays(obs)
    return (np.maximum(compute / params["compute_efficiency"], memory / params["bandwidth_efficiency"])
            + layers * params["per_layer_overhead_ms"] + params["per_run_overhead_ms"])


def spec_params(unit: str) -> dict[str, float]:
    return dict(analytic.DEFAULTS[unit])


def fit_params(obs: list[Observation], unit: str) -> dict[str, float]:
    """Robust (Huber) least squares on log time with a log-normal prior at the spec-sheet defaults, by
    `scipy.optimize.least_squares`: residuals of log time in units of SIGMA under Huber's loss (threshold
    HUBER_K), the prior's residuals (log parameter minus log default, in units of PRIOR_WIDTH) under plain
    squares. Central-difference Jacobian: the max() makes the model piecewise smooth."""
    from scipy.optimize import least_squares

    if not obs:
        raise NasUserError("nothing to fit: no published measurements in this group")
    prior = np.log([spec_params(unit)[k] for k in PARAM_NAMES])
    width = np.array([PRIOR_WIDTH[k] for k in PARAM_NAMES])
    compute, memory, layers, observed = _arrays(obs)
    log_obs = np.log(observed)

    def residuals(theta):
        ce, be, a, r = np.exp(theta)
        pred = np.maximum(compute / ce, memory / be) + layers * a + r
        return np.concatenate([(np.log(pred) - log_obs) / SIGMA, (theta - prior) / width])

    with np.errstate(all="ignore"):  # a trial step may overflow; the solver rejects it
        fit = least_squares(residuals, prior, jac="3-point", loss=_huber_then_squares(len(obs)), method="trf",
                            ftol=1e-12, xtol=1e-12, gtol=1e-12)
    fitted = dict(zip(PARAM_NAMES, (float(v) for v in np.exp(fit.x))))
    if not fit.success or not all(math.isfinite(v) and v > 0 for v in fitted.values()):
        raise NasUserError(f"the fit of {len(obs)} published measurements did not converge: {fitted}")
    return fitted


def _huber_then_squares(n: int):
    """least_squares' loss (rho(z), rho'(z), rho''(z) of z = residual**2): Huber's with threshold HUBER_K on
    the first n residuals (the observations), plain squares on the rest (the prior)."""
    def loss(z: np.ndarray) -> np.ndarray:
        rho = np.stack([z, np.ones_like(z), np.zeros_like(z)])
        big = np.zeros(z.shape, dtype=bool)
        big[:n] = z[:n] > HUBER_K**2
        root = np.sqrt(z[big])
        rho[0, big] = 2 * HUBER_K * root - HUBER_K**2
        rho[1, big] = HUBER_K / root
        rho[2, big] = -0.5 * HUBER_K / (z[big] * root)
        return rho

    return loss


def _abs_pct(pred_ms: np.ndarray, obs: list[Observation]) -> np.ndarray:
    """|predicted tokens/s / published tokens/s - 1| in %."""
    return np.abs(np.array([o.observed_ms for o in obs]) / pred_ms - 1.0) * 100.0


def _phase_summary(errors: dict[str, list[tuple[str, float]]]) -> dict[str, Any]:
    """Per phase: the median absolute % error, the number of observations and of architectures behind it."""
    return {phase: {"median_abs_pct": (round(float(np.median([e for _, e in v])), 1) if v else None),
                    "n": len(v), "models": len({m for m, _ in v})}
            for phase, v in errors.items()}


def leave_one_model_out(obs: list[Observation], unit: str) -> tuple[dict[int, float], dict[str, Any]]:
    """Per observation, the tokens/s predicted by a fit that never saw its architecture; and the medians."""
    predicted: dict[int, float] = {}
    errors: dict[str, list[tuple[str, float]]] = {"decode": [], "prefill": []}
    for model in sorted({o.row.model for o in obs}):
        held = [i for i, o in enumerate(obs) if o.row.model == model]
        train = [o for o in obs if o.row.model != model]
        if not train:
            continue
        params = fit_params(train, unit)
        pred = predict_ms(params, [obs[i] for i in held])
        for i, ms in zip(held, pred):
            predicted[i] = obs[i].tok_s(float(ms))
            errors[obs[i].phase].append((model, float(abs(obs[i].observed_ms / ms - 1.0) * 100.0)))
    return predicted, _phase_summary(errors)


def _row_records(obs, fitted=None, loo=None, spec=None) -> list[dict[str, Any]]:
    records = []
    for i, o in enumerate(obs):
        r = o.row
        records.append({
            "line": r.line, "model": r.model, "runtime": r.runtime, "quant": r.quant, "hardware": r.hardware,
            "proxy": r.proxy, "phase": o.phase, "tokens": o.tokens, "published_tok_s": round(o.published_tok_s, 3),
            "fitted_tok_s": None if fitted is None else round(o.tok_s(float(fitted[i])), 3),
            "loo_tok_s": None if not loo or i not in loo else round(loo[i], 3),
            "spec_tok_s": None if spec is None else round(o.tok_s(float(spec[i])), 3),
            "source": r.source, "where": r.where,
        })
    return records


def fitted_label(n_rows: int, runtimes: list[str]) -> str:
    return f"analytic, fitted to {n_rows} published measurements ({', '.join(runtimes)})"


def _group_fit(obs: list[Observation], unit: str) -> dict[str, Any]:
    rows = {o.row.index for o in obs}
    models = sorted({o.row.model for o in obs})
    runtimes = sorted({o.row.runtime for o in obs})
    spec = spec_params(unit)
    spec_pred = predict_ms(spec, obs)
    baseline: dict[str, list[tuple[str, float]]] = {"decode": [], "prefill": []}
    for o, e in zip(obs, _abs_pct(spec_pred, obs)):
        baseline[o.phase].append((o.row.model, float(e)))
    out: dict[str, Any] = {"n_rows": len(rows), "n_obs": len(obs), "models": models, "runtimes": runtimes,
                           "spec_params": spec, "baseline": _phase_summary(baseline)}
    if len(rows) < MIN_ROWS or len(models) < MIN_MODELS:
        out.update(fitted=False, reason=f"needs >= {MIN_ROWS} rows of >= {MIN_MODELS} architectures, has "
                                        f"{len(rows)} of {len(models)}",
                   rows=_row_records(obs, spec=spec_pred))
        return out
    params = fit_params(obs, unit)
    loo_pred, loo = leave_one_model_out(obs, unit)
    out.update(fitted=True, label=fitted_label(len(rows), runtimes),
               params={k: float(f"{v:.6g}") for k, v in params.items()}, loo=loo,
               rows=_row_records(obs, predict_ms(params, obs), loo_pred, spec_pred))
    return out


def fit_published(data: PublishedData) -> dict[str, Any]:
    """Fit every (device, compute unit) group; the whole result as written to the fitted file."""
    obs = observations(data)
    targets: dict[str, Any] = {}
    groups = sorted({(o.row.device, o.row.compute_unit) for o in obs})
    for device, unit in groups:
        group = [o for o in obs if o.row.device == device and o.row.compute_unit == unit and not o.row.proxy]
        proxies = [o for o in obs if o.row.device == device and o.row.compute_unit == unit and o.row.proxy]
        entry: dict[str, Any] = _group_fit(group, unit) if group else {
            "fitted": False, "reason": "only proxy rows", "n_rows": 0, "models": [], "runtimes": []}
        if entry.get("fitted"):
            per_runtime = {}
            for runtime in entry["runtimes"]:
                sub = [o for o in group if o.row.runtime == runtime]
                fit = _group_fit(sub, unit)
                if fit.get("fitted") and len(entry["runtimes"]) > 1:
                    per_runtime[runtime] = {k: fit[k] for k in ("n_rows", "models", "params", "loo", "baseline")}
            entry["per_runtime"] = per_runtime
        if proxies:
            params = entry.get("params") or spec_params(unit)
            entry["proxy_rows"] = _row_records(proxies, predict_ms(params, proxies), None,
                                               predict_ms(spec_params(unit), proxies))
        targets.setdefault(device, {})[unit] = entry
    return {
        "format": FIT_FORMAT,
        "generated_by": FIT_COMMAND,
        "data_file": f"latency_models/{DATA_FILE}",
        "data_sha256": data.sha256,
        "settings": {"sigma": SIGMA, "huber_k": HUBER_K, "prior_width": PRIOR_WIDTH, "min_rows": MIN_ROWS,
                     "min_models": MIN_MODELS},
        "quant_formats": {k: {"precision": v[0], "bytes_ratio": round(v[1], 4), "what": v[2]}
                          for k, v in QUANT_FORMATS.items()},
        "targets": targets,
    }


def write_fit(result: dict[str, Any], path: str | Path | None = None) -> Path:
    """Write the fitted file atomically (a temporary file renamed over it), so a failure leaves the old one."""
    return write_atomic(Path(path) if path is not None else fit_path(), json.dumps(result, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------------------
# reading the fitted file (what the registry and `nas targets` use)

def load_fit(path: str | Path | None = None) -> dict[str, Any] | None:
    """The fitted file, or None when there is none; a malformed one is a NasUserError naming it."""
    path = Path(path) if path is not None else fit_path()
    if not path.is_file():
        return None
    try:
        result = parse_json(read_user_bytes(path, "published-measurement fit"), str(path))
    except NasUserError as exc:
        raise NasUserError(f"{path}: cannot read the published-measurement fit ({exc}); regenerate it with "
                           "`nas targets fit`") from None
    if (not isinstance(result, dict) or result.get("format") != FIT_FORMAT
            or not isinstance(result.get("targets"), dict)):
        raise NasUserError(f"{path}: not a {FIT_FORMAT} file; regenerate it with `nas targets fit`")
    return result


def target_fits(target_name: str, path: str | Path | None = None) -> dict[str, Any]:
    """{compute unit: group entry} for a target (empty when nothing was published for it)."""
    result = load_fit(path)
    return dict((result or {}).get("targets", {}).get(target_name, {}))


def fitted_group(target_name: str, unit: str, path: str | Path | None = None) -> dict[str, Any] | None:
    """The fitted entry for a target's compute unit, checked, or None when that unit is not fitted."""
    entry = target_fits(target_name, path).get(unit)
    if not entry or not entry.get("fitted"):
        return None
    params = entry.get("params")
    if not isinstance(params, dict) or set(params) != set(PARAM_NAMES) or not all(
            isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in params.values()):
        raise NasUserError(f"{fit_path() if path is None else path}: the fit for {target_name} ({unit}) has "
                           f"malformed parameters {params!r}; regenerate it with `nas targets fit`")
    return entry


def error_band(entry: dict[str, Any]) -> dict[str, Any]:
    """A fitted group's error band (`nas.latency.uncertainty`): per phase, the BAND_QUANTILE quantile of the
    left-out predictions' relative error against the published figures; None for a phase with no left-out
    prediction, or whose rows are all of one architecture (nothing then tests a new shape)."""
    band: dict[str, Any] = {}
    counts = []
    for phase in ("prefill", "decode"):
        rows = [r for r in entry.get("rows", []) if r.get("phase") == phase and r.get("loo_tok_s")]
        enough = len({r["model"] for r in rows}) >= MIN_MODELS
        # times are tokens / rate, so the relative error of a time is published rate / predicted rate - 1
        band[phase] = relative_band([1.0 / r["loo_tok_s"] for r in rows],
                                    [1.0 / r["published_tok_s"] for r in rows]) if enough else None
        counts.append(len(rows) if enough else 0)
    band["basis"] = (f"{BAND_QUANTILE:.0%} of {max(counts)} published measurements within the band, each predicted "
                     "by a fit that left its architecture out" if any(counts) else
                     "fitted to published measurements, but none tests a left-out architecture")
    return band


def parity(entry: dict[str, Any], source: str) -> dict[str, Any]:
    """A fitted group's parity record (`nas.latency.predictor.parity_phase`): each published row's time
    against the prediction of the fit that left its architecture out, per phase."""
    phases = []
    for phase in ("decode", "prefill"):
        rows = [r for r in entry.get("rows", []) if r.get("phase") == phase and r.get("loo_tok_s")]
        if rows:  # times are tokens / rate
            phases.append(parity_phase(phase, [r.get("tokens", 1) * 1000.0 / r["loo_tok_s"] for r in rows],
                                       [r.get("tokens", 1) * 1000.0 / r["published_tok_s"] for r in rows]))
    if not phases:
        return {"none": "the published-measurement fit has no left-out predictions"}
    return {"source": source, "phases": phases}


def loo_text(entry: dict[str, Any], key: str = "loo") -> str:
    """'decode 12.3% (n=7), prefill -' from a group entry's leave-one-out (or baseline) summary."""
    parts = []
    for phase in ("decode", "prefill"):
        s = (entry.get(key) or {}).get(phase) or {}
        value = s.get("median_abs_pct")
        if value is None:
            parts.append(f"{phase} -")
        else:
            few = "; one architecture, so not a test of new shapes" if key == "loo" and s.get("models", 2) < 2 else ""
            parts.append(f"{phase} {value:.1f}% (n={s.get('n', 0)}{few})")
    return ", ".join(parts)
