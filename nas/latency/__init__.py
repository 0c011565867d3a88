"""Latency models: ONNX graphs of the two generation phases, the measurement protocol, fitted per-device
predictors, the analytic roofline for devices that cannot be measured here, and the registry that picks one.

The entry point the search and `nas predict` use:

    from nas.latency import load_latency_model
    model = load_latency_model("pixel8")            # or a Target; precision/provider default to the target's
    out = model.predict(batch, prompt_len=512, context_len=2048)   # {"prefill_ms", "decode_ms"}: float64 arrays
    model.source                                    # "measured" | "calibrated" | "analytic, uncalibrated"

Names are imported lazily, so importing one submodule (e.g. by the on-device runner's tests) stays cheap.
"""

from __future__ import annotations

from nas.core.lazy import lazy_exports

_EXPORTS = {
    # registry
    "LatencyModel": "registry", "FittedLatencyModel": "registry", "AnalyticLatencyModel": "registry",
    "load_latency_model": "registry", "latency_source": "registry",
    "MEASURED": "registry", "CALIBRATED": "registry", "ANALYTIC": "registry", "SOURCES": "registry",
    # fitted predictors
    "LatencyPredictor": "predictor", "load_predictor": "predictor", "fit_predictor": "predictor",
    "split_arch_ids": "predictor", "accuracy": "predictor", "mape": "predictor", "within": "predictor",
    "kendall_tau": "predictor",
    # analytic roofline and host probes
    "RooflineModel": "analytic", "RooflineParams": "analytic", "params_from_specs": "analytic",
    "params_from_probes": "analytic", "host_probes": "probes",
    # calibration
    "calibrate_rows": "calibrate", "select_rows": "calibrate",
    # features
    "feature_matrix": "features",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
