"""ArchConfig: the one vocabulary an architecture travels in, from search space to export.

A frozen dataclass for a decoder-only Llama-family model (RMSNorm, RoPE, gated or plain MLP, MHA/GQA/MQA,
tied or untied LM head, optional Qwen2-style qkv bias). It validates itself, knows its own accounting
(through `nas.accounting`), round-trips through JSON and the Hugging Face config dict without loss, and has a
stable id: the first 16 hex digits of the SHA-256 of its canonical JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from nas.core import accounting
from nas.core.errors import ArchConfigError, NasUserError
from nas.core.limits import MAX_LAYERS, MAX_TOKENS, MAX_VOCAB, MAX_WIDTH, is_finite_number, is_int, shown

FFN_KINDS = tuple(accounting.FFN_MATRICES)

# HF activation names for the gated FFN kinds (LlamaMLP is always gated: act(gate) * up).
_HF_ACT_OF_FFN = {"swiglu": "silu", "reglu": "relu", "geglu": "gelu_pytorch_tanh"}
_FFN_OF_HF_ACT = {"silu": "swiglu", "swish": "swiglu", "relu": "reglu", "gelu": "geglu", "gelu_pytorch_tanh": "geglu"}

_INT_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
               "max_seq_len")
# The largest value of each integer field (nas.core.limits: far beyond any real model, and small enough that
# no count or byte figure of a shape passes int64 in the vectorised accounting).
FIELD_MAX = {"vocab_size": MAX_VOCAB, "hidden_size": MAX_WIDTH, "num_layers": MAX_LAYERS, "num_heads": MAX_WIDTH,
             "num_kv_heads": MAX_WIDTH, "head_dim": MAX_WIDTH, "intermediate_size": MAX_WIDTH,
             "max_seq_len": MAX_TOKENS}


@dataclass(frozen=True)
class ArchConfig:
    """Shape of one decoder-only Llama-family model. Sizes are counts, not bytes."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    num_kv_heads: int | None = None  # None -> num_heads (MHA)
    head_dim: int | None = None  # None -> hidden_size // num_heads (must divide)
    vocab_size: int = 32000  # Llama-2 tokenizer; MobileLLM and PhoneLM use 32k-49k
    ffn_kind: str = "swiglu"
    tie_embeddings: bool = True  # small models tie: the embedding is a large share of their parameters
    qkv_bias: bool = False  # Qwen2 style; exported as Qwen2Config when on
    max_seq_len: int = 4096  # positions: a prompt of P needs P, a decode step after C cached tokens C + 1
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not is_int(value):
                raise ArchConfigError(name, f"must be an integer, got {shown(value)}")
            if value <= 0:
                raise ArchConfigError(name, f"must be positive, got {value}")
            if value > FIELD_MAX[name]:
                raise ArchConfigError(name, f"must be at most {FIELD_MAX[name]:,}, got {shown(value)}")
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ArchConfigError(
                    "hidden_size",
                    f"{self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                    "set head_dim explicitly or choose a multiple",
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if not is_int(self.head_dim) or self.head_dim <= 0:
            raise ArchConfigError("head_dim", f"must be a positive integer, got {shown(self.head_dim)}")
        if self.num_heads * self.head_dim > MAX_WIDTH:
            raise ArchConfigError("head_dim", f"num_heads * head_dim = {self.num_heads:,} * {self.head_dim:,} must be "
                                              f"at most {MAX_WIDTH:,}")
        if self.head_dim % 2:
            raise ArchConfigError("head_dim", f"must be even for rotary embeddings, got {self.head_dim}")
        if self.num_heads % self.num_kv_heads:
            raise ArchConfigError(
                "num_kv_heads", f"num_heads={self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}"
            )
        if not isinstance(self.ffn_kind, str) or self.ffn_kind not in FFN_KINDS:
            raise ArchConfigError("ffn_kind", f"{shown(self.ffn_kind)} is not one of {', '.join(FFN_KINDS)}")
        for name in ("tie_embeddings", "qkv_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ArchConfigError(name, f"must be true or false, got {shown(getattr(self, name))}")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if not is_finite_number(value) or value <= 0:
                raise ArchConfigError(name, f"must be a positive finite number, got {shown(value)}")
            object.__setattr__(self, name, float(value))

    # ----- derived shape facts -----
    @property
    def attention_type(self) -> str:
        """'mha' (kv == heads), 'mqa' (kv == 1) or 'gqa' (in between)."""
        if self.num_kv_heads == self.num_heads:
            return "mha"
        if self.num_kv_heads == 1:
            return "mqa"
        return "gqa"

    @property
    def ffn_matrices(self) -> int:
        return accounting.FFN_MATRICES[self.ffn_kind]

    @property
    def short_tag(self) -> str:
        """A label short enough for a plot point, e.g. 'L24 d1024 f4864 gqa4'."""
        attn = {"mha": "mha", "mqa": "mqa", "gqa": f"gqa{self.num_kv_heads}"}[self.attention_type]
        return f"L{self.num_layers} d{self.hidden_size} f{self.intermediate_size} {attn}"

    def _shape_args(self) -> dict[str, Any]:
        return dict(
            vocab=self.vocab_size, hidden=self.hidden_size, layers=self.num_layers, heads=self.num_heads,
            kv_heads=self.num_kv_heads, head_dim=self.head_dim, intermediate=self.intermediate_size,
            n_matrices=self.ffn_matrices,
        )

    # ----- accounting (formulas live in nas.accounting) -----
    @property
    def num_params(self) -> int:
        """Exact parameter count, equal to transformers' for the equivalent model."""
        return accounting.total_params(**self._shape_args(), tied=self.tie_embeddings, qkv_bias=self.qkv_bias)

    @property
    def num_non_embedding_params(self) -> int:
        return accounting.non_embedding_params(
            **self._shape_args(), tied=self.tie_embeddings, qkv_bias=self.qkv_bias
        )

    def prefill_flops(self, prompt_len: int) -> int:
        """Matmul FLOPs to process a prompt of `prompt_len` tokens and produce the last position's logits."""
        return accounting.prefill_flops(**self._shape_args(), prompt_len=prompt_len)

    def decode_flops(self, context_len: int) -> int:
        """Matmul FLOPs of one decode step with `context_len` tokens already in the KV cache."""
        return accounting.decode_flops(**self._shape_args(), context_len=context_len)

    def weight_bytes(self, precision: str) -> int:
        """Bytes of all weights at `precision` (fp32, fp16, int8, int4 with its block scales)."""
        if precision not in accounting.PRECISIONS:
            raise NasUserError(f"precision {precision!r} is not one of {', '.join(accounting.PRECISIONS)}")
        return accounting.weight_bytes(
            precision, **self._shape_args(), tied=self.tie_embeddings, qkv_bias=self.qkv_bias
        )

    def kv_cache_bytes(self, context_len: int, bytes_per_element: int = 2) -> int:
        """Bytes of the K and V cache holding `context_len` tokens (fp16 by default)."""
        return accounting.kv_cache_bytes(
            self.num_layers, self.num_kv_heads, self.head_dim, context_len, bytes_per_element
        )

    def memory_bytes(self, precision: str, prompt_len: int, context_len: int) -> int:
        """Generation footprint: weights at `precision` + KV cache at `context_len` in the deployed graph's type
        (fp16 for fp16, else fp32) + working memory."""
        self.weight_bytes(precision)  # validates the precision name
        return accounting.memory_bytes(precision, **self._shape_args(), tied=self.tie_embeddings,
                                       qkv_bias=self.qkv_bias, prompt_len=prompt_len, context_len=context_len)

    def accounting(self, prompt_len: int = 512, context_len: int = 2048) -> dict[str, Any]:
        """Every accounting figure in one dict (what `nas inspect` prints)."""
        return {
            "arch_id": self.arch_id,
            "attention_type": self.attention_type,
            "num_params": self.num_params,
            "num_non_embedding_params": self.num_non_embedding_params,
            "prompt_len": prompt_len,
            "context_len": context_len,
            "prefill_flops": self.prefill_flops(prompt_len),
            "decode_flops": self.decode_flops(context_len),
            "weight_bytes": {p: self.weight_bytes(p) for p in accounting.PRECISIONS},
            "kv_cache_bytes_fp16": self.kv_cache_bytes(context_len),
            # at each precision's deployed graph type (fp16 for fp16, else fp32)
            "kv_cache_bytes": {p: self.kv_cache_bytes(context_len, accounting.kv_bytes_per_element(p))
                               for p in accounting.PRECISIONS},
            "memory_bytes": {p: self.memory_bytes(p, prompt_len, context_len) for p in accounting.PRECISIONS},
        }

    # ----- serialisation -----
    def to_dict(self) -> dict[str, Any]:
        """All fields, derived ones (num_kv_heads, head_dim) filled in."""
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ArchConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NasUserError(f"unknown ArchConfig field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in data]
        if missing:
            raise NasUserError(f"ArchConfig is missing required field(s): {', '.join(missing)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ArchConfig":
        return cls.from_dict(json.loads(text))

    @property
    def arch_id(self) -> str:
        """Stable id: hash of the canonical JSON (sorted keys, derived fields filled, floats as floats)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "ArchConfig":
        return dataclasses.replace(self, **changes)

    # ----- Hugging Face -----
    def to_hf_config(self) -> dict[str, Any]:
        """A config dict that LlamaConfig (or Qwen2Config when qkv_bias) accepts, same parameter count."""
        if self.ffn_kind not in _HF_ACT_OF_FFN:
            raise NasUserError(
                f"ffn_kind {self.ffn_kind!r} (plain MLP) has no Llama/Qwen2 equivalent in transformers; "
                f"gated kinds that do: {', '.join(_HF_ACT_OF_FFN)}"
            )
        if not self.qkv_bias and self.hidden_size % self.num_heads:
            # transformers >= 5 validates LlamaConfig this way even when head_dim is given (Qwen2Config does not).
            raise NasUserError(
                f"transformers' LlamaConfig requires hidden_size divisible by num_heads; got hidden_size="
                f"{self.hidden_size}, num_heads={self.num_heads} (head_dim={self.head_dim})"
            )
        common = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": _HF_ACT_OF_FFN[self.ffn_kind],
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_embeddings,
            "torch_dtype": "float32",
        }
        if self.qkv_bias:
            return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **common,
                    "use_sliding_window": False}
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common,
                "attention_bias": False, "mlp_bias": False}

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> "ArchConfig":
        """Read a Llama or Qwen2 `config.json` dict. Other model types are refused by name; every field nas
        reads is type-checked (a list where a name belongs, a string where an object does) in one line."""
        model_type = hf.get("model_type")
        if model_type not in ("llama", "qwen2") or not isinstance(model_type, str):
            raise NasUserError(f"HF model_type {shown(model_type)} is not supported; supported: llama, qwen2")
        for key in ("mlp_bias", "attention_bias", "tie_word_embeddings"):
            if hf.get(key) is not None and not isinstance(hf[key], bool):
                raise NasUserError(f"HF config {key!r} must be true or false, got {shown(hf[key])}")
        if hf.get("mlp_bias") or (model_type == "llama" and hf.get("attention_bias")):
            raise NasUserError("HF config has attention_bias/mlp_bias on o_proj or MLP, which ArchConfig cannot "
                               "express")
        act = hf.get("hidden_act", "silu")
        if not isinstance(act, str) or act not in _FFN_OF_HF_ACT:
            raise NasUserError(f"HF hidden_act {shown(act)} is not supported; supported: {', '.join(_FFN_OF_HF_ACT)}")
        heads = _hf_int(hf, "num_attention_heads")
        hidden = _hf_int(hf, "hidden_size")
        rope_theta = hf.get("rope_theta")
        if rope_theta is None:  # transformers >= 5 may keep it in rope_parameters
            rope = hf.get("rope_parameters")
            if rope is not None and not isinstance(rope, Mapping):
                raise NasUserError(f"HF config 'rope_parameters' must be an object (or null), got {shown(rope)}")
            rope_theta = (rope or {}).get("rope_theta", 10000.0)
        return cls(
            vocab_size=_hf_int(hf, "vocab_size"),
            hidden_size=hidden,
            num_layers=_hf_int(hf, "num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=_hf_int(hf, "num_key_value_heads", heads),
            head_dim=_hf_int(hf, "head_dim", hidden // heads),
            intermediate_size=_hf_int(hf, "intermediate_size"),
            ffn_kind=_FFN_OF_HF_ACT[act],
            tie_embeddings=hf.get("tie_word_embeddings", False),  # both HF classes default to untied
            qkv_bias=model_type == "qwen2",
            max_seq_len=_hf_int(hf, "max_position_embeddings", 2048),
            rope_theta=_hf_number(hf, "rope_theta", rope_theta),
            rms_norm_eps=_hf_number(hf, "rms_norm_eps", hf.get("rms_norm_eps",
                                                              1e-6 if model_type == "qwen2" else 1e-5)),
        )


def _hf_int(hf: Mapping[str, Any], key: str, default: int | None = None) -> int:
    """A positive integer field of an HF config; missing (without a default) or of the wrong type is one line."""
    value = hf.get(key)
    if value is None:
        if default is None:
            raise NasUserError(f"HF config has no {key!r}; a Llama/Qwen2 config.json needs it")
        return default
    if not is_int(value) or value <= 0:
        raise NasUserError(f"HF config {key!r} must be a positive integer, got {shown(value)}")
    return value


def _hf_number(hf: Mapping[str, Any], key: str, value: Any) -> float:
    if not is_finite_number(value) or value <= 0:
        raise NasUserError(f"HF config {key!r} must be a positive number, got {shown(value)}")
    return float(value)


class ArchBatch:
    """Many ArchConfigs as numpy columns, for vectorised accounting and latency prediction.

    Columns are named like ArchConfig fields; `ffn_kind` is kept as its number of FFN matrices
    (`ffn_matrices`) since that is all the accounting needs, plus the kind names for rebuilding configs.
    The formulas are the same `nas.accounting` functions ArchConfig uses, applied to arrays.
    """

    COLUMNS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
               "intermediate_size", "ffn_matrices", "tie_embeddings", "qkv_bias")

    def __init__(self, columns: Mapping[str, Any], ffn_kinds: Any, extra: Mapping[str, Any] | None = None):
        import numpy as np

        self.columns = {name: np.asarray(columns[name], dtype=np.int64) for name in self.COLUMNS}
        self.ffn_kinds = np.asarray(ffn_kinds)
        # Fields that do not enter the accounting (max_seq_len, rope_theta, rms_norm_eps), per row.
        self.extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
        n = {len(v) for v in self.columns.values()} | {len(self.ffn_kinds)}
        if len(n) != 1:
            raise ValueError(f"ArchBatch columns have different lengths: {sorted(n)}")

    @classmethod
    def from_configs(cls, configs: "list[ArchConfig]") -> "ArchBatch":
        cols = {name: [getattr(c, name) for c in configs] for name in cls.COLUMNS}
        extra = {name: [getattr(c, name) for c in configs] for name in ("max_seq_len", "rope_theta", "rms_norm_eps")}
        return cls(cols, [c.ffn_kind for c in configs], extra)

    def __len__(self) -> int:
        return len(self.ffn_kinds)

    def __getattr__(self, name: str):
        columns = self.__dict__.get("columns", {})
        if name in columns:
            return columns[name]
        raise AttributeError(name)

    def subset(self, index) -> "ArchBatch":
        return ArchBatch({k: v[index] for k, v in self.columns.items()}, self.ffn_kinds[index],
                         {k: v[index] for k, v in self.extra.items()})

    def index_of(self, arch: ArchConfig) -> int | None:
        """The first row holding `arch`'s shape (accounting columns and FFN kind), or None."""
        import numpy as np

        mask = self.ffn_kinds == arch.ffn_kind
        for name in self.COLUMNS:
            mask &= self.columns[name] == int(getattr(arch, name))
        rows = np.flatnonzero(mask)
        return int(rows[0]) if len(rows) else None

    def config(self, i: int) -> ArchConfig:
        """Row i as an ArchConfig (validated)."""
        fields = {name: int(self.columns[name][i]) for name in self.COLUMNS if name != "ffn_matrices"}
        fields["tie_embeddings"] = bool(fields["tie_embeddings"])
        fields["qkv_bias"] = bool(fields["qkv_bias"])
        fields["ffn_kind"] = str(self.ffn_kinds[i])
        for name, values in self.extra.items():
            fields[name] = values[i].item()
        return ArchConfig(**fields)

    def shape_args(self) -> dict[str, Any]:
        """The columns as nas.core.accounting's keyword arguments (the shape, without tying and biases)."""
        c = self.columns
        return dict(vocab=c["vocab_size"], hidden=c["hidden_size"], layers=c["num_layers"], heads=c["num_heads"],
                    kv_heads=c["num_kv_heads"], head_dim=c["head_dim"], intermediate=c["intermediate_size"],
                    n_matrices=c["ffn_matrices"])

    @property
    def num_params(self):
        c = self.columns
        return accounting.total_params(**self.shape_args(), tied=c["tie_embeddings"], qkv_bias=c["qkv_bias"])

    @property
    def num_non_embedding_params(self):
        c = self.columns
        return accounting.non_embedding_params(**self.shape_args(), tied=c["tie_embeddings"], qkv_bias=c["qkv_bias"])

    # Figures at a length (FLOPs, KV-cache and working-memory bytes) are computed in float64: they grow with the
    # length's square, so int64 columns would wrap around silently past about a million tokens on a large shape.
    # float64 is exact below 2**53 and cannot wrap. Counts without a length stay exact int64 (nas.core.limits).
    def prefill_flops(self, prompt_len):
        return accounting.prefill_flops(**self.shape_args(), prompt_len=_tokens(prompt_len))

    def decode_flops(self, context_len):
        return accounting.decode_flops(**self.shape_args(), context_len=_tokens(context_len))

    def prefill_attention_flops(self, prompt_len):
        """The attention part of `prefill_flops`: QK^T and AV over the prompt's causal triangle."""
        c = self.columns
        return accounting.prefill_attention_flops(c["num_layers"], c["num_heads"], c["head_dim"], _tokens(prompt_len))

    def decode_attention_flops(self, context_len):
        """The attention part of `decode_flops`: QK^T and AV of the new token against the cache."""
        c = self.columns
        return accounting.decode_attention_flops(c["num_layers"], c["num_heads"], c["head_dim"],
                                                 _tokens(context_len))

    def weight_bytes(self, precision: str):
        c = self.columns
        return accounting.weight_bytes(precision, **self.shape_args(), tied=c["tie_embeddings"],
                                       qkv_bias=c["qkv_bias"])

    def kv_cache_bytes(self, context_len, bytes_per_element: int = 2):
        c = self.columns
        return accounting.kv_cache_bytes(c["num_layers"], c["num_kv_heads"], c["head_dim"], _tokens(context_len),
                                         bytes_per_element)

    def memory_bytes(self, precision: str, prompt_len, context_len):
        c = self.columns
        return accounting.memory_bytes(precision, **self.shape_args(), tied=c["tie_embeddings"],
                                       qkv_bias=c["qkv_bias"], prompt_len=_tokens(prompt_len),
                                       context_len=_tokens(context_len))


def _tokens(length):
    """A length (or one per row) as float64, for the figures that grow with its square (see ArchBatch)."""
    import numpy as np

    return np.asarray(length, dtype=np.float64)
