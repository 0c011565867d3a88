"""ArchConfig and ArchBatch: exact accounting, with transformers as the oracle for parameter counts."""

from __future__ import annotations

import json
import random

import pytest

from nas.core import accounting
from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import ArchConfigError, NasUserError


def _shapes(n: int = 60, seed: int = 20240611) -> list[ArchConfig]:
    """Deterministic, distinct small shapes covering tied/untied, MHA/GQA/MQA, explicit head_dim, qkv bias and
    every gated FFN kind."""
    rng = random.Random(seed)
    shapes, seen = [], set()
    i = 0
    while len(shapes) < n:
        heads = rng.choice([2, 4, 6, 8])
        attention = ("mha", "gqa", "mqa")[i % 3]
        if attention == "mha":
            kv = heads
        elif attention == "mqa":
            kv = 1
        else:
            kv = rng.choice([d for d in range(2, heads) if heads % d == 0] or [heads // 2])
        explicit_head_dim = i % 4 == 0  # head_dim != hidden / heads
        head_dim = rng.choice([8, 12, 16, 24])
        # transformers 5's LlamaConfig insists on hidden_size % num_heads == 0 even with an explicit head_dim
        # (Qwen2Config does not), so explicit head_dims keep the width a multiple of the heads unless qkv_bias.
        hidden = heads * head_dim
        if explicit_head_dim:
            hidden = heads * rng.choice([w for w in (4, 6, 10, 14) if w != head_dim])
            if i % 5 == 1:
                hidden = rng.choice([32, 48, 64, 80])
        arch = ArchConfig(
            hidden_size=hidden, num_layers=rng.randint(1, 3), num_heads=heads, num_kv_heads=kv,
            head_dim=head_dim, intermediate_size=rng.choice([16, 40, 64, 96, 100]),
            vocab_size=rng.choice([50, 97, 128]),
            ffn_kind=("swiglu", "reglu", "geglu")[(i // 3) % 3], tie_embeddings=i % 2 == 0, qkv_bias=i % 5 == 1,
            max_seq_len=rng.choice([128, 256]), rope_theta=rng.choice([10000.0, 500000.0]),
        )
        i += 1
        if arch.to_json() not in seen:
            seen.add(arch.to_json())
            shapes.append(arch)
    return shapes


SHAPES = _shapes()


def _id(arch: ArchConfig) -> str:
    return (f"{arch.attention_type}-h{arch.hidden_size}-L{arch.num_layers}-H{arch.num_heads}kv{arch.num_kv_heads}"
            f"d{arch.head_dim}-{arch.ffn_kind}-{'tied' if arch.tie_embeddings else 'untied'}"
            f"{'-bias' if arch.qkv_bias else ''}")


def test_shapes_cover_the_variants():
    assert len(SHAPES) >= 50
    assert {a.attention_type for a in SHAPES} == {"mha", "gqa", "mqa"}
    assert {a.ffn_kind for a in SHAPES} == {"swiglu", "reglu", "geglu"}
    assert {a.tie_embeddings for a in SHAPES} == {True, False}
    assert {a.qkv_bias for a in SHAPES} == {True, False}
    assert any(a.head_dim * a.num_heads != a.hidden_size for a in SHAPES)


def _hf_model(arch: ArchConfig):
    import torch
    import transformers
    hf = arch.to_hf_config()
    config_cls, model_cls = ((transformers.Qwen2Config, transformers.Qwen2ForCausalLM) if arch.qkv_bias
                             else (transformers.LlamaConfig, transformers.LlamaForCausalLM))
    config = config_cls(**hf)
    with torch.device("meta"):  # shapes only, no allocation
        model = model_cls(config)
    return config, model


@pytest.mark.parametrize("arch", SHAPES, ids=_id)
def test_num_params_matches_transformers(arch):
    config, model = _hf_model(arch)
    assert type(model).__name__ == ("Qwen2ForCausalLM" if arch.qkv_bias else "LlamaForCausalLM")
    named = dict(model.named_parameters())  # shared (tied) tensors appear once
    assert sum(p.numel() for p in named.values()) == arch.num_params
    embedding = {"model.embed_tokens.weight", "lm_head.weight"}
    non_embedding = sum(p.numel() for name, p in named.items() if name not in embedding)
    assert non_embedding == arch.num_non_embedding_params
    assert ("lm_head.weight" in named) == (not arch.tie_embeddings)


@pytest.mark.parametrize("arch", SHAPES[::5], ids=_id)
def test_hf_config_round_trip(arch):
    config, _ = _hf_model(arch)
    back = ArchConfig.from_hf_config(json.loads(json.dumps(config.to_dict())))
    assert back == arch
    assert back.arch_id == arch.arch_id


@pytest.mark.parametrize("arch", SHAPES, ids=_id)
def test_json_round_trip(arch):
    assert ArchConfig.from_json(arch.to_json()) == arch
    assert ArchConfig.from_dict(json.loads(arch.to_json(indent=2))) == arch


def test_arch_id_is_stable_and_distinct():
    fixed = ArchConfig(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536,
                       max_seq_len=2048)
    # Hard-coded on purpose: a change here means every stored study's ids change (the canonical JSON moved).
    assert fixed.arch_id == "240d40d719a17308"
    assert ArchConfig(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536,
                      head_dim=64, rope_theta=10000, max_seq_len=2048).arch_id == fixed.arch_id  # derived, int-vs-float
    assert len({a.arch_id for a in SHAPES}) == len(SHAPES)
    assert fixed.replace(num_layers=31).arch_id != fixed.arch_id
    assert fixed.replace(tie_embeddings=False).arch_id != fixed.arch_id


@pytest.mark.parametrize("fields, field", [
    (dict(hidden_size=100, num_heads=3), "hidden_size"),
    (dict(num_heads=4, num_kv_heads=3), "num_kv_heads"),
    (dict(num_layers=0), "num_layers"),
    (dict(hidden_size=-64), "hidden_size"),
    (dict(intermediate_size=0), "intermediate_size"),
    (dict(ffn_kind="swish"), "ffn_kind"),
    (dict(num_heads=4, head_dim=15), "head_dim"),
    (dict(hidden_size=60, num_heads=4), "head_dim"),  # 60 / 4 = 15, odd
    (dict(num_layers=2.5), "num_layers"),
    (dict(tie_embeddings="yes"), "tie_embeddings"),
    (dict(rope_theta=0), "rope_theta"),
])
def test_validation_names_the_field(fields, field):
    base = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
    with pytest.raises(ArchConfigError) as info:
        ArchConfig(**{**base, **fields})
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, NasUserError)


def test_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(NasUserError, match="hidden_sise"):
        ArchConfig.from_dict({"hidden_sise": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128})
    with pytest.raises(NasUserError, match="intermediate_size"):
        ArchConfig.from_dict({"hidden_size": 64, "num_layers": 2, "num_heads": 4})


# A config small enough to account for by hand: hidden 64, 1 layer, 2 heads of 32, 1 kv head, FFN 96, vocab 16.
HAND = ArchConfig(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=96, vocab_size=16)
# per layer: q 64*64 = 4096, k and v 2*64*32 = 4096, o 64*64 = 4096, FFN 3*64*96 = 18432 -> 30720 matrix weights;
# two RMSNorms 2*64 = 128; final norm 64; tied embedding 16*64 = 1024.
HAND_PARAMS = 30720 + 128 + 64 + 1024


def test_hand_checked_params():
    assert HAND.attention_type == "gqa" or HAND.num_kv_heads == 1
    assert HAND.num_params == HAND_PARAMS == 31936
    assert HAND.num_non_embedding_params == 30720 + 128 + 64


def test_hand_checked_flops():
    # Matmul FLOPs = 2 per multiply-add. Per token through the layer: 2 * 30720 = 61440.
    # Prefill P=4: 4 * 61440 = 245760; attention QK^T and AV over the causal triangle (4*5/2 = 10 pairs):
    # 2 matmuls * 2 FLOP * 1 layer * 2 heads * 32 dims * 10 = 2560; LM head 2*16*64 = 2048 for each of the 4
    # positions (the deployed GenAI graph returns logits for every position).
    assert HAND.prefill_flops(4) == 245760 + 2560 + 4 * 2048
    # Decode with C=4 cached: one token, attention over 5 keys: 2*2*1*2*32*5 = 1280.
    assert HAND.decode_flops(4) == 61440 + 1280 + 2048


def test_hand_checked_weight_bytes():
    assert HAND.weight_bytes("fp32") == 4 * 31936
    assert HAND.weight_bytes("fp16") == 2 * 31936
    # MatMulNBits blocks of 32 inputs with an fp32 scale each (GenAI's builder). Blocks: q/k/v/gate/up rows read
    # 64 inputs (2 blocks): (64+32+32+96+96)*2 = 640; o reads 64: 64*2 = 128; down reads 96: 64*3 = 192;
    # LM head 16 rows * 2 = 32. Vectors (norms) fp32: 192.
    # int8: 32 + 4 bytes a block, plus the fp32 embedding table 16*64 (kept apart even when tied).
    assert HAND.weight_bytes("int8") == (640 + 128 + 192 + 32) * 36 + 4 * 192 + 4 * 1024
    # int4: 16 + 4 bytes a block; tied, so the embedding gathers from the head's blocks.
    assert HAND.weight_bytes("int4") == (640 + 128 + 192 + 32) * 20 + 4 * 192
    with pytest.raises(NasUserError, match="int3"):
        HAND.weight_bytes("int3")


def test_kv_cache_bytes():
    # K and V, per layer, per kv head, per dim, per token; fp16 = 2 bytes.
    assert HAND.kv_cache_bytes(4) == 2 * 1 * 1 * 32 * 4 * 2
    mobilellm_125m = ArchConfig(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536)
    assert mobilellm_125m.kv_cache_bytes(2048) == 2 * 30 * 3 * 64 * 2048 * 2 == 45 * 2**20
    assert mobilellm_125m.kv_cache_bytes(2048, bytes_per_element=4) == 90 * 2**20
    assert mobilellm_125m.num_params == 124_635_456  # the paper's "125M"


def test_memory_is_weights_plus_cache_plus_working_memory():
    acc = HAND.accounting(prompt_len=8, context_len=16)
    for p in accounting.PRECISIONS:
        assert acc["memory_bytes"][p] > acc["weight_bytes"][p] + acc["kv_cache_bytes_fp16"]
    assert acc["arch_id"] == HAND.arch_id and acc["num_params"] == HAND_PARAMS


def test_plain_gelu_has_no_hf_equivalent():
    gelu = HAND.replace(ffn_kind="gelu")
    assert gelu.num_params == HAND_PARAMS - 64 * 96  # two FFN matrices instead of three
    with pytest.raises(NasUserError, match="gelu"):
        gelu.to_hf_config()


def test_from_hf_config_refuses_other_models():
    with pytest.raises(NasUserError, match="gpt2"):
        ArchConfig.from_hf_config({"model_type": "gpt2"})


def test_arch_batch_matches_arch_config():
    configs = SHAPES + [HAND, HAND.replace(ffn_kind="gelu"), HAND.replace(tie_embeddings=False, qkv_bias=True)]
    batch = ArchBatch.from_configs(configs)
    assert len(batch) == len(configs)
    for i, arch in enumerate(configs):
        assert batch.config(i) == arch
        assert int(batch.num_params[i]) == arch.num_params
        assert int(batch.num_non_embedding_params[i]) == arch.num_non_embedding_params
        assert int(batch.prefill_flops(96)[i]) == arch.prefill_flops(96)
        assert int(batch.decode_flops(300)[i]) == arch.decode_flops(300)
        assert int(batch.kv_cache_bytes(300)[i]) == arch.kv_cache_bytes(300)
        for p in accounting.PRECISIONS:
            assert int(batch.weight_bytes(p)[i]) == arch.weight_bytes(p)
            assert int(batch.memory_bytes(p, 96, 300)[i]) == arch.memory_bytes(p, 96, 300)
    sub = batch.subset([0, 2])
    assert [sub.config(0), sub.config(1)] == [configs[0], configs[2]]
