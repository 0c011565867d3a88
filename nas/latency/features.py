"""Physically-motivated latency features, computed for a whole ArchBatch at once.

Each feature is a count of work one phase does (FLOPs, bytes moved, elements touched, ops dispatched),
taken from `nas.accounting` through `ArchBatch`, so nothing here re-derives a formula. A fitted predictor is a
non-negative combination of these columns: each coefficient is a cost per unit of work (ms per GFLOP, ms per
MB, ms per layer), which keeps predictions positive and lets a reader check the fitted rates against the
hardware (1 / coefficient of `linear_gflop` is the achieved GFLOP/s).

Lengths (`prompt_len` for prefill, `context_len` for decode) may be one integer for the whole batch or one
per row: fitting uses per-row lengths (each measurement has its own), prediction a single one.

Units are in the feature names and in `FEATURES` (phase -> name -> (unit, function)); scales (1e9, 1e6) keep
the columns of similar size so the least-squares problem is well conditioned.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from nas.core import accounting
from nas.core.accounting import PHASES
from nas.core.arch import ArchBatch


def kv_bytes_per_element(precision: str) -> int:
    """Bytes per KV-cache element in the graphs nas measures (`nas.latency.graphs`, GenAI's structure): fp16
    graphs keep an fp16 cache; fp32 graphs and the int8/int4 ones (fp32 activations) keep fp32."""
    return accounting.kv_bytes_per_element(precision)


def _lengths(batch: ArchBatch, length) -> np.ndarray:
    # float64, as ArchBatch computes figures at a length: exact below 2**53 and never wraps around (int64 would,
    # for the squared terms of a long prompt on a large shape).
    arr = np.asarray(length, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(len(batch), float(arr), dtype=np.float64)
    if arr.shape != (len(batch),):
        raise ValueError(f"lengths must be one integer or one per config ({len(batch)}), got shape {arr.shape}")
    return arr


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# ----- prefill: a prompt of P tokens, logits for the last position -----

def _prefill_linear_gflop(batch, P, precision):
    s = batch.shape_args()
    per_token = accounting.linear_flops_per_token(s["hidden"], s["layers"], s["heads"], s["kv_heads"],
                                                  s["head_dim"], s["intermediate"], s["n_matrices"])
    return _f(per_token) * P / 1e9


def _attention_gflop(flops):
    """The attention FLOPs (QK^T and AV) of a phase at its length, in 1e9 FLOP: `flops` is accounting's."""
    def feature(batch, length, precision):
        s = batch.shape_args()
        return _f(flops(s["layers"], s["heads"], s["head_dim"], length)) / 1e9

    return feature


def _prefill_score_melems(batch, P, precision):
    # Unfused attention materialises and softmaxes a full P x P score matrix per head (the causal mask is
    # applied to it, not skipped), so softmax/mask work grows with P^2 * heads, apart from head_dim.
    s = batch.shape_args()
    return _f(s["layers"]) * s["heads"] * _f(P) * P / 1e6


def _prefill_act_melems(batch, P, precision):
    # Element-wise work per token and layer: norms, residual adds, RoPE, the activation and gate product.
    s = batch.shape_args()
    width = s["hidden"] + (s["heads"] + 2 * s["kv_heads"]) * s["head_dim"] + (s["n_matrices"] - 1) * s["intermediate"]
    return _f(s["layers"]) * width * P / 1e6


def _lm_head_gflop(batch, length, precision):
    s = batch.shape_args()
    return _f(accounting.lm_head_flops(s["vocab"], s["hidden"])) / 1e9


def _prefill_lm_head_gflop(batch, P, precision):
    """The LM head over all P prompt positions (the deployed graph returns logits for every position)."""
    return _lm_head_gflop(batch, P, precision) * _f(_lengths(batch, P))


def streamed_weight_bytes(batch: ArchBatch, precision: str) -> np.ndarray:
    """Bytes of weights one forward pass reads: all of them, except that a separate input embedding table is
    only gathered (a few rows), never streamed (`accounting.streamed_weight_bytes`; the same for tied and
    untied models)."""
    s = batch.shape_args()
    return _f(accounting.streamed_weight_bytes(precision, **s, qkv_bias=batch.columns["qkv_bias"]))


def lm_head_bytes(batch: ArchBatch, precision: str) -> np.ndarray:
    """Bytes of the [vocab x hidden] LM head at `precision` (`accounting.lm_head_bytes`)."""
    s = batch.shape_args()
    return _f(accounting.lm_head_bytes(precision, s["vocab"], s["hidden"]))


def _streamed_weight_mb(batch, length, precision):
    return streamed_weight_bytes(batch, precision) / 1e6


def _lm_head_mb(batch, length, precision):
    return lm_head_bytes(batch, precision) / 1e6


def _layer_weight_mb(batch, length, precision):
    # The decoder layers' weights (and the final norm): streamed bytes less the LM head. Their matrices are
    # small (hidden x hidden ... hidden x ffn), read at a lower rate than the one wide LM head GEMV.
    return (streamed_weight_bytes(batch, precision) - lm_head_bytes(batch, precision)) / 1e6


def _layers(batch, length, precision):
    return _f(batch.num_layers)


def _one(batch, length, precision):
    return np.ones(len(batch), dtype=np.float64)


# ----- decode: one new token against a cache of C tokens -----

def _decode_linear_gflop(batch, C, precision):
    return _prefill_linear_gflop(batch, 1, precision)


def _kv_mb(batch, C, precision):
    return _f(batch.kv_cache_bytes(C, kv_bytes_per_element(precision))) / 1e6


def _decode_score_kelems(batch, C, precision):
    s = batch.shape_args()
    return _f(s["layers"]) * s["heads"] * (_f(C) + 1) / 1e3


FeatureFn = Callable[[ArchBatch, np.ndarray, str], np.ndarray]

# name -> (unit of one feature value, function). Coefficients are in "ms per <unit>".
FEATURES: dict[str, dict[str, tuple[str, FeatureFn]]] = {
    "prefill": {
        "one": ("run", _one),  # fixed cost of one session run: input binding, thread-pool wake-up
        "layers": ("layer", _layers),  # per-layer kernel dispatch (~20 ops each)
        "linear_gflop": ("1e9 FLOP", _prefill_linear_gflop),  # projections and FFN, P tokens
        "attention_gflop": ("1e9 FLOP", _attention_gflop(accounting.prefill_attention_flops)),  # QK^T and AV (causal)
        "score_melems": ("1e6 elements", _prefill_score_melems),  # score matrix: mask + softmax
        "act_melems": ("1e6 elements", _prefill_act_melems),  # element-wise ops on activations
        "lm_head_gflop": ("1e9 FLOP", _prefill_lm_head_gflop),  # vocab projection of every position
        # every weight read once (an untied input embedding is gathered, not read)
        "streamed_weight_mb": ("1e6 bytes", _streamed_weight_mb),
    },
    "decode": {
        "one": ("run", _one),
        "layers": ("layer", _layers),
        "streamed_weight_mb": ("1e6 bytes", _streamed_weight_mb),  # memory-bound: weights streamed per token
        "layer_weight_mb": ("1e6 bytes", _layer_weight_mb),  # ... split into the decoder layers' share
        "lm_head_mb": ("1e6 bytes", _lm_head_mb),  # ... and the LM head's (one wide GEMV)
        "linear_gflop": ("1e9 FLOP", _decode_linear_gflop),
        "kv_mb": ("1e6 bytes", _kv_mb),  # the K/V cache, read once by attention (in place, no copy)
        "attention_gflop": ("1e9 FLOP", _attention_gflop(accounting.decode_attention_flops)),
        "score_kelems": ("1e3 elements", _decode_score_kelems),
        "lm_head_gflop": ("1e9 FLOP", _lm_head_gflop),
    },
}

DEFAULT_FEATURES = {phase: tuple(FEATURES[phase]) for phase in PHASES}


def feature_units(phase: str, names) -> dict[str, str]:
    return {name: FEATURES[phase][name][0] for name in names}


def feature_matrix(batch: ArchBatch, phase: str, length, precision: str, names=None) -> np.ndarray:
    """[n_configs, n_features] float64 matrix of the named features (default: all of the phase's)."""
    if phase not in FEATURES:
        raise ValueError(f"phase {phase!r} is not one of {', '.join(PHASES)}")
    names = DEFAULT_FEATURES[phase] if names is None else tuple(names)
    unknown = [n for n in names if n not in FEATURES[phase]]
    if unknown:
        raise ValueError(f"unknown {phase} feature(s) {', '.join(unknown)}; known: {', '.join(FEATURES[phase])}")
    lengths = _lengths(batch, length)
    if len(batch) and lengths.min() <= 0:
        raise ValueError(f"{phase} lengths must be positive, got {int(lengths.min())}")
    cols = [FEATURES[phase][name][1](batch, lengths, precision) for name in names]
    return np.stack(cols, axis=1) if cols else np.zeros((len(batch), 0))


def phase_flops(batch: ArchBatch, phase: str, length) -> np.ndarray:
    """All matmul FLOPs of one phase (the FLOPs-only baseline's single feature)."""
    lengths = _lengths(batch, length)
    if phase == "prefill":
        return _f(batch.prefill_flops(lengths))
    return _f(batch.decode_flops(lengths))
