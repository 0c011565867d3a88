"""Reading files users write (TOML specs, JSON configs) with errors that name the file, line and key.

One reader for every TOML file nas takes (targets, search spaces, published measurements):
`read_toml(path, what)` parses it and returns a `TomlFile`, whose `fail(key, message)` builds the one-line
error `path:line: key: message` and whose `keys(...)` checks a table's keys against what is allowed.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from nas.core.errors import NasUserError


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NasUserError(f"cannot read {what} {path}: not UTF-8 text") from None
    except OSError as exc:
        raise NasUserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def line_of(text: str, key: str) -> int | None:
    """Line number (1-based) where dotted `key` is assigned or opened as a table.

    Each part of the key is looked for from the line where the previous part was found, so
    `compute.int4.peak` points at the `peak` under `[compute.int4]`, not the first `peak` of the file.
    """
    lines = text.splitlines()
    start, found = 0, None
    for part in key.split("."):
        pattern = re.compile(rf"(^|[\s\[.{{,\"]){re.escape(part)}\"?\s*(=|\]|\.)")
        for number in range(start, len(lines)):
            if pattern.search(lines[number].split("#", 1)[0]):
                start, found = number, number + 1
                break
        else:
            return found
    return found


@dataclass(frozen=True)
class TomlFile:
    """A parsed TOML file with its text, for errors that point at a key's line."""

    path: Path
    data: dict[str, Any]
    text: str

    def fail(self, key: str, message: str, line: int | None = None) -> NasUserError:
        """The error for `key` (dotted; "" for the whole file): `path:line: key: message`."""
        line = line or (line_of(self.text, key) if key else None)
        where = f"{self.path}:{line}" if line else str(self.path)
        return NasUserError(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    def keys(self, table: Any, where: str, allowed: Iterable[str], required: Iterable[str] = ()) -> None:
        """Refuse a non-table, an unknown key (naming the allowed ones) or a missing required key."""
        allowed = sorted(allowed)
        if not isinstance(table, dict):
            raise self.fail(where, f"must be a table, got {type(table).__name__}")
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}" if where else unknown[0],
                            f"unknown key; allowed: {', '.join(allowed)}")
        missing = sorted(set(required) - set(table))
        if missing:
            raise self.fail(where, f"missing key(s) {', '.join(missing)}")

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value


def read_toml(path: str | Path, what: str) -> TomlFile:
    """Parse a TOML file; an unreadable or malformed one is one line naming the file (and line)."""
    path = Path(path)
    text = _read_text(path, what)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "(at end of document)" for a truncated file; a line number is more useful.
        message = str(exc).replace("(at end of document)", f"(at end of document, line {text.count(chr(10)) + 1})")
        raise NasUserError(f"{path}: malformed TOML: {message}") from None
    return TomlFile(path, data, text)


def read_json_file(path: str | Path, what: str = "JSON file") -> Any:
    """Load JSON, turning every failure into one line with the file, line and column."""
    path = Path(path)
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NasUserError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
