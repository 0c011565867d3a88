"""Objectives and constraints from what users type."""

from __future__ import annotations

import pytest

from nas.core.errors import NasUserError
from nas.study.objectives import parse_count, parse_objectives, parse_params_range


def test_parse_objectives_modes():
    one = parse_objectives(None, ["pixel8"])
    assert [o.label for o in one] == ["quality", "decode_tokens_per_s@pixel8"]
    two = parse_objectives(["quality", "decode_tps", "ttft"], ["pixel8", "iphone15pro"])
    assert [o.label for o in two] == ["quality", "decode_tokens_per_s@pixel8", "decode_tokens_per_s@iphone15pro",
                                      "ttft_ms@pixel8", "ttft_ms@iphone15pro"]
    assert two[-1].direction == "minimize"
    worst = parse_objectives(None, ["pixel8", "iphone15pro", "rpi5"])
    assert [o.label for o in worst] == ["quality", "decode_tokens_per_s@worst"]
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
