"""The GenAI-structured graphs (nas.latency.graphs): what onnxruntime-genai's builder makes, computing what
nas.model computes, and weighing what nas.core.accounting says (ORT CPU EP as the runtime)."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nas.core import accounting
from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.latency import graphs, measure, onnxio
from nas.latency.graphs import build_graph, dequantize_blocks, graph_feeds, model_weights, save_graph
from nas.model import build_model

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "genai_builder.json"

SHAPES = {
    "gqa-swiglu-untied": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96,
                              tie_embeddings=False),
    "mqa-swiglu-tied": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=1, intermediate_size=80),
    "mha-reglu-qkvbias": dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, ffn_kind="reglu",
                              qkv_bias=True, tie_embeddings=False),
    "gqa-geglu-headdim16": dict(hidden_size=48, num_layers=1, num_heads=8, num_kv_heads=2, head_dim=16,
                                intermediate_size=64, ffn_kind="geglu", rope_theta=500000.0),
    "mqa-gelu-tied-qkvbias": dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=48,
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


def _torch(model, ids: np.ndarray, cache=None):
    with torch.no_grad():
        logits, presents = model(torch.from_numpy(ids), cache)
    return logits.numpy(), presents


def _decode_feeds(arch, token: int, presents, context_len: int) -> dict[str, np.ndarray]:
    feeds = graph_feeds(arch, "decode", context_len=context_len)
    feeds["input_ids"] = np.array([[token]], dtype=np.int64)
    for i, (k, v) in enumerate(presents):
        feeds[f"past_key_values.{i}.key"][:, :, :context_len] = np.asarray(k)
        feeds[f"past_key_values.{i}.value"][:, :, :context_len] = np.asarray(v)
    return feeds


@pytest.mark.parametrize("name", SHAPES)
def test_fp32_prefill_then_decode_matches_torch(name):
    arch = _arch(SHAPES[name])
    model = _model(arch)
    session = _session(build_graph(arch, weights=model_weights(model)))
    feeds = graph_feeds(arch, "prefill", prompt_len=7, seed=1)
    expected, cache = _torch(model, feeds["input_ids"])
    got = _run(session, feeds)
    np.testing.assert_allclose(got["logits"], expected, atol=1e-4, rtol=1e-4)  # every position
    for i, (k, v) in enumerate(cache):
        np.testing.assert_allclose(got[f"present.{i}.key"], k.numpy(), atol=1e-5)
        np.testing.assert_allclose(got[f"present.{i}.value"], v.numpy(), atol=1e-5)
    # decode at context 7 from the cache the ONNX prefill wrote, run the way an app runs it (shared buffer)
    presents = [(got[f"present.{i}.key"], got[f"present.{i}.value"]) for i in range(arch.num_layers)]
    feeds = _decode_feeds(arch, 5, presents, 7)
    expected, cache = _torch(model, feeds["input_ids"], cache)
    buffers = measure.step_runner(session, feeds)()
    plain = _run(session, feeds)
    np.testing.assert_allclose(plain["logits"], expected, atol=1e-4, rtol=1e-4)
    for i, (k, v) in enumerate(cache):  # the new token's K/V landed in the shared buffer, in place
        np.testing.assert_allclose(buffers[f"past_key_values.{i}.key"].numpy(), k.numpy(), atol=1e-5)
        np.testing.assert_allclose(buffers[f"past_key_values.{i}.value"].numpy(), v.numpy(), atol=1e-5)
        np.testing.assert_allclose(plain[f"present.{i}.value"], v.numpy(), atol=1e-5)


def test_bound_decode_gives_the_same_logits_at_several_contexts():
    arch = _arch(SHAPES["gqa-swiglu-untied"])
    session = _session(build_graph(arch, seed=3))
    for context_len in (1, 9, 63):
        feeds = graph_feeds(arch, "decode", context_len=context_len, seed=context_len)
        plain = _run(session, feeds)["logits"]
        # a bound run with logits read back: the same step
        binding = session.io_binding()
        values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in feeds.items()}
        for k, v in values.items():
            binding.bind_ortvalue_input(k, v)
        for out in session.get_outputs():
            if out.name.startswith("present."):
                binding.bind_ortvalue_output(out.name, values[graphs.past_name(out.name)])
            else:
                binding.bind_output(out.name, "cpu")
        session.run_with_iobinding(binding)
        np.testing.assert_allclose(binding.copy_outputs_to_cpu()[0], plain, atol=1e-5)
        assert plain.shape == (1, 1, arch.vocab_size)


def _histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(collections.Counter((n.domain or "ai.onnx") + "::" + n.op_type for n in model.graph.node))


def _initializer_bytes(model: onnx.ModelProto) -> dict[str, int]:
    out: collections.Counter = collections.Counter()
    for t in model.graph.initializer:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        out[str(dtype)] += int(np.prod(t.dims)) * dtype.itemsize
    return dict(out)


def _fixture_arch(cfg: dict) -> ArchConfig:
    return ArchConfig.from_hf_config(cfg)  # the config.json the builder read


RECORD = json.loads(FIXTURE.read_text())
CASES = sorted(RECORD["models"])


@pytest.mark.parametrize("case", CASES)
def test_graph_matches_what_the_genai_builder_makes(case):
    """Op histogram, initializer bytes per dtype, inputs and outputs equal the builder's graph (fixture recorded
    by benchmarks/genai_builder_fixture.py). fp16: the builder's CPU graph is another structure (MHA), so only
    the bytes and the output names are compared."""
    name, precision = case.split("/")
    ref = RECORD["models"][case]
    assert "error" not in ref, ref
    model = build_graph(_fixture_arch(RECORD["configs"][name]), precision=precision)
    assert _initializer_bytes(model) == ref["initializer_bytes"]
    assert sorted(o.name for o in model.graph.output) == sorted(o["name"] for o in ref["outputs"])
    if precision == "fp16":
        assert "com.microsoft::MultiHeadAttention" in ref["ops"]
        return
    assert _histogram(model) == ref["ops"]
    ours = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert ours == {v["name"]: v["dtype"] for v in [*ref["inputs"], *ref["outputs"]]}
    for op, attrs in ref["attributes"].items():
        node = next(n for n in model.graph.node if n.op_type == op)
        got = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for key, value in attrs.items():
            if key not in ("K", "N"):  # of the first node: the same projection in both graphs
                assert got[key] == pytest.approx(value), (op, key)


@pytest.mark.parametrize("precision", accounting.PRECISIONS)
@pytest.mark.parametrize("name", SHAPES)
def test_accounting_weight_bytes_equal_the_graph(precision, name):
    arch = ArchConfig(vocab_size=101, max_seq_len=40, **dict(SHAPES[name], intermediate_size=100))  # K % 32 != 0
    model = build_graph(arch, precision=precision)
    rope = accounting.rope_cache_bytes(precision, arch.max_seq_len, arch.head_dim)
    assert onnxio.tensor_bytes(model) == arch.weight_bytes(precision) + rope
    assert accounting.kv_bytes_per_element(precision) == np.dtype(
        onnx.helper.tensor_dtype_to_np_dtype(model.graph.input[2].type.tensor_type.elem_type)).itemsize


def _int_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """[in, out] weights the MatMulNBits nodes multiply by, by initializer name."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            out[node.input[1]] = dequantize_blocks(inits[node.input[1]], inits[node.input[2]], attrs["bits"],
                                                   attrs["K"])
    return out


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("name", ["gqa-swiglu-untied", "mqa-gelu-tied-qkvbias"])
def test_int_graph_computes_the_model_with_its_quantised_weights(precision, name):
    # The torch model with the graph's own dequantised weights is the reference; accuracy_level 4 quantises
    # activations to int8 inside the kernel, so agreement is close, not exact.
    arch = _arch(dict(SHAPES[name], hidden_size=64, intermediate_size=128))
    model = _model(arch, seed=2)
    weights = model_weights(model)
    graph = build_graph(arch, precision=precision, weights=weights)
    deq = _int_weights(graph)
    assert len(deq) == arch.num_layers * (2 + arch.ffn_matrices) + 1  # qkv, o, FFN, head
    d = arch.head_dim
    q_rows, kv_rows = arch.num_heads * d, arch.num_kv_heads * d
    with torch.no_grad():
        for i in range(arch.num_layers):
            src, attn = f"model.layers.{i}.", f"model.layers.{i}.self_attn."
            qkv = deq[f"{src}attn.qkv_proj.MatMul.weight_Q{accounting.BITS[precision]}"].T
            for part, rows in (("q", qkv[:q_rows]), ("k", qkv[q_rows:q_rows + kv_rows]),
                               ("v", qkv[q_rows + kv_rows:])):
                model.get_parameter(f"{attn}{part}_proj.weight").copy_(torch.from_numpy(rows.copy()))
            for proj, key in (("self_attn.o_proj", "attn.o_proj"), ("mlp.up_proj", "mlp.up_proj"),
                              ("mlp.down_proj", "mlp.down_proj"), ("mlp.gate_proj", "mlp.gate_proj")):
                key = f"{src}{key}.MatMul.weight_Q{accounting.BITS[precision]}"
                if key in deq:
                    model.get_parameter(f"{src}{proj}.weight").copy_(torch.from_numpy(deq[key].T.copy()))
        head = torch.from_numpy(deq[f"lm_head.MatMul.weight_Q{accounting.BITS[precision]}"].T.copy())
        model.get_parameter("lm_head.weight").copy_(head)
        if arch.tie_embeddings is False or precision == "int8":  # an fp32 table in the graph
            model.get_parameter("model.embed_tokens.weight").copy_(torch.from_numpy(weights[
                "model.embed_tokens.weight"]))
    feeds = graph_feeds(arch, "prefill", prompt_len=9)
    expected, _ = _torch(model, feeds["input_ids"])
    got = _run(_session(graph), feeds)["logits"]
    err = np.abs(got - expected).max() / np.abs(expected).max()
    assert err < 0.03, err
    assert not np.allclose(got, _run(_session(build_graph(arch, weights=weights)), feeds)["logits"], atol=1e-5)


