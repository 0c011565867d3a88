"""ONNX graphs of a decoder-only model as ONNX Runtime GenAI deploys it, built directly from an ArchConfig.

The structure is what `python -m onnxruntime_genai.models.builder -i HF_DIR -o OUT -p {fp32,int8,int4} -e cpu`
(onnxruntime-genai 0.18) writes for a Llama/Qwen2 checkpoint; tests/fixtures/genai_builder.json records the
builder's op histograms, initializer bytes and inputs/outputs for tiny configs (regenerate it with
benchmarks/genai_builder_fixture.py) and tests/latency/test_graphs.py checks this module against it.

One graph serves both phases (as in GenAI; `phase` only labels it):
- inputs ``input_ids`` int64 [1, sequence_length], ``attention_mask`` int64 [1, total_sequence_length],
  ``past_key_values.{i}.key`` / ``.value`` [1, kv_heads, past_sequence_length, head_dim];
- outputs ``logits`` [1, sequence_length, vocab] (every position, as GenAI's graph computes them) and
  ``present.{i}.key`` / ``.value`` [1, kv_heads, total_sequence_length, head_dim].
The KV cache has the graph's activation type: fp16 in fp16 graphs, fp32 in fp32/int8/int4 graphs (the
builder's CPU int4/int8 graphs keep fp32 inputs and outputs).

How an app runs it (GenAI with ``past_present_share_buffer``, and nas's timing, `graph_feeds` +
`nas.latency.measure.time_session`): one KV buffer per layer and kind, bound as both the past input and the
present output, so GroupQueryAttention writes the new tokens in place and nothing copies the cache. The
attention mask's row sum minus one is the last position (``seqlens_k``), its width the total length. Prefill of
P tokens: buffer length P, mask of P ones. Decode at context C (C cached tokens plus the new one): buffer
length C + 1 holding the C cached tokens, mask of C + 1 ones, one input id.

Nodes (domain com.microsoft where marked):
- attention-mask subgraph: ReduceSum -> Sub 1 -> Cast int32 (seqlens_k); Shape -> Gather 1 -> Cast int32;
- embedding: Gather from the [vocab, hidden] table; a tied fp32/fp16 model stores one [hidden, vocab] LM head
  and Gathers from its Transpose; a tied int4 model gathers from the LM head's own 4-bit blocks
  (com.microsoft GatherBlockQuantized). The builder quantises the embedding only in that case: untied int4 and
  all int8 graphs keep an fp32 [vocab, hidden] table;
- per layer: (Skip)SimplifiedLayerNormalization (the residual add fused, com.microsoft for the Skip form), one
  fused qkv projection [hidden, (heads + 2 kv_heads) head_dim] (+ one Add for a qkv bias),
  GroupQueryAttention (com.microsoft: rotary embedding inside from cos/sin caches [max_seq_len, head_dim/2],
  causal, past/present KV), o projection, gate and up projections, activation (silu: Sigmoid + Mul; relu;
  gelu: com.microsoft FastGelu, the tanh form), Mul, down projection;
- final SkipSimplifiedLayerNormalization and the LM head.
Projections are MatMul at fp32/fp16, and com.microsoft MatMulNBits at int8 (bits 8) / int4 (bits 4): block 32
along the input dim, symmetric (no zero points: 8 / 128 implied), one fp32 scale per block, accuracy_level 4
(int8 activations inside the kernel), as the builder writes them for the CPU EP.

fp16: GenAI builds fp16 models with this structure for GPU EPs; its CPU fp16 graph is different
(MultiHeadAttention + RotaryEmbedding + position_ids, no shared buffer; see the fixture). nas builds the
GroupQueryAttention form at fp16 too, so one structure is measured for every precision: how ORT's CPU EP runs
it is what a CPU fp16 figure means (tests check it runs).

Weights: given (names and layouts of nas.model's state_dict, see `model_weights`) the graph computes what that
torch model computes, with q/k/v concatenated into the fused projection and int weights quantised round to
nearest; without them random: floats copied from a seeded pool of N(0, 0.02) draws (fresh draws of 350M
numbers alone take seconds), quantised blocks as random bytes from a seeded pool with scales of the right
size. Values do not change how fast ORT runs. Norm weights are 1, biases 0.
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

PRECISIONS = accounting.PRECISIONS
OPSET = 22  # the builder's opset (and com.microsoft 1)
IR_VERSION = 10
MS_DOMAIN = "com.microsoft"
# The graph structure's version (nas.latency.provenance.GRAPH_BUILDER_VERSION: "genai-1" is ONNX Runtime GenAI
# 0.18's builder structure, see the module doc). Bump it there when the structure changes: rows timed on other
# graphs are then measured again and predictors fitted on them refused.
BUILDER_VERSION = GRAPH_BUILDER_VERSION
GENAI_BUILDER_REFERENCE = "onnxruntime-genai 0.18.0 model builder, -e cpu"
ACCURACY_LEVEL = 4
_POOL_SIZE = 1 << 20

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
    return accounting.activation_precision(precision)


def rope_tables(arch: ArchConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [max_seq_len, head_dim/2] in fp32, the same angles nas.model computes."""
    d = arch.head_dim
    inv_freq = (1.0 / (np.float32(arch.rope_theta) ** (np.arange(0, d, 2).astype(np.float32) / np.float32(d))))
    angles = np.arange(arch.max_seq_len, dtype=np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def quantize_blocks(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """A weight [in=K, out=N] as MatMulNBits stores it: blocks [N, ceil(K/32), 32*bits/8] uint8 and fp32 scales
    [N, ceil(K/32)]. Symmetric round to nearest as ORT's quantizer (MLAS) does it for GenAI's builder: the value
    of largest magnitude in a block maps to the lowest level (scale = that value / -8, or / -128 for 8 bits; the
    scale may be negative), zero point 8 / 128 implied; K padded to whole blocks (stored bytes 0); 4-bit values
    two a byte, the first in the low nibble."""
    k, n = w.shape
    blocks = -(-k // accounting.INT_BLOCK_SIZE)
    rows = np.zeros((n, blocks * accounting.INT_BLOCK_SIZE), dtype=np.float32)
    rows[:, :k] = w.T
    rows = rows.reshape(n, blocks, accounting.INT_BLOCK_SIZE)
    zero = 8 if bits == 4 else 128
    peak = np.take_along_axis(rows, np.abs(rows).argmax(axis=-1)[..., None], axis=-1)[..., 0]
    scales = peak / -zero
    safe = np.where(scales == 0, 1.0, scales)
    q = np.clip(np.rint(rows / safe[..., None]) + zero, 0, 2 * zero - 1).astype(np.uint8)
    q.reshape(n, -1)[:, k:] = 0  # the padding past K is stored as 0, as ORT's quantizer writes it
    if bits == 4:
        q = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return q, scales.astype(np.float32)


def dequantize_blocks(q: np.ndarray, scales: np.ndarray, bits: int, k: int) -> np.ndarray:
    """The [in=K, out=N] fp32 weight that `quantize_blocks`' output multiplies by."""
    if bits == 4:
        q = np.stack([q & 15, q >> 4], axis=-1).reshape(q.shape[0], q.shape[1], -1)
    values = (q.astype(np.float32) - (8 if bits == 4 else 128)) * scales[..., None]
    return values.reshape(q.shape[0], -1)[:, :k].T.copy()


class _Weights:
    """Weights in ONNX layout ([in, out] for projections), from a torch-named dict or seeded random pools."""

    def __init__(self, weights: Mapping[str, np.ndarray] | None, seed: int, dtype):
        self.given = weights
        self.dtype = dtype
        if weights is None:
            self.rng = np.random.default_rng(seed)
            self.pool = (self.rng.standard_normal(_POOL_SIZE, dtype=np.float32) * accounting.INIT_STD).astype(dtype)
            self.byte_pool = self.rng.integers(0, 256, _POOL_SIZE, dtype=np.uint8)

    def _tile(self, pool: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        out = np.empty(n, dtype=pool.dtype)
        offset = int(self.rng.integers(_POOL_SIZE))
        pos = 0
        while pos < n:
            chunk = pool[offset:offset + n - pos]
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

    def matrix(self, names: list[tuple[str, int]], in_dim: int, dtype=None) -> np.ndarray:
        """Linear weights (torch [out, in] each) side by side as one [in, sum(out)] matrix."""
        dtype = dtype or self.dtype
        if self.given is None:
            return self._tile(self.pool, (in_dim, sum(out for _, out in names))).astype(dtype, copy=False)
        return np.ascontiguousarray(np.concatenate([self._get(name, (out, in_dim)).T for name, out in names],
                                                   axis=1), dtype=dtype)

    def quantized(self, names: list[tuple[str, int]], in_dim: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
        if self.given is None:  # random blocks, scales of the size RTN gives N(0, 0.02) weights
            out = sum(n for _, n in names)
            blocks = -(-in_dim // accounting.INT_BLOCK_SIZE)
            q = self._tile(self.byte_pool, (out, blocks, accounting.INT_BLOCK_SIZE * bits // 8))
            top = 7 if bits == 4 else 127
            return q, np.full((out, blocks), 2.5 * accounting.INIT_STD / top, dtype=np.float32)
        return quantize_blocks(self.matrix(names, in_dim, np.float32), bits)

    def table(self, name: str, rows: int, cols: int, dtype=None) -> np.ndarray:
        """An embedding table [rows, cols], kept as it is."""
        dtype = dtype or self.dtype
        if self.given is None:
            return self._tile(self.pool, (rows, cols)).astype(dtype, copy=False)
        return np.ascontiguousarray(self._get(name, (rows, cols)), dtype=dtype)

    def vector(self, names: list[tuple[str, int]], fill: float) -> np.ndarray:
        if self.given is None:
            return np.full(sum(n for _, n in names), fill, dtype=self.dtype)
        return np.ascontiguousarray(np.concatenate([self._get(name, (n,)) for name, n in names]), dtype=self.dtype)


class _Graph:
    """Accumulates nodes and initializers."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def add(self, op: str, inputs: list[str], outputs: int | list[str] = 1, domain: str = "", **attrs: Any):
        self._count += 1
        if isinstance(outputs, int):
            outputs = [f"{op.lower()}_{self._count}_{j}" for j in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_{self._count}", domain=domain,
                                           **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def constant(self, value) -> str:
        return self.add("Constant", [], value=numpy_helper.from_array(np.array(value, dtype=np.int64)))

    def init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name


class _Projection:
    """Writes projections as MatMul (fp32/fp16) or MatMulNBits (int8/int4) with the builder's names."""

    def __init__(self, g: _Graph, w: _Weights, precision: str):
        self.g, self.w, self.precision = g, w, precision
        self.bits = accounting.BITS.get(precision)

    def __call__(self, x: str, name: str, sources: list[tuple[str, int]], in_dim: int, output=1) -> str:
        out_dim = sum(n for _, n in sources)
        if self.bits is None:
            weight = self.g.init(f"{name}.MatMul.weight", self.w.matrix(sources, in_dim))
            return self.g.add("MatMul", [x, weight], output)
        q, scales = self.w.quantized(sources, in_dim, self.bits)
        qname = self.g.init(f"{name}.MatMul.weight_Q{self.bits}", q)
        sname = self.g.init(f"{name}.MatMul.weight_scales", scales)
        return self.g.add("MatMulNBits", [x, qname, sname], output, domain=MS_DOMAIN, K=in_dim, N=out_dim,
                          bits=self.bits, block_size=accounting.INT_BLOCK_SIZE, accuracy_level=ACCURACY_LEVEL)


def _activation(g: _Graph, kind: str, x: str) -> str:
    if kind in ("swiglu",):
        return g.add("Mul", [x, g.add("Sigmoid", [x])])
    if kind == "reglu":
        return g.add("Relu", [x])
    return g.add("FastGelu", [x], domain=MS_DOMAIN)  # geglu, gelu: the tanh approximation


def build_graph(arch: ArchConfig, phase: str = "decode", precision: str = "fp32", seed: int = 0,
                weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The GenAI-structured ONNX graph of `arch` at `precision` (one graph for both phases; `phase` is checked
    and recorded in the metadata only).

    `weights` (names and layouts of nas.model's state_dict, see `model_weights`) makes the graph compute what
    that torch model computes (int8/int4 with round-to-nearest weights); without it the weights are seeded
    random (see the module doc).
    """
    _check_phase(phase)
    _check_precision(precision)
    if arch.head_dim % accounting.HEAD_DIM_MULTIPLE:
        raise NasUserError(f"head_dim {arch.head_dim} of {arch.arch_id} is {accounting.HEAD_DIM_RULE}")
    np_dtype = _NP_DTYPE[activation_precision(precision)]
    g = _Graph()
    w = _Weights(weights, seed, np_dtype)
    proj = _Projection(g, w, precision)
    # Attention-mask subgraph: seqlens_k = sum(mask) - 1 and total_sequence_length = mask width, both int32.
    one_vec = g.constant([1])
    seqlens = g.add("Cast", [g.add("Sub", [g.add("ReduceSum", ["attention_mask", one_vec], keepdims=0), one_vec])],
                    to=TensorProto.INT32)
    total = g.add("Cast", [g.add("Gather", [g.add("Shape", ["attention_mask"]), g.constant(1)], axis=0)],
                  to=TensorProto.INT32)
    x, head_sources = _embedding(g, w, arch, precision)
    cos, sin = rope_tables(arch)
    rotary = (g.init("cos_cache", cos.astype(np_dtype)), g.init("sin_cache", sin.astype(np_dtype)))
    residual, pending = x, None  # pending: the last sublayer's output, not yet added to the residual
    for i in range(arch.num_layers):
        residual, pending = _decoder_layer(g, w, proj, arch, i, residual, pending, (seqlens, total), rotary)
    _lm_head(g, w, proj, arch, precision, residual, pending, head_sources)
    return _model(g, arch, phase, precision)


def _embedding(g: _Graph, w: "_Weights", arch: ArchConfig, precision: str) -> tuple[str, list]:
    """The token embedding (see the module doc for which precision stores what), and the LM head's sources."""
    h, vocab = arch.hidden_size, arch.vocab_size
    head_sources = [("model.embed_tokens.weight" if arch.tie_embeddings else "lm_head.weight", vocab)]
    if arch.tie_embeddings and precision == "int4":
        q, scales = w.quantized(head_sources, h, 4)
        qname = g.init("lm_head.MatMul.weight_Q4", q)
        sname = g.init("lm_head.MatMul.weight_scales", scales)
        table = g.add("Reshape", [qname, g.constant([vocab, q.shape[1] * q.shape[2]])])
        x = g.add("GatherBlockQuantized", [table, "input_ids", sname], domain=MS_DOMAIN, bits=4,
                  block_size=accounting.INT_BLOCK_SIZE, gather_axis=0, quantize_axis=1)
    elif arch.tie_embeddings and precision in ("fp32", "fp16"):
        head = g.init("lm_head.MatMul.weight", w.matrix(head_sources, h))
        x = g.add("Gather", [g.add("Transpose", [head], perm=[1, 0]), "input_ids"])
    else:
        table = g.init("model.embed_tokens.weight", w.table("model.embed_tokens.weight", vocab, h))
        x = g.add("Gather", [table, "input_ids"])
    return x, head_sources


def _decoder_layer(g: _Graph, w: "_Weights", proj: "_Projection", arch: ArchConfig, i: int, residual: str,
                   pending: str | None, lengths: tuple[str, str], rotary: tuple[str, str]) -> tuple[str, str]:
    """Layer i: norm (fused with the previous sublayer's residual add), GroupQueryAttention, norm, FFN; returns
    the residual and the FFN's output, not yet added to it."""
    h, heads, kv, d, f = arch.hidden_size, arch.num_heads, arch.num_kv_heads, arch.head_dim, arch.intermediate_size
    eps, src = float(arch.rms_norm_eps), f"model.layers.{i}."
    ln1 = g.init(f"{src}input_layernorm.weight", w.vector([(src + "input_layernorm.weight", h)], 1.0))
    if pending is None:
        normed = g.add("SimplifiedLayerNormalization", [residual, ln1], epsilon=eps, axis=-1, stash_type=1)
    else:
        normed, _, _, residual = g.add("SkipSimplifiedLayerNormalization", [residual, pending, ln1],
                                       [f"ln1_{i}", "", "", f"residual_attn_{i}"], domain=MS_DOMAIN, epsilon=eps)
    attn = src + "self_attn."
    qkv_sources = [(attn + "q_proj.weight", heads * d), (attn + "k_proj.weight", kv * d),
                   (attn + "v_proj.weight", kv * d)]
    qkv = proj(normed, f"{src}attn.qkv_proj", qkv_sources, h)
    if arch.qkv_bias:
        bias = w.vector([(name.replace(".weight", ".bias"), n) for name, n in qkv_sources], 0.0)
        qkv = g.add("Add", [qkv, g.init(f"{src}attn.qkv_proj.Add.bias", bias)])
    ctx = g.add("GroupQueryAttention",
                [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", *lengths, *rotary],
                [f"attn_{i}", f"present.{i}.key", f"present.{i}.value"], domain=MS_DOMAIN,
                num_heads=heads, kv_num_heads=kv, scale=float(1.0 / np.sqrt(d)), local_window_size=-1,
                softcap=0.0, do_rotary=1, rotary_interleaved=0)[0]
    attn_out = proj(ctx, f"{src}attn.o_proj", [(attn + "o_proj.weight", h)], heads * d)
    ln2 = g.init(f"{src}post_attention_layernorm.weight", w.vector([(src + "post_attention_layernorm.weight", h)], 1.0))
    normed, _, _, residual = g.add("SkipSimplifiedLayerNormalization", [residual, attn_out, ln2],
                                   [f"ln2_{i}", "", "", f"residual_ffn_{i}"], domain=MS_DOMAIN, epsilon=eps)
    mlp = src + "mlp."
    up = proj(normed, f"{src}mlp.up_proj", [(mlp + "up_proj.weight", f)], h)
    if arch.ffn_kind == "gelu":
        inner = _activation(g, "gelu", up)
    else:
        gate = proj(normed, f"{src}mlp.gate_proj", [(mlp + "gate_proj.weight", f)], h)
        inner = g.add("Mul", [_activation(g, arch.ffn_kind, gate), up])
    return residual, proj(inner, f"{src}mlp.down_proj", [(mlp + "down_proj.weight", h)], f)


def _lm_head(g: _Graph, w: "_Weights", proj: "_Projection", arch: ArchConfig, precision: str, residual: str,
             pending: str, head_sources: list) -> None:
    """The final norm and the LM head (tied at int4: the embedding's quantised table itself) writing `logits`."""
    h, vocab, layers = arch.hidden_size, arch.vocab_size, arch.num_layers
    final = g.init(f"model.layers.{layers}.final_norm_layernorm.weight", w.vector([("model.norm.weight", h)], 1.0))
    normed = g.add("SkipSimplifiedLayerNormalization", [residual, pending, final], ["final_norm", "", "", ""],
                   domain=MS_DOMAIN, epsilon=float(arch.rms_norm_eps))[0]
    if arch.tie_embeddings and precision == "int4":  # the head is the quantised table itself
        g.add("MatMulNBits", [normed, "lm_head.MatMul.weight_Q4", "lm_head.MatMul.weight_scales"], ["logits"],
              domain=MS_DOMAIN, K=h, N=vocab, bits=4, block_size=accounting.INT_BLOCK_SIZE,
              accuracy_level=ACCURACY_LEVEL)
    elif arch.tie_embeddings and precision in ("fp32", "fp16"):
        g.add("MatMul", [normed, "lm_head.MatMul.weight"], ["logits"])
    else:
        proj(normed, "lm_head", head_sources, h, ["logits"])


def _model(g: _Graph, arch: ArchConfig, phase: str, precision: str) -> onnx.ModelProto:
    """The graph's inputs and outputs as GenAI names them (KV cache per layer), and the model with nas's metadata."""
    onnx_dtype = _ONNX_DTYPE[activation_precision(precision)]
    kv, d = arch.num_kv_heads, arch.head_dim
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, "total_sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", onnx_dtype, [1, "sequence_length", arch.vocab_size])]
    for i in range(arch.num_layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", onnx_dtype,
                                                        [1, kv, "past_sequence_length", d]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", onnx_dtype,
                                                         [1, kv, "total_sequence_length", d]))
    graph = helper.make_graph(g.nodes, f"{arch.arch_id}_{precision}", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="nas", ir_version=IR_VERSION)
    helper.set_model_props(model, {
        "nas.arch": json.dumps(arch.to_dict(), sort_keys=True),
        "nas.arch_id": arch.arch_id,
        "nas.phase": phase,
        "nas.precision": precision,
        "nas.graph_builder": BUILDER_VERSION,
    })
    return model


def _length(value, default: int, low: int, high: int, name: str, what: str) -> int:
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise NasUserError(f"{name} must be an integer in {low}..{high} ({what}), got {value!r}")
    return int(value)


def graph_feeds(arch: ArchConfig, phase: str, prompt_len: int | None = None, context_len: int | None = None,
                seed: int = 0, precision: str = "fp32") -> dict[str, np.ndarray]:
    """Inputs of one step of `phase`, in the shared-buffer form an app runs (see the module doc).

    prefill: `prompt_len` random ids, a mask of prompt_len ones, KV buffers of prompt_len positions (zeros,
    written by the step). decode: one random id, a mask of context_len + 1 ones, KV buffers of context_len + 1
    positions holding a random cache in the first context_len. Defaults: prompt_len = min(128, max_seq_len),
    context_len = min(512, max_seq_len - 1). The buffers have the graph's activation type.
    Bind each buffer as both past_key_values.* and present.* (`nas.latency.measure.time_session` does) to run
    the step in place.
    """
    _check_phase(phase)
    rng = np.random.default_rng(seed)
    dtype = _NP_DTYPE[activation_precision(precision)]
    if phase == "prefill":
        new = _length(prompt_len, min(128, arch.max_seq_len), 1, arch.max_seq_len, "prompt_len", "max_seq_len")
        total = new
    else:
        cached = _length(context_len, min(512, arch.max_seq_len - 1), 1, arch.max_seq_len - 1, "context_len",
                         "max_seq_len - 1")
        new, total = 1, cached + 1
    feeds = {"input_ids": rng.integers(0, arch.vocab_size, (1, new), dtype=np.int64),
             "attention_mask": np.ones((1, total), dtype=np.int64)}
    shape = (1, arch.num_kv_heads, total, arch.head_dim)
    for i in range(arch.num_layers):
        for kind in ("key", "value"):
            if phase == "prefill":
                feeds[f"past_key_values.{i}.{kind}"] = np.zeros(shape, dtype=dtype)
            else:
                buf = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
                buf[:, :, -1] = 0
                feeds[f"past_key_values.{i}.{kind}"] = buf
    return feeds


def past_name(present: str) -> str | None:
    """The past input a present output shares its buffer with ("present.3.key" -> "past_key_values.3.key")."""
    return "past_key_values." + present[len("present."):] if present.startswith("present.") else None


def model_weights(model) -> dict[str, np.ndarray]:
    """A nas.model module's weights as fp32 numpy arrays named as in its state_dict (the tied head included).

    The arrays share memory with the module's parameters when they are fp32 CPU tensors.
    """
    return {name: t.detach().cpu().float().numpy() for name, t in model.state_dict().items()}


__all__ = ["PHASES", "PRECISIONS", "BUILDER_VERSION", "build_graph", "graph_feeds", "model_weights", "save_graph",
           "rope_tables", "activation_precision", "quantize_blocks", "dequantize_blocks", "past_name"]
