"""ONNX graphs of the two phases of on-device generation, built directly from an ArchConfig.

Profiling builds one graph per (arch, phase, precision) and runs it at several lengths, so the graphs have
symbolic length dims:

- ``prefill``: ``input_ids`` int64 [1, prompt_len] -> ``logits`` [1, vocab] (last position only) and
  ``present.{i}.key`` / ``present.{i}.value`` [1, kv_heads, prompt_len, head_dim] for every layer i.
- ``decode``: ``input_ids`` int64 [1, 1] and ``past.{i}.key`` / ``past.{i}.value``
  [1, kv_heads, context_len, head_dim] -> ``logits`` [1, vocab] and presents [1, kv_heads, context_len + 1,
  head_dim]. The new token's position is context_len, read in-graph from the shape of ``past.0.key``.

The graph is built node by node with ``onnx.helper`` and numpy (no torch): about 0.2 s for a 20M-parameter
model and 2-5 s for 320M at fp32 (random weights, a noisy 2-core machine), where ``torch.onnx.export(dynamo=True)``
of the 20M model takes about 25 s (``benchmarks/bench_graph_build.py``). It computes the same
function as ``nas.model.LlamaModel`` (``tests/test_graphs.py`` checks logits and caches against it).

What the graph contains (plain ONNX, opset 17, default domain only before quantisation):
- RMSNorm written as Pow -> ReduceMean -> Add(eps) -> Sqrt -> Div -> Mul(weight): the pattern ORT's
  graph optimiser fuses into its SimplifiedLayerNormalization kernel, as on-device ORT deployments run it.
- q/k/v/o and FFN projections as separate MatMuls against [in, out] weights (+ Add for the q/k/v bias).
- RoPE in rotate-half form from cos/sin tables [max_seq_len, head_dim/2] held as initializers (4 * max_seq_len
  * head_dim bytes at fp32, e.g. 0.5 MiB for 2048 x 64, shared by all layers), gathered at the positions.
- Unfused attention: per kv head, the group of query heads sharing it is stacked along the rows, so K and V
  are never repeated (what GQA kernels do); scores = (q / sqrt(d)) @ K^T, a causal mask added in prefill,
  Softmax, @ V. The score matrix is materialised ([kv, g*S, T]), unlike fused attention kernels
  (ORT's GroupQueryAttention, FlashAttention): long-prompt prefill here costs somewhat more than with those.
- K^T comes from a Transpose node, which ORT folds into its MatMul (FusedMatMul with transB).
- Activations: silu as x * Sigmoid(x), relu as Relu, gelu (tanh approximation) as its polynomial/Tanh formula.
- The LM head is applied to the last position only. A tied head and embedding share one [hidden, vocab]
  initializer: the embedding is a Gather along axis 1 plus a small Transpose ([P, hidden] elements).

Precisions: ``fp32``; ``fp16`` (weights, activations, KV cache and logits all fp16; ORT 1.31's CPU EP lacks
fp16 kernels for several ops and runs them in fp32 between Cast nodes it inserts itself, so CPU fp16 latency
includes those casts); ``int8`` and ``int4`` are the fp32 graph passed through ``nas.latency.quantize``
(dynamic int8 MatMuls, or int4 weight-only MatMulNBits); activations and the KV cache stay fp32 there.

Random weights (when none are given) are N(0, 0.02) like the reference init, but drawn from a seeded pool of
2**20 normals that each tensor copies from a random offset (tiled when larger): drawing 350M fresh normals
alone takes about 8 s here, and the values do not change how fast ORT runs. Norm weights are 1, biases 0.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nas.core import accounting
from nas.core.accounting import PHASES
from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.latency.onnxio import save_graph
from nas.latency.provenance import GRAPH_BUILDER_VERSION
from nas.latency.quantize import quantize

PRECISIONS = accounting.PRECISIONS
OPSET = 17  # ReduceMean with an `axes` attribute: the form ORT's RMSNorm fusion matches
IR_VERSION = 8  # the IR version of opset 17; every ORT >= 1.14 loads it
# bump nas.latency.provenance.GRAPH_BUILDER_VERSION when the graph structure changes (old rows are then re-measured)
BUILDER_VERSION = GRAPH_BUILDER_VERSION
_POOL_SIZE = 1 << 20
_INIT_STD = 0.02  # nas.model.INIT_STD, repeated so this module does not import torch

_NP_DTYPE = {"fp32": np.float32, "fp16": np.float16}
_ONNX_DTYPE = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16}


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise NasUserError(f"phase {phase!r} is not one of {', '.join(PHASES)}")


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise NasUserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def activation_precision(precision: str) -> str:
    """The float type of a graph's activations, KV cache and logits: fp16 for fp16 graphs, else fp32."""
    _check_precision(precision)
    return "fp16" if precision == "fp16" else "fp32"


