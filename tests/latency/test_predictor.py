"""Fitted latency predictor: fitting, accuracy functions, saving and checked loading."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import NasUserError
from nas.latency import predictor
from nas.latency.features import DEFAULT_FEATURES, PHASES, feature_matrix
from nas.latency.provenance import GRAPH_BUILDER_VERSION

TRUE = {
    "prefill": {"one": 0.4, "layers": 0.05, "linear_gflop": 25.0, "score_melems": 0.02, "streamed_weight_mb": 0.003},
    "decode": {"one": 0.2, "layers": 0.03, "layer_weight_mb": 0.09, "lm_head_mb": 0.03, "kv_mb": 0.12},
}


def _configs(n: int, seed: int = 0) -> list[ArchConfig]:
    rng = np.random.default_rng(seed)
    out: dict[str, ArchConfig] = {}
    while len(out) < n:
        hidden = int(rng.choice([128, 192, 256, 384, 512]))
        heads = hidden // 64
        kv = int(rng.choice([k for k in (1, 2, heads) if heads % k == 0]))
        c = ArchConfig(hidden_size=hidden, num_layers=int(rng.integers(2, 16)), num_heads=heads, num_kv_heads=kv,
                       intermediate_size=int(hidden * rng.choice([2, 3, 4])), vocab_size=int(rng.choice([4096, 8192])),
                       ffn_kind=str(rng.choice(["swiglu", "gelu"])), tie_embeddings=bool(rng.random() < 0.5))
        out[c.arch_id] = c
    return list(out.values())


def synthetic_rows(configs, coefs=TRUE, target="host-cpu", noise=0.0, seed=0, precision="fp32"):
    """Rows whose median latency is exactly (or noisily) the given linear model of the features."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in configs:
        batch = ArchBatch.from_configs([c])
        for phase, lengths in (("prefill", (32, 64, 128)), ("decode", (64, 256))):
            coef = np.array([coefs[phase].get(n, 0.0) for n in DEFAULT_FEATURES[phase]])
            for length in lengths:
                ms = float((feature_matrix(batch, phase, length, precision) @ coef)[0])
                ms *= 1 + noise * rng.standard_normal()
                rows.append({"target": target, "arch": c.to_dict(), "arch_id": c.arch_id, "phase": phase,
                             "prompt_len": length if phase == "prefill" else None,
                             "context_len": length if phase == "decode" else None, "precision": precision,
                             "provider": "CPUExecutionProvider", "threads": 2, "status": "ok",
                             "latency_ms": {"median": ms, "cv": 0.01},
                             "env": {"ort_version": "1.0", "cpu_model": "x", "graph_builder": GRAPH_BUILDER_VERSION}})
    return rows


@pytest.fixture(scope="module")
def fitted():
    configs = _configs(40)
    rows = synthetic_rows(configs)
    fit_ids, held_ids = predictor.split_arch_ids([c.arch_id for c in configs], 12, seed=1)
    pred = predictor.fit_predictor(rows, target="host-cpu", provider="CPUExecutionProvider", precision="fp32",
                           ort_version="1.0", holdout_ids=held_ids)
    return pred, rows, fit_ids, held_ids


# ----- accuracy functions on hand examples -----

def test_mape_and_within_by_hand():
    measured = [100.0, 200.0, 50.0, 10.0]
    predicted = [104.0, 180.0, 50.0, 12.0]  # errors 4%, 10%, 0%, 20%
    assert predictor.mape(predicted, measured) == pytest.approx((4 + 10 + 0 + 20) / 4)
    assert predictor.within(predicted, measured, 0.05) == pytest.approx(50.0)
    assert predictor.within(predicted, measured, 0.10) == pytest.approx(75.0)


def test_kendall_tau_by_hand():
    assert predictor.kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert predictor.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped neighbour pair: 5 concordant, 1 discordant of 6
    assert predictor.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # tau-b with one tie in each: S = 4, 6 pairs, 1 tie each -> 4 / sqrt(5 * 5)
    assert predictor.kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert np.isnan(predictor.kendall_tau([1], [1]))
    assert np.isnan(predictor.kendall_tau([2, 2, 2], [1, 2, 3]))


def test_kendall_tau_matches_pair_count_and_blocks():
    rng = np.random.default_rng(3)
    x, y = rng.random(60), rng.random(60)
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(60), 2))
    assert predictor.kendall_tau(x, y) == pytest.approx(s / (60 * 59 / 2))
    big = rng.random(3000)
    noisy = big + 0.1 * rng.random(3000)
    assert 0.5 < predictor.kendall_tau(big, noisy) <= 1.0  # exercises the row-block loop


