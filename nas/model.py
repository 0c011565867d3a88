"""Reference PyTorch model of an ArchConfig: a Llama-family decoder with a KV cache.

One `nn.Module` serves three uses: the oracle the ONNX profiling graphs are checked against
(`nas.latency.graphs`), the proxy model short training runs fit, and the source of weights for export.

What it computes (the same as transformers' LlamaForCausalLM / Qwen2ForCausalLM for the gated kinds):
- RMSNorm before attention and before the FFN, and once after the last layer (computed in fp32, like HF);
- rotary position embeddings (rotate-half form, `rope_theta`), positions continuing after the cache;
- attention with `num_kv_heads` key/value heads, each shared by `num_heads // num_kv_heads` query heads
  (MHA, GQA or MQA), causal, optional bias on q/k/v only (Qwen2);
- FFN: swiglu = silu(gate) * up, reglu = relu(gate) * up, geglu = gelu_tanh(gate) * up, each then down;
  gelu = down(gelu_tanh(up)), a plain two-matrix MLP (no gate_proj; no transformers equivalent);
- an LM head, tied to the embedding or not.

Parameter names mirror transformers (`model.embed_tokens.weight`, `model.layers.0.self_attn.q_proj.weight`,
..., `lm_head.weight`), so a Llama/Qwen2 state dict loads with `load_state_dict`.

Attention is `F.scaled_dot_product_attention`: causal through `is_causal` when there is no cache (no boolean
mask is materialised), with SDPA's own grouped-query support (`enable_gqa`) so K and V are never copied per
query head. `Scales` multiplies the residual branches, the logits and the attention scores: all 1 (and
1/sqrt(head_dim) for attention) is the plain model transformers computes; proxy training sets them for its
width and depth parametrisation (`nas.proxy.scaling`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas.core.accounting import INIT_STD
from nas.core.arch import ArchConfig

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (key, value), each [batch, kv_heads, T, head_dim]


@dataclass(frozen=True)
class Scales:
    """Constant multipliers a parametrisation puts into the forward pass (see the module docstring)."""

    residual: float = 1.0  # each attention and FFN branch output before it is added to the residual stream
    logits: float = 1.0  # the final hidden state before the LM head
    attention: float | None = None  # query-key scores; None: 1/sqrt(head_dim)


PLAIN = Scales()


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """Inverse frequencies [head_dim/2], computed in fp32 as transformers does."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, arch: ArchConfig, scale: float | None = None):
        super().__init__()
        h, d = arch.hidden_size, arch.head_dim
        self.scale = scale
        self.num_heads, self.num_kv_heads, self.head_dim = arch.num_heads, arch.num_kv_heads, d
        self.q_proj = nn.Linear(h, arch.num_heads * d, bias=arch.qkv_bias)
        self.k_proj = nn.Linear(h, arch.num_kv_heads * d, bias=arch.qkv_bias)
        self.v_proj = nn.Linear(h, arch.num_kv_heads * d, bias=arch.qkv_bias)
        self.o_proj = nn.Linear(arch.num_heads * d, h, bias=False)

    def forward(self, x, cos, sin, past: tuple[torch.Tensor, torch.Tensor] | None):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        present = (k, v)
        past_len = k.shape[2] - s
        # Each kv head serves `groups` consecutive query heads (transformers' repeat_kv), done inside SDPA.
        gqa = self.num_heads != self.num_kv_heads
        if past_len == 0 or s == 1:  # a prompt from scratch is plain causal; one new token sees every key
            out = F.scaled_dot_product_attention(q, k, v, is_causal=past_len == 0 and s > 1, scale=self.scale,
                                                 enable_gqa=gqa)
        else:  # several new tokens after a cache: query i sits at position past_len + i
            rows = torch.arange(s, device=x.device)[:, None] + past_len
            mask = torch.arange(k.shape[2], device=x.device)[None, :] <= rows
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=gqa)
        out = out.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)
        return self.o_proj(out), present