def test_fp16_graph_runs_on_cpu_close_to_fp32():
    arch = _arch(SHAPES["gqa-swiglu-untied"])
    weights = model_weights(_model(arch, seed=3))
    model16 = build_graph(arch, precision="fp16", weights=weights)
    assert {t.data_type for t in model16.graph.initializer} == {onnx.TensorProto.FLOAT16}
    for phase in graphs.PHASES:
        feeds32 = graph_feeds(arch, phase, prompt_len=6, context_len=6)
        feeds16 = graph_feeds(arch, phase, prompt_len=6, context_len=6, precision="fp16")
        assert feeds16["past_key_values.0.key"].dtype == np.float16
        feeds16["input_ids"] = feeds32["input_ids"]
        feeds16.update({k: v.astype(np.float16) for k, v in feeds32.items() if k.startswith("past")})
        reference = _run(_session(build_graph(arch, weights=weights)), feeds32)["logits"]
        got = _run(_session(model16), feeds16)["logits"]
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float32), reference, atol=2e-2 * float(np.abs(reference).max()))


def test_random_weights_are_seeded_and_shaped():
    arch = _arch(SHAPES["mqa-swiglu-tied"])
    a, b, c = (build_graph(arch, seed=s) for s in (0, 0, 1))
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != c.SerializeToString()
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
    assert inits["lm_head.MatMul.weight"].shape == (arch.hidden_size, arch.vocab_size)  # tied: one shared matrix
    assert "model.embed_tokens.weight" not in inits
    qkv = inits["model.layers.0.attn.qkv_proj.MatMul.weight"]
    assert qkv.shape == (64, (4 + 2) * 16) and abs(qkv.std() - 0.02) < 0.004
    props = {p.key: p.value for p in a.metadata_props}
    assert props["nas.arch_id"] == arch.arch_id and ArchConfig.from_json(props["nas.arch"]) == arch
    assert props["nas.graph_builder"] == graphs.BUILDER_VERSION
    int4 = build_graph(arch, precision="int4", seed=0)  # random blocks: outputs finite
    out = _run(_session(int4), graph_feeds(arch, "prefill", prompt_len=5))
    assert np.isfinite(out["logits"]).all()