def test_accuracy_ranks_within_each_length():
    # Within each length the ranking is perfect, pooled it is not.
    predicted = [1, 2, 3, 10, 20, 30]
    measured = [1, 2, 30, 10, 20, 31]
    acc = predictor.accuracy(predicted, measured, lengths=[1, 1, 1, 2, 2, 2])
    assert acc["kendall_tau"] == pytest.approx(1.0)
    assert acc["kendall_tau_pooled"] < 1.0
    assert acc["n"] == 6


# ----- fitting -----

def test_fit_recovers_known_coefficients(fitted):
    pred, *_ = fitted
    for phase, model in pred.phases.items():
        want = np.array([TRUE[phase].get(n, 0.0) for n in model.features])
        assert np.allclose(model.coef, want, rtol=1e-6, atol=1e-9), (phase, model.coef, want)
        ev = pred.evaluation["phases"][phase]
        assert ev["predictor"]["mape"] < 1e-6
        assert ev["predictor"]["within_5"] == 100.0
        assert ev["predictor"]["kendall_tau"] == pytest.approx(1.0)


def test_noisy_fit_is_accurate_and_beats_params_baseline():
    configs = _configs(50, seed=5)
    rows = synthetic_rows(configs, noise=0.02, seed=2)
    _, held = predictor.split_arch_ids([c.arch_id for c in configs], 20, seed=0)
    pred = predictor.fit_predictor(rows, target="t", provider="CPUExecutionProvider", precision="fp32", ort_version="1",
                           holdout_ids=held)
    for phase in PHASES:
        ev = pred.evaluation["phases"][phase]
        assert ev["predictor"]["mape"] < 4
        assert ev["predictor"]["within_10"] > 95
        assert ev["baselines"]["params_only"]["mape"] > ev["predictor"]["mape"]
        assert set(ev["baselines"]) == {"flops_only", "params_only"}


def test_split_is_by_architecture_and_reproducible(fitted):
    pred, rows, fit_ids, held_ids = fitted
    assert not set(fit_ids) & set(held_ids) and len(held_ids) == 12
    assert predictor.split_arch_ids([r["arch_id"] for r in rows], 12, seed=1) == (fit_ids, held_ids)
    ev = pred.evaluation["phases"]["prefill"]
    assert set(ev["arch_ids"]) == set(held_ids)  # every held-out point is from a held-out arch
    assert pred.training["n_configs"] == len(fit_ids)
    assert len(ev["predicted_ms"]) == len(ev["measured_ms"]) == len(ev["prompt_len"]) == 12 * 3
    with pytest.raises(NasUserError, match="leaves no configs"):
        predictor.split_arch_ids(["a", "b"], 2)


def test_too_few_points_is_a_user_error():
    rows = synthetic_rows(_configs(1))
    with pytest.raises(NasUserError, match="cannot fit"):
        predictor.fit_predictor(rows, target="t", provider="p", precision="fp32", ort_version="1")


# ----- predicting -----

def test_predictions_positive_finite_over_a_large_batch(fitted):
    """100k configs at once (their speed is benchmarks/bench_predict_throughput.py's)."""
    pred, *_ = fitted
    configs = _configs(50, seed=9)
    batch = ArchBatch.from_configs(configs * 2000)
    out = pred.predict(batch, 512, 2048)
    for key in ("prefill_ms", "decode_ms"):
        assert out[key].shape == (100_000,) and out[key].dtype == np.float64
        assert np.all(np.isfinite(out[key])) and np.all(out[key] > 0)


def test_never_returns_zero_or_nan():
    for bad in ([1.0, 0.0], [1.0, np.nan], [np.inf], [-1.0]):
        with pytest.raises(NasUserError, match="refusing"):
            predictor.check_latencies(np.array(bad), "x")


def test_save_load_roundtrip(fitted, tmp_path):
    pred, *_ = fitted
    path = pred.save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    for key in ("target", "provider", "precision", "ort_version", "nas_version", "phases", "training", "evaluation"):
        assert key in data
    assert data["phases"]["prefill"]["units"]["linear_gflop"] == "1e9 FLOP"
    loaded = predictor.load_predictor(path, target="host-cpu", provider="CPUExecutionProvider", precision="fp32",
                              ort_version="1.0")
    batch = ArchBatch.from_configs(_configs(5, seed=4))
    for key, value in pred.predict(batch, 128, 256).items():
        assert np.array_equal(value, loaded.predict(batch, 128, 256)[key])


