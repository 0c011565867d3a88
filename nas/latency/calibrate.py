"""Turning measurement rows into a checked, evaluated, saved predictor (what `nas calibrate` does).

The steps: select the rows that belong to one (target, provider, precision, threads) and refuse rows that do
not (another target, another machine for host-cpu); skip rows of other graphs (another graph-builder version)
and, on this host, of another onnxruntime (-genai), saying how many and why (a file with nothing else is
refused in one line); split the *architectures*
into a fit set and a held-out set (a held-out config is never seen in fitting, at any length); fit; evaluate
the predictor on the held-out configs beside the FLOPs-only and params-only baselines fitted on the same rows
and the analytic roofline (host probes for host-cpu, the spec sheet for a device); report the run-to-run
spread of the measurements as the floor no predictor can beat. Nothing is saved unless every step passed.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

import nas.latency.probes  # by module: tests swap its host_probes for quick ones
from nas.core.arch import ArchBatch
from nas.core.errors import NasUserError
from nas.latency import analytic
from nas.latency.features import PHASES
from nas.latency.predictor import LatencyPredictor, fit_predictor, json_safe, split_arch_ids
from nas.latency.provenance import genai_version, stale_reason
from nas.latency.registry import host_threads

MIN_HOLDOUT = 30  # held-out architectures: enough for a MAPE and a rank correlation to mean something


def default_holdout(n_configs: int) -> int:
    """30 held-out configs when that leaves at least 20 to fit, else a third of them (a small import still
    gets an honest, if smaller, held-out set)."""
    if n_configs >= MIN_HOLDOUT + 20:
        return MIN_HOLDOUT
    return max(1, n_configs // 3)


def select_rows(rows: Sequence[Mapping[str, Any]], *, target: str, precision: str, provider: str,
                threads: int | None = None, ort_version: str | None = None, cpu_model: str | None = None,
                source: str = "measurements") -> list[Mapping[str, Any]]:
    """The ok rows for this target/precision/provider(/threads); refuse rows from another target, and rows
    from another ORT version or CPU when those are given. Errors name what was found instead."""
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    if not ok:
        raise NasUserError(f"{source}: no successful measurements")
    for r in ok:
        if r.get("target") != target:
            raise NasUserError(f"{source}: has measurements for target {r.get('target')!r}, not {target!r}")

    def pick(rows_in, field, value, flag):
        chosen = [r for r in rows_in if r.get(field) == value]
        if not chosen:
            found = sorted({str(r.get(field)) for r in rows_in})
            raise NasUserError(f"{source}: no measurements at {field} {value!r}; found {', '.join(found)} "
                               f"(choose with {flag})")
        return chosen

    chosen = pick(ok, "precision", precision, "--precision")
    chosen = pick(chosen, "provider", provider, "--provider")
    if threads is not None:
        chosen = pick(chosen, "threads", threads, "--threads")
    else:
        found = sorted({r.get("threads") for r in chosen})
        if len(found) > 1:
            raise NasUserError(f"{source}: mixes thread counts {', '.join(map(str, found))}; choose one with --threads")
    # Rows of other graphs (another graph-builder version) are never fitted on; on this host, neither are rows
    # of another onnxruntime (-genai). A file with nothing left is one line; otherwise the skipped rows are counted.
    skipped: dict[str, int] = {}
    kept = []
    genai = genai_version() if ort_version is not None else ...
    for r in chosen:
        reason = stale_reason(r, ort_version, genai)
        if reason is None:
            kept.append(r)
        else:
            skipped[reason] = skipped.get(reason, 0) + 1
    if not kept:
        why = "; ".join(f"{n} row(s): {reason}" for reason, n in skipped.items())
        redo = ("measure again (`nas profile` / `nas calibrate` re-measures them)" if ort_version is not None
                else "make a new bundle (`nas bundle`) and measure again on the device")
        raise NasUserError(f"{source}: no measurement of the graphs this nas builds ({why}); {redo}")
    chosen = kept
    versions = sorted({str((r.get("env") or {}).get("ort_version")) for r in chosen})
    if len(versions) > 1:  # imported rows of several device runtimes: which one the predictor is for is the user's call
        raise NasUserError(f"{source}: mixes onnxruntime versions {', '.join(versions)}; a predictor is for one")
    if cpu_model is not None:
        cpus = sorted({str((r.get("env") or {}).get("cpu_model")) for r in chosen} - {cpu_model})
        if cpus:
            raise NasUserError(f"{source}: measured on CPU {cpus[0]!r}, not this machine's {cpu_model!r}")
    for phase in PHASES:
        if not any(r.get("phase") == phase for r in chosen):
            raise NasUserError(f"{source}: no {phase} measurements; both phases are needed")
    return SelectedRows(chosen, skipped)


class SelectedRows(list):
    """The rows `select_rows` keeps; `skipped` says why others were left out (reason -> count)."""

    def __init__(self, rows=(), skipped: Mapping[str, int] | None = None) -> None:
        super().__init__(rows)
        self.skipped = dict(skipped or {})

    def skipped_text(self) -> str:
        """'12 row(s) skipped: graph builder 0 (this nas builds 1)', or '' when none were."""
        if not self.skipped:
            return ""
        return (f"{sum(self.skipped.values())} row(s) skipped, not of the graphs and runtime this predictor is for: "
                + "; ".join(f"{n}: {reason}" for reason, n in self.skipped.items()))


def analytic_baseline(target, precision: str, probes: Mapping[str, Any] | None = None, threads: int | None = None
                      ) -> tuple[str, Callable] | None:
    """('analytic (host probes)' | 'analytic (spec sheet)', fn(batch, phase, lengths) -> ms), or None when the
    target has no spec numbers for this precision. Host probes run at `threads` (default: the target's)."""
    if target.measured_here:
        if probes is None:
            probes = nas.latency.probes.host_probes(threads or host_threads(target))
        params, name = analytic.params_from_probes(probes), "analytic (host probes)"
    else:
        try:
            params, name = analytic.params_from_specs(target, precision), "analytic (spec sheet)"
        except NasUserError:
            return None
    model = analytic.RooflineModel(params, precision)
    return name, model.predict_phase


def calibrate_rows(target, rows: Sequence[Mapping[str, Any]], *, precision: str, provider: str,
                   holdout: int | None = None, seed: int = 0, probes: Mapping[str, Any] | None = None
                   ) -> LatencyPredictor:
    """Split by architecture, fit, evaluate against baselines. `rows` must come from `select_rows`."""
    arch_ids = sorted({r["arch_id"] for r in rows})
    n = len(arch_ids)
    holdout = default_holdout(n) if holdout is None else holdout
    fit_ids, held_ids = split_arch_ids(arch_ids, holdout, seed)
    first = rows[0]
    extra = {}
    baseline = analytic_baseline(target, precision, probes, first.get("threads"))
    if baseline is not None:
        extra[baseline[0]] = baseline[1]
    env = first.get("env") or {}
    return fit_predictor(rows, target=target.name, provider=provider, precision=precision,
                         ort_version=str(env.get("ort_version")), holdout_ids=held_ids,
                         threads=first.get("threads"), cpu_model=env.get("cpu_model"),
                         protocol=first.get("protocol"), extra_models=extra)


# ----- what calibrate prints -----

def summary(predictor: LatencyPredictor) -> dict[str, Any]:
    """Per phase: the predictor's held-out accuracy beside each baseline, and the spread floor."""
    phases = {}
    for phase, ev in predictor.evaluation["phases"].items():
        entry: dict[str, Any] = {"n_configs_held_out": ev.get("n_configs", 0), "spread": ev.get("spread")}
        if "predictor" in ev:
            entry["models"] = {"predictor": ev["predictor"],
                               **{name: {k: v for k, v in b.items() if k != "model"}
                                  for name, b in ev.get("baselines", {}).items()}}
        phases[phase] = entry
    return json_safe({
        "target": predictor.target, "provider": predictor.provider, "precision": predictor.precision,
        "ort_version": predictor.ort_version, "threads": predictor.threads,
        "n_configs_fit": predictor.training.get("n_configs"),
        "n_configs_held_out": len(predictor.evaluation.get("holdout_arch_ids", [])),
        "coefficients": {phase: dict(zip(m.features, (float(c) for c in m.coef)))
                         for phase, m in predictor.phases.items()},
        "dropped_columns": {phase: info.get("feature_selection", {}).get("dropped_columns", {})
                            for phase, info in predictor.training.items() if phase in predictor.phases},
        "phases": phases,
    })


def _pct(v) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:5.1f}%"


