"""Analytic roofline model, host probes, and the latency-model registry's choices and labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import NasUserError
from nas.latency import analytic, probes, registry
from nas.targets import list_targets, load_target

FAKE_PROBES = {"schema": 1, "cpu_model": "test", "threads": 2, "ort_version": "x",
               "mem_bandwidth_bytes_per_s": 20e9, "matmul_flops_per_s": 100e9}


@pytest.fixture
def fake_probes(monkeypatch):
    """Skip the real probes (seconds) where only the registry's choices are tested."""
    calls = []

    def fake(threads, refresh=False, quick=False):
        calls.append(threads)
        return {**FAKE_PROBES, "threads": threads}

    monkeypatch.setattr(probes, "host_probes", fake)
    return calls


def _params(**kw):
    base = dict(peak_flops_per_s=100e9, bandwidth_bytes_per_s=20e9, compute_efficiency=0.5, bandwidth_efficiency=0.7,
                per_layer_overhead_ms=0.1, per_run_overhead_ms=0.2)
    return analytic.RooflineParams(**{**base, **kw})


def _arch(**kw):
    base = dict(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2, intermediate_size=1536, vocab_size=8192)
    return ArchConfig(**{**base, **kw})


def test_roofline_is_max_of_compute_and_memory_plus_overheads():
    model = analytic.RooflineModel(_params(), "fp32")
    arch = _arch()
    batch = ArchBatch.from_configs([arch])
    t = model.phase_terms(batch, "prefill", 256)
    assert t["flops"][0] == arch.prefill_flops(256)
    assert t["compute_ms"][0] == pytest.approx(arch.prefill_flops(256) / (100e9 * 0.5) * 1e3)
    assert t["overhead_ms"][0] == pytest.approx(8 * 0.1 + 0.2)
    pre = model.predict_phase(batch, "prefill", 256)[0]
    assert pre == pytest.approx(max(t["compute_ms"][0], t["memory_ms"][0]) + t["overhead_ms"][0])
    d = model.phase_terms(batch, "decode", 1024)
    # decode of one token is memory-bound: weights + the cache (read, and copied into `present`)
    assert d["memory_ms"][0] > d["compute_ms"][0]
    assert d["bytes"][0] == arch.weight_bytes("fp32") + arch.kv_cache_bytes(1024, 4)  # tied: all streamed; KV read once
    untied = ArchBatch.from_configs([arch.replace(tie_embeddings=False)])
    assert model.phase_terms(untied, "decode", 1024)["bytes"][0] == d["bytes"][0]  # the embedding is gathered


def test_roofline_monotonic_in_flops_and_bytes():
    model = analytic.RooflineModel(_params(), "fp32")
    small, wider, deeper = _arch(), _arch(intermediate_size=3072), _arch(num_layers=16)
    batch = ArchBatch.from_configs([small, wider, deeper])
    for phase, length in (("prefill", 512), ("decode", 2048)):
        ms = model.predict_phase(batch, phase, length)
        assert ms[1] > ms[0] and ms[2] > ms[0]
        assert np.all(model.predict_phase(batch, phase, length * 2) >= ms)
    # fewer bytes per weight -> faster decode (memory-bound), same prefill compute
    int4 = analytic.RooflineModel(_params(), "int4").predict_phase(batch, "decode", 2048)
    assert np.all(int4 < model.predict_phase(batch, "decode", 2048))
    # more bandwidth -> faster decode; more FLOP/s -> faster compute-bound prefill
    fast_mem = analytic.RooflineModel(_params(bandwidth_bytes_per_s=40e9), "fp32")
    assert np.all(fast_mem.predict_phase(batch, "decode", 2048) < model.predict_phase(batch, "decode", 2048))
    fast_alu = analytic.RooflineModel(_params(peak_flops_per_s=400e9), "fp32")
    assert np.all(fast_alu.predict_phase(batch, "prefill", 512) < model.predict_phase(batch, "prefill", 512))


def test_bad_params_refused():
    with pytest.raises(NasUserError, match="peak_flops_per_s"):
        _params(peak_flops_per_s=0)
    with pytest.raises(NasUserError, match="per_layer_overhead_ms"):
        _params(per_layer_overhead_ms=-1)
    with pytest.raises(NasUserError, match="unknown parameter"):
        analytic.params_from_probes(FAKE_PROBES, {"bogus": 1})


DESCRIBED = [t for t in list_targets() if not t.measured_here]


@pytest.mark.parametrize("target", DESCRIBED, ids=[t.name for t in DESCRIBED])
def test_every_described_target_predicts_analytically_with_its_label(target):
    model = registry.load_latency_model(target)
    fit = registry.published_fit(target, target.default_precision)  # latency_models/published_fit.json
    expected = fit["label"] if fit else registry.ANALYTIC
    assert model.source == expected == registry.latency_source(target)
    assert expected == "analytic, uncalibrated" or expected.startswith("analytic, fitted to ")
    batch = ArchBatch.from_configs([_arch(), _arch(num_layers=24)])
    for precision in target.precisions:
        out = registry.load_latency_model(target, precision).predict(batch, 512, 2048)
        for value in out.values():
            assert value.dtype == np.float64 and np.all(np.isfinite(value)) and np.all(value > 0)
        assert np.all(out["prefill_ms"][1] > out["prefill_ms"][0])
    assert "spec sheet" in model.note and model.describe()["roofline"]["inputs"].startswith("spec sheet")


def test_missing_spec_numbers_are_a_user_error():
    target = load_target("pixel8")
    from dataclasses import replace

    bare = replace(target, peak_flops={})
    with pytest.raises(NasUserError, match="no peak_flops.int4"):
        analytic.params_from_specs(bare, "int4")


