"""`nas targets`, `nas spaces`, `nas inspect` through nas.cli.main, and `nas --help` staying light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nas.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _user_error(capsys, *argv) -> str:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_targets_list(capsys):
    code, out, _ = _run(capsys, "targets")
    assert code == 0
    for name in ("host-cpu", "pixel8", "sd8gen3", "iphone15pro", "rpi5", "jetson-orin-nano", "macbook-m3"):
        assert name in out
    assert "analytic, uncalibrated" in out
    assert "measured here after `nas calibrate --target host-cpu`" in out
    assert "68.3 GB/s" in out and "int4" in out


def test_targets_list_json(capsys):
    code, out, _ = _run(capsys, "targets", "--json")
    data = {t["name"]: t for t in json.loads(out)}
    assert code == 0 and data["pixel8"]["execution_providers"][0] == "CPUExecutionProvider"
    assert data["pixel8"]["latency_source"].startswith("analytic, fitted to ")  # published measurements
    assert data["macbook-m3"]["latency_source"] == "analytic, uncalibrated"
    assert data["host-cpu"]["latency_hint"] and data["host-cpu"]["mem_bandwidth_bytes_per_s"] is None


def test_targets_show(capsys):
    code, out, _ = _run(capsys, "targets", "show", "rpi5")
    assert code == 0 and "Raspberry Pi 5" in out and "17.1 GB/s" in out and "source:" in out
    code, out, _ = _run(capsys, "targets", "show", "jetson-orin-nano", "--json")
    data = json.loads(out)
    assert data["default_precision"] == "fp16" and data["specs"]["memory_bandwidth"]["unit"] == "GB/s"
    assert all(s["source"] for s in data["specs"].values())


def test_targets_errors(capsys):
    line = _user_error(capsys, "targets", "show", "pixel9")
    assert "'pixel9' is not a known target; known: " in line and "host-cpu" in line
    assert "show" in _user_error(capsys, "targets", "show")
    assert "frobnicate" in _user_error(capsys, "targets", "frobnicate")


def test_malformed_target_file(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nthreads = [1,\n')
    line = _user_error(capsys, "targets", "show", str(path))
    assert str(path) in line and "line" in line and "malformed TOML" in line


def test_spaces_list(capsys):
    code, out, _ = _run(capsys, "spaces")
    assert code == 0
    for name in ("tiny", "mobilellm", "phonelm", "subbillion", "hostcal"):
        assert name in out
    code, out, _ = _run(capsys, "spaces", "--json")
    data = {s["name"]: s for s in json.loads(out)}
    assert 100 <= data["tiny"]["size"] <= 500 and data["mobilellm"]["params_max"] == 650_000_000


def test_spaces_show(capsys):
    code, out, _ = _run(capsys, "spaces", "show", "tiny")
    assert code == 0 and "hidden_size" in out and "smallest:" in out and "largest:" in out
    assert "valid configs" in out and "vocab_size" in out
    code, out, _ = _run(capsys, "spaces", "show", "mobilellm", "--json")
    data = json.loads(out)
    assert data["fixed"]["head_dim"] == 64 and data["size"] > 0
    assert data["smallest"]["num_params"] <= data["largest"]["num_params"]


def test_spaces_errors(capsys, tmp_path):
    line = _user_error(capsys, "spaces", "show", "nope")
    assert "'nope' is not a known search space" in line and "tiny" in line
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\ndescription = "x"\n\n[dimensions]\nhidden_size = [64,, 128]\n')
    line = _user_error(capsys, "spaces", "show", str(path))
    assert str(path) in line and "line 5" in line


def test_inspect_flags(capsys):
    code, out, _ = _run(capsys, "inspect", "--hidden-size", "576", "--layers", "30", "--heads", "9",
                        "--kv-heads", "3", "--ffn", "1536", "--max-seq-len", "2048")
    assert code == 0
    assert "124.6M" in out and "GQA" in out and "240d40d719a17308" in out
    assert "GFLOPs" in out and "MiB" in out and "int4" in out


def test_inspect_json_and_files(capsys, tmp_path):
    from nas.core.arch import ArchConfig

    arch = ArchConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=1, intermediate_size=128,
                      vocab_size=256, qkv_bias=True)
    nas_json = tmp_path / "arch.json"
    nas_json.write_text(arch.to_json())
    code, out, _ = _run(capsys, "inspect", str(nas_json), "--json", "--prompt-len", "64", "--context-len", "128")
    data = json.loads(out)
    assert code == 0 and data["num_params"] == arch.num_params and data["attention_type"] == "mqa"
    assert data["prefill_flops"] == arch.prefill_flops(64) and data["decode_flops"] == arch.decode_flops(128)
    assert data["config"] == arch.to_dict()

    hf_json = tmp_path / "config.json"
    hf_json.write_text(json.dumps(arch.to_hf_config()))
    code, out, _ = _run(capsys, "inspect", str(hf_json), "--json")
    assert json.loads(out)["arch_id"] == arch.arch_id and json.loads(out)["prompt_len"] == 512
    code, out, _ = _run(capsys, "inspect", str(hf_json), "--layers", "3", "--json")
    assert json.loads(out)["config"]["num_layers"] == 3


def test_inspect_errors(capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"hidden_size": 64,\n "num_layers": }')
    line = _user_error(capsys, "inspect", str(path))
    assert str(path) in line and ":2:" in line and "malformed JSON" in line
    assert "hidden_size" in _user_error(capsys, "inspect", "--hidden-size", "100", "--layers", "2", "--heads", "3",
                                        "--ffn", "64")
    assert "no architecture" in _user_error(capsys, "inspect")
    assert "--prompt-len" in _user_error(capsys, "inspect", "--hidden-size", "64", "--layers", "2", "--heads", "4",
                                         "--ffn", "64", "--prompt-len", "0")


def test_help_is_light():
    """`nas --help` imports nothing heavy (its time is benchmarks/bench_startup.py's)."""
    result = subprocess.run([sys.executable, "-m", "nas", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "targets" in result.stdout and "inspect" in result.stdout
    probe = ("import json, sys, nas.cli; nas.cli.build_parser(); print(json.dumps(sorted(m for m in "
             "('torch', 'numpy', 'onnxruntime', 'optuna', 'transformers', 'matplotlib') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []  # the search's defaults come from nas.search.settings, numpy-free


@pytest.mark.parametrize("command", ["targets", "spaces", "inspect"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "--json" in capsys.readouterr().out


def test_an_in_memory_search_offers_no_export_command_that_cannot_work(capsys):
    """Found by a hostile new user: after `--storage :memory:` the recommendation printed `export it: nas export
    --storage :memory: ...`, which finds no study (it ended with the search). It now says why there is none."""
    import json

    argv = ["search", "--target", "pixel8", "--space", "tiny", "--no-proxy", "--trials", "5", "--storage", ":memory:",
            "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "export it: not from this study: it was in memory" in out and "nas export --storage :memory:" not in out
    assert main(argv + ["--json"]) == 0
    picks = json.loads(capsys.readouterr().out)["recommendation"]["picks"]
    assert all(pick["export"] is None for pick in picks.values())
