"""Exports: HF configs checked against transformers, LitGPT field mapping, nanoGPT refusals, JSON round trip,
and the `nas export` command's choices and errors."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.export import export_arch, litgpt_config, nanogpt_config, render, to_yaml

SMALL = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=160, vocab_size=300, max_seq_len=128)


# ----------------------------------------------------------------------------------------------- hf
@pytest.mark.parametrize("fields", [
    dict(num_kv_heads=2),  # GQA, SwiGLU, tied
    dict(num_kv_heads=1, tie_embeddings=False),  # MQA, untied
    dict(ffn_kind="reglu"),
    dict(ffn_kind="geglu", head_dim=32),  # head_dim != hidden / heads
    dict(num_kv_heads=2, qkv_bias=True),  # Qwen2
], ids=["gqa-swiglu-tied", "mqa-untied", "reglu", "geglu-headdim32", "qwen2-qkv-bias"])
def test_hf_export_builds_exactly_the_parameter_count(tmp_path, fields):
    import transformers
    arch = ArchConfig(**SMALL, **fields)
    path = export_arch(arch, "hf", tmp_path).path
    assert path.name == "config.json"
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    expected = transformers.Qwen2Config if arch.qkv_bias else transformers.LlamaConfig
    assert type(config) is expected
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == arch.num_params
    assert ArchConfig.from_hf_config(json.loads(path.read_text())) == arch


def test_hf_refuses_plain_gelu_in_one_line(tmp_path):
    with pytest.raises(NasUserError) as err:
        export_arch(ArchConfig(**SMALL, ffn_kind="gelu"), "hf", tmp_path)
    assert "\n" not in str(err.value) and "gelu" in str(err.value)
    assert not (tmp_path / "config.json").exists()


# ----------------------------------------------------------------------------------------------- LitGPT
# Field names of litgpt.Config (litgpt/config.py) that the export may use.
LITGPT_FIELDS = {"name", "block_size", "vocab_size", "padded_vocab_size", "padding_multiple", "n_layer", "n_embd",
                 "n_head", "n_query_groups", "head_size", "intermediate_size", "mlp_class_name", "gelu_approximate",
                 "norm_class_name", "norm_eps", "rotary_percentage", "rope_base", "parallel_residual", "bias",
                 "attn_bias", "lm_head_bias", "shared_attention_norm"}


def _parse_flat_yaml(text: str) -> dict:
    """The flat `key: scalar` subset the exporter writes (JSON-compatible scalars)."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition(": ")
        out[key] = json.loads(value)
    return out


def test_litgpt_field_mapping():
    arch = ArchConfig(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536,
                      vocab_size=49152, max_seq_len=2048, rope_theta=100000.0, rms_norm_eps=1e-5)
    cfg = litgpt_config(arch)
    assert set(cfg) <= LITGPT_FIELDS
    assert cfg["n_layer"] == 30 and cfg["n_embd"] == 576 and cfg["n_head"] == 9 and cfg["n_query_groups"] == 3
    assert cfg["head_size"] == 64 and cfg["intermediate_size"] == 1536 and cfg["block_size"] == 2048
    assert cfg["vocab_size"] == cfg["padded_vocab_size"] == 49152  # no padding to a multiple of 512
    assert cfg["mlp_class_name"] == "LLaMAMLP" and cfg["norm_class_name"] == "RMSNorm"
    assert cfg["rotary_percentage"] == 1.0 and cfg["parallel_residual"] is False and cfg["bias"] is False
    assert cfg["attn_bias"] is False and cfg["lm_head_bias"] is False
    assert cfg["rope_base"] == 100000 and isinstance(cfg["rope_base"], int) and cfg["norm_eps"] == 1e-5
    assert "gemma" not in cfg["name"].lower()
    assert litgpt_config(arch.replace(ffn_kind="geglu"))["mlp_class_name"] == "GemmaMLP"
    assert litgpt_config(arch.replace(ffn_kind="geglu"))["gelu_approximate"] == "tanh"
    assert litgpt_config(arch.replace(ffn_kind="gelu"))["mlp_class_name"] == "GptNeoxMLP"
    assert litgpt_config(arch.replace(qkv_bias=True))["attn_bias"] is True


def test_litgpt_yaml_parses_back(tmp_path):
    arch = ArchConfig(**SMALL, num_kv_heads=2)
    result = export_arch(arch, "litgpt", tmp_path)
    text = result.path.read_text()
    assert result.path.name == "model_config.yaml"
    assert _parse_flat_yaml(text) == litgpt_config(arch)
    import yaml
    assert yaml.safe_load(text) == litgpt_config(arch)
    # Tied shape: LitGPT cannot tie, so the file and the notes say how to re-tie.
    assert "model.lm_head.weight = model.transformer.wte.weight" in text
    assert any("weight-tying" in n for n in result.notes)
    untied = render(arch.replace(tie_embeddings=False), "litgpt")
    assert "re-tie" not in untied[0] and not untied[1]