def test_host_without_predictor_uses_probes_labelled_uncalibrated(fake_probes):
    model = registry.load_latency_model("host-cpu")
    assert model.source == registry.ANALYTIC
    assert "nas calibrate --target host-cpu" in model.note
    assert model.describe()["roofline"]["inputs"] == "host probes"
    assert fake_probes == [load_target("host-cpu").threads]
    out = model.predict(ArchBatch.from_configs([_arch()]), 128, 512)
    assert out["prefill_ms"][0] > 0 and out["decode_ms"][0] > 0


def test_registry_refuses_bad_precision_provider_and_lengths(fake_probes):
    with pytest.raises(NasUserError, match="does not run precision 'fp16'; it runs: fp32, int8, int4"):
        registry.load_latency_model("host-cpu", "fp16")
    with pytest.raises(NasUserError, match="no execution provider"):
        registry.load_latency_model("pixel8", provider="CUDAExecutionProvider")
    model = registry.load_latency_model("pixel8")
    with pytest.raises(NasUserError, match="prompt_len must be an integer from 1 to"):
        model.predict(ArchBatch.from_configs([_arch()]), 0, 10)


def test_probes_measure_positive_rates_and_are_cached(nas_home):
    first = probes.host_probes(1, quick=True)
    assert first["mem_bandwidth_bytes_per_s"] > 1e8 and first["matmul_flops_per_s"] > 1e8
    assert "onnxruntime MatMul [1 x" in first["bandwidth_method"]
    assert first["schema"] == probes.PROBE_SCHEMA and first["per_layer_overhead_ms"] > 0
    # attention runs far below the MatMul rate (the reason it is probed at all)
    assert 1e8 < first["decode_attention_flops_per_s"] < first["matmul_flops_per_s"]
    assert first["per_run_overhead_ms"] >= 0
    path = probes.probe_path(1)
    assert path.is_file() and str(path).startswith(str(nas_home))
    cached = json.loads(path.read_text())
    cached["matmul_flops_per_s"] = 123.0
    path.write_text(json.dumps(cached))
    assert probes.host_probes(1, quick=True)["matmul_flops_per_s"] == 123.0  # read back, not re-measured
    # a cache for another CPU is measured again
    cached["cpu_model"] = "another cpu"
    path.write_text(json.dumps(cached))
    assert probes.host_probes(1, quick=True)["matmul_flops_per_s"] != 123.0


def test_probed_overheads_feed_the_host_roofline_and_overrides_win():
    probed = {**FAKE_PROBES, "per_layer_overhead_ms": 0.02, "per_run_overhead_ms": 0.01}
    params = analytic.params_from_probes(probed)
    assert (params.per_layer_overhead_ms, params.per_run_overhead_ms) == (0.02, 0.01)
    assert params.compute_efficiency == params.bandwidth_efficiency == analytic.PROBE_EFFICIENCY
    assert analytic.params_from_probes(probed, {"per_layer_overhead_ms": 0.5}).per_layer_overhead_ms == 0.5
    # schema-1 probes (no dispatch probe): the CPU defaults
    default = analytic.DEFAULTS["cpu"]["per_layer_overhead_ms"]
    assert analytic.params_from_probes(FAKE_PROBES).per_layer_overhead_ms == default


def test_measured_attention_rates_make_attention_a_roofline_of_its_own():
    """With attention rates (the host probes measure them), each phase is the projections' roofline plus
    attention's own, max(attention FLOPs / rate, cache bytes / bandwidth): MQA no longer gets attention for
    free at long contexts, and MHA's attention is still bounded below by reading its cache."""
    mqa, mha = _arch(num_kv_heads=1), _arch(num_kv_heads=8)
    batch = ArchBatch.from_configs([mqa, mha])
    plain = analytic.RooflineModel(_params(), "fp32")
    rate = 5e9
    model = analytic.RooflineModel(_params(attention_flops_per_s=rate, prefill_attention_flops_per_s=2 * rate), "fp32")
    d = model.phase_terms(batch, "decode", 2048)
    attention = np.asarray(batch.decode_attention_flops(2048), dtype=float)
    kv_ms = np.asarray(batch.kv_cache_bytes(2048, 4), dtype=float) / (20e9 * 0.7) * 1e3
    assert d["attention_ms"] == pytest.approx(np.maximum(attention / rate * 1e3, kv_ms))
    assert d["flops"] == pytest.approx(np.asarray(batch.decode_flops(2048), dtype=float) - attention)
    assert d["bytes"] == pytest.approx(np.asarray(batch.weight_bytes("fp32"), dtype=float))
    decode = model.predict_phase(batch, "decode", 2048)
    assert decode == pytest.approx(np.maximum(d["compute_ms"], d["memory_ms"]) + d["attention_ms"] + d["overhead_ms"])
    assert decode[0] > plain.predict_phase(batch, "decode", 2048)[0]  # MQA attention costs its arithmetic
    p = model.phase_terms(batch, "prefill", 512)
    assert p["attention_ms"][0] == pytest.approx(float(batch.prefill_attention_flops(512)[0]) / (2 * rate) * 1e3)
    # without rates (every spec-sheet device): attention is compute at the matmul rate, as before
    assert not plain.phase_terms(batch, "decode", 2048)["attention_ms"].any()
    with pytest.raises(NasUserError, match="attention_flops_per_s must be a positive number"):
        _params(attention_flops_per_s=0.0)
    probed = analytic.params_from_probes({**FAKE_PROBES, "decode_attention_flops_per_s": 2e10,
                                          "prefill_attention_flops_per_s": None})
    assert (probed.attention_flops_per_s, probed.prefill_attention_flops_per_s) == (2e10, None)
