"""The scaling rule (candidate -> proxy) and the muP + CompleteP parametrisation."""

from __future__ import annotations

import math

import pytest

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.model import PLAIN, build_model
from nas.proxy.scaling import Parametrisation, ProxyRule, proxy_arch

MOBILELLM_125M = ArchConfig(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536,
                            vocab_size=32000)
LLAMA_1B = ArchConfig(hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8, intermediate_size=8192,
                      vocab_size=128256)


@pytest.mark.parametrize("arch", [MOBILELLM_125M, LLAMA_1B,
                                  ArchConfig(hidden_size=1024, num_layers=8, num_heads=16, intermediate_size=2816,
                                             ffn_kind="reglu", tie_embeddings=False, qkv_bias=True)])
def test_rule_keeps_depth_grouping_ffn_ratio_kind_and_tying(arch):
    proxy = proxy_arch(arch, ProxyRule(), seq_len=128)
    assert proxy.num_layers == arch.num_layers
    assert proxy.attention_type == arch.attention_type or (arch.attention_type == "gqa" and proxy.num_kv_heads == 1)
    assert (proxy.ffn_kind, proxy.tie_embeddings, proxy.qkv_bias) == (arch.ffn_kind, arch.tie_embeddings, arch.qkv_bias)
    assert proxy.vocab_size == 256 and proxy.max_seq_len == 128 and proxy.head_dim == 16
    ratio, proxy_ratio = arch.intermediate_size / arch.hidden_size, proxy.intermediate_size / proxy.hidden_size
    assert abs(proxy_ratio - ratio) / ratio < 0.1
    assert abs(proxy.hidden_size - arch.hidden_size / 16) <= 2  # one factor for every candidate


def test_equal_size_candidates_get_equal_size_proxies():
    """Deep-thin and shallow-wide candidates of equal non-embedding size: their proxies keep the depths and are of
    (nearly) equal size, so the proxy compares shapes, not proxy sizes; a larger candidate gets a larger proxy."""
    deep = ArchConfig(hidden_size=512, num_layers=32, num_heads=8, intermediate_size=1408)
    wide = ArchConfig(hidden_size=1024, num_layers=8, num_heads=16, intermediate_size=1408 * 2)
    assert deep.num_non_embedding_params == pytest.approx(wide.num_non_embedding_params, rel=0.01)
    pd, pw = proxy_arch(deep, ProxyRule(), 128), proxy_arch(wide, ProxyRule(), 128)
    assert pd.num_layers == 32 and pw.num_layers == 8 and pw.hidden_size == 2 * pd.hidden_size
    assert pd.num_non_embedding_params == pytest.approx(pw.num_non_embedding_params, rel=0.05)
    ratio = deep.num_non_embedding_params / pd.num_non_embedding_params
    assert ratio == pytest.approx(16 ** 2, rel=0.05)
    assert proxy_arch(LLAMA_1B, ProxyRule(), 128).num_non_embedding_params > 5 * pd.num_non_embedding_params


def test_rounding_keeps_equal_size_within_a_few_percent():
    """Proxy sizes stay within +-6% of candidate / shrink^2."""
    shapes = [MOBILELLM_125M, LLAMA_1B, ArchConfig(hidden_size=1408, num_layers=4, num_heads=22, num_kv_heads=2,
                                                   intermediate_size=4928),
              ArchConfig(hidden_size=768, num_layers=11, num_heads=12, num_kv_heads=1, intermediate_size=2048)]
    for arch in shapes:
        ratio = arch.num_non_embedding_params / proxy_arch(arch, ProxyRule(), 128).num_non_embedding_params
        assert ratio == pytest.approx(256, rel=0.06), arch.short_tag


def test_parametrisation_is_standard_at_the_base_shape():
    base = ArchConfig(hidden_size=128, num_layers=4, num_heads=8, head_dim=16, intermediate_size=352, vocab_size=256)
    p = Parametrisation.of(base, ProxyRule())
    assert (p.width_mult, p.depth_mult) == (1.0, 1.0)
    assert p.scales.residual == 1.0 and p.scales.logits == 1.0
    assert p.scales.attention == pytest.approx(1 / math.sqrt(16)) and p.hidden_init_std == 0.02
    groups = p.param_groups(build_model(base), lr=1e-3, weight_decay=0.1, eps=1e-8)
    assert {g["name"] for g in groups} == {"embedding_and_head", "final_norm", "layer_matrices", "layer_vectors"}
    assert all(g["lr"] == 1e-3 for g in groups)


def test_width_and_depth_multipliers():
    wide_deep = ArchConfig(hidden_size=256, num_layers=16, num_heads=8, intermediate_size=704, vocab_size=256)
    p = Parametrisation.of(wide_deep, ProxyRule())
    assert (p.width_mult, p.depth_mult) == (2.0, 4.0)
    assert p.scales.residual == pytest.approx(0.25) and p.scales.logits == pytest.approx(0.5)
    assert p.hidden_init_std == pytest.approx(0.02 / math.sqrt(2))
    groups = {g["name"]: g for g in p.param_groups(build_model(wide_deep), lr=1e-3, weight_decay=0.1, eps=1e-8)}
    assert groups["layer_matrices"]["lr"] == pytest.approx(5e-4)  # muP: lr / m_N; CompleteP alpha=1: no depth change
    assert groups["layer_matrices"]["weight_decay"] == pytest.approx(0.2)
    assert groups["embedding_and_head"]["lr"] == 1e-3
    assert groups["layer_matrices"]["eps"] == pytest.approx(1e-8 / 2 / 4)
    sp = Parametrisation.of(wide_deep, ProxyRule(parametrisation="sp"))
    assert sp.scales.residual == 1.0 and sp.scales.logits == 1.0 and sp.width_mult == 1.0


def test_rule_refuses_nonsense():
    with pytest.raises(NasUserError, match="parametrisation 'ntk'"):
        ProxyRule(parametrisation="ntk")
    with pytest.raises(NasUserError, match="head_dim must be even"):
        ProxyRule(head_dim=31)


def test_plain_scales_compute_the_reference_model():
    assert PLAIN.residual == 1.0 and PLAIN.logits == 1.0 and PLAIN.attention is None


def test_many_heads_mqa_does_not_blow_up_the_proxy():
    mqa = ArchConfig(hidden_size=1088, num_layers=4, num_heads=17, num_kv_heads=1, intermediate_size=2176)
    proxy = proxy_arch(mqa, ProxyRule(), 128)
    assert proxy.attention_type == "mqa" and proxy.hidden_size == 68 and proxy.num_heads == 4
    gqa2 = ArchConfig(hidden_size=1024, num_layers=4, num_heads=16, num_kv_heads=8, intermediate_size=2816)
    assert proxy_arch(gqa2, ProxyRule(), 128).num_kv_heads == 2  # half the heads, as in the candidate


def test_narrow_candidates_keep_min_heads():
    small = ArchConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=704)
    proxy = proxy_arch(small, ProxyRule(), 128)
    assert proxy.num_heads == 2 and proxy.hidden_size == 16 and proxy.attention_type == "mha"