def _tau(v) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:5.3f}"


MODEL_NAMES = {"predictor": "fitted predictor", "flops_only": "FLOPs-only linear", "params_only": "params-only linear"}


def format_summary(data: Mapping[str, Any]) -> str:
    lines = [f"{data['target']} / {data['provider']} / {data['precision']}  (onnxruntime {data['ort_version']}, "
             f"{data['threads']} threads): fitted on {data['n_configs_fit']} configs, evaluated on "
             f"{data['n_configs_held_out']} held-out configs",
             f"{'phase':8} {'model':28} {'n':>4} {'MAPE':>7} {'±5%':>7} {'±10%':>7} {'tau':>6}"]
    for phase, entry in data["phases"].items():
        for name, m in (entry.get("models") or {}).items():
            lines.append(f"{phase:8} {MODEL_NAMES.get(name, name):28} {m['n']:>4} {_pct(m['mape']):>7} "
                         f"{_pct(m['within_5']):>7} {_pct(m['within_10']):>7} {_tau(m['kendall_tau']):>6}")
        spread = entry.get("spread") or {}
        floor = (f"{phase:8} run-to-run spread floor: median cv of timed runs "
                 f"{_pct(spread.get('median_cv_pct')).strip()}")
        if spread.get("repeat_median_dev_pct") is not None:
            floor += f", repeats deviate by {_pct(spread['repeat_median_dev_pct']).strip()} (median)"
        lines.append(floor)
    for phase, dropped in (data.get("dropped_columns") or {}).items():
        for name, why in dropped.items():
            lines.append(f"{phase:8} feature {name} left out, its rate cannot be told apart: {why}")
    for phase, coefs in data.get("coefficients", {}).items():
        terms = ", ".join(f"{name} {value:.4g}" for name, value in coefs.items() if value > 0)
        lines.append(f"{phase:8} fitted cost rates (ms per feature unit): {terms}")
    return "\n".join(lines)


