"""A measured graph as an ONNX Runtime GenAI model folder: genai_config.json and a byte-level tokenizer beside
model.onnx, so GenAI's own runtime (its Python API, or its `model_benchmark` binary on a phone) loads and runs
the very graph nas measures.

The graph (`nas.latency.graphs`) has GenAI's inputs and outputs (input_ids, attention_mask, past_key_values.N.*
-> logits, present.N.*); `genai_config` describes it to GenAI as a "llama" decoder sharing the past and present
KV buffer, as the model builder's configs do. The tokenizer maps each byte to one token (ids 0-255; no merges),
so a text of N ASCII bytes is a prompt of exactly N tokens: what a benchmark needs, with no download.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError

MODEL_FILE = "model.onnx"
BYTE_TOKENS = 256
SPECIALS = ("<s>", "</s>", "<unk>")  # ids 256, 257, 258


def genai_config(arch: ArchConfig, threads: int | None = None, filename: str = MODEL_FILE) -> dict[str, Any]:
    """genai_config.json for the graph of `arch` (CPU execution provider; `threads`: intra-op threads)."""
    session: dict[str, Any] = {"log_id": "onnxruntime-genai", "provider_options": []}
    if threads:
        session["intra_op_num_threads"] = int(threads)
    bos, eos, unk = (BYTE_TOKENS + i for i in range(len(SPECIALS)))
    return {
        "model": {
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": unk, "context_length": arch.max_seq_len,
            "type": "llama", "vocab_size": arch.vocab_size,
            "decoder": {
                "session_options": session, "filename": filename, "head_size": arch.head_dim,
                "hidden_size": arch.hidden_size, "num_attention_heads": arch.num_heads,
                "num_hidden_layers": arch.num_layers, "num_key_value_heads": arch.num_kv_heads,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "max_length": arch.max_seq_len, "min_length": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": True, "top_k": 1, "top_p": 1.0,
                   "temperature": 1.0, "repetition_penalty": 1.0, "early_stopping": True, "length_penalty": 1.0,
                   "no_repeat_ngram_size": 0, "diversity_penalty": 0.0},
    }


def _byte_symbols() -> list[str]:
    """The printable stand-in of each byte in byte-level BPE (GPT-2's table): printable Latin-1 bytes stand for
    themselves, the rest are shifted above 255."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in kept else chr(next(shifted)) for b in range(256)]


def tokenizer_files(arch: ArchConfig) -> dict[str, dict[str, Any]]:
    """tokenizer.json and tokenizer_config.json of the byte-level tokenizer (see the module docstring)."""
    if arch.vocab_size < BYTE_TOKENS + len(SPECIALS):
        raise NasUserError(f"vocab_size {arch.vocab_size} of {arch.arch_id}: a GenAI model folder needs at least "
                           f"{BYTE_TOKENS + len(SPECIALS)} tokens (bytes and {', '.join(SPECIALS)})")
    vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    added = []
    for i, token in enumerate(SPECIALS):
        vocab[token] = BYTE_TOKENS + i
        added.append({"id": BYTE_TOKENS + i, "content": token, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
                 "pre_tokenizer": byte_level, "post_processor": None, "decoder": byte_level,
                 "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                           "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                           "ignore_merges": False, "vocab": vocab, "merges": []}}
    config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": SPECIALS[0], "eos_token": SPECIALS[1],
              "unk_token": SPECIALS[2], "model_max_length": arch.max_seq_len, "add_bos_token": False}
    return {"tokenizer.json": tokenizer, "tokenizer_config.json": config}


def write_genai_files(folder: Path, arch: ArchConfig, threads: int | None = None) -> list[str]:
    """Write genai_config.json and the tokenizer files into `folder` (beside its model.onnx); their names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"genai_config.json": genai_config(arch, threads), **tokenizer_files(arch)}
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return list(files)