@pytest.mark.parametrize("expect, match", [
    ({"target": "pixel8"}, "target 'host-cpu', not 'pixel8'"),
    ({"provider": "XnnpackExecutionProvider"}, "execution provider"),
    ({"precision": "int4"}, "precision 'fp32', not 'int4'"),
    ({"ort_version": "9.9.9"}, "ONNX Runtime version '1.0', not '9.9.9'"),
], ids=["target", "provider", "precision", "ort"])
def test_metadata_mismatch_is_one_line_error(fitted, tmp_path, expect, match):
    pred, *_ = fitted
    path = pred.save(tmp_path / "p.json")
    with pytest.raises(NasUserError, match=match) as info:
        predictor.load_predictor(path, **expect)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("ort_version"), "missing field"),
    (lambda d: d.update(format="other"), "not a nas latency predictor"),
    (lambda d: d.update(schema=99), "schema"),
    (lambda d: d["phases"].pop("decode"), "must have phases"),
    (lambda d: d["phases"]["decode"]["coef_ms_per_unit"].__setitem__(0, -1.0), "non-negative"),
    (lambda d: d["phases"]["decode"].update(coef_ms_per_unit=[0.0] * 8), "not all zero"),
    (lambda d: d["phases"]["decode"]["features"].__setitem__(0, "bogus"), "unknown feature"),
], ids=["missing", "format", "schema", "phase", "negative", "zero", "feature"])
def test_malformed_predictor_is_refused(fitted, tmp_path, mutate, match):
    pred, *_ = fitted
    data = pred.to_dict()
    data = json.loads(json.dumps(data))
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(NasUserError, match=match):
        predictor.load_predictor(path)


@pytest.mark.parametrize("text, match", [("{not json", "malformed predictor JSON"), (None, "cannot read")])
def test_unreadable_predictor(tmp_path, text, match):
    path = tmp_path / "predictor.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(NasUserError, match=match):
        predictor.load_predictor(path)


def test_features_vectorised_match_per_config():
    configs = _configs(6, seed=11)
    batch = ArchBatch.from_configs(configs)
    X = feature_matrix(batch, "prefill", 128, "fp32")
    names = DEFAULT_FEATURES["prefill"]
    for i, c in enumerate(configs):
        assert X[i, names.index("linear_gflop")] * 1e9 + X[i, names.index("attention_gflop")] * 1e9 + \
            X[i, names.index("lm_head_gflop")] * 1e9 == pytest.approx(c.prefill_flops(128))
        assert X[i, names.index("streamed_weight_mb")] * 1e6 == pytest.approx(
            c.replace(tie_embeddings=True).weight_bytes("fp32"))
        if not c.tie_embeddings:  # the input embedding is gathered, not streamed
            assert X[i, names.index("streamed_weight_mb")] * 1e6 < c.weight_bytes("fp32")
    Xd = feature_matrix(batch, "decode", np.full(6, 300), "fp32")
    kv = DEFAULT_FEATURES["decode"].index("kv_mb")
    assert Xd[0, kv] * 1e6 == pytest.approx(configs[0].kv_cache_bytes(300, 4))
    with pytest.raises(ValueError, match="unknown"):
        feature_matrix(batch, "decode", 1, "fp32", ["nope"])


def test_robust_fit_shrugs_off_a_slowed_down_measurement():
    configs = _configs(30, seed=7)
    rows = synthetic_rows(configs)
    for i in (3, 17, 40):  # three measurements slowed by another process
        rows[i]["latency_ms"]["median"] *= 1.6
    data = predictor.phase_data(rows, "prefill")
    names = ("one", "layers", "linear_gflop", "streamed_weight_mb", "score_melems")
    X = feature_matrix(data.batch, "prefill", data.lengths, "fp32", names)
    truth = X @ np.array([TRUE["prefill"].get(n, 0.0) for n in names])
    robust = X @ predictor.fit_relative_nnls(X, data.measured_ms)
    plain = X @ predictor.fit_relative_nnls(X, data.measured_ms, robust=False)
    assert predictor.mape(robust, truth) < predictor.mape(plain, truth) / 3


