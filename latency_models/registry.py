"""Which latency model answers for a target, and how its latency is known.

Labels (shown everywhere a latency figure appears):
- "measured": host-cpu with a predictor fitted on ORT measurements taken on this machine;
- "calibrated": a described device with a predictor fitted on measurements imported from that device;
- "analytic, uncalibrated": a roofline from the target's spec sheet, no measurements behind it.
"""

from __future__ import annotations

from nas.paths import find_predictor

MEASURED = "measured"
CALIBRATED = "calibrated"
ANALYTIC = "analytic, uncalibrated"


def latency_source(target, precision: str | None = None, provider: str | None = None) -> str:
    """How `target`'s latency is known at `precision` (default: the target's) on `provider` (default: its first)."""
    precision = precision or target.default_precision
    provider = provider or target.execution_providers[0]
    if find_predictor(target.name, provider, precision) is not None:
        return MEASURED if target.measured_here else CALIBRATED
    return ANALYTIC
