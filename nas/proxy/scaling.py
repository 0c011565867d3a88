"""From a candidate to the proxy that is trained for it, and the parametrisation that lets one learning rate
train every proxy fairly.

The scaling rule (`proxy_arch`), candidate -> proxy: one width factor for every candidate, so that candidates
of equal size get proxies of equal size and a larger candidate gets a larger proxy:
- kept: the depth (num_layers), the query heads per kv head (num_heads / num_kv_heads: MHA, GQA or MQA),
  the FFN kind, tied or untied embeddings, qkv bias;
- shrunk by the rule's `shrink` (16 by default), the same factor for every candidate: hidden_size and
  intermediate_size (each rounded to a multiple of `multiple`), and the attention width (query heads x head_dim),
  with head_dim -> the rule's `head_dim` (16) and query heads -> attention width / shrink / head_dim (at least
  `min_heads`); kv heads -> max(1, round(query heads / g)) with g the candidate's query heads per kv head, so MHA
  stays MHA and MQA stays MQA, and a GQA candidate keeps its share of kv heads as far as the proxy's heads allow;
- replaced: the vocabulary by bytes (256) and max_seq_len by the training sequence length.
Non-embedding parameters therefore shrink by about shrink^2 for every candidate: a deep-thin and a shallow-wide
candidate of equal size get proxies of (nearly) equal size, and the comparison between them is about shape. (A rule
that shrank every candidate to one proxy width instead would hand a 32-layer candidate 8x the proxy parameters of a
4-layer one of equal size, and always rank depth first.)

The parametrisation (`Parametrisation`), so the best learning rate does not move with width or depth:
- width, muP (Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466, in the form of Dey, Anthony & Hestness
  2024, "The practitioner's guide to the maximal update parameterization"): with m_N = hidden / base_width,
  the decoder layers' matrices start at std 0.02 / sqrt(m_N) and learn at lr / m_N with weight decay wd * m_N;
  the embedding, the LM head and the norms learn at lr; the logits are multiplied by 1 / m_N; attention scores
  are q.k / head_dim, written as sqrt(base_head_dim) / head_dim so that the base shape keeps 1/sqrt(head_dim);
  Adam's epsilon is eps / m_N;
- depth, CompleteP (Dey et al. 2025, "Don't be lazy: CompleteP enables compute-efficient deep transformers",
  arXiv:2505.01618, Table 1) with alpha = 1: with m_L = num_layers / base_depth, every residual branch (the
  attention and FFN outputs) is multiplied by 1 / m_L; hidden learning rates are multiplied by m_L^(alpha - 1)
  (= 1 at alpha 1); the decoder layers' Adam epsilon is divided by m_L as well; the init does not change with
  depth.
At base_width x base_depth this is exactly standard parametrisation. `benchmarks/bench_proxy_lr.py` checks that
the best learning rate of a small sweep stays within one grid step across widths and depths.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.core.limits import MAX_WIDTH, check_int
from nas.model import HIDDEN_MATRICES, INIT_STD, Scales
from nas.proxy.corpus import VOCAB_SIZE

PARAMETRISATIONS = ("completep", "mup", "sp")


@dataclass(frozen=True)
class ProxyRule:
    """How candidates are shrunk (see the module docstring) and the parametrisation they are trained under."""

    shrink: int = 16  # every width of the candidate (hidden, FFN, attention) is divided by this
    head_dim: int = 16
    min_heads: int = 2  # the narrowest proxy still has this many query heads (MHA vs MQA stays a difference)
    multiple: int = 4  # hidden and FFN sizes are rounded to multiples of this (small: proxies are 32-128 wide)
    parametrisation: str = "completep"
    base_width: int = 128  # muP: the width at which the parametrisation equals standard parametrisation
    base_depth: int = 4  # CompleteP: the depth at which it does
    base_head_dim: int = 16  # = head_dim: attention scores are standard 1/sqrt(head_dim) at every proxy
    alpha: float = 1.0  # CompleteP's depth exponent

    def __post_init__(self) -> None:
        if self.parametrisation not in PARAMETRISATIONS:
            raise NasUserError(f"parametrisation {self.parametrisation!r} is not one of {', '.join(PARAMETRISATIONS)}")
        for name in ("shrink", "head_dim", "min_heads", "multiple", "base_width", "base_depth", "base_head_dim"):
            check_int(getattr(self, name), f"proxy {name}", 1, MAX_WIDTH)
        if self.head_dim % 2:
            raise NasUserError(f"proxy head_dim must be even (rotary embeddings), got {self.head_dim}")

    def to_dict(self) -> dict:
        return asdict(self)


def proxy_arch(arch: ArchConfig, rule: ProxyRule, seq_len: int) -> ArchConfig:
    """The proxy trained for `arch` (the scaling rule of the module docstring)."""
    group = arch.num_heads // arch.num_kv_heads
    heads = max(rule.min_heads, round(arch.num_heads * arch.head_dim / rule.shrink / rule.head_dim))
    kv_heads = max(1, round(heads / group))
    while heads % kv_heads:  # the nearest count that divides the heads (GQA needs whole groups)
        kv_heads -= 1

    def size(x: float) -> int:
        return max(rule.multiple, int(round(x / rule.shrink / rule.multiple)) * rule.multiple)

    return ArchConfig(hidden_size=size(arch.hidden_size), num_layers=arch.num_layers, num_heads=heads,
                      num_kv_heads=kv_heads, head_dim=rule.head_dim, intermediate_size=size(arch.intermediate_size),
                      vocab_size=VOCAB_SIZE, ffn_kind=arch.ffn_kind, tie_embeddings=arch.tie_embeddings,
                      qkv_bias=arch.qkv_bias, max_seq_len=seq_len, rope_theta=arch.rope_theta,
                      rms_norm_eps=arch.rms_norm_eps)


@dataclass(frozen=True)
class Parametrisation:
    """The multipliers, init and per-group optimiser settings of one proxy under one rule."""

    width_mult: float  # m_N
    depth_mult: float  # m_L
    alpha: float  # 0 without depth scaling
    base_head_dim: int
    head_dim: int
    standard: bool

    @classmethod
    def of(cls, proxy: ArchConfig, rule: ProxyRule) -> "Parametrisation":
        kind = rule.parametrisation
        return cls(width_mult=1.0 if kind == "sp" else proxy.hidden_size / rule.base_width,
                   depth_mult=proxy.num_layers / rule.base_depth if kind == "completep" else 1.0,
                   alpha=rule.alpha if kind == "completep" else 0.0, base_head_dim=rule.base_head_dim,
                   head_dim=proxy.head_dim, standard=kind == "sp")

    @property
    def scales(self) -> Scales:
        attention = (1.0 / math.sqrt(self.head_dim) if self.standard
                     else math.sqrt(self.base_head_dim) / self.head_dim)
        return Scales(residual=self.depth_mult ** -self.alpha, logits=1.0 / self.width_mult, attention=attention)

    @property
    def hidden_init_std(self) -> float:
        return INIT_STD / math.sqrt(self.width_mult)

    def param_groups(self, model, lr: float, weight_decay: float, eps: float) -> list[dict]:
        """AdamW parameter groups of `model` (a nas.model.LlamaModel), each with its lr, weight decay and eps;
        `base_lr` is kept for the schedule to scale."""
        m_n, m_l, a = self.width_mult, self.depth_mult, self.alpha
        depth_lr = m_l ** (a - 1.0)
        settings = {
            "embedding_and_head": dict(lr=lr, weight_decay=weight_decay, eps=eps / m_n),
            "final_norm": dict(lr=lr, weight_decay=0.0, eps=eps / m_n),
            "layer_matrices": dict(lr=lr / m_n * depth_lr, weight_decay=weight_decay * m_n,
                                   eps=eps / m_n * m_l ** (-a)),
            "layer_vectors": dict(lr=lr * depth_lr, weight_decay=0.0, eps=eps / m_n * m_l ** (-a)),
        }
        members: dict[str, list] = {name: [] for name in settings}
        for name, param in model.named_parameters():
            if ".layers." in name:
                group = "layer_matrices" if name.endswith(HIDDEN_MATRICES) else "layer_vectors"
            elif name.endswith("model.norm.weight"):
                group = "final_norm"
            else:
                group = "embedding_and_head"
            members[group].append(param)
        return [dict(params=members[g], name=g, base_lr=s["lr"], **s) for g, s in settings.items() if members[g]]