def test_feature_selection_is_recorded_and_can_be_fixed(fitted):
    pred, rows, _, held = fitted
    sel = pred.training["prefill"]["feature_selection"]
    assert "cross-validation" in sel["method"] and len(sel["cv_mape"]) == len(predictor.CANDIDATE_FEATURES["prefill"])
    fixed = predictor.fit_predictor(rows, target="t", provider="p", precision="fp32", ort_version="1", holdout_ids=held,
                            feature_sets={"prefill": ("one", "linear_gflop"), "decode": ("one", "streamed_weight_mb")})
    assert fixed.phases["prefill"].features == ("one", "linear_gflop")
    assert fixed.training["decode"]["feature_selection"]["method"] == "fixed"


# ----- identifiability: the design matrix's rank -----

def test_rank_check_names_each_dependent_column_and_its_combination():
    configs = _configs(30, seed=3)
    batch = ArchBatch.from_configs(configs)
    names = ("one", "layers", "streamed_weight_mb", "layer_weight_mb", "lm_head_mb", "kv_mb", "lm_head_gflop")
    X = feature_matrix(batch, "decode", 256, "fp32", names)
    kept, dropped = predictor.independent_columns(X, names)
    assert kept == ("one", "layers", "streamed_weight_mb", "layer_weight_mb", "kv_mb")
    assert dropped["lm_head_mb"] == "it equals 1 x streamed_weight_mb + -1 x layer_weight_mb on these measurements"
    assert "lm_head_gflop" in dropped and np.linalg.matrix_rank(X[:, [0, 1, 2, 3, 5]]) == 5
    # one head_dim and fixed per-config lengths: attention FLOPs and score elements are proportional
    same_hd = [c for c in configs if c.head_dim == 64]
    X = feature_matrix(ArchBatch.from_configs(same_hd), "decode", 256, "fp32", ("one", "attention_gflop",
                                                                                   "score_kelems"))
    kept, dropped = predictor.independent_columns(X, ("one", "attention_gflop", "score_kelems"))
    assert kept == ("one", "attention_gflop") and list(dropped) == ["score_kelems"]


def test_fixed_rank_deficient_features_are_refused_and_candidates_drop_the_column():
    rows = synthetic_rows(_configs(24, seed=4))
    with pytest.raises(NasUserError, match=r"decode: feature 'lm_head_mb' cannot be fitted: it equals 1 x "
                                           r"streamed_weight_mb \+ -1 x layer_weight_mb .* rank 4 of 5"):
        predictor.fit_predictor(rows, target="t", provider="p", precision="fp32", ort_version="1",
                        feature_sets={"decode": ("one", "streamed_weight_mb", "layer_weight_mb", "lm_head_mb",
                                                 "kv_mb")})
    # the largest decode candidate carries linear_gflop, which on decode (one token) is 2 FLOPs per layer weight,
    # and attention_gflop, which at one head_dim (all of these configs have 64) is proportional to score_kelems
    pred = predictor.fit_predictor(rows, target="t", provider="p", precision="fp32", ort_version="1")
    dropped = pred.training["decode"]["feature_selection"]["dropped_columns"]
    assert set(dropped) == {"linear_gflop", "attention_gflop"} and "layer_weight_mb" in dropped["linear_gflop"]
    assert "score_kelems" in dropped["attention_gflop"]
    for phase, model in pred.phases.items():
        data = predictor.phase_data(rows, phase)
        X = feature_matrix(data.batch, phase, data.lengths, "fp32", model.features)
        assert predictor.independent_columns(X, model.features, data.measured_ms)[1] == {}


def test_hostcal_space_and_default_lengths_identify_every_candidate_feature():
    from nas.latency.measure import DEFAULT_CONTEXT_LENS, DEFAULT_PROMPT_LENS
    from nas.spaces import load_space

    configs = load_space("hostcal").sample(64, seed=0)
    inherent = {"linear_gflop"}  # decode: one token's projection FLOPs are 2 per layer weight, always
    for phase, lengths in (("prefill", DEFAULT_PROMPT_LENS), ("decode", DEFAULT_CONTEXT_LENS)):
        rows = [c for c in configs for _ in lengths]
        L = np.array([n for _ in configs for n in lengths])
        for cand in predictor.CANDIDATE_FEATURES[phase]:
            X = feature_matrix(ArchBatch.from_configs(rows), phase, L, "fp32", cand)
            dropped = predictor.independent_columns(X, cand)[1]
            assert set(dropped) <= (inherent if phase == "decode" else set()), (phase, cand, dropped)
