"""Exact accounting formulas for a decoder-only Llama-family model.

Every function takes the shape as plain numbers and works the same on Python ints and on numpy arrays
(one element per config), so `ArchConfig` methods and the vectorised latency predictor share one set of
formulas. Nothing else in the package re-derives these numbers.

Conventions (all documented in the README):
- Parameters are counted exactly as `transformers` instantiates LlamaForCausalLM / Qwen2ForCausalLM.
- FLOPs count matrix multiplies only (2 FLOPs per multiply-add); norms, RoPE, softmax and activations are
  below 1% for these shapes and are left out. Causal attention counts only the unmasked score entries.
- Prefill produces logits for the last prompt position only (what generation needs), so the LM head is
  applied once per prefill and once per decode step.
- Quantised weight bytes: every 2-D weight matrix (embedding, projections, LM head) is quantised;
  1-D tensors (norm weights, biases) stay fp16. int8 keeps one fp16 scale per output row; int4 keeps one
  fp16 scale per block of INT4_BLOCK_SIZE weights along the input dimension (symmetric, no zero point,
  as ORT's MatMulNBits with `is_symmetric=True`).
"""

from __future__ import annotations

# Weight precisions a target can deploy at.
PRECISIONS = ("fp32", "fp16", "int8", "int4")
# The two phases of generation: prefill (a prompt of P tokens, time to first token) and decode (one new token
# with C tokens already in the KV cache).
PHASES = ("prefill", "decode")
INT4_BLOCK_SIZE = 32  # weights per fp16 scale in int4 (MatMulNBits block size)
SCALE_BYTES = 2  # fp16 scales
HALF_BYTES = 2  # fp16 storage for 1-D tensors when the matrices are quantised

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
    linear = prompt_len * linear_flops_per_token(hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices)
    return linear + prefill_attention_flops(layers, heads, head_dim, prompt_len) + lm_head_flops(vocab, hidden)


def decode_flops(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, context_len):
    linear = linear_flops_per_token(hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices)
    return linear + decode_attention_flops(layers, heads, head_dim, context_len) + lm_head_flops(vocab, hidden)


def matrix_params(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied):
    """All 2-D weights: what quantisation applies to."""
    per_layer = layer_matrix_params(hidden, heads, kv_heads, head_dim, intermediate, n_matrices)
    return layers * per_layer + embedding_params(vocab, hidden, tied)


def matrix_rows(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied):
    """Output rows of all 2-D weights (one int8 scale each). Embedding rows are tokens."""
    attn_rows = heads * head_dim + 2 * kv_heads * head_dim + hidden
    ffn_rows = (n_matrices - 1) * intermediate + hidden
    return layers * (attn_rows + ffn_rows) + vocab * (2 - tied)


def _blocks_per_row(in_features):
    return -(-in_features // INT4_BLOCK_SIZE)


def int4_blocks(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied):
    """Number of int4 blocks over all 2-D weights, each row padded to whole blocks."""
    rows_reading_hidden = heads * head_dim + 2 * kv_heads * head_dim + (n_matrices - 1) * intermediate
    per_layer = (
        rows_reading_hidden * _blocks_per_row(hidden)
        + hidden * _blocks_per_row(heads * head_dim)  # o_proj
        + hidden * _blocks_per_row(intermediate)  # down_proj
    )
    return layers * per_layer + vocab * (2 - tied) * _blocks_per_row(hidden)


def weight_bytes(precision, vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied, qkv_bias):
    total = total_params(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied, qkv_bias)
    if precision == "fp32":
        return 4 * total
    if precision == "fp16":
        return 2 * total
    matrices = matrix_params(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied)
    vectors = total - matrices
    if precision == "int8":
        rows = matrix_rows(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied)
        return matrices + SCALE_BYTES * rows + HALF_BYTES * vectors
    if precision == "int4":
        blocks = int4_blocks(vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied)
        # MatMulNBits pads each row to whole blocks: BLOCK/2 bytes of packed nibbles plus one scale per block.
        return blocks * (INT4_BLOCK_SIZE // 2 + SCALE_BYTES) + HALF_BYTES * vectors
    raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def kv_cache_bytes(layers, kv_heads, head_dim, context_len, bytes_per_element=2):
    """Keys and values of every layer for C tokens (fp16 cache by default)."""
    return 2 * layers * kv_heads * head_dim * context_len * bytes_per_element


def working_memory_bytes(vocab, hidden, heads, kv_heads, head_dim, intermediate, n_matrices, tokens, keys,
                         bytes_per_element=4):
    """Estimated peak activation memory of one forward pass over `tokens` new tokens attending to `keys` keys.

    Layers run one after another, so one layer's tensors are live at a time: residual and normed hidden
    states (2*T*h), q/k/v (T*(H+2KV)*d), the score matrix (H*T*K, unfused attention), the FFN's inner
    activations ((n-1)*T*f), and the last position's logits (V). fp32 activations by default.
    An estimate: runtimes fuse and reuse buffers differently.
    """
    elements = (2 * tokens * hidden + tokens * (heads + 2 * kv_heads) * head_dim + heads * tokens * keys
                + (n_matrices - 1) * tokens * intermediate + vocab)
    return elements * bytes_per_element


def _maximum(a, b):
    # max that works for Python ints and numpy arrays alike
    return (a > b) * a + (a <= b) * b


def memory_bytes(precision, vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices, tied,
                 qkv_bias, prompt_len, context_len):
    """Footprint of generation: weights at `precision` + fp16 KV cache of `context_len` tokens + the larger
    of the prefill and decode working memory."""
    weights = weight_bytes(precision, vocab, hidden, layers, heads, kv_heads, head_dim, intermediate, n_matrices,
                           tied, qkv_bias)
    kv = kv_cache_bytes(layers, kv_heads, head_dim, context_len)
    shape = (vocab, hidden, heads, kv_heads, head_dim, intermediate, n_matrices)
    prefill = working_memory_bytes(*shape, tokens=prompt_len, keys=prompt_len)
    decode = working_memory_bytes(*shape, tokens=1, keys=context_len + 1)
    return weights + kv + _maximum(prefill, decode)
