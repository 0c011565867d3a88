"""Error bands of latency models, and how predicted figures are shown with them."""

import numpy as np
import pytest

from nas.latency.uncertainty import (
    BAND_QUANTILE,
    band_for,
    band_from_evaluation,
    legend,
    relative_band,
    show,
    show_plain,
    unknown_band,
)
from nas.search.output import format_table


def test_relative_band_is_the_quantile_of_absolute_relative_errors():
    measured = np.full(10, 100.0)
    predicted = measured * (1 + np.array([-0.3, 0.01, 0.02, -0.03, 0.04, 0.05, -0.06, 0.07, 0.08, 0.09]))
    expected = np.quantile(np.abs(predicted / measured - 1), BAND_QUANTILE)
    assert relative_band(predicted, measured) == pytest.approx(expected)
    assert 0.09 < relative_band(predicted, measured) < 0.3
    assert relative_band([], []) is None


def test_band_from_a_predictor_evaluation_per_phase():
    evaluation = {"phases": {"prefill": {"n_configs": 5, "predicted_ms": [110, 90], "measured_ms": [100, 100]},
                             "decode": {"n_configs": 5, "predicted_ms": [102, 99], "measured_ms": [100, 100]}}}
    band = band_from_evaluation(evaluation)
    assert band["prefill"] == pytest.approx(0.10)
    assert band["decode"] == pytest.approx(0.0, abs=0.021)
    assert "held-out" in band["basis"]
    assert band_for("decode_tokens_per_s", band) == band["decode"]
    assert band_for("ttft_ms", band) == band["prefill"]
    empty = band_from_evaluation({"phases": {}})
    assert empty["prefill"] is None and "not measured" in empty["basis"]


def test_unknown_error_rounds_to_two_significant_digits():
    assert show_plain(193.4, None) == "~190"
    assert show_plain(1.234, None) == "~1.2"
    assert show_plain(193.4, 0.1, 1) == "193.4"
    assert show(193.4, None) == "~190"
    assert show(200.0, 0.1) == "200 (180-220)"
    assert "unknown" in legend(unknown_band()) and "+-10%" in legend({"prefill": 0.1, "decode": 0.05, "basis": "x"})


def _row(decode):
    arch = {"ffn_kind": "swiglu", "tie_embeddings": True}
    return {"trial": 1, "shape": "L4 d256", "attention": "gqa", "arch": arch, "num_params": 1e8,
            "num_non_embedding_params": 9e7, "quality": 9e7, "quality_source": "non_embedding_params",
            "found_by": "exact", "arch_id": "abc",
            "targets": {"p": {"memory_mb": 100.0, "prefill_tokens_per_s": 1234.5, "decode_tokens_per_s": decode,
                              "ttft_ms": 414.7}}}


def test_table_marks_figures_of_unknown_error_and_says_why():
    unknown = format_table([_row(193.4)], ["p"], {"p": unknown_band()})
    assert "~190" in unknown and "~1200" in unknown and "193.4" not in unknown
    assert "error unknown" in unknown
    known = format_table([_row(193.4)], ["p"], {"p": {"prefill": 0.12, "decode": 0.08, "basis": "held out"}})
    assert "193.4" in known and "~" not in known and "decode +-8%" in known
