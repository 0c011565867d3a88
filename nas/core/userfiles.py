"""Reading files users write (TOML specs, JSON configs) with errors that name the file, line and key.

One reader for every TOML file nas takes (targets, search spaces, published measurements and training runs):
`read_toml(path, what)` parses it and returns a `TomlFile`, whose `fail(key, message)` builds the one-line
error `path:line: key: message`, whose `keys(...)` checks a table's keys against what is allowed, and whose
`tables(kind, ...)` returns each `[[kind]]` table as a `TomlTable` that knows the lines its keys sit on.
`read_csv(path, what, columns)` reads a CSV data file whose rows fail as `path:line: column: message`.
`write_atomic(path, text)` replaces a file whole or not at all.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
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

    def tables(self, kind: str, allowed: Iterable[str], required: Iterable[str] = (),
               kinds: Iterable[str] = ()) -> list["TomlTable"]:
        """Every `[[kind]]` table, each checked for unknown and missing keys. `kinds` names the file's other
        array-of-tables kinds, so that a table's lines end where the next table of any kind begins."""
        items = self.data.get(kind, [])
        starts = _table_lines(self.text, kind)
        if not isinstance(items, list) or len(starts) != len(items):
            raise self.fail(kind, f"must be written as [[{kind}]] tables")
        every = sorted(line for k in {kind, *kinds} for line in _table_lines(self.text, k))
        last = len(self.text.splitlines()) + 1
        allowed, required = set(allowed), list(required)
        out = []
        for i, (item, start) in enumerate(zip(items, starts)):
            end = min([line for line in every if line > start] or [last])
            table = TomlTable(self, kind, i, item, start, end)
            if not isinstance(item, dict):
                raise table.fail("", "must be a table")
            unknown = sorted(set(item) - allowed)
            if unknown:
                raise table.fail(unknown[0], f"unknown key; allowed: {', '.join(sorted(allowed))}")
            missing = [k for k in required if k not in item]
            if missing:
                raise table.fail("", f"missing key(s) {', '.join(missing)}")
            out.append(table)
        return out


def _table_lines(text: str, kind: str) -> list[int]:
    pattern = re.compile(rf"^\s*\[\[\s*{re.escape(kind)}\s*\]\]")
    return [i + 1 for i, line in enumerate(text.splitlines()) if pattern.match(line)]


_MISSING = object()


@dataclass(frozen=True)
class TomlTable:
    """One `[[kind]]` table of a TOML file (the `index`-th, lines `start` to `end`), with typed getters whose
    errors name `path:line: kind[index].key`."""

    file: TomlFile
    kind: str
    index: int
    data: dict[str, Any]
    start: int  # line of its [[kind]] header
    end: int  # first line after it

    def name(self, key: str = "") -> str:
        return f"{self.kind}[{self.index}]" + (f".{key}" if key else "")

    def line(self, key: str) -> int:
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        lines = self.file.text.splitlines()
        for number in range(self.start, min(self.end, len(lines) + 1)):
            if pattern.match(lines[number - 1]):
                return number
        return self.start

    def fail(self, key: str, message: str) -> NasUserError:
        return self.file.fail(self.name(key), message, line=self.line(key) if key else self.start)

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.fail("", f"missing key {key}")
        return default

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, low: int = 1, high: int = 2**62, default: Any = _MISSING) -> int | None:
        """An integer in [low, high] (None only as the default of an optional key)."""
        value = self._get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be an integer from {low:,} to {high:,}, got {value!r}")
        return value

    def number(self, key: str, low: float, high: float, default: Any = _MISSING) -> float | None:
        """A finite number in [low, high] (None only as the default of an optional key)."""
        value = self._get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            raise self.fail(key, f"must be a number from {low:g} to {high:g}, got {value!r}")
        return float(value)


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


@dataclass(frozen=True)
class CsvRow:
    """One data row of a CSV file: its values by column and its line, for `path:line: column: message`."""

    path: Path
    line: int
    values: dict[str, str]

    def fail(self, column: str, message: str) -> NasUserError:
        return NasUserError(f"{self.path}:{self.line}: {column}: {message}" if column else
                            f"{self.path}:{self.line}: {message}")

    def text(self, column: str) -> str:
        value = self.values[column].strip()
        if not value:
            raise self.fail(column, "is empty")
        return value

    def number(self, column: str, low: float, high: float) -> float:
        text = self.text(column)
        try:
            value = float(text)
        except ValueError:
            raise self.fail(column, f"{text!r} is not a number") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise self.fail(column, f"must be a number from {low:g} to {high:g}, got {text}")
        return value

    def boolean(self, column: str) -> bool:
        text = self.text(column).lower()
        if text not in ("true", "false"):
            raise self.fail(column, f"must be true or false, got {self.values[column]!r}")
        return text == "true"


def read_csv(path: str | Path, what: str, columns: Iterable[str]) -> tuple[str, list[CsvRow]]:
    """(the file's text, its rows) of a CSV file with exactly `columns` as its header; lines starting with "#"
    are comments. A missing or extra column, or a row with another number of fields, is one line naming it."""
    path = Path(path)
    text = _read_text(path, what)
    columns = list(columns)
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise NasUserError(f"{path}: empty {what}; expected a header {','.join(columns)}")
    header_line, header = lines[0]
    header_fields = [h.strip() for h in next(csv.reader([header]))]
    if header_fields != columns:
        raise NasUserError(f"{path}:{header_line}: header must be {','.join(columns)}, got {header.strip()!r}")
    rows = []
    for number, line in lines[1:]:
        fields = next(csv.reader([line]))
        if len(fields) != len(columns):
            raise NasUserError(f"{path}:{number}: expected {len(columns)} fields ({','.join(columns)}), "
                               f"got {len(fields)}")
        rows.append(CsvRow(path, number, dict(zip(columns, fields))))
    return text, rows


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file renamed over it: a failure leaves the old file whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; these are plain data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json_file(path: str | Path, what: str = "JSON file") -> Any:
    """Load JSON, turning every failure into one line with the file, line and column."""
    path = Path(path)
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NasUserError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
