"""Published small language models nas places beside its fronts (reports/landmarks.toml): their public shapes,
with where each was read. The search, `nas predict`-style figures and the report all read them through here."""

from __future__ import annotations

from pathlib import Path

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.core.paths import shipped
from nas.core.userfiles import read_toml

LANDMARK_FIELDS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size",
                   "ffn_kind", "tie_embeddings", "qkv_bias")


def load_landmarks(path: Path | None = None) -> list[tuple[str, ArchConfig, str]]:
    """(name, ArchConfig, source) of every landmark in reports/landmarks.toml (or `path`)."""
    toml = read_toml(path or shipped("reports") / "landmarks.toml", "landmarks file")
    out = []
    for t in toml.tables("landmark", {"name", "source", *LANDMARK_FIELDS}, {"name", "source", *LANDMARK_FIELDS}):
        try:
            arch = ArchConfig.from_dict({k: t.data[k] for k in LANDMARK_FIELDS})
        except (NasUserError, TypeError, ValueError) as exc:  # a field nas cannot build: name the table
            raise t.fail("", str(exc)) from None
        out.append((t.string("name"), arch, t.string("source")))
    return out


def landmark_configs(prompt_len: int, context_len: int) -> list[tuple[str, ArchConfig, str]]:
    """The landmarks with max_seq_len raised to hold a study's lengths (a prompt of `prompt_len`, a decode step
    after `context_len` cached tokens), so they are predicted where the study's shapes are: the search, the
    report and landmark proxy training all place these same configs (the same arch ids)."""
    return [(name, arch.replace(max_seq_len=max(arch.max_seq_len, context_len + 1, prompt_len)), source)
            for name, arch, source in load_landmarks()]
