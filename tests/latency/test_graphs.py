"""The ONNX profiling graphs compute what nas.model computes (ORT CPU EP as the runtime)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.latency import graphs, onnxio
from nas.latency.graphs import build_graph, graph_feeds, model_weights, save_graph
from nas.latency.quantize import quantize
from nas.model import build_model

SHAPES = {
    "gqa-swiglu-untied": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96,
                              tie_embeddings=False),
    "mqa-swiglu-tied": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=1, intermediate_size=80),
    "mha-reglu-qkvbias": dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, ffn_kind="reglu",
                              qkv_bias=True, tie_embeddings=False),
    "gqa-geglu-headdim16": dict(hidden_size=48, num_layers=1, num_heads=8, num_kv_heads=2, head_dim=16,
                                intermediate_size=64, ffn_kind="geglu", rope_theta=500000.0),
    "mqa-gelu-tied-qkvbias": dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=1, intermediate_size=48,
                                  ffn_kind="gelu", qkv_bias=True, rms_norm_eps=1e-6),
}


def _arch(kw) -> ArchConfig:
    return ArchConfig(vocab_size=101, max_seq_len=64, **kw)


def _model(arch: ArchConfig, seed: int = 0):
    """A torch model with weights large enough that a wrong position, mask or head mapping shows."""
    model = build_model(arch, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if name.endswith("norm.weight") else 0.1 * noise)
    return model


def _session(model: onnx.ModelProto):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run(session, feeds) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def _torch_reference(model, ids: np.ndarray, cache=None):
    with torch.no_grad():
        logits, presents = model(torch.from_numpy(ids), cache)
    expected = {"logits": logits[:, -1].numpy()}
    for i, (k, v) in enumerate(presents):
        expected[f"present.{i}.key"], expected[f"present.{i}.value"] = k.numpy(), v.numpy()
    return expected, presents


def _past(outputs: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    return {f"past.{i}.{kind}": outputs[f"present.{i}.{kind}"] for i in range(layers) for kind in ("key", "value")}


def _assert_outputs_close(got, expected, atol=1e-4, rtol=1e-4):
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name].astype(np.float32), value, atol=atol, rtol=rtol, err_msg=name)


@pytest.mark.parametrize("name", SHAPES)
def test_fp32_prefill_then_decode_matches_torch(name):
    arch = _arch(SHAPES[name])
    model = _model(arch)
    weights = model_weights(model)
    prefill = _session(build_graph(arch, "prefill", weights=weights))
    decode = _session(build_graph(arch, "decode", weights=weights))
    ids = graph_feeds(arch, "prefill", prompt_len=7, seed=1)["input_ids"]
    expected, cache = _torch_reference(model, ids)
    got = _run(prefill, {"input_ids": ids})
    _assert_outputs_close(got, expected)
    assert got["present.0.key"].shape == (1, arch.num_kv_heads, 7, arch.head_dim)
    # decode from the cache the ONNX prefill produced, against torch's cached step
    token = np.array([[5]], dtype=np.int64)
    expected, _ = _torch_reference(model, token, cache)
    got = _run(decode, {"input_ids": token, **_past(got, arch.num_layers)})
    _assert_outputs_close(got, expected)
    assert got["logits"].shape == (1, arch.vocab_size)
    assert got["present.0.value"].shape == (1, arch.num_kv_heads, 8, arch.head_dim)


def test_one_graph_serves_every_length():
    arch = _arch(SHAPES["gqa-swiglu-untied"])
    model = _model(arch, seed=4)
    weights = model_weights(model)
    prefill = _session(build_graph(arch, "prefill", weights=weights))
    decode = _session(build_graph(arch, "decode", weights=weights))
    for prompt_len in (1, 3, 12):
        ids = graph_feeds(arch, "prefill", prompt_len=prompt_len, seed=prompt_len)["input_ids"]
        _assert_outputs_close(_run(prefill, {"input_ids": ids}), _torch_reference(model, ids)[0])
    for context_len in (2, 40):  # decode from a random cache: position = context_len, read from the past's shape
        feeds = graph_feeds(arch, "decode", context_len=context_len, seed=context_len)
        cache = [(torch.from_numpy(feeds[f"past.{i}.key"]), torch.from_numpy(feeds[f"past.{i}.value"]))
                 for i in range(arch.num_layers)]
        expected, _ = _torch_reference(model, feeds["input_ids"], cache)
        _assert_outputs_close(_run(decode, feeds), expected)
    dims = [d.dim_param for d in build_graph(arch, "decode").graph.input[1].type.tensor_type.shape.dim]
    assert dims[2] == "context_len"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _int4_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The weights an int4 graph really multiplies by, unpacked from its MatMulNBits nodes, as torch [out, in].

    MatMulNBits layout: B [N, K/32, 16] uint8, two 4-bit values a byte (low nibble first), zero point 8 when
    symmetric; scales [N, K/32].
    """
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        packed, scales = inits[node.input[1]], inits[node.input[2]]
        n, blocks, _ = packed.shape
        nibbles = np.stack([packed & 15, packed >> 4], axis=-1).reshape(n, blocks, 32).astype(np.float32) - 8
        k = onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "K"))
        torch_name = node.input[1].removesuffix("_T_Q4")
        out[torch_name] = (nibbles * scales.reshape(n, blocks, 1)).reshape(n, blocks * 32)[:, :k]
    return out


