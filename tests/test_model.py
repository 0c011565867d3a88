"""nas.model against transformers (the oracle), and its KV cache against a full forward."""

from __future__ import annotations

import pytest
import torch
import transformers

from nas.core.arch import ArchConfig
from nas.model import build_model

# Small shapes covering each attention type, head_dim != hidden/heads, qkv bias (Qwen2), each gated FFN.
SHAPES = {
    "gqa-swiglu-untied": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96,
                              tie_embeddings=False),
    "mqa-tied": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=1, intermediate_size=80),
    "headdim-ne-hidden/heads": dict(hidden_size=48, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=16,
                                    intermediate_size=64, rope_theta=500000.0),
    "qwen2-qkv-bias": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96,
                           qkv_bias=True, rms_norm_eps=1e-6, tie_embeddings=False),
    "mha-reglu": dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, ffn_kind="reglu"),
    "gqa-geglu": dict(hidden_size=64, num_layers=1, num_heads=8, num_kv_heads=2, intermediate_size=64,
                      ffn_kind="geglu"),
}


def _arch(kw) -> ArchConfig:
    return ArchConfig(vocab_size=97, max_seq_len=64, **kw)


def _hf_model(arch: ArchConfig):
    """A transformers model of `arch` with every weight random (norms and biases too), in eval mode."""
    cfg = arch.to_hf_config()
    cls_name = cfg.pop("architectures")[0]
    model_type = cfg.pop("model_type")
    config_cls = transformers.Qwen2Config if model_type == "qwen2" else transformers.LlamaConfig
    config = config_cls(**cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.08 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", SHAPES)
def test_logits_match_transformers(name):
    arch = _arch(SHAPES[name])
    hf = _hf_model(arch)
    ours = build_model(arch).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    ids = torch.randint(0, arch.vocab_size, (1, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        logits, presents = ours(ids)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert len(presents) == arch.num_layers
    assert presents[0][0].shape == (1, arch.num_kv_heads, 11, arch.head_dim)
    # transformers counts the same parameters
    assert ours.num_params() == arch.num_params == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("name", [*SHAPES, "plain-gelu"])
def test_cache_matches_full_forward(name):
    kw = SHAPES.get(name) or dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=48,
                                  ffn_kind="gelu")
    arch = _arch(kw)
    model = build_model(arch, seed=3).eval()
    with torch.no_grad():  # larger weights than the default init, so a wrong position or mask shows
        for p in model.parameters():
            p.mul_(4.0)
    ids = torch.randint(0, arch.vocab_size, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, full_cache = model(ids)
        out, cache = model(ids[:, :6])  # prefill
        steps = [out]
        out, cache = model(ids[:, 6:8], cache)  # a chunk of 2 after a cache: mask offset by the past
        steps.append(out)
        for t in (8, 9):  # single-token decode
            out, cache = model(ids[:, t:t + 1], cache)
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    for (k, v), (fk, fv) in zip(cache, full_cache):
        torch.testing.assert_close(k, fk, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(v, fv, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("kind", ["swiglu", "gelu"])
def test_param_count_and_names(tied, kind):
    arch = _arch(dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=48,
                      ffn_kind=kind, tie_embeddings=tied, qkv_bias=tied))
    model = build_model(arch)
    assert model.num_params() == arch.num_params
    names = set(model.state_dict())
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
            "model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"} <= names
    assert ("model.layers.0.mlp.gate_proj.weight" in names) == (kind != "gelu")
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied


def test_seeded_init():
    arch = ArchConfig(hidden_size=64, num_layers=1, num_heads=4, intermediate_size=128, vocab_size=512, qkv_bias=True)
    a, b, c = build_model(arch, seed=0), build_model(arch, seed=0), build_model(arch, seed=1)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
        if name.endswith("norm.weight"):
            assert torch.all(pa == 1)
        elif name.endswith("bias"):
            assert torch.all(pa == 0)
        else:
            assert not torch.equal(pa, pc), name
    emb = a.model.embed_tokens.weight
    assert abs(emb.std().item() - 0.02) < 0.002 and abs(emb.mean().item()) < 0.002
