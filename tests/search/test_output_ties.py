"""The recommendation of a proxy front whose qualities lie within the seed noise."""

from __future__ import annotations

from nas.search.output import recommend


def _row(trial, speed, quality):
    return {"trial": trial, "shape": f"s{trial}", "arch_id": f"a{trial}", "quality": quality,
            "targets": {"pixel8": {"decode_tokens_per_s": speed}}}


def test_within_the_noise_the_fastest_is_recommended_and_says_why():
    rows = [_row(10, 16.7, -3.356), _row(0, 123.2, -3.388)]  # 7x slower for 0.032 bits/byte
    exact = recommend(rows, "pixel8", "st", None)
    assert exact["picks"]["best-quality"]["trial"] == 10 and exact["quality_noise"] is None
    noisy = recommend(rows, "pixel8", "st", None, tie=0.036)
    assert {p["trial"] for p in noisy["picks"].values()} == {0} and noisy["quality_noise"] == 0.036
    assert "within the seed noise (0.036 bits/byte)" in noisy["picks"]["knee"]["why"]
    assert "bits/byte)" in noisy["picks"]["best-quality"]["why"] and noisy["picks"]["fastest"]["why"].startswith(
        "the fastest")


def test_a_gain_beyond_the_noise_still_counts():
    rows = [_row(10, 16.7, -3.20), _row(0, 123.2, -3.388), _row(5, 60.0, -3.30)]
    noisy = recommend(rows, "pixel8", "st", None, tie=0.036)
    assert noisy["picks"]["best-quality"]["trial"] == 10 and noisy["picks"]["fastest"]["trial"] == 0
    assert "count as ties" in noisy["picks"]["knee"]["why"]