class MLP(nn.Module):
    _GATED_ACT = {"swiglu": F.silu, "reglu": F.relu, "geglu": lambda t: F.gelu(t, approximate="tanh")}

    def __init__(self, arch: ArchConfig):
        super().__init__()
        h, f = arch.hidden_size, arch.intermediate_size
        self.kind = arch.ffn_kind
        if self.kind != "gelu":
            self.gate_proj = nn.Linear(h, f, bias=False)
        self.up_proj = nn.Linear(h, f, bias=False)
        self.down_proj = nn.Linear(f, h, bias=False)

    def forward(self, x):
        if self.kind == "gelu":
            return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))
        return self.down_proj(self._GATED_ACT[self.kind](self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, arch: ArchConfig, scales: Scales = PLAIN):
        super().__init__()
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.self_attn = Attention(arch, scales.attention)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.mlp = MLP(arch)
        self.residual = scales.residual

    def forward(self, x, cos, sin, past):
        attn, present = self.self_attn(self.input_layernorm(x), cos, sin, past)
        if self.residual != 1.0:
            attn = attn * self.residual
        x = x + attn
        mlp = self.mlp(self.post_attention_layernorm(x))
        if self.residual != 1.0:
            mlp = mlp * self.residual
        return x + mlp, present


class Backbone(nn.Module):
    """The `model.` prefix of transformers' names: embedding, layers, final norm."""

    def __init__(self, arch: ArchConfig, scales: Scales = PLAIN):
        super().__init__()
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(arch, scales) for _ in range(arch.num_layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)


class LlamaModel(nn.Module):
    """Decoder-only LM of one ArchConfig. `forward(input_ids, past_key_values)` -> (logits, presents)."""

    def __init__(self, arch: ArchConfig, scales: Scales = PLAIN):
        super().__init__()
        self.arch = arch
        self.scales = scales
        self.model = Backbone(arch, scales)
        self.lm_head = nn.Linear(arch.hidden_size, arch.vocab_size, bias=False)
        if arch.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Not persistent: not in the state dict, so transformers' state dicts load with strict=True.
        self.register_buffer("rope_inv_freq", rope_inv_freq(arch.head_dim, arch.rope_theta), persistent=False)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [T, head_dim] for integer positions [T] (fp32 angles, then cast)."""
        freqs = positions.float()[:, None] * self.rope_inv_freq.float()[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, input_ids: torch.Tensor, past_key_values: KVCache | None = None
                ) -> tuple[torch.Tensor, KVCache]:
        """Logits [batch, seq, vocab] for every input position, and the cache including these tokens.

        With `past_key_values` (from an earlier call), the new tokens continue after the cached ones.
        """
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if past_key_values is not None and len(past_key_values) != len(self.model.layers):
            raise ValueError(f"past_key_values has {len(past_key_values)} layers, the model has "
                             f"{len(self.model.layers)}")
        x = self.model.embed_tokens(input_ids)
        positions = torch.arange(past_len, past_len + input_ids.shape[1], device=input_ids.device)
        cos, sin = self.rope(positions, x.dtype)
        presents: KVCache = []
        for i, layer in enumerate(self.model.layers):
            x, present = layer(x, cos, sin, None if past_key_values is None else past_key_values[i])
            presents.append(present)
        x = self.model.norm(x)
        if self.scales.logits != 1.0:
            x = x * self.scales.logits
        return self.lm_head(x), presents

    def num_params(self) -> int:
        """Unique parameters (a tied head counts once): equals ArchConfig.num_params."""
        return sum(p.numel() for p in self.parameters())  # parameters() already yields shared tensors once


HIDDEN_MATRICES = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
                   "up_proj.weight", "down_proj.weight")  # the matrices inside the decoder layers


def init_weights(model: LlamaModel, seed: int = 0, hidden_std: float = INIT_STD) -> None:
    """transformers' init, seeded: matrices and embedding N(0, 0.02), biases 0, norm weights 1. `hidden_std`
    replaces 0.02 for the decoder layers' matrices (a width parametrisation shrinks it as the width grows)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied weight appears once, under the embedding's name
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith(HIDDEN_MATRICES):
                p.normal_(0.0, hidden_std, generator=gen)
            else:
                p.normal_(0.0, INIT_STD, generator=gen)


def build_model(arch: ArchConfig, seed: int = 0, scales: Scales = PLAIN, hidden_std: float = INIT_STD,
                device: str = "cpu") -> LlamaModel:
    """A freshly initialised fp32 model on `device`; the same seed gives the same weights (drawn on the CPU,
    so a CUDA model starts from exactly the CPU model's weights)."""
    with torch.device("meta"):  # skip nn.Linear's default (kaiming) init: we overwrite every weight anyway
        model = LlamaModel(arch, scales)
    model = model.to_empty(device="cpu")
    if arch.tie_embeddings:  # to_empty keeps the sharing, but make it explicit
        model.lm_head.weight = model.model.embed_tokens.weight
    model.rope_inv_freq = rope_inv_freq(arch.head_dim, arch.rope_theta)
    init_weights(model, seed, hidden_std)
    return model if device == "cpu" else model.to(device)


__all__ = ["LlamaModel", "KVCache", "Scales", "PLAIN", "HIDDEN_MATRICES", "build_model", "init_weights",
           "rope_inv_freq", "INIT_STD"]
