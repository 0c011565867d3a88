"""Reading files users write (TOML specs, JSON configs) with errors that name the file and line."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from nas.errors import NasUserError


def read_toml_file(path: Path, what: str) -> tuple[dict[str, Any], str]:
    """The parsed TOML and its text (kept so later checks can point at a key's line)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise NasUserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "(at end of document)" for a truncated file; a line number is more useful.
        message = str(exc).replace("(at end of document)", f"(at end of document, line {text.count(chr(10)) + 1})")
        raise NasUserError(f"{path}: malformed TOML: {message}") from None
    return data, text


def read_json_file(path: str | Path, what: str = "JSON file") -> Any:
    """Load JSON, turning every failure into one line with the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise NasUserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NasUserError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
