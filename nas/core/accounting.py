"""Exact accounting formulas for a decoder-only Llama-family model.

Every function takes the shape as plain numbers and works the same on Python ints and on numpy arrays
(one element per config), so `ArchConfig` methods and the vectorised latency predictor share one set of
formulas. Nothing else in the package re-derives these numbers.

Conventions (all documented in the README):
- Parameters are counted exactly as `transformers` instantiates LlamaForCausalLM / Qwen2ForCausalLM.
- FLOPs count matrix multiplies only (2 FLOPs per multiply-add); norms, RoPE, softmax and activations are
  below 1% for these shapes and are left out. Causal attention counts only the unmasked score entries.
- The deployed graph (ONNX Runtime GenAI's structure, nas.latency.graphs) computes logits for every position,
  so prefill applies the LM head to all P prompt tokens, and decode once.
- Weight bytes are the bytes of the deployed graph's weights (its initializers, less the rotary cos/sin
  caches: `rope_cache_bytes`), as GenAI's model builder writes them for the CPU EP:
  fp32 / fp16: every tensor at 4 / 2 bytes (a tied head and embedding stored once).
  int8 / int4: every projection and the LM head as MatMulNBits: blocks of INT_BLOCK_SIZE (32) weights along
  the input dim, each row padded to whole blocks, 32 / 16 bytes of values plus one fp32 scale per block
  (symmetric, no zero points): 36 / 20 bytes a block. The token embedding stays an fp32 [vocab, hidden] table,
  except int4 with tied embeddings, where the embedding gathers from the LM head's own 4-bit blocks
  (GatherBlockQuantized) and costs nothing extra. Norm weights and biases stay fp32 (the graph's activation
  type: int8/int4 graphs have fp32 inputs, outputs and KV cache on the CPU EP).
- The KV cache has the graph's activation type: fp16 in fp16 graphs, fp32 otherwise (`kv_bytes_per_element`).
"""

from __future__ import annotations

# ONNX Runtime's GroupQueryAttention, the attention op of the deployed graph, refuses other head sizes ("head_size
# shall be a multiple of 16", onnxruntime 1.32, CPU EP): such shapes cannot be deployed as GenAI deploys them.
HEAD_DIM_MULTIPLE = 16
HEAD_DIM_RULE = (f"not a multiple of {HEAD_DIM_MULTIPLE}, which ONNX Runtime's GroupQueryAttention (the attention op "
                 "GenAI deploys) refuses")

# Weight precisions a target can deploy at.
PRECISIONS = ("fp32", "fp16", "int8", "int4")
# The two phases of generation: prefill (a prompt of P tokens, time to first token) and decode (one new token
# with C tokens already in the KV cache).
PHASES = ("prefill", "decode")
INT4_BLOCK_SIZE = 32  # weights per scale in int8 and int4 (MatMulNBits block size)
INT_BLOCK_SIZE = INT4_BLOCK_SIZE
SCALE_BYTES = 4  # fp32 scales, one per block
VECTOR_BYTES = 4  # norm weights and biases: fp32 when the matrices are quantised
BITS = {"int8": 8, "int4": 4}
# Weights are initialised N(0, INIT_STD^2) (transformers' initializer_range default for Llama/Qwen2): the reference
# model (nas.model) and the deployed graphs' stand-in weights (nas.latency.graphs) alike.
INIT_STD = 0.02


def activation_precision(precision):
    """The float type of a deployed graph's activations, KV cache and logits: fp16 for fp16, else fp32."""
    return "fp16" if precision == "fp16" else "fp32"


def kv_bytes_per_element(precision):
    """Bytes of one KV-cache element in the graph deployed at `precision` (its activation type)."""
    return 2 if precision == "fp16" else 4

# FFN kinds: number of [hidden x intermediate] matrices.
# swiglu: SiLU(gate) * up (Llama); reglu: ReLU(gate) * up (gated ReLU, PhoneLM);
# geglu: GELU(gate) * up (Gemma style); gelu: plain two-matrix MLP with GELU (GPT-2 style, no gate).
FFN_MATRICES = {"swiglu": 3, "reglu": 3, "geglu": 3, "gelu": 2}


def attention_matrix_params(hidden, heads, kv_heads, head_dim):
    """Weights of q, k, v, o projections of one layer (no biases)."""
    q = hidden * heads * head_dim
    kv = 2 * hidden * kv_heads * head_dim
    o = heads * head_dim * hidden
    return q + kv + o


