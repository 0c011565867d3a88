"""How far a latency model's predictions can be off, and how a predicted figure is shown with that.

A band is a relative error per phase, e.g. {"prefill": 0.12, "decode": 0.08, "basis": "..."}: the predicted
figure's true value lies within +-12% / +-8% for BAND_QUANTILE of the configs the model was checked on (held-out
configs for a fitted predictor, left-out models for a fit to published measurements). None means that nothing
bounds the error (an uncalibrated roofline): such figures are shown rounded to UNKNOWN_DIGITS significant digits
and marked with "~", so four digits never suggest a precision nobody measured.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

BAND_QUANTILE = 0.9  # a band covers this share of the checked configs' absolute relative errors
UNKNOWN_DIGITS = 2
UNKNOWN_BASIS = "uncalibrated: no measurement bounds its error"
PHASE_OF_METRIC = {"prefill_ms": "prefill", "ttft_ms": "prefill", "prefill_tokens_per_s": "prefill",
                   "decode_ms": "decode", "decode_tokens_per_s": "decode"}


def unknown_band() -> dict[str, Any]:
    return {"prefill": None, "decode": None, "basis": UNKNOWN_BASIS}


def relative_band(predicted: Sequence[float], measured: Sequence[float]) -> float | None:
    """The BAND_QUANTILE quantile of |predicted / measured - 1| (None without points)."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.size == 0 or p.size != m.size:
        return None
    return float(np.quantile(np.abs(p / m - 1.0), BAND_QUANTILE))


def band_from_evaluation(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """A fitted predictor's band from its held-out evaluation (predicted and measured ms per phase)."""
    band: dict[str, Any] = {}
    counts = []
    for phase in ("prefill", "decode"):
        ev = (evaluation.get("phases") or {}).get(phase) or {}
        band[phase] = relative_band(ev.get("predicted_ms") or [], ev.get("measured_ms") or [])
        counts.append(int(ev.get("n_configs") or 0))
    if all(band[p] is None for p in ("prefill", "decode")):
        band["basis"] = "no held-out configs: error not measured"
    else:
        band["basis"] = (f"{BAND_QUANTILE:.0%} of {max(counts)} held-out configs within the band "
                         "(measured at the calibration's lengths and sizes)")
    return band


def band_for(metric: str, band: Mapping[str, Any] | None) -> float | None:
    """The relative error of one figure (e.g. "decode_tokens_per_s") under `band` (None: unknown)."""
    if not band:
        return None
    return band.get(PHASE_OF_METRIC.get(metric, ""))


def significant(value: float, digits: int) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def _approximate(value: float) -> str:
    """"~" and UNKNOWN_DIGITS significant digits: 193.4 -> "~190", 1.234 -> "~1.2"."""
    if value == 0 or not math.isfinite(value):
        return f"~{value:g}"
    decimals = max(0, UNKNOWN_DIGITS - 1 - int(math.floor(math.log10(abs(value)))))
    return f"~{significant(value, UNKNOWN_DIGITS):.{decimals}f}"


def show(value: float, rel: float | None, decimals: int = 0) -> str:
    """A predicted figure as text: "190 (170-210)" with a known band, "~190" (2 significant digits) without."""
    if rel is None:
        return _approximate(value)
    low, high = value * (1 - rel), value * (1 + rel)
    return f"{value:.{decimals}f} ({low:.{decimals}f}-{high:.{decimals}f})"


def show_plain(value: float, rel: float | None, decimals: int = 0) -> str:
    """A table cell: the figure alone, or "~" and 2 significant digits when its error is unknown."""
    return _approximate(value) if rel is None else f"{value:.{decimals}f}"


def legend(band: Mapping[str, Any] | None) -> str:
    """One line saying how far a target's figures can be off."""
    if not band or all(band.get(p) is None for p in ("prefill", "decode")):
        return (f"error unknown ({(band or {}).get('basis', UNKNOWN_BASIS)}); figures rounded to "
                f"{UNKNOWN_DIGITS} significant digits, marked ~")
    parts = [f"{p} +-{band[p]:.0%}" for p in ("prefill", "decode") if band.get(p) is not None]
    return f"error {', '.join(parts)} ({band.get('basis', '')})"
