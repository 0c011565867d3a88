"""`nas predict`: text and --json output, several targets, source labels, bad input."""

from __future__ import annotations

import json

import pytest

from nas.cli import main
from nas.latency import probes

ARCH = ["--hidden-size", "576", "--layers", "30", "--heads", "9", "--kv-heads", "3", "--ffn", "1536",
        "--vocab-size", "49152"]


@pytest.fixture(autouse=True)
def fake_probes(monkeypatch):
    monkeypatch.setattr(probes, "host_probes", lambda threads, refresh=False, quick=False: {
        "mem_bandwidth_bytes_per_s": 20e9, "matmul_flops_per_s": 100e9, "threads": threads})


def test_text_output_names_source_throughput_and_memory(capsys):
    assert main(["predict", "--target", "pixel8", *ARCH]) == 0
    out = capsys.readouterr().out
    assert "L30 d576 f1536 gqa3" in out and "134.5M params" in out
    assert "latency: analytic, fitted to " in out and "published measurements" in out
    assert "leave-one-model-out error decode" in out
    assert "prefill" in out and "decode" in out and out.count("tokens/s") == 2
    assert "weights" in out and "KV cache" in out and "working" in out and "budget" in out
    assert "nas calibrate --target pixel8 --measurements" in out


def test_json_output_several_targets(capsys):
    assert main(["predict", "--target", "pixel8", "--target", "host-cpu", "--target", "pixel8", *ARCH,
                 "--prompt-len", "256", "--context-len", "1024", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["targets"]) == ["pixel8", "host-cpu"]
    assert data["prompt_len"] == 256 and data["context_len"] == 1024 and data["num_params"] == 134515008
    from nas.core.arch import ArchConfig

    arch = ArchConfig.from_dict(data["arch"])
    for name, r in data["targets"].items():
        assert r["latency_source"] == ("analytic, uncalibrated" if name == "host-cpu" else
                                       "analytic, fitted to 4 published measurements "
                                       "(cactus (llama.cpp/GGML), onnxruntime-genai)")
        assert r["prefill_ms"] > 0 and r["decode_ms"] > 0
        assert r["prefill_tokens_per_s"] == pytest.approx(256 * 1000 / r["prefill_ms"])
        assert r["decode_tokens_per_s"] == pytest.approx(1000 / r["decode_ms"])
        mem = r["memory_bytes"]
        assert mem["total"] == arch.memory_bytes(r["precision"], 256, 1024)
        assert mem["weights"] == arch.weight_bytes(r["precision"])
        assert mem["kv_cache"] == arch.kv_cache_bytes(1024, 4)  # int4 and fp32 graphs keep an fp32 cache
        assert mem["weights"] + mem["kv_cache"] + mem["working"] == mem["total"]
        assert r["fits_memory_budget"] is True
    assert data["targets"]["pixel8"]["precision"] == "int4" and data["targets"]["host-cpu"]["precision"] == "fp32"
    assert data["targets"]["host-cpu"]["model"]["roofline"]["inputs"] == "host probes"
    fit = data["targets"]["pixel8"]["model"]["published_fit"]
    roofline = data["targets"]["pixel8"]["model"]["roofline"]
    assert fit["n_rows"] == 4 and all(roofline[k] == v for k, v in fit["params"].items())
    assert roofline["inputs"] == "spec sheet + published fit"


def test_a_head_dim_the_deployed_graph_refuses_is_predicted_with_a_warning(capsys):
    shape = ["--hidden-size", "1152", "--layers", "20", "--heads", "16", "--ffn", "3072"]  # head_dim 72
    assert main(["predict", "--target", "pixel8", *shape, "--json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["targets"]["pixel8"]["warnings"]
    assert any("a head_dim not a multiple of 16" in w and "cannot be built" in w for w in warnings)
    assert main(["predict", "--target", "pixel8", *ARCH, "--json"]) == 0  # head_dim 64
    assert json.loads(capsys.readouterr().out)["targets"]["pixel8"]["warnings"] == []


def test_precision_flag_and_config_file(tmp_path, capsys):
    from nas.core.arch import ArchConfig

    cfg = tmp_path / "arch.json"
    cfg.write_text(ArchConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=768).to_json())
    assert main(["predict", "--target", "pixel8", str(cfg), "--precision", "fp16", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["targets"]["pixel8"]
    assert r["precision"] == "fp16"


@pytest.mark.parametrize("argv, match", [
    (["--target", "pixel9", *ARCH], "'pixel9' is not a known target"),
    (["--target", "host-cpu", "--precision", "fp16", *ARCH], "does not run precision 'fp16'"),
    (["--target", "pixel8", "--prompt-len", "0", *ARCH], "--prompt-len must be an integer from 1 to 16,777,216"),
    (["--target", "pixel8"], "no architecture given"),
    (["--target", "pixel8", "--hidden-size", "100", "--layers", "2", "--heads", "3", "--ffn", "64"], "divisible"),
], ids=["target", "precision", "length", "no-arch", "bad-arch"])
def test_bad_input_is_one_line_exit_2(capsys, argv, match):
    assert main(["predict", *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_measured_prediction_outside_its_range_says_so(capsys, tmp_path):
    from tests.helpers import calibrated_pixel8

    calibrated_pixel8(tmp_path, capsys)
    assert main(["predict", "--target", "pixel8", *ARCH, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["targets"]["pixel8"]
    assert r["latency_source"] == "calibrated"
    assert r["warnings"] == ["prompt length 512 is outside the measured 32-64: pixel8's prefill time is extrapolated",
                             "context length 2048 is outside the measured 32-128: pixel8's decode time is extrapolated",
                             r["warnings"][2]]
    assert r["warnings"][2].startswith("the config has") and "parameters, outside the" in r["warnings"][2]
    code = main(["predict", "--target", "pixel8", *ARCH, "--prompt-len", "48", "--context-len", "100"])
    assert code == 0 and "warning: prompt length" not in capsys.readouterr().out
    assert r["model"]["held_out_accuracy"]["prefill"]["mape"] < 5