def qkv_bias_params(heads, kv_heads, head_dim, qkv_bias):
    """Bias terms of q, k, v (Qwen2 style; o_proj has none)."""
    return (heads + 2 * kv_heads) * head_dim * qkv_bias


def ffn_matrix_params(hidden, intermediate, n_matrices):
    return n_matrices * hidden * intermediate


def layer_matrix_params(hidden, heads, kv_heads, head_dim, intermediate, n_matrices):
    """2-D weights of one decoder layer."""
    return attention_matrix_params(hidden, heads, kv_heads, head_dim) + ffn_matrix_params(
        hidden, intermediate, n_matrices
    )


def layer_vector_params(hidden, heads, kv_heads, head_dim, qkv_bias):
    """1-D weights of one decoder layer: two RMSNorm weights and optional qkv biases."""
    return 2 * hidden + qkv_bias_params(heads, kv_heads, head_dim, qkv_bias)


def embedding_params(vocab, hidden, tied):
    """Input embedding plus LM head (counted once when tied)."""
    return vocab * hidden * (2 - tied)


def total_params(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied, qkv_bias):
    per_layer = layer_matrix_params(hidden, heads, kv_heads, head_dim, intermediate, n_matrices)
    per_layer = per_layer + layer_vector_params(hidden, heads, kv_heads, head_dim, qkv_bias)
    return layers * per_layer + hidden + embedding_params(vocab, hidden, tied)  # + final norm


def non_embedding_params(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied, qkv_bias):
    """Total minus token embedding and LM head (Kaplan et al. 2020's N)."""
    total = total_params(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied, qkv_bias)
    return total - embedding_params(vocab, hidden, tied)


def linear_flops_per_token(hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices):
    """Matmul FLOPs of the decoder layers for one token (excludes attention scores and the LM head)."""
    return 2 * layers * layer_matrix_params(hidden, heads, kv_heads, head_dim, intermediate, n_matrices)


def prefill_attention_flops(layers, heads, head_dim, prompt_len):
    """QK^T and AV over the causal triangle of a prompt of P tokens."""
    causal_pairs = prompt_len * (prompt_len + 1) // 2
    return 2 * 2 * layers * heads * head_dim * causal_pairs


def decode_attention_flops(layers, heads, head_dim, context_len):
    """QK^T and AV of one new token against a cache of C tokens plus itself."""
    return 2 * 2 * layers * heads * head_dim * (context_len + 1)


def lm_head_flops(vocab, hidden):
    return 2 * vocab * hidden


def prefill_flops(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, prompt_len):
    """Linear layers, causal attention and the LM head, all for every prompt token (the deployed graph returns
    logits for every position)."""
    linear = prompt_len * linear_flops_per_token(hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices)
    return (linear + prefill_attention_flops(layers, heads, head_dim, prompt_len)
            + prompt_len * lm_head_flops(vocab, hidden))


def decode_flops(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, context_len):
    linear = linear_flops_per_token(hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices)
    return linear + decode_attention_flops(layers, heads, head_dim, context_len) + lm_head_flops(vocab, hidden)


def matrix_params(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied):
    """All 2-D weights: what quantisation applies to."""
    per_layer = layer_matrix_params(hidden, heads, kv_heads, head_dim, intermediate, n_matrices)
    return layers * per_layer + embedding_params(vocab, hidden, tied)


