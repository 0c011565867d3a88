"""Versions that decide whether a latency measurement or a fitted predictor still describes what nas builds.

Three versions are recorded with every measurement row (in its `env`) and every predictor file:
- GRAPH_BUILDER_VERSION: the structure of the graphs timed (`nas.latency.graphs`). Bump it whenever a graph
  changes (ops, fusion, KV-cache layout or dtype, quantisation format): rows timed on other graphs are then
  measured again by `nas profile` and skipped by `nas calibrate`, and a predictor fitted on them is refused.
- FEATURE_VERSION: the formulas of the fitted features (`nas.latency.features`, and the accounting they read).
  A predictor's coefficients are rates per feature unit, so they mean nothing under other formulas: bump it
  when a feature's definition changes, and a predictor of another feature version is refused on load.
- onnxruntime (and onnxruntime-genai, when installed) versions: another runtime is another set of kernels.
  Rows record them; on this host, rows and predictors of another version are not used.

The execution provider and thread count are fields of every row and predictor already (they are part of the
measurement key). This module is at the bottom of nas.latency and imports nothing heavy.
"""

from __future__ import annotations

from typing import Any, Mapping

GRAPH_BUILDER_VERSION = "genai-1"  # ONNX Runtime GenAI 0.18 builder structure (nas.latency.graphs)
FEATURE_VERSION = "2"  # KV at the graph dtype, LM head on every prefill position, GenAI byte accounting

GRAPH_BUILDER = "graph_builder"  # the env key of a row's graph-builder version (written since builder "1")
ORT_VERSION = "ort_version"
GENAI_VERSION = "ort_genai_version"  # absent when onnxruntime-genai was not importable where rows were measured


def genai_version() -> str | None:
    """The installed onnxruntime-genai's version, or None when it cannot be imported."""
    try:
        import onnxruntime_genai as og  # noqa: F401 -- optional
    except Exception:  # noqa: BLE001 -- missing, or a broken native library: either way not usable
        return None
    return str(getattr(og, "__version__", "unknown"))


def row_provenance(ort_version: str) -> dict[str, str]:
    """What a measurement row taken here records about the graphs and runtime, beside measure.environment()."""
    out = {GRAPH_BUILDER: GRAPH_BUILDER_VERSION, ORT_VERSION: ort_version}
    genai = genai_version()
    if genai is not None:
        out[GENAI_VERSION] = genai
    return out


def stale_reason(row: Mapping[str, Any], ort_version: str | None = None, genai: Any = ...) -> str | None:
    """Why a measurement row must not be reused with the graphs and runtime of this nas, or None when it may.

    The graph builder must always match; `ort_version` (and `genai`, None meaning "not installed") only when
    given: rows imported from a device ran the device's runtime, which this host's does not decide."""
    env = row.get("env") or {}
    builder = env.get(GRAPH_BUILDER)
    if builder is None:
        return "no graph-builder version recorded (measured before versioning)"
    if str(builder) != GRAPH_BUILDER_VERSION:
        return f"graph builder {builder} (this nas builds {GRAPH_BUILDER_VERSION})"
    if ort_version is not None and env.get(ORT_VERSION) != ort_version:
        return f"onnxruntime {env.get(ORT_VERSION)} (this is {ort_version})"
    if genai is not ... and env.get(GENAI_VERSION) != genai:
        return f"onnxruntime-genai {env.get(GENAI_VERSION) or 'absent'} (here: {genai or 'absent'})"
    return None