def rope_tables(arch: ArchConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [max_seq_len, head_dim/2] in fp32, the same angles nas.model computes."""
    d = arch.head_dim
    inv_freq = (1.0 / (np.float32(arch.rope_theta) ** (np.arange(0, d, 2).astype(np.float32) / np.float32(d))))
    angles = np.arange(arch.max_seq_len, dtype=np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class _Weights:
    """Weights in ONNX layout ([in, out] for projections), from a torch-named dict or a seeded random pool."""

    def __init__(self, weights: Mapping[str, np.ndarray] | None, seed: int, dtype):
        self.given = weights
        self.dtype = dtype
        if weights is None:
            rng = np.random.default_rng(seed)
            self.rng = rng
            self.pool = (rng.standard_normal(_POOL_SIZE, dtype=np.float32) * _INIT_STD).astype(dtype)

    def _random(self, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        out = np.empty(n, dtype=self.dtype)
        offset = int(self.rng.integers(_POOL_SIZE))
        pos = 0
        while pos < n:
            chunk = self.pool[offset:offset + n - pos]
            out[pos:pos + len(chunk)] = chunk
            pos += len(chunk)
            offset = 0
        return out.reshape(shape)

    def _get(self, name: str, torch_shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.given:
            raise ValueError(f"weights has no {name!r} (expected names of nas.model's state_dict)")
        value = np.asarray(self.given[name])
        if value.shape != torch_shape:
            raise ValueError(f"weights[{name!r}] has shape {value.shape}, expected {torch_shape}")
        return value

    def matrix(self, name: str, in_dim: int, out_dim: int) -> np.ndarray:
        """A Linear weight (torch [out, in]) as [in, out]."""
        if self.given is None:
            return self._random((in_dim, out_dim))
        return np.ascontiguousarray(self._get(name, (out_dim, in_dim)).T, dtype=self.dtype)

    def table(self, name: str, rows: int, cols: int) -> np.ndarray:
        """An embedding table [rows, cols], kept as it is."""
        if self.given is None:
            return self._random((rows, cols))
        return np.ascontiguousarray(self._get(name, (rows, cols)), dtype=self.dtype)

    def vector(self, name: str, size: int, fill: float) -> np.ndarray:
        if self.given is None:
            return np.full(size, fill, dtype=self.dtype)
        return np.ascontiguousarray(self._get(name, (size,)), dtype=self.dtype)


class _Graph:
    """Accumulates nodes and initializers; names outputs automatically."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._consts: dict[tuple, str] = {}

    def add(self, op: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        self._count += 1
        output = output or f"{op.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{self._count}", **attrs))
        return output

    def split(self, x: str, n_out: int, axis: int, sizes: str) -> list[str]:
        self._count += 1
        outs = [f"split_{self._count}_{j}" for j in range(n_out)]
        self.nodes.append(helper.make_node("Split", [x, sizes], outs, name=f"Split_{self._count}", axis=axis))
        return outs

    def init(self, name: str, array: np.ndarray) -> str:
        # (np.ascontiguousarray would turn a 0-d scalar into shape [1])
        self.initializers.append(numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name

    def const(self, value, dtype=None) -> str:
        """A shared small constant (a scalar unless `value` is a list)."""
        array = np.array(value, dtype=dtype or self.dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(f"const_{len(self._consts)}", array)
        return self._consts[key]

    def i64(self, value) -> str:
        return self.const(value, np.int64)


def _rms_norm(g: _Graph, x: str, weight: str, eps: float) -> str:
    # The exact pattern ORT's SimplifiedLayerNormFusion matches (Pow 2, ReduceMean last axis, Add, Sqrt, Div, Mul).
    var = g.add("ReduceMean", [g.add("Pow", [x, g.const(2.0)])], axes=[-1], keepdims=1)
    normed = g.add("Div", [x, g.add("Sqrt", [g.add("Add", [var, g.const(eps)])])])
    return g.add("Mul", [normed, weight])


def _rope(g: _Graph, x: str, cos: str, sin: str, half: str) -> str:
    """x [1, S, n, d] with cos/sin [S, 1, d/2]: rotate-half RoPE."""
    x1, x2 = g.split(x, 2, axis=-1, sizes=half)
    out1 = g.add("Sub", [g.add("Mul", [x1, cos]), g.add("Mul", [x2, sin])])
    out2 = g.add("Add", [g.add("Mul", [x2, cos]), g.add("Mul", [x1, sin])])
    return g.add("Concat", [out1, out2], axis=-1)


def _gelu_tanh(g: _Graph, x: str) -> str:
    # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
    inner = g.add("Add", [x, g.add("Mul", [g.add("Pow", [x, g.const(3.0)]), g.const(0.044715)])])
    t = g.add("Tanh", [g.add("Mul", [inner, g.const(float(np.sqrt(2.0 / np.pi)))])])
    return g.add("Mul", [g.add("Mul", [x, g.const(0.5)]), g.add("Add", [t, g.const(1.0)])])


def _ffn(g: _Graph, arch: ArchConfig, w: _Weights, prefix: str, x: str) -> str:
    h, f = arch.hidden_size, arch.intermediate_size
    up = g.add("MatMul", [x, g.init(prefix + "up_proj.weight_T", w.matrix(prefix + "up_proj.weight", h, f))])
    if arch.ffn_kind == "gelu":
        inner = _gelu_tanh(g, up)
    else:
        gate = g.add("MatMul", [x, g.init(prefix + "gate_proj.weight_T",
                                          w.matrix(prefix + "gate_proj.weight", h, f))])
        if arch.ffn_kind == "swiglu":
            act = g.add("Mul", [gate, g.add("Sigmoid", [gate])])
        elif arch.ffn_kind == "reglu":
            act = g.add("Relu", [gate])
        else:  # geglu
            act = _gelu_tanh(g, gate)
        inner = g.add("Mul", [act, up])
    down = g.init(prefix + "down_proj.weight_T", w.matrix(prefix + "down_proj.weight", f, h))
    return g.add("MatMul", [inner, down])


def _attention(g: _Graph, arch: ArchConfig, w: _Weights, prefix: str, i: int, x: str, rope: tuple[str, str, str],
               mask: str | None, decode: bool) -> str:
    h, d = arch.hidden_size, arch.head_dim
    heads, kv = arch.num_heads, arch.num_kv_heads
    groups = heads // kv

    def proj(name: str, n_heads: int) -> str:
        weight = g.init(f"{prefix}{name}.weight_T", w.matrix(f"{prefix}{name}.weight", h, n_heads * d))
        y = g.add("MatMul", [x, weight])
        if arch.qkv_bias:
            y = g.add("Add", [y, g.init(f"{prefix}{name}.bias", w.vector(f"{prefix}{name}.bias", n_heads * d, 0.0))])
        return g.add("Reshape", [y, g.i64([0, 0, n_heads, d])])  # [1, S, n, d]

    cos, sin, half = rope
    q = _rope(g, proj("q_proj", heads), cos, sin, half)
    k = _rope(g, proj("k_proj", kv), cos, sin, half)
    v = proj("v_proj", kv)
    # q: [1, S, kv, g, d] -> [1, kv, g, S, d] -> [1, kv, g*S, d]: the query heads sharing a kv head, stacked.
    q = g.add("Mul", [q, g.const(1.0 / float(np.sqrt(d)))])
    q = g.add("Transpose", [g.add("Reshape", [q, g.i64([0, 0, kv, groups, d])])], perm=[0, 2, 3, 1, 4])
    q = g.add("Reshape", [q, g.i64([1, kv, -1, d])])
    names = {"key": f"present.{i}.key", "value": f"present.{i}.value"}
    if decode:
        k = g.add("Concat", [f"past.{i}.key", g.add("Transpose", [k], perm=[0, 2, 1, 3])], names["key"], axis=2)
        v = g.add("Concat", [f"past.{i}.value", g.add("Transpose", [v], perm=[0, 2, 1, 3])], names["value"], axis=2)
    else:
        k = g.add("Transpose", [k], names["key"], perm=[0, 2, 1, 3])
        v = g.add("Transpose", [v], names["value"], perm=[0, 2, 1, 3])
    scores = g.add("MatMul", [q, g.add("Transpose", [k], perm=[0, 1, 3, 2])])  # [1, kv, g*S, T]
    if mask is not None:
        scores = g.add("Add", [scores, mask])
    ctx = g.add("MatMul", [g.add("Softmax", [scores], axis=-1), v])  # [1, kv, g*S, d]
    ctx = g.add("Transpose", [g.add("Reshape", [ctx, g.i64([1, kv, groups, -1, d])])], perm=[0, 3, 1, 2, 4])
    ctx = g.add("Reshape", [ctx, g.i64([1, -1, heads * d])])
    o = g.init(f"{prefix}o_proj.weight_T", w.matrix(f"{prefix}o_proj.weight", heads * d, h))
    return g.add("MatMul", [ctx, o])


def build_graph(arch: ArchConfig, phase: str, precision: str = "fp32", seed: int = 0,
                weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The ONNX graph of `phase` ("prefill" or "decode") of `arch` at `precision`.

    `weights` (names and layouts of nas.model's state_dict, see `model_weights`) makes the graph compute
    exactly what that torch model computes; without it the weights are seeded random (see the module doc).
    int8 and int4 graphs are the fp32 graph quantised by `nas.latency.quantize.quantize`.
    """
    _check_phase(phase)
    _check_precision(precision)
    if precision in ("int8", "int4"):
        return quantize(build_graph(arch, phase, "fp32", seed, weights), precision)

    np_dtype, onnx_dtype = _NP_DTYPE[precision], _ONNX_DTYPE[precision]
    decode = phase == "decode"
    g = _Graph(np_dtype)
    w = _Weights(weights, seed, np_dtype)
    h, v_size, kv, d = arch.hidden_size, arch.vocab_size, arch.num_kv_heads, arch.head_dim
    seq = 1 if decode else "prompt_len"

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])]
    outputs = [helper.make_tensor_value_info("logits", onnx_dtype, [1, v_size])]
    cache_len = "total_len" if decode else "prompt_len"
    for i in range(arch.num_layers):
        for kind in ("key", "value"):
            if decode:
                inputs.append(helper.make_tensor_value_info(f"past.{i}.{kind}", onnx_dtype, [1, kv, "context_len", d]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", onnx_dtype, [1, kv, cache_len, d]))

    # Token embedding. Tied: one [hidden, vocab] matrix serves the Gather (axis 1) and the LM head MatMul.
    if arch.tie_embeddings:
        head = g.init("lm_head.weight_T", w.matrix("model.embed_tokens.weight", h, v_size))
        x = g.add("Transpose", [g.add("Gather", [head, "input_ids"], axis=1)], perm=[1, 2, 0])
    else:
        table = g.init("model.embed_tokens.weight", w.table("model.embed_tokens.weight", v_size, h))
        x = g.add("Gather", [table, "input_ids"], axis=0)
        head = g.init("lm_head.weight_T", w.matrix("lm_head.weight", h, v_size))

    # Positions: 0..P-1 in prefill; the past length C in decode.
    if decode:
        positions = g.add("Shape", ["past.0.key"], start=2, end=3)  # [1]: C
    else:
        length = g.add("Squeeze", [g.add("Shape", ["input_ids"], start=1, end=2), g.i64([0])])
        positions = g.add("Range", [g.i64(0), length, g.i64(1)])  # [P]
    cos_table, sin_table = (t.astype(np_dtype) for t in rope_tables(arch))
    cos = g.add("Unsqueeze", [g.add("Gather", [g.init("rope.cos", cos_table), positions]), g.i64([1])])
    sin = g.add("Unsqueeze", [g.add("Gather", [g.init("rope.sin", sin_table), positions]), g.i64([1])])
    rope = (cos, sin, g.i64([d // 2, d // 2]))

    mask = None
    if not decode:  # causal mask [P, P], tiled to the g*P stacked query rows of each kv head
        later = g.add("Greater", [g.add("Unsqueeze", [positions, g.i64([0])]),
                                  g.add("Unsqueeze", [positions, g.i64([1])])])
        mask = g.add("Where", [later, g.const(np.finfo(np_dtype).min), g.const(0.0)])
        groups = arch.num_heads // kv
        if groups > 1:
            mask = g.add("Tile", [mask, g.i64([groups, 1])])

    for i in range(arch.num_layers):
        prefix = f"model.layers.{i}."
        ln1 = g.init(prefix + "input_layernorm.weight", w.vector(prefix + "input_layernorm.weight", h, 1.0))
        attn = _attention(g, arch, w, prefix + "self_attn.", i, _rms_norm(g, x, ln1, arch.rms_norm_eps), rope,
                          mask, decode)
        x = g.add("Add", [x, attn])
        ln2 = g.init(prefix + "post_attention_layernorm.weight",
                     w.vector(prefix + "post_attention_layernorm.weight", h, 1.0))
        x = g.add("Add", [x, _ffn(g, arch, w, prefix + "mlp.", _rms_norm(g, x, ln2, arch.rms_norm_eps))])

    last = g.add("Gather", [x, g.i64(-1)], axis=1)  # [1, hidden]: only the last position needs logits
    norm = g.init("model.norm.weight", w.vector("model.norm.weight", h, 1.0))
    g.add("MatMul", [_rms_norm(g, last, norm, arch.rms_norm_eps), head], "logits")

    graph = helper.make_graph(g.nodes, f"{phase}_{arch.arch_id}", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nas",
                              ir_version=IR_VERSION)
    helper.set_model_props(model, {
        "nas.arch": json.dumps(arch.to_dict(), sort_keys=True),
        "nas.arch_id": arch.arch_id,
        "nas.phase": phase,
        "nas.precision": precision,
        "nas.graph_builder": BUILDER_VERSION,
    })
    return model


def graph_feeds(arch: ArchConfig, phase: str, prompt_len: int | None = None, context_len: int | None = None,
                seed: int = 0, precision: str = "fp32") -> dict[str, np.ndarray]:
    """Inputs for a graph of `phase`: random token ids, and (decode) a random KV cache of `context_len`.

    Defaults: prompt_len = min(128, max_seq_len), context_len = min(512, max_seq_len - 1). The cache is in
    the graph's activation type (fp16 only for `precision="fp16"`).
    """
    _check_phase(phase)
    rng = np.random.default_rng(seed)
    if phase == "prefill":
        prompt_len = min(128, arch.max_seq_len) if prompt_len is None else prompt_len
        if isinstance(prompt_len, bool) or not isinstance(prompt_len, (int, np.integer)) \
                or not 1 <= prompt_len <= arch.max_seq_len:
            raise NasUserError(f"prompt_len must be an integer in 1..{arch.max_seq_len} (max_seq_len), "
                               f"got {prompt_len!r}")
        return {"input_ids": rng.integers(0, arch.vocab_size, (1, int(prompt_len)), dtype=np.int64)}
    context_len = min(512, arch.max_seq_len - 1) if context_len is None else context_len
    if isinstance(context_len, bool) or not isinstance(context_len, (int, np.integer)) \
            or not 1 <= context_len <= arch.max_seq_len - 1:
        raise NasUserError(f"context_len must be an integer in 1..{arch.max_seq_len - 1} (max_seq_len - 1), "
                           f"got {context_len!r}")
    dtype = _NP_DTYPE[activation_precision(precision)]
    feeds = {"input_ids": rng.integers(0, arch.vocab_size, (1, 1), dtype=np.int64)}
    shape = (1, arch.num_kv_heads, int(context_len), arch.head_dim)
    for i in range(arch.num_layers):
        for kind in ("key", "value"):
            feeds[f"past.{i}.{kind}"] = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
    return feeds


def model_weights(model) -> dict[str, np.ndarray]:
    """A nas.model module's weights as fp32 numpy arrays named as in its state_dict (the tied head included).

    The arrays share memory with the module's parameters when they are fp32 CPU tensors.
    """
    return {name: t.detach().cpu().float().numpy() for name, t in model.state_dict().items()}


__all__ = ["PHASES", "PRECISIONS", "build_graph", "graph_feeds", "model_weights", "save_graph", "rope_tables",
           "activation_precision"]