def test_to_yaml_scalars():
    data = {"a": True, "b": 1.5e-06, "c": "x: y", "d": 3, "e": 1e-05, "f": 1e20, "g": 0.5}
    text = to_yaml(data)
    assert _parse_flat_yaml(text) == data
    import yaml  # a YAML 1.1 loader, as LitGPT uses
    assert yaml.safe_load(text) == data


def test_litgpt_refuses_reglu():
    with pytest.raises(NasUserError, match="LitGPT cannot express ffn_kind 'reglu'"):
        litgpt_config(ArchConfig(**SMALL, ffn_kind="reglu"))


# ----------------------------------------------------------------------------------------------- nanoGPT
def test_nanogpt_refuses_what_it_cannot_express():
    arch = ArchConfig(hidden_size=1024, num_layers=4, num_heads=16, num_kv_heads=4, intermediate_size=2816)
    with pytest.raises(NasUserError) as err:
        nanogpt_config(arch)
    msg = str(err.value)
    assert msg.startswith("nanoGPT cannot express GQA (num_kv_heads=4 of 16 heads), SwiGLU FFN")
    assert "\n" not in msg
    gelu = dict(hidden_size=256, num_layers=2, num_heads=4, ffn_kind="gelu")
    cases = {
        "MQA (num_kv_heads=1 of 4 heads)": dict(gelu, intermediate_size=1024, num_kv_heads=1),
        "FFN width 768": dict(gelu, intermediate_size=768),
        "ReGLU FFN": dict(gelu, intermediate_size=1024, ffn_kind="reglu"),
        "an untied LM head": dict(gelu, intermediate_size=1024, tie_embeddings=False),
        "head_dim 32": dict(gelu, intermediate_size=1024, head_dim=32),
        "qkv-only bias": dict(gelu, intermediate_size=1024, qkv_bias=True),
    }
    for what, fields in cases.items():
        with pytest.raises(NasUserError, match=re.escape(f"nanoGPT cannot express {what}")):
            nanogpt_config(ArchConfig(**fields))


def test_nanogpt_exports_a_gpt2_like_shape_with_its_differences(tmp_path):
    arch = ArchConfig(hidden_size=256, num_layers=3, num_heads=4, intermediate_size=1024, ffn_kind="gelu",
                      max_seq_len=512, vocab_size=50304)
    result = export_arch(arch, "nanogpt", tmp_path)
    text = result.path.read_text()
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(text).body
              if isinstance(node, ast.Assign)}
    assert values == {"n_layer": 3, "n_head": 4, "n_embd": 256, "block_size": 512, "bias": False, "dropout": 0.0}
    assert "LayerNorm instead of RMSNorm" in text and "learned absolute positions instead of RoPE" in text
    assert result.notes


# ----------------------------------------------------------------------------------------------- json
def test_json_export_round_trips_and_nas_inspect_reads_it(tmp_path, capsys):
    arch = ArchConfig(**SMALL, num_kv_heads=2, qkv_bias=True)
    path = export_arch(arch, "json", tmp_path).path
    assert ArchConfig.from_json(path.read_text()) == arch
    from nas.cli import main

    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    assert arch.arch_id in capsys.readouterr().out


def test_unknown_format_and_unwritable_folder(tmp_path):
    arch = ArchConfig(**SMALL)
    with pytest.raises(NasUserError, match="not one of hf, litgpt, nanogpt, json"):
        render(arch, "onnx")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NasUserError, match="file is a file, not a folder"):
        export_arch(arch, "json", blocker / "sub")


# ----------------------------------------------------------------------------------------------- nas export
@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    from tests.helpers import make_study

    db = tmp_path_factory.mktemp("export") / "nas.db"
    url = f"sqlite:///{db}"
    make_study(url, "exp", n_trials=25, n_failed=2, n_pruned=1, seed=4)
    return url


