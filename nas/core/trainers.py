"""Which shapes each trainer nas exports to can build: the one table of rules `nas search --trainer` filters by
and `nas export` refuses by.

One table of rules per trainer, each a named condition on ArchBatch columns, so a whole enumerated space is
filtered at once and a single shape is checked by the same rules; each rule also says, for one shape, what it
lacks in the trainer's words (`unsupported`, the text of `nas export`'s refusals):

- hf: transformers' LlamaConfig / Qwen2Config: a gated FFN (no plain GELU MLP), and for Llama (no qkv bias) a
  hidden size divisible by the heads (transformers >= 5 checks it even when head_dim is given);
  (`ArchConfig.to_hf_config`, in the layer below, refuses the same shapes; a test keeps the two equal);
- litgpt: every kind but gated ReLU (LitGPT has no such MLP class);
- nanogpt: nanoGPT's GPT: MHA, a plain GELU MLP of width 4 x hidden, head size hidden / heads, tied embeddings,
  no qkv bias.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import NasUserError

TRAINERS = ("hf", "litgpt", "nanogpt")  # read by the CLI's parser: numpy is imported only where rules are applied

Columns = Mapping[str, Any]  # ArchBatch.columns (numpy arrays) plus "ffn_kind" (the kind names)
FFN_NAMES = {"swiglu": "SwiGLU", "reglu": "ReGLU", "geglu": "GeGLU", "gelu": "GELU"}


class Rule(NamedTuple):
    needs: str  # what the trainer needs, for the search's log and a trial's violations
    holds: Callable[[Columns], Any]  # a boolean array: the rows that meet it
    lacks: Callable[[ArchConfig], str]  # what one shape that fails it has instead, for an export's refusal


def _nanogpt_ffn(a: ArchConfig) -> str:
    if a.ffn_kind != "gelu":
        return f"{FFN_NAMES[a.ffn_kind]} FFN"
    return f"FFN width {a.intermediate_size} (nanoGPT uses 4 * n_embd = {4 * a.hidden_size})"


RULES: dict[str, tuple[Rule, ...]] = {
    "hf": (
        Rule("a gated FFN (transformers has no plain-GELU Llama MLP)", lambda c: c["ffn_kind"] != "gelu",
             lambda a: "a plain GELU FFN"),
        Rule("hidden size divisible by the heads (LlamaConfig)",
             lambda c: (c["qkv_bias"] == 1) | (c["hidden_size"] % c["num_heads"] == 0),
             lambda a: f"hidden size {a.hidden_size} not divisible by {a.num_heads} heads"),
    ),
    "litgpt": (
        Rule("no gated ReLU (LitGPT has no such MLP class)", lambda c: c["ffn_kind"] != "reglu",
             lambda a: f"ffn_kind {a.ffn_kind!r} (it has no gated-ReLU MLP class)"),
    ),
    "nanogpt": (
        Rule("MHA", lambda c: c["num_kv_heads"] == c["num_heads"],
             lambda a: f"{a.attention_type.upper()} (num_kv_heads={a.num_kv_heads} of {a.num_heads} heads)"),
        Rule("a plain GELU MLP of width 4 x hidden",
             lambda c: (c["ffn_kind"] == "gelu") & (c["intermediate_size"] == 4 * c["hidden_size"]), _nanogpt_ffn),
        Rule("head size hidden / heads", lambda c: c["num_heads"] * c["head_dim"] == c["hidden_size"],
             lambda a: f"head_dim {a.head_dim} (nanoGPT uses n_embd / n_head = {a.hidden_size // a.num_heads})"),
        Rule("tied embeddings", lambda c: c["tie_embeddings"] == 1, lambda a: "an untied LM head"),
        Rule("no qkv bias", lambda c: c["qkv_bias"] == 0, lambda a: "qkv-only bias"),
    ),
}


def _columns(batch) -> dict[str, Any]:
    import numpy as np

    return {**batch.columns, "ffn_kind": np.asarray(batch.ffn_kinds)}


def check_trainer(trainer: str | None) -> None:
    if trainer is not None and trainer not in TRAINERS:
        raise NasUserError(f"--trainer {trainer!r} is not one of {', '.join(TRAINERS)}")


def buildable(batch, trainer: str):
    """Mask of the rows of an ArchBatch that `trainer` can build."""
    import numpy as np

    check_trainer(trainer)
    cols = _columns(batch)
    mask = np.ones(len(batch), dtype=bool)
    for rule in RULES[trainer]:
        mask &= np.asarray(rule.holds(cols), dtype=bool)
    return mask


def _failed(arch, trainer: str) -> list[Rule]:
    import numpy as np

    check_trainer(trainer)
    cols = _columns(ArchBatch.from_configs([arch]))
    return [rule for rule in RULES[trainer] if not bool(np.asarray(rule.holds(cols))[0])]


def missing(arch, trainer: str) -> list[str]:
    """What `trainer` needs that `arch` lacks ([] when it can build it)."""
    return [rule.needs for rule in _failed(arch, trainer)]


def unsupported(arch, trainer: str) -> list[str]:
    """What `arch` has that `trainer` cannot express, in the trainer's words ([] when it can build it)."""
    return [rule.lacks(arch) for rule in _failed(arch, trainer)]
