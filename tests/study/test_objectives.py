"""Objectives and constraints from what users type."""

from __future__ import annotations

import pytest

from nas.core.errors import NasUserError
from nas.study.objectives import parse_count, parse_objectives, parse_params_range


def test_parse_objectives_modes():
    one = parse_objectives(None, ["pixel8"])
    assert [o.label for o in one] == ["predicted_loss", "decode_tokens_per_s@pixel8"]
    assert one[0].direction == "minimize" and one[0].is_quality and not one[1].is_quality
    params = parse_objectives(None, ["pixel8"], quality="params")
    assert [(o.label, o.direction) for o in params][0] == ("quality", "maximize") and params[0].is_quality
    two = parse_objectives(["quality", "decode_tps", "ttft"], ["pixel8", "iphone15pro"])
    assert [o.label for o in two] == ["predicted_loss", "decode_tokens_per_s@pixel8",
                                      "decode_tokens_per_s@iphone15pro", "ttft_ms@pixel8", "ttft_ms@iphone15pro"]
    assert two[-1].direction == "minimize"
    worst = parse_objectives(None, ["pixel8", "iphone15pro", "rpi5"])
    assert [o.label for o in worst] == ["predicted_loss", "decode_tokens_per_s@worst"]
    with pytest.raises(NasUserError, match="--quality 'magic' is not one of law, params"):
        parse_objectives(None, ["pixel8"], quality="magic")
    with pytest.raises(NasUserError, match="unknown objective 'speed'; known: quality"):
        parse_objectives(["quality", "speed"], ["pixel8"])
    with pytest.raises(NasUserError, match="at least two"):
        parse_objectives(["quality"], ["pixel8"])


def test_parse_params_range():
    assert parse_params_range("100M:600M") == (100_000_000, 600_000_000)
    assert parse_params_range("450M:") == (450_000_000, None)
    assert parse_params_range(":1.2B") == (None, 1_200_000_000)
    assert parse_count("125000") == 125000
    for bad in ("100M", "600M:100M", "abc:1M", ":"):
        with pytest.raises(NasUserError):
            parse_params_range(bad)


# ---------------------------------------------------------------------------------------------- search