def _blocks_per_row(in_features):
    return -(-in_features // INT_BLOCK_SIZE)


def layer_blocks(hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices):
    """MatMulNBits blocks of every decoder layer's projections, each output row padded to whole blocks."""
    rows_reading_hidden = heads * head_dim + 2 * kv_heads * head_dim + (n_matrices - 1) * intermediate
    per_layer = (
        rows_reading_hidden * _blocks_per_row(hidden)
        + hidden * _blocks_per_row(heads * head_dim)  # o_proj
        + hidden * _blocks_per_row(intermediate)  # down_proj
    )
    return layers * per_layer


def lm_head_blocks(vocab, hidden):
    return vocab * _blocks_per_row(hidden)


def int4_blocks(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied):
    """Number of blocks over the projections and the LM head (the quantised matrices; `tied` does not matter:
    the head is quantised either way)."""
    return (layer_blocks(hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices)
            + lm_head_blocks(vocab, hidden) + 0 * tied)


def block_bytes(precision):
    """Bytes of one MatMulNBits block at int8 / int4: the packed values plus an fp32 scale."""
    return INT_BLOCK_SIZE * BITS[precision] // 8 + SCALE_BYTES


def _vector_params(hidden, layers, heads, kv_heads, head_dim, qkv_bias):
    return layers * layer_vector_params(hidden, heads, kv_heads, head_dim, qkv_bias) + hidden


def weight_bytes(precision, vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied, qkv_bias):
    """Bytes of the deployed graph's weights at `precision` (see the module doc; rope caches not included)."""
    total = total_params(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied, qkv_bias)
    if precision == "fp32":
        return 4 * total
    if precision == "fp16":
        return 2 * total
    if precision in BITS:
        blocks = int4_blocks(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied)
        vectors = _vector_params(hidden, layers, heads, kv_heads, head_dim, qkv_bias)
        # the fp32 embedding table, unless int4 with tied embeddings gathers from the head's blocks
        shared = (precision == "int4") * tied
        embedding = 4 * vocab * hidden * (1 - shared)
        return blocks * block_bytes(precision) + VECTOR_BYTES * vectors + embedding
    raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def streamed_weight_bytes(precision, vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices,
                          qkv_bias):
    """Weight bytes one forward pass reads: every weight but a separate embedding table (a Gather reads only
    the tokens' rows). The same for tied and untied models."""
    total = weight_bytes(precision, vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices,
                         0, qkv_bias)
    return total - embedding_table_bytes(precision, vocab, hidden, 0)


def lm_head_bytes(precision, vocab, hidden):
    """Bytes of the [hidden, vocab] LM head at `precision` (MatMulNBits blocks at int8/int4)."""
    if precision in BITS:
        return lm_head_blocks(vocab, hidden) * block_bytes(precision)
    return (2 if precision == "fp16" else 4) * vocab * hidden


def embedding_table_bytes(precision, vocab, hidden, tied):
    """Bytes of the separate token-embedding table of the deployed graph (0 where it shares the LM head)."""
    if precision in BITS:
        return 4 * vocab * hidden * (1 - (precision == "int4") * tied)
    return (2 if precision == "fp16" else 4) * vocab * hidden * (1 - tied)


def rope_cache_bytes(precision, max_seq_len, head_dim):
    """The cos and sin caches [max_seq_len, head_dim/2] at the graph's activation type."""
    return 2 * max_seq_len * (head_dim // 2) * kv_bytes_per_element(precision)


def kv_cache_bytes(layers, kv_heads, head_dim, context_len, bytes_per_element=2):
    """Keys and values of every layer for C tokens (fp16 cache by default)."""
    return 2 * layers * kv_heads * head_dim * context_len * bytes_per_element


def working_memory_bytes(vocab, hidden, heads, kv_heads, head_dim, intermediate, n_matrices, tokens, keys,
                         bytes_per_element=4):
    """Estimated peak activation memory of one forward pass over `tokens` new tokens attending to `keys` keys.

    Layers run one after another, so one layer's tensors are live at a time: residual and normed hidden
    states (2*T*h), q/k/v (T*(H+2KV)*d), the score matrix (H*T*K, unfused attention), the FFN's inner
    activations ((n-1)*T*f), and the logits of every new token (T*V). fp32 activations by default.
    An estimate: runtimes fuse and reuse buffers differently.
    """
    elements = (2 * tokens * hidden + tokens * (heads + 2 * kv_heads) * head_dim + heads * tokens * keys
                + (n_matrices - 1) * tokens * intermediate + tokens * vocab)
    return elements * bytes_per_element


def _maximum(a, b):
    # max that works for Python ints and numpy arrays alike
    return (a > b) * a + (a <= b) * b


def memory_bytes(precision, vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied,
                 qkv_bias, prompt_len, context_len):
    """Footprint of generation: weights at `precision` + the KV cache of `context_len` tokens at the graph's
    activation type + the larger of the prefill and decode working memory (at that type too)."""
    weights = weight_bytes(precision, vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices,
                           tied, qkv_bias)
    element = kv_bytes_per_element(precision)
    kv = kv_cache_bytes(layers, kv_heads, head_dim, context_len, element)
    shape = (vocab, hidden, heads, kv_heads, head_dim, intermediate, n_matrices)
    prefill = working_memory_bytes(*shape, tokens=prompt_len, keys=prompt_len, bytes_per_element=element)
    decode = working_memory_bytes(*shape, tokens=1, keys=context_len + 1, bytes_per_element=element)
    return weights + kv + _maximum(prefill, decode)
