"""The proxy-training corpus: the shipped default, the user's own text, the split, and refused data."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from nas.core.errors import NasUserError
from nas.proxy.corpus import MIN_BYTES, SPLIT_BLOCK, SPLIT_EVERY, load_corpus, split


def test_shipped_corpus_is_real_text_over_a_megabyte():
    corpus = load_corpus()
    assert corpus.size > 1_000_000 and corpus.name == "shakespeare.txt"
    assert corpus.sha256 == "e1a2315f7f536e52da10ea2292758f7b19a5ec2492ca9aea73247fc58c978af2"
    text = bytes(corpus.train[:2000]).decode("ascii")
    assert "the" in text.lower() and text.count(" ") > 200  # prose, not noise
    assert 0.08 < len(corpus.val) / corpus.size < 0.12


def test_split_is_deterministic_and_interleaved():
    data = bytes(range(256)) * (SPLIT_BLOCK * SPLIT_EVERY * 3 // 256)
    train, val = split(data)
    train2, val2 = split(data)
    assert np.array_equal(train, train2) and np.array_equal(val, val2)
    assert len(train) + len(val) == len(data) and len(val) == 3 * SPLIT_BLOCK


def _text(n: int) -> str:
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    return " ".join(words[i % 5] for i in range(n // 6)) + "\n"


def test_user_text_folder_and_jsonl(tmp_path):
    (tmp_path / "one.txt").write_text(_text(MIN_BYTES))
    assert load_corpus(tmp_path / "one.txt").size >= MIN_BYTES
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text(_text(MIN_BYTES // 2))
    (folder / "sub" / "b.txt.gz").write_bytes(gzip.compress(_text(MIN_BYTES // 2 + 100).encode()))
    (folder / ".hidden").write_text("x" * 10)
    assert load_corpus(folder).size >= MIN_BYTES
    records = tmp_path / "data.jsonl"
    records.write_text("\n".join(json.dumps({"text": _text(20_000), "id": i}) for i in range(40)))
    assert load_corpus(records).size > MIN_BYTES


@pytest.mark.parametrize("make, pattern", [
    (lambda d: d / "missing.txt", "does not exist"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "empty folder"),
    (lambda d: (d / "blank.txt").write_text("   \n") and d / "blank.txt", "holds no text"),
    (lambda d: (d / "small.txt").write_text("to be or not to be\n") and d / "small.txt", "needs at least"),
    (lambda d: (d / "bad.jsonl").write_text('{"text": "x"}\n{oops\n') and d / "bad.jsonl",
     "bad.jsonl:2: malformed JSON"),
    (lambda d: (d / "notext.jsonl").write_text('{"body": "x"}\n') and d / "notext.jsonl", "string field \"text\""),
    (lambda d: (d / "broken.xz").write_bytes(b"not xz") and d / "broken.xz", "cannot decompress"),
])
def test_bad_data_is_one_clear_error(tmp_path, make, pattern):
    with pytest.raises(NasUserError, match=pattern):
        load_corpus(make(tmp_path))


def test_decompression_is_bounded_and_every_stream_is_read(tmp_path):
    """A small .gz or .xz that expands past the limit is one line, found while decompressing (not after
    holding all of it); a file of several gzip members is read whole, as gzip.decompress did."""
    import lzma

    from nas.proxy.corpus import _read_bytes

    bomb = tmp_path / "zeros.gz"
    bomb.write_bytes(gzip.compress(b"\0" * 100_000))
    with pytest.raises(NasUserError, match="expands past 1,000 bytes"):
        _read_bytes(bomb, limit=1000)
    (tmp_path / "zeros.xz").write_bytes(lzma.compress(b"\0" * 100_000))
    with pytest.raises(NasUserError, match="expands past 1,000 bytes"):
        _read_bytes(tmp_path / "zeros.xz", limit=1000)
    members = tmp_path / "two.gz"
    members.write_bytes(gzip.compress(b"first ") + gzip.compress(b"second"))
    assert _read_bytes(members) == b"first second"
    (tmp_path / "cut.gz").write_bytes(gzip.compress(b"x" * 1000)[:-12])
    with pytest.raises(NasUserError, match="cannot decompress it"):
        _read_bytes(tmp_path / "cut.gz")
