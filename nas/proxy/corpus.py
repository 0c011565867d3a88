"""Text for proxy training: the shipped corpus or the user's own, as bytes split into train and validation.

Tokens are bytes (vocabulary 256), so no tokenizer has to be trained or shipped and held-out loss converts to
bits per byte, a figure comparable across corpora and tokenizers. The split is deterministic: the bytes are cut
into SPLIT_BLOCK blocks and block i is validation when i % SPLIT_EVERY == SPLIT_AT, training otherwise, so the
held-out text is spread over the whole corpus rather than being its last works.

`load_corpus(None)` is the shipped default (corpora/shakespeare.txt.xz, see corpora/README.md); a path may be
one text file, a folder (every file in it, recursively, in sorted order, skipping hidden ones), or JSONL whose
records carry a "text" field. Files ending in .xz or .gz are decompressed. Empty, unreadable or too-small data
is one clear error.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nas.core.errors import NasUserError
from nas.core.paths import shipped

VOCAB_SIZE = 256  # bytes
SPLIT_BLOCK = 32 * 1024
SPLIT_EVERY = 10
SPLIT_AT = 5
MIN_BYTES = 2 * SPLIT_EVERY * SPLIT_BLOCK  # two validation blocks (64 KiB of held-out text): 640 KiB in all
DEFAULT_CORPUS = "shakespeare.txt.xz"
_DOCUMENT_SEPARATOR = b"\n\f\n\n"  # between files of a folder or records of a JSONL file (as in the default)


@dataclass(frozen=True)
class Corpus:
    """Training and validation bytes of one corpus, with where they came from."""

    name: str
    train: np.ndarray = field(repr=False)  # uint8
    val: np.ndarray = field(repr=False)  # uint8
    sha256: str  # of all the bytes, before the split: a study records it, so results say what they trained on

    @property
    def size(self) -> int:
        return len(self.train) + len(self.val)

    def describe(self) -> dict:
        return {"name": self.name, "bytes": self.size, "train_bytes": len(self.train), "val_bytes": len(self.val),
                "sha256": self.sha256, "tokens": "bytes (vocabulary 256)",
                "split": f"{SPLIT_BLOCK // 1024} KiB blocks, block i held out when i % {SPLIT_EVERY} == {SPLIT_AT}"}


def split(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) bytes: the deterministic block split of the module docstring."""
    array = np.frombuffer(data, dtype=np.uint8)
    starts = np.arange(0, len(array), SPLIT_BLOCK)
    held_out = (np.arange(len(starts)) % SPLIT_EVERY) == SPLIT_AT
    blocks = [array[s:s + SPLIT_BLOCK] for s in starts]
    train = np.concatenate([b for b, h in zip(blocks, held_out) if not h] or [array[:0]])
    val = np.concatenate([b for b, h in zip(blocks, held_out) if h] or [array[:0]])
    return train, val


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NasUserError(f"cannot read --data {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".xz":
            return lzma.decompress(data)
        if path.suffix == ".gz":
            return gzip.decompress(data)
    except (lzma.LZMAError, OSError, EOFError) as exc:
        raise NasUserError(f"--data {path}: cannot decompress it: {exc}") from None
    return data


def _jsonl_text(path: Path, data: bytes) -> bytes:
    texts = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise NasUserError(f"{path}:{number}: malformed JSON: {exc.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise NasUserError(f"{path}:{number}: a JSONL record needs a string field \"text\"")
        texts.append(record["text"].encode("utf-8"))
    return _DOCUMENT_SEPARATOR.join(texts)


def _file_bytes(path: Path) -> bytes:
    data = _read_bytes(path)
    name = path.name[:-3] if path.suffix in (".xz", ".gz") else path.name
    return _jsonl_text(path, data) if name.endswith(".jsonl") else data


def load_corpus(path: str | Path | None = None) -> Corpus:
    """The shipped corpus (None) or the text at `path` (see the module docstring)."""
    if path is None:
        source = shipped("corpora") / DEFAULT_CORPUS
        data, name = _read_bytes(source), DEFAULT_CORPUS.removesuffix(".xz")
    else:
        source = Path(path)
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(source).parts))
            if not files:
                raise NasUserError(f"--data {source} is an empty folder; give a text file, a folder of text files "
                                   "or a JSONL file with a \"text\" field")
            data = _DOCUMENT_SEPARATOR.join(_file_bytes(p) for p in files)
        elif source.exists():
            data = _file_bytes(source)
        else:
            raise NasUserError(f"--data {source} does not exist")
        name = source.name
    if not data.strip():
        raise NasUserError(f"--data {source} holds no text")
    if len(data) < MIN_BYTES:
        raise NasUserError(f"--data {source} has {len(data):,} bytes; proxy training needs at least {MIN_BYTES:,} "
                           "so that its held-out split is large enough")
    train, val = split(data)
    return Corpus(name, train, val, hashlib.sha256(data).hexdigest())
