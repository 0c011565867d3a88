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

import hashlib
import lzma
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nas.core.errors import NasUserError
from nas.core.paths import shipped
from nas.core.userfiles import parse_json, read_user_bytes

VOCAB_SIZE = 256  # bytes
SPLIT_BLOCK = 32 * 1024
SPLIT_EVERY = 10
SPLIT_AT = 5
MIN_BYTES = 2 * SPLIT_EVERY * SPLIT_BLOCK  # two validation blocks (64 KiB of held-out text): 640 KiB in all
DEFAULT_CORPUS = "shakespeare.txt.xz"
# The most training text nas reads (decompressed, a folder's files together): proxy training uses a few MB of
# it, and the whole is held in memory and hashed. --data /dev/zero read until memory ran out.
MAX_DATA_BYTES = 2**30
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


def _read_bytes(path: Path, limit: int = MAX_DATA_BYTES) -> bytes:
    """A file's bytes, decompressed: at most `limit` of them, read or decompressed (a folder, a device such as
    /dev/zero, a pipe or a file past the limit is one line before it exhausts memory; so is a compressed file
    that would expand past it)."""
    data = read_user_bytes(path, "--data", limit=limit)
    try:
        if path.suffix == ".xz":
            return _expand(lambda: lzma.LZMADecompressor(), data, limit, path)
        if path.suffix == ".gz":
            return _expand(lambda: zlib.decompressobj(wbits=31), data, limit, path)
    except (lzma.LZMAError, zlib.error, EOFError) as exc:
        raise NasUserError(f"--data {path}: cannot decompress it: {exc}") from None
    return data


def _expand(decompressor, data: bytes, limit: int, path: Path) -> bytes:
    """Decompress every stream (member) of `data`, stopping past `limit` bytes of output."""
    out = bytearray()
    rest = data
    while rest.strip(b"\0"):  # streams follow each other; padding of zero bytes may end the file
        d = decompressor()
        out += d.decompress(rest, limit + 1 - len(out))
        if len(out) > limit:
            raise NasUserError(f"--data {path} expands past {limit:,} bytes, the most training text nas reads; "
                               "pass a sample of it")
        if not d.eof:
            raise EOFError("the compressed data ends early")
        rest = d.unused_data
    return bytes(out)


def _jsonl_text(path: Path, data: bytes) -> bytes:
    texts = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        record = parse_json(line, str(path), line=number)
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise NasUserError(f"{path}:{number}: a JSONL record needs a string field \"text\"")
        texts.append(record["text"].encode("utf-8"))
    return _DOCUMENT_SEPARATOR.join(texts)


def _file_bytes(path: Path, limit: int = MAX_DATA_BYTES) -> bytes:
    data = _read_bytes(path, max(limit, 0))
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
            if sum(p.stat().st_size for p in files) > MAX_DATA_BYTES:
                raise NasUserError(f"--data {source} holds more than {MAX_DATA_BYTES:,} bytes, the most training "
                                   "text nas reads; pass a sample of it")
            parts, total = [], 0
            for p in files:  # the folder's text together is bounded too, not only each file
                parts.append(_file_bytes(p, MAX_DATA_BYTES - total))
                total += len(parts[-1]) + len(_DOCUMENT_SEPARATOR)
            data = _DOCUMENT_SEPARATOR.join(parts)
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
