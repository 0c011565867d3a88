"""What nas says about a front ranked by predicted loss: fixed-speed picks, the knee's stability, published
models at equal predicted loss, the proxy check and the one rule by which a proxy moves a pick; and which
shapes the proxy stage trains."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from nas.core.arch import ArchBatch, ArchConfig
from nas.quality.model import load_quality_model
from nas.search.advice import (
    PROXY_RESOLVES,
    ProxyScore,
    ShapeTable,
    best_at_speed,
    fixed_speed_picks,
    knee_of,
    knee_stability,
    landmark_matches,
    law_check,
    proxy_move,
    speed_levels,
    trade_words,
)
from nas.search.selection import PARAMS_SLACK, Candidates, near_front, select_shapes


def table(n: int = 40, seed: int = 0) -> ShapeTable:
    """Shapes of growing width and depth: faster ones are smaller and predicted worse."""
    rng = np.random.default_rng(seed)
    configs = []
    for i in range(n):
        layers = int(4 + i % 20)
        hidden = 256 + 64 * (i // 4)
        configs.append(ArchConfig(hidden_size=hidden, num_layers=layers, num_heads=hidden // 64,
                                  intermediate_size=3 * hidden))
    batch = ArchBatch.from_configs(configs)
    q = load_quality_model("1T")
    loss = q.predict(batch)
    speed = 1e12 / np.asarray(batch.num_params, dtype=float) * rng.uniform(0.8, 1.2, n)
    return ShapeTable(batch, speed, loss, "pixel8")


def test_best_at_speed_takes_the_fastest_of_the_tied_best():
    speed = np.array([10.0, 20.0, 40.0, 80.0])
    loss = np.array([2.50, 2.52, 2.70, 3.00])
    assert best_at_speed(speed, loss, 0.0, 15.0) == 1  # the best of those >= 15 tok/s
    assert best_at_speed(speed, loss, 0.05, 5.0) == 1  # 2.52 ties 2.50 within 0.05: the faster wins
    assert best_at_speed(speed, loss, 0.05, 90.0) is None


def test_speed_levels_are_round_and_inside_the_front():
    assert speed_levels(np.array([13.0, 60.0, 230.0]), [0, 1, 2]) == [20.0, 50.0, 100.0, 200.0]
    assert speed_levels(np.array([1.0, 1e5]), [0, 1], most=3) == [1.0, 500.0, 1e5]  # 16 levels, 3 kept evenly


def test_fixed_speed_picks_are_feasible_shapes_fast_enough():
    t = table()
    band = 0.02
    for pick in fixed_speed_picks(t, band):
        assert pick["decode_tokens_per_s"] >= pick["at_least_tokens_per_s"]
        fast = t.loss[t.speed >= pick["at_least_tokens_per_s"]]
        assert pick["predicted_loss"] <= fast.min() + band + 1e-12
        assert ArchConfig.from_dict(pick["arch"]).arch_id == pick["arch_id"]


def test_knee_stability_counts_the_bootstrap_fits_that_keep_the_knee():
    t = table()
    q = load_quality_model("1T")
    knee = knee_of(t.speed, t.loss, q.band)
    s = knee_stability(t, q, knee)
    assert s["fits"] == len(q.bootstrap) and 0.0 <= s["same_shape"] <= 1.0
    assert s["depths"]["min"] <= s["depths"]["median"] <= s["depths"]["max"]
    assert knee_stability(t, replace(q, bootstrap=()), knee) == {"fits": 0}


def test_landmark_matches_take_the_fastest_shape_no_worse_than_the_landmark():
    t = table()
    marks = [{"name": "A", "predicted_loss": float(np.median(t.loss)), "decode_tokens_per_s": 10.0},
             {"name": "B", "predicted_loss": float(t.loss.min()) - 1.0, "decode_tokens_per_s": 10.0}]
    a, b = landmark_matches(marks, t)
    good = t.loss <= marks[0]["predicted_loss"]
    assert a["fastest_match"]["decode_tokens_per_s"] == pytest.approx(t.speed[good].max())
    assert a["fastest_match"]["speedup"] == pytest.approx(t.speed[good].max() / 10.0)
    assert b["fastest_match"] is None


def test_trade_words_name_both_sides():
    knee = {"arch_id": "k", "shape": "K", "predicted_loss": 2.70, "decode_tokens_per_s": 60.0}
    best = {"arch_id": "b", "shape": "B", "predicted_loss": 2.55, "decode_tokens_per_s": 25.0}
    fast = {"arch_id": "f", "shape": "F", "predicted_loss": 3.00, "decode_tokens_per_s": 200.0}
    text = trade_words(knee, best, fast, 0.047)
    assert "0.150 nats worse than the best-quality B and 2.4x faster" in text
    assert "0.300 nats better than the fastest F, at 3.3x less speed" in text
    assert trade_words(knee, knee, knee, 0.05) == "it is both the fastest and the best-quality shape"


def score(arch_id, bpb, loss, state="COMPLETE", trial=0):
    return ProxyScore(arch_id, arch_id.upper(), state, bpb, loss, 50.0, trial)


def test_law_check_flags_resolved_disagreements_and_failures():
    scores = [score("a", 3.30, 2.60), score("b", 3.40, 2.70), score("c", 3.20, 2.80, trial=2),
              replace(score("d", None, 2.65, state="FAIL"), reason="diverged")]
    check = law_check(scores, noise=0.02, band=0.047)
    assert check["trained"] == 3 and check["kendall_tau"] == pytest.approx(-1 / 3)
    assert any(f.startswith("A vs C") for f in check["flags"])  # law: A better by 0.2; proxy: C by 0.1 > 2x0.02
    assert not any(f.startswith("A vs B") for f in check["flags"])  # both agree
    assert any("D failed to train on your text: diverged" in f for f in check["flags"])
    assert law_check(scores, noise=None, band=0.047)["flags"] == ["D failed to train on your text: diverged"]


def test_the_proxy_moves_a_pick_only_inside_the_band_and_beyond_twice_the_noise():
    noise, band = 0.02, 0.05
    knee = score("k", 3.40, 2.70)
    inside_resolved = score("y", 3.40 - PROXY_RESOLVES * noise - 0.01, 2.72, trial=5)
    inside_unresolved = score("u", 3.40 - PROXY_RESOLVES * noise + 0.01, 2.71)
    outside = score("o", 3.00, 2.80)  # much better proxy, but the law resolves it as worse: no move
    moved, why = proxy_move("k", [knee, inside_unresolved, outside], noise, band)
    assert moved is None and why == ""
    moved, why = proxy_move("k", [knee, inside_resolved, inside_unresolved, outside], noise, band)
    assert moved.arch_id == "y" and "moved by the proxy check" in why
    assert proxy_move("k", [knee, inside_resolved], None, band) == (None, "")  # no noise measured: no move
    assert proxy_move("k", [replace(knee, state="PRUNED"), inside_resolved], noise, band) == (None, "")


def test_select_shapes_trains_the_picks_first_then_spreads_along_speed():
    t = table(60)
    c = Candidates.of(t.batch, t.speed, -t.loss)
    first = (7, 3)
    chosen = select_shapes(c, 12, slack=0.05, first=first)
    assert len(chosen) == 12 and set(first) <= set(chosen) and len(set(chosen)) == 12
    assert chosen == sorted(chosen, key=lambda i: (-t.speed[i], i))  # fastest first
    near = near_front(c, 0.05)
    assert all(near[i] or i in first for i in chosen)
    assert select_shapes(c, 12, slack=0.05, first=first) == chosen  # deterministic
    by_params = select_shapes(Candidates.of(t.batch, t.speed), 6, slack=PARAMS_SLACK)
    assert len(by_params) == 6 and select_shapes(c, 0) == []


def test_a_moved_pick_carries_the_speed_of_the_shape_it_moved_to():
    from types import SimpleNamespace

    from nas.search.recommendation import _proxy_check

    noise, band = 0.02, 0.05
    knee, better = score("k", 3.40, 2.70), replace(score("y", 3.30, 2.72, trial=5), decode_tokens_per_s=31.0)
    pick = {"shape": "K", "arch_id": "k", "trial": 1, "predicted_loss": 2.70, "decode_tokens_per_s": 50.0,
            "decode_error": None, "decode_text": "50.0 tokens/s decode on pixel8",
            "export": "nas export --study s --trial 1 --format hf --out s-knee"}
    rec = {"target": "pixel8", "picks": {"knee": dict(pick), "best-quality": {**pick, "arch_id": "none"}}}
    result = SimpleNamespace(study_name="s", proxy=SimpleNamespace(noise=noise, study_name="s:proxy"))
    _proxy_check(rec, result, [knee, better], band)
    moved = rec["picks"]["knee"]
    assert moved["shape"] == "Y" and moved["moved_from"] == "K"
    assert moved["decode_tokens_per_s"] == 31.0 and moved["decode_text"] == "~31 tokens/s decode on pixel8"
    assert moved["export"] == "nas export --study s:proxy --trial 5 --format hf --out s-knee"
