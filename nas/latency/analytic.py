"""The analytic (roofline) latency model, for devices that cannot be measured here.

    phase_ms = max(FLOPs / (peak_flops * compute_efficiency), bytes / (bandwidth * bandwidth_efficiency))
               + num_layers * per_layer_overhead + per_run_overhead

(with measured attention rates, as the host probes give, attention is a second roofline term: see
`RooflineParams.attention_flops_per_s`)

Prefill (P tokens) moves the weights once and writes a P-token KV cache; decode (one token after C cached)
reads all weights and the C-token KV cache once and does ~2 FLOPs per weight, so prefill is usually
compute-bound and decode memory-bound. This is the deployed graph (`nas.latency.graphs`, ONNX Runtime GenAI's
structure): GroupQueryAttention reads the cache from a buffer shared by past and present and writes the new
token in place, so nothing copies the cache; its elements have the graph's activation type (fp16 in fp16
graphs, fp32 otherwise: `accounting.kv_bytes_per_element`). FLOPs and bytes come from `nas.core.accounting`
through ArchBatch, the same numbers memory accounting and the fitted features use.

Efficiency factors and overheads are documented defaults per compute unit (below); callers may override any
of them (compute_efficiency, bandwidth_efficiency, per_layer_overhead_ms, per_run_overhead_ms). Every figure
from a bare roofline is labelled "analytic, uncalibrated" (`nas.latency.registry.ANALYTIC`): nothing measured on
the device stands behind it; one whose factors were fitted to published measurements says so (`published`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from nas.core.arch import ArchBatch
from nas.core.errors import NasUserError
from nas.latency.features import PHASES, kv_bytes_per_element, streamed_weight_bytes

# Defaults per compute unit. Reasons:
# - compute_efficiency: share of the spec-sheet peak FLOP/s an LLM's matmuls reach. CPU GEMM libraries
#   (MLAS, XNNPACK, KleidiAI) reach 50-70% of peak on large square GEMMs and less on the thin [P x h] shapes
#   of small models: 0.4. Mobile GPUs reach 20-40% of their advertised FP16 peak on transformer matmuls:
#   0.3. NPU TOPS are dense int8 peaks that attention, norms and layout changes rarely approach: 0.2.
# - bandwidth_efficiency: share of the theoretical LPDDR/DDR bandwidth a streaming read achieves; STREAM-like
#   reads on phones and laptops reach 60-80%: 0.7 for CPUs, 0.6 behind a GPU/NPU's memory path.
# - per_layer_overhead_ms: ~20 kernels per decoder layer (norms, projections, RoPE, attention, FFN, adds)
#   times the dispatch cost of one: ~3-5 us on a CPU runtime (0.08 ms), ~10-20 us for a mobile GPU kernel
#   launch (0.3 ms), NPU graph segments are fused but synchronise with the host (0.15 ms).
# - per_run_overhead_ms: one session run's fixed cost (binding inputs, waking threads, copying logits out;
#   for accelerators the host<->device sync): 0.2 ms CPU, 1.0 ms GPU, 2.0 ms NPU.
DEFAULTS: dict[str, dict[str, float]] = {
    "cpu": {"compute_efficiency": 0.4, "bandwidth_efficiency": 0.7, "per_layer_overhead_ms": 0.08,
            "per_run_overhead_ms": 0.2},
    "gpu": {"compute_efficiency": 0.3, "bandwidth_efficiency": 0.6, "per_layer_overhead_ms": 0.3,
            "per_run_overhead_ms": 1.0},
    "npu": {"compute_efficiency": 0.2, "bandwidth_efficiency": 0.6, "per_layer_overhead_ms": 0.15,
            "per_run_overhead_ms": 2.0},
}
# Host probes measure what this machine achieves (not a spec-sheet peak), so they are used at efficiency 1;
# the overheads are the probed ones (`nas.latency.probes.probe_dispatch`) when the probes have them, else
# the CPU defaults.
PROBE_EFFICIENCY = 1.0


@dataclass(frozen=True)
class RooflineParams:
    """The numbers one analytic model runs on, with where they came from."""

    peak_flops_per_s: float
    bandwidth_bytes_per_s: float
    compute_efficiency: float
    bandwidth_efficiency: float
    per_layer_overhead_ms: float
    per_run_overhead_ms: float
    compute_unit: str = "cpu"
    inputs: str = "spec sheet"  # "spec sheet" | "host probes"
    # Rates (FLOP/s) of the attention kernel (QK^T, softmax, AV) in decode and in prefill, when measured. None:
    # attention counts as compute at the matmul rate and its cache as bytes, like every other term. Set,
    # attention is a roofline of its own, max(attention FLOPs / its rate, cache bytes / bandwidth), added to the
    # projections' one: a CPU runs it per query head as small products plus a softmax, far below its GEMM rate
    # (host probes measure both; README "host-cpu" gives one machine's figures), so an MQA cache much smaller than
    # MHA's does not make attention as much cheaper, and deep or many-headed shapes pay more for their prompts
    # than their FLOPs say.
    attention_flops_per_s: float | None = None  # decode
    prefill_attention_flops_per_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("peak_flops_per_s", "bandwidth_bytes_per_s", "compute_efficiency", "bandwidth_efficiency"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise NasUserError(f"analytic model: {name} must be a positive number, got {value!r}")
        for name in ("per_layer_overhead_ms", "per_run_overhead_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise NasUserError(f"analytic model: {name} must be a number >= 0, got {value!r}")
        for name in ("attention_flops_per_s", "prefill_attention_flops_per_s"):
            rate = getattr(self, name)
            if rate is not None and (not isinstance(rate, (int, float)) or not np.isfinite(rate) or rate <= 0):
                raise NasUserError(f"analytic model: {name} must be a positive number, got {rate!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RooflineModel:
    """Predicts prefill and decode ms for a batch from `RooflineParams` (vectorised)."""

    def __init__(self, params: RooflineParams, precision: str):
        self.params = params
        self.precision = precision

    def phase_terms(self, batch: ArchBatch, phase: str, length) -> dict[str, np.ndarray]:
        """FLOPs, bytes, and the compute, memory and overhead times (ms) of one phase."""
        p = self.params
        lengths = np.asarray(length, dtype=np.int64)
        kv_elem = kv_bytes_per_element(self.precision)
        weights = streamed_weight_bytes(batch, self.precision)  # an untied input embedding is only gathered
        kv = np.asarray(batch.kv_cache_bytes(lengths, kv_elem), dtype=np.float64)
        if phase == "prefill":
            flops = np.asarray(batch.prefill_flops(lengths), dtype=np.float64)
            moved = weights + kv  # weights read once, the prompt's K/V written once
        elif phase == "decode":
            flops = np.asarray(batch.decode_flops(lengths), dtype=np.float64)
            # All weights and the cache read once per token (in place: no copy of the cache).
            moved = weights + kv
        else:
            raise ValueError(f"phase {phase!r} is not one of {', '.join(PHASES)}")
        bandwidth = p.bandwidth_bytes_per_s * p.bandwidth_efficiency
        attention_ms = np.zeros_like(flops)
        rate = p.attention_flops_per_s if phase == "decode" else p.prefill_attention_flops_per_s
        if rate is not None:
            attention_flops = np.asarray(batch.decode_attention_flops(lengths) if phase == "decode"
                                         else batch.prefill_attention_flops(lengths), dtype=np.float64)
            attention_ms = np.maximum(attention_flops / rate, kv / bandwidth) * 1e3
            flops, moved = flops - attention_flops, moved - kv  # the projections' roofline
        compute_ms = flops / (p.peak_flops_per_s * p.compute_efficiency) * 1e3
        memory_ms = moved / bandwidth * 1e3
        overhead_ms = np.asarray(batch.num_layers, dtype=np.float64) * p.per_layer_overhead_ms + p.per_run_overhead_ms
        return {"flops": flops, "bytes": moved, "compute_ms": compute_ms, "memory_ms": memory_ms,
                "attention_ms": attention_ms, "overhead_ms": overhead_ms}

    def predict_phase(self, batch: ArchBatch, phase: str, length) -> np.ndarray:
        t = self.phase_terms(batch, phase, length)
        return np.maximum(t["compute_ms"], t["memory_ms"]) + t["attention_ms"] + t["overhead_ms"]

    def predict(self, batch: ArchBatch, prompt_len: int, context_len: int) -> dict[str, np.ndarray]:
        return {"prefill_ms": self.predict_phase(batch, "prefill", prompt_len),
                "decode_ms": self.predict_phase(batch, "decode", context_len)}


def _check_overrides(overrides: Mapping[str, Any] | None) -> dict[str, float]:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULTS["cpu"]))
    if unknown:
        raise NasUserError(f"analytic model: unknown parameter(s) {', '.join(unknown)}; "
                           f"known: {', '.join(DEFAULTS['cpu'])}")
    return {k: float(v) for k, v in overrides.items()}


def params_from_specs(target, precision: str, overrides: Mapping[str, Any] | None = None) -> RooflineParams:
    """Roofline parameters from a described target's spec sheet (peak FLOP/s per precision, bandwidth)."""
    peak = (getattr(target, "peak_flops", None) or {}).get(precision)
    bandwidth = getattr(target, "mem_bandwidth_bytes_per_s", None)
    if not peak or not bandwidth:
        missing = "peak_flops." + precision if not peak else "mem_bandwidth_bytes_per_s"
        raise NasUserError(f"target {target.name} has no {missing} in its spec sheet, so it cannot be "
                           "predicted analytically; import measurements with `nas calibrate --measurements`")
    unit = (getattr(target, "compute_unit", None) or {}).get(precision, "cpu")
    if unit not in DEFAULTS:
        raise NasUserError(f"target {target.name}: compute unit {unit!r} for {precision} is not one of "
                           f"{', '.join(DEFAULTS)}")
    values = {**DEFAULTS[unit], **_check_overrides(overrides)}
    return RooflineParams(peak_flops_per_s=float(peak), bandwidth_bytes_per_s=float(bandwidth), compute_unit=unit,
                          inputs="spec sheet", **{k: float(v) for k, v in values.items()})


def params_from_probes(probes: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> RooflineParams:
    """Roofline parameters from this host's probes: achieved rates (so efficiency 1) and, when probed, the
    per-layer and per-run dispatch overheads (else the CPU defaults). `overrides` win over both."""
    probed = {k: float(probes[k]) for k in ("per_layer_overhead_ms", "per_run_overhead_ms")
              if isinstance(probes.get(k), (int, float)) and probes[k] >= 0}
    values = {**DEFAULTS["cpu"], **probed, **_check_overrides(overrides)}
    values["compute_efficiency"] = values["bandwidth_efficiency"] = PROBE_EFFICIENCY
    rates = {}
    for name, key in (("attention_flops_per_s", "decode_attention_flops_per_s"),
                      ("prefill_attention_flops_per_s", "prefill_attention_flops_per_s")):
        value = probes.get(key)
        rates[name] = float(value) if isinstance(value, (int, float)) and value > 0 else None
    return RooflineParams(peak_flops_per_s=float(probes["matmul_flops_per_s"]),
                          bandwidth_bytes_per_s=float(probes["mem_bandwidth_bytes_per_s"]), compute_unit="cpu",
                          inputs="host probes", **rates,
                          **{k: float(v) for k, v in values.items()})