def test_int4_graph_computes_the_model_with_its_int4_weights():
    # Exact check of the int4 path: with accuracy_level 0 (fp32 activations) MatMulNBits must compute the torch
    # model whose matrices are the graph's own dequantised int4 weights.
    arch = _arch(dict(SHAPES["gqa-swiglu-untied"], hidden_size=64, intermediate_size=96))
    model = _model(arch, seed=5)
    weights = model_weights(model)
    feeds = graph_feeds(arch, "prefill", prompt_len=7)
    int4 = quantize(build_graph(arch, "prefill", weights=weights), "int4", int4_accuracy_level=0)
    dequantized = _int4_weights(int4)
    assert len(dequantized) == arch.num_layers * (4 + arch.ffn_matrices) + 1  # every projection + the LM head
    for name, w in dequantized.items():  # round to nearest: within one block scale of the fp32 weight
        assert np.abs(w - weights[name]).max() <= np.abs(weights[name]).max() / 7, name
    with torch.no_grad():
        for name, w in dequantized.items():
            model.get_parameter(name).copy_(torch.from_numpy(w))
    expected, _ = _torch_reference(model, feeds["input_ids"])
    _assert_outputs_close(_run(_session(int4), feeds), expected, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("name", ["gqa-swiglu-untied", "mqa-gelu-tied-qkvbias"])
def test_quantized_graphs_run_close_to_fp32(precision, name):
    # Criterion: cosine similarity with a reference > 0.95 for the logits and every present. Argmax agreement
    # is not used: a random model's logits nearly tie, so one flip would not mean a broken graph.
    # int8 (weights and activations) is compared with the fp32 graph. int4 on random N(0, s) weights loses
    # more (RTN with 16 levels: cosine ~0.9 after two layers), so the deployed int4 graph (accuracy_level 4:
    # int8 activations in the kernel) is compared with the int4 graph at accuracy_level 0, which
    # test_int4_graph_computes_the_model_with_its_int4_weights checks exactly; fp32 is only a sanity bound.
    arch = _arch(dict(SHAPES[name], hidden_size=64, intermediate_size=128))  # K >= 2 int4 blocks
    weights = model_weights(_model(arch, seed=2))
    for phase, feeds in (("prefill", graph_feeds(arch, "prefill", prompt_len=9)),
                         ("decode", graph_feeds(arch, "decode", context_len=9))):
        fp32 = build_graph(arch, phase, weights=weights)
        reference = _run(_session(fp32), feeds)
        quantized_model = build_graph(arch, phase, precision, weights=weights)
        got = _run(_session(quantized_model), feeds)
        assert set(got) == set(reference)
        if precision == "int4":
            for out, value in got.items():
                assert _cosine(value, reference[out]) > 0.7, (phase, out)
            reference = _run(_session(quantize(fp32, "int4", int4_accuracy_level=0)), feeds)
        for out, value in got.items():
            assert _cosine(value, reference[out]) > 0.95, (phase, out)
        assert not np.allclose(got["logits"], reference["logits"], atol=1e-6)  # it really is quantised
        ops = [n.op_type for n in quantized_model.graph.node]
        constant = {t.name for t in quantized_model.graph.initializer}
        assert not [n for n in quantized_model.graph.node if n.op_type == "MatMul" and n.input[1] in constant]
        if precision == "int4":
            nbits = [n for n in quantized_model.graph.node if n.op_type == "MatMulNBits"]
            assert len(nbits) == arch.num_layers * (4 + arch.ffn_matrices) + 1  # + LM head
            for node in nbits:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                assert (attrs["block_size"], attrs["bits"], attrs["accuracy_level"]) == (32, 4, 4)
                assert len(node.input) == 3  # symmetric: no zero points
        else:
            assert "MatMulInteger" in ops
        props = {p.key: p.value for p in quantized_model.metadata_props}
        assert props["nas.precision"] == precision and props["nas.phase"] == phase


@pytest.mark.parametrize("phase", graphs.PHASES)
def test_fp16_graph_builds_and_matches_fp32_loosely(phase):
    arch = _arch(SHAPES["gqa-swiglu-untied"])
    weights = model_weights(_model(arch, seed=3))
    model16 = build_graph(arch, phase, "fp16", weights=weights)
    onnx.checker.check_model(model16, full_check=True)
    assert all(t.data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64) for t in model16.graph.initializer)
    feeds32 = graph_feeds(arch, phase, prompt_len=6, context_len=6)
    feeds16 = graph_feeds(arch, phase, prompt_len=6, context_len=6, precision="fp16")
    assert all(feeds16[k].dtype == np.float16 for k in feeds16 if k != "input_ids")
    reference = _run(_session(build_graph(arch, phase, weights=weights)), feeds32)
    got = _run(_session(model16), feeds16)  # ORT's CPU EP runs it, with Casts around ops it has no fp16 kernel for
    assert got["logits"].dtype == np.float16
    for name, value in reference.items():
        scale = float(np.abs(value).max())
        np.testing.assert_allclose(got[name].astype(np.float32), value, atol=2e-2 * scale, err_msg=name)