def test_save_graph_writes_external_data_when_large(tmp_path, monkeypatch):
    arch = _arch(SHAPES["mha-reglu-qkvbias"])
    model = build_graph(arch, precision="int4")
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
    with pytest.raises(NasUserError, match="multiple of 16"):
        build_graph(ArchConfig(hidden_size=48, num_layers=1, num_heads=2, head_dim=24, intermediate_size=64), "decode")
    with pytest.raises(NasUserError, match="prompt_len"):
        graph_feeds(arch, "prefill", prompt_len=arch.max_seq_len + 1)
    with pytest.raises(NasUserError, match="context_len"):
        graph_feeds(arch, "decode", context_len=0)
    with pytest.raises(NasUserError, match="context_len"):
        graph_feeds(arch, "decode", context_len=arch.max_seq_len)  # C cached + 1 new must fit max_seq_len
    weights = model_weights(build_model(arch))
    del weights["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match="up_proj"):
        build_graph(arch, "decode", weights=weights)


def test_graph_feeds_shapes():
    arch = _arch(SHAPES["gqa-geglu-headdim16"])
    feeds = graph_feeds(arch, "decode", context_len=5)
    assert feeds["input_ids"].shape == (1, 1) and feeds["input_ids"].dtype == np.int64
    assert feeds["attention_mask"].shape == (1, 6)  # 5 cached + the new token
    assert feeds["past_key_values.0.value"].shape == (1, 2, 6, 16)
    assert feeds["past_key_values.0.key"].dtype == np.float32
    assert len(feeds) == 2 + 2 * arch.num_layers
    prefill = graph_feeds(arch, "prefill")
    assert prefill["input_ids"].shape == (1, 64) and prefill["input_ids"].max() < arch.vocab_size
    assert prefill["past_key_values.0.key"].shape == (1, 2, 64, 16)


@pytest.mark.parametrize("bits", [4, 8])
def test_blocks_are_quantised_as_onnxruntimes_quantizer_does(bits):
    """GenAI's builder quantises with ORT's MatMulNBits quantizer; quantize_blocks gives the same bytes/scales."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    w = (np.random.default_rng(bits).standard_normal((80, 24)) * 0.02).astype(np.float32)  # K = 80: padded
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "one",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 80])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 24])],
        [onnx.numpy_helper.from_array(w, "w")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)])
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=bits)
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in quantizer.model.model.graph.initializer}
    node = next(n for n in quantizer.model.model.graph.node if n.op_type == "MatMulNBits")
    q, scales = graphs.quantize_blocks(w, bits)
    np.testing.assert_array_equal(q, inits[node.input[1]].reshape(q.shape))
    np.testing.assert_allclose(scales, inits[node.input[2]].reshape(scales.shape), rtol=1e-6)
    np.testing.assert_allclose(dequantize_blocks(q, scales, bits, 80), w,
                               atol=np.abs(w).max() / (4 if bits == 4 else 64))