def _run(capsys, *argv):
    from nas.cli import main

    capsys.readouterr()
    code = main(["export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _complete_numbers(storage):
    import optuna

    study = optuna.load_study(study_name="exp", storage=storage)
    by_state = {}
    for t in study.get_trials(deepcopy=False):
        by_state.setdefault(t.state.name, []).append(t)
    return by_state


@pytest.mark.parametrize("fmt,filename", [("hf", "config.json"), ("litgpt", "model_config.yaml"),
                                          ("json", "arch.json")])
def test_nas_export_trial(tmp_path, capsys, storage, fmt, filename):
    trial = _complete_numbers(storage)["COMPLETE"][3]
    code, out, err = _run(capsys, "--study", "exp", "--storage", storage, "--trial", str(trial.number),
                          "--format", fmt, "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert f"exported trial {trial.number}" in out and trial.user_attrs["arch_id"] in out
    written = tmp_path / "o" / filename
    assert written.is_file()
    if fmt in ("hf", "json"):
        data = json.loads(written.read_text())
        arch = ArchConfig.from_hf_config(data) if fmt == "hf" else ArchConfig.from_dict(data)
        assert arch.arch_id == trial.user_attrs["arch_id"]


@pytest.mark.parametrize("pick", ["fastest", "best-quality", "knee"])
def test_nas_export_pick_says_which(tmp_path, capsys, storage, pick):
    from nas.study.read import compute_picks, load_study, read_study, study_pareto_set

    trials = read_study(load_study(storage, "exp"))
    expected = compute_picks(trials, study_pareto_set(trials))[pick]
    code, out, err = _run(capsys, "--study", "exp", "--storage", storage, "--pick", pick, "--format", "json",
                          "--out", str(tmp_path / pick))
    assert code == 0, err
    assert out.startswith(f"exported trial {expected}, the ") and "pick of the Pareto set on pixel8" in out
    arch = ArchConfig.from_json((tmp_path / pick / "arch.json").read_text())
    assert arch == trials.points[expected].record.arch


def test_nas_export_by_arch_id_prefix(tmp_path, capsys, storage):
    trial = _complete_numbers(storage)["COMPLETE"][5]
    arch_id = trial.user_attrs["arch_id"]
    code, out, _ = _run(capsys, "--study", "exp", "--storage", storage, "--arch-id", arch_id[:10], "--format", "json",
                        "--out", str(tmp_path / "a"))
    assert code == 0 and arch_id in out


def test_nas_export_bad_input_is_one_line_exit_2(tmp_path, capsys, storage):
    states = _complete_numbers(storage)
    failed = states["FAIL"][0].number
    pruned = states["PRUNED"][0].number
    gqa = next(t.number for t in states["COMPLETE"] if t.user_attrs["attention_type"] != "mha")
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = ["--format", "json", "--out", str(tmp_path / "o")]
    cases = {
        "is not in": ["--study", "nope", "--storage", storage, "--trial", "0", *out],
        "no study storage": ["--study", "exp", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--trial", "0", *out],
        "trial 999 is not in study": ["--study", "exp", "--storage", storage, "--trial", "999", *out],
        f"trial {failed} of study 'exp' is FAIL, not COMPLETE": ["--study", "exp", "--storage", storage, "--trial",
                                                                 str(failed), *out],
        f"trial {pruned} of study 'exp' is PRUNED": ["--study", "exp", "--storage", storage, "--trial", str(pruned),
                                                     *out],
        "say which shape to export": ["--study", "exp", "--storage", storage, *out],
        "no complete trial of study 'exp' has arch id": ["--study", "exp", "--storage", storage, "--arch-id",
                                                         "zzzz", *out],
        "is a file, not a folder": ["--study", "exp", "--storage", storage, "--trial", str(gqa), "--format", "json",
                                    "--out", str(blocker / "sub")],
        "nanoGPT cannot express": ["--study", "exp", "--storage", storage, "--trial", str(gqa), "--format",
                                   "nanogpt", "--out", str(tmp_path / "n")],
    }
    for expected, argv in cases.items():
        code, _, err = _run(capsys, *argv)
        assert code == 2, (expected, err)
        assert len(err.strip().splitlines()) == 1 and expected in err, (expected, err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "n").exists()
    assert not (tmp_path / "none.db").exists()


def test_nas_export_json_says_what_it_wrote(tmp_path, capsys, storage):
    code, out, _ = _run(capsys, "--storage", storage, "--study", "exp", "--pick", "knee", "--format", "litgpt",
                        "--out", str(tmp_path / "k"), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["format"] == "litgpt" and Path(data["path"]).is_file() and data["path"].endswith("model_config.yaml")
    assert "knee" in data["chosen_by"] and data["arch"]["num_layers"] > 0 and isinstance(data["notes"], list)


def test_nas_report_json_lists_its_files(tmp_path, capsys, storage):
    from nas.cli import main

    capsys.readouterr()
    assert main(["report", "--storage", storage, "--study", "exp", "--out", str(tmp_path / "r"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["index"].endswith("index.html") and Path(data["index"]).is_file()
    assert any(f.endswith("pareto.csv") for f in data["files"])