# ----- measurement budget -----

# Building one graph (weights drawn, ONNX proto, ORT session with its prepacked weights) costs a fixed part
# plus a part growing with the fp32 weights: 8-18 s per GB on a 2-core x86 host (the low end when it is quiet).
_BUILD_FIXED_S = 0.5
_BUILD_S_PER_GB = 12.0
# Each further session of a graph (protocol.sessions > 1) is created from the already serialised graph: ORT
# parses it, optimises it and prepacks its weights again: 0.5-0.8 s at 0.1-0.3 GB and 1.7-1.9 s at 0.6 GB of
# fp32 weights, on a 2-core x86 host.
_SESSION_FIXED_S = 0.3
_SESSION_S_PER_GB = 2.5
# Safety factor on the roofline's figure. With the schema-2 probes (GEMV bandwidth, probed dispatch cost) the
# hostcal models' measured times on this host were 0.6-1.3x the roofline (lower when the probes ran on a busy
# machine and read low, higher when they read high); 1.5 keeps the estimate an upper bound in both cases.
_ROOFLINE_TO_MEASURED = 1.5


def estimate_seconds(target, configs, *, precision: str, prompt_lens, context_lens, warmup: int, runs: int,
                     sessions: int = 1, probes: Mapping[str, Any] | None = None) -> dict[str, float]:
    """A rough budget for profiling `configs`: the roofline's latency (scaled to what runs take here) times the
    runs of every session, plus graph builds (with their first session) and the further sessions' creation."""
    if not configs:
        return {"measure_s": 0.0, "build_s": 0.0, "session_s": 0.0, "total_s": 0.0, "measurements": 0}
    if probes is None:
        probes = nas.latency.probes.host_probes(host_threads(target), quick=True)
    model = analytic.RooflineModel(analytic.params_from_probes(probes), precision)
    batch = ArchBatch.from_configs(list(configs))
    measure_ms = 0.0
    for phase, lengths in (("prefill", prompt_lens), ("decode", context_lens)):
        for length in lengths:
            measure_ms += float(model.predict_phase(batch, phase, length).sum())
    gb = np.asarray(batch.weight_bytes("fp32"), dtype=np.float64) / 1e9
    build_s = float(np.sum(_BUILD_FIXED_S + _BUILD_S_PER_GB * gb))  # one graph per config serves both phases
    session_s = float(np.sum((sessions - 1) * (_SESSION_FIXED_S + _SESSION_S_PER_GB * gb)))
    measure_s = measure_ms / 1e3 * sessions * (warmup + runs) * _ROOFLINE_TO_MEASURED
    return {"measure_s": measure_s, "build_s": build_s, "session_s": session_s,
            "total_s": measure_s + build_s + session_s,
            "measurements": len(configs) * (len(prompt_lens) + len(context_lens))}
