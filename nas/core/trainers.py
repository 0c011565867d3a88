"""Which shapes each trainer nas exports to can build (`nas search --trainer`).

One table of rules per trainer, each a named condition on ArchBatch columns, so a whole enumerated space is
filtered at once and a single shape is checked by the same rules. What the trainers accept is documented in
`nas.export` (which refuses the same shapes with its own messages; a test keeps the two in agreement):

- hf: transformers' LlamaConfig / Qwen2Config: a gated FFN (no plain GELU MLP), and for Llama (no qkv bias) a
  hidden size divisible by the heads (transformers >= 5 checks it even when head_dim is given);
- litgpt: every kind but gated ReLU (LitGPT has no such MLP class);
- nanogpt: nanoGPT's GPT: MHA, a plain GELU MLP of width 4 x hidden, tied embeddings, head size hidden / heads,
  no qkv bias.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from nas.core.arch import ArchBatch
from nas.core.errors import NasUserError

TRAINERS = ("hf", "litgpt", "nanogpt")

Columns = Mapping[str, np.ndarray]  # ArchBatch.columns plus "ffn_kind" (the kind names)
Rule = tuple[str, Callable[[Columns], np.ndarray]]

RULES: dict[str, tuple[Rule, ...]] = {
    "hf": (
        ("a gated FFN (transformers has no plain-GELU Llama MLP)", lambda c: c["ffn_kind"] != "gelu"),
        ("hidden size divisible by the heads (LlamaConfig)",
         lambda c: (c["qkv_bias"] == 1) | (c["hidden_size"] % c["num_heads"] == 0)),
    ),
    "litgpt": (
        ("no gated ReLU (LitGPT has no such MLP class)", lambda c: c["ffn_kind"] != "reglu"),
    ),
    "nanogpt": (
        ("MHA", lambda c: c["num_kv_heads"] == c["num_heads"]),
        ("a plain GELU MLP of width 4 x hidden", lambda c: (c["ffn_kind"] == "gelu")
         & (c["intermediate_size"] == 4 * c["hidden_size"])),
        ("tied embeddings", lambda c: c["tie_embeddings"] == 1),
        ("head size hidden / heads", lambda c: c["num_heads"] * c["head_dim"] == c["hidden_size"]),
        ("no qkv bias", lambda c: c["qkv_bias"] == 0),
    ),
}


def _columns(batch) -> dict[str, np.ndarray]:
    return {**batch.columns, "ffn_kind": np.asarray(batch.ffn_kinds)}


def check_trainer(trainer: str | None) -> None:
    if trainer is not None and trainer not in TRAINERS:
        raise NasUserError(f"--trainer {trainer!r} is not one of {', '.join(TRAINERS)}")


def buildable(batch, trainer: str) -> np.ndarray:
    """Mask of the rows of an ArchBatch that `trainer` can build."""
    check_trainer(trainer)
    cols = _columns(batch)
    mask = np.ones(len(batch), dtype=bool)
    for _, rule in RULES[trainer]:
        mask &= np.asarray(rule(cols), dtype=bool)
    return mask


def missing(arch, trainer: str) -> list[str]:
    """What `trainer` needs that `arch` lacks ([] when it can build it)."""
    check_trainer(trainer)
    cols = _columns(ArchBatch.from_configs([arch]))
    return [text for text, rule in RULES[trainer] if not bool(np.asarray(rule(cols))[0])]