def test_random_weights_are_seeded_and_shaped():
    arch = _arch(SHAPES["mqa-swiglu-tied"])
    a, b, c = (build_graph(arch, "decode", seed=s) for s in (0, 0, 1))
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != c.SerializeToString()
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
    assert inits["lm_head.weight_T"].shape == (arch.hidden_size, arch.vocab_size)  # tied: one shared matrix
    assert "model.embed_tokens.weight" not in inits
    q = inits["model.layers.0.self_attn.q_proj.weight_T"]
    assert abs(q.std() - 0.02) < 0.004 and np.all(inits["model.norm.weight"] == 1)
    props = {p.key: p.value for p in a.metadata_props}
    assert props["nas.arch_id"] == arch.arch_id and ArchConfig.from_json(props["nas.arch"]) == arch
    # matrix weights: one per projection, plus the tied head (rope tables and small constants aside)
    matrices = sum(v.size for k, v in inits.items() if k.endswith("weight_T") or "norm" in k)
    assert matrices == arch.num_params


def test_save_graph_writes_external_data_when_large(tmp_path, monkeypatch):
    arch = _arch(SHAPES["mha-reglu-qkvbias"])
    model = build_graph(arch, "prefill")
    before = model.SerializeToString()
    save_graph(model, tmp_path / "small.onnx")
    assert not (tmp_path / "small.onnx.data").exists()
    monkeypatch.setattr(onnxio, "EXTERNAL_DATA_THRESHOLD", 0)
    save_graph(model, tmp_path / "big" / "big.onnx")
    assert (tmp_path / "big" / "big.onnx.data").stat().st_size > 0
    assert model.SerializeToString() == before  # the caller's model is whole again
    feeds = graph_feeds(arch, "prefill", prompt_len=4)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    from_file = ort.InferenceSession(str(tmp_path / "big" / "big.onnx"), opts, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(from_file.run(["logits"], feeds)[0], _session(model).run(["logits"], feeds)[0])


def test_user_errors_name_the_allowed_values():
    arch = _arch(SHAPES["mha-reglu-qkvbias"])
    with pytest.raises(NasUserError, match="prefill, decode"):
        build_graph(arch, "generate")
    with pytest.raises(NasUserError, match="fp32, fp16, int8, int4"):
        build_graph(arch, "prefill", "bf16")
    with pytest.raises(NasUserError, match="fp32, int8, int4"):
        quantize(build_graph(arch, "prefill"), "int2")
    with pytest.raises(NasUserError, match="build_graph"):
        quantize(build_graph(arch, "prefill"), "fp16")
    with pytest.raises(NasUserError, match="prompt_len"):
        graph_feeds(arch, "prefill", prompt_len=arch.max_seq_len + 1)
    with pytest.raises(NasUserError, match="context_len"):
        graph_feeds(arch, "decode", context_len=0)
    weights = model_weights(build_model(arch))
    del weights["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match="up_proj"):
        build_graph(arch, "decode", weights=weights)


def test_graph_feeds_shapes():
    arch = _arch(SHAPES["gqa-geglu-headdim16"])
    feeds = graph_feeds(arch, "decode", context_len=5)
    assert feeds["input_ids"].shape == (1, 1) and feeds["input_ids"].dtype == np.int64
    assert feeds["past.0.value"].shape == (1, 2, 5, 16) and feeds["past.0.key"].dtype == np.float32
    assert len(feeds) == 1 + 2 * arch.num_layers
    ids = graph_feeds(arch, "prefill")["input_ids"]
    assert ids.shape == (1, 64) and ids.max() < arch.vocab_size  # default: min(128, max_seq_len)
