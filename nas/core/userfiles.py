"""Reading files users write (TOML specs, JSON configs, JSONL rows) with errors that name the file, line and key.

Every file nas reads from a user path goes through `read_user_bytes`: a folder, a device (`/dev/zero`), a
pipe, or a file larger than nas will hold in memory is refused in one line before a byte is read, instead of
reading until memory runs out. Every JSON text goes through `parse_json`, and every TOML file through
`read_toml`: both refuse what Python's parsers accept but nas cannot compute with (JSON's NaN and Infinity,
TOML's inf and nan, integers beyond int64, nesting deeper than any nas file has) with the file, line and key,
so the typed checks after them only see finite numbers and int64 integers.

`read_toml(path, what)` returns a `TomlFile`, whose `fail(key, message)` builds the one-line error
`path:line: key: message` and whose `keys(...)` checks a table's keys against what is allowed.

`tables(kind, ...)` returns each `[[kind]]` table of a TOML file as a `TomlTable` that knows the lines its
keys sit on; `read_csv(path, what, columns)` reads a CSV data file whose rows fail as
`path:line: column: message`.
"""

from __future__ import annotations

import csv
import json
import math
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from nas.core.errors import NasUserError
from nas.core.limits import INT64_MAX, is_finite_number, is_int, shown

# The largest user file (TOML, JSON, a measurements JSONL) nas reads whole: hundreds of times the largest real
# one (a calibration's measurements are a few MB), far below what would exhaust a laptop's memory.
MAX_FILE_BYTES = 256 * 2**20
# No nas file nests deeper than 8 (a predictor's evaluation); Python's own parser gives up near 1,000.
MAX_JSON_DEPTH = 64


def read_user_bytes(path: str | Path, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at `path`; a missing file, a folder, a device or pipe, or a file of more
    than `limit` bytes is one line `cannot read WHAT PATH: why`."""
    path = Path(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise NasUserError(f"cannot read {what} {path}: it is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise NasUserError(f"cannot read {what} {path}: it is not a regular file (a device, pipe or socket)")
        if info.st_size > limit:
            raise NasUserError(f"cannot read {what} {path}: it is larger than {limit:,} bytes, the most nas reads "
                               "from one file")
        data = _read_at_most(path, limit + 1)  # st_size is 0 for /proc files: the read itself is bounded too
    except OSError as exc:
        raise NasUserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise NasUserError(f"cannot read {what} {path}: it is larger than {limit:,} bytes, the most nas reads "
                           "from one file")
    return data


def _read_at_most(path: Path, size: int) -> bytes:
    """Up to `size` bytes of `path`, read in pieces: `read(size)` would set aside all `size` bytes first."""
    pieces, left = [], size
    with path.open("rb") as fh:
        while left > 0:
            piece = fh.read(min(left, 2**20))
            if not piece:
                break
            pieces.append(piece)
            left -= len(piece)
    return b"".join(pieces)


def read_user_text(path: str | Path, what: str, hint: str = "") -> str:
    """A user file's text: `read_user_bytes`, decoded as UTF-8; anything else is one line (`hint` says what the
    file should be)."""
    try:
        return read_user_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError:
        raise NasUserError(f"cannot read {what} {path}: not UTF-8 text{hint}") from None


def _no_constant(name: str):
    raise _NonFinite(name)


class _NonFinite(Exception):
    """JSON's NaN, Infinity or -Infinity, which Python's json accepts and no nas file holds."""


def parse_json(text: str | bytes, where: str, line: int | None = None, what: str = "JSON") -> Any:
    """Parse JSON `text` from `where` (a file; `line` for one line of a JSONL file). Malformed JSON, NaN or
    Infinity, an integer beyond int64 or nesting deeper than MAX_JSON_DEPTH is one line naming the place."""
    at = f"{where}:{line}" if line is not None else where
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        if line is not None:
            raise NasUserError(f"{at}: malformed {what}: {exc.msg} (column {exc.colno})") from None
        raise NasUserError(f"{at}:{exc.lineno}:{exc.colno}: malformed {what}: {exc.msg}") from None
    except _NonFinite as exc:
        raise NasUserError(f"{at}: malformed {what}: {exc.args[0]} is not a number nas accepts (numbers must be "
                           "finite)") from None
    except RecursionError:
        raise NasUserError(f"{at}: malformed {what}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # an integer of more than 4,300 digits, bytes not UTF-8
        raise NasUserError(f"{at}: malformed {what}: {_parser_refusal(exc)}") from None
    problem = _out_of_bounds(value)
    if problem:
        raise NasUserError(f"{at}: {problem}")
    return value


def _parser_refusal(exc: BaseException) -> str:
    """What Python's parser refused, in nas's words (not sys.set_int_max_str_digits advice)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "an integer of more than 4,300 digits" if "integer string conversion" in text else text


def _out_of_bounds(value: Any) -> str | None:
    """Why a parsed JSON or TOML value holds something nas refuses everywhere (see the module docstring), naming
    its key path; None when it does not. Iterative, so a deep value cannot exhaust the stack here."""
    stack = [(value, "", 0)]
    while stack:
        item, key, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"{key or 'the value'}: nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, dict):
            stack.extend((v, f"{key}.{k}" if key else str(k), depth + 1) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{key}[{i}]", depth + 1) for i, v in enumerate(item))
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int) and not -INT64_MAX <= item <= INT64_MAX:
            return f"{key or 'the value'}: {shown(item)} is beyond the 64-bit integers nas computes with"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{key or 'the value'}: {item!r} is not a finite number"
    return None


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

    def one_of(self, key: str, allowed, what: str = "is not one of") -> str:
        """A string among `allowed`; else `'value' {what} {allowed, comma-separated}`."""
        value = self.string(key)
        if value not in allowed:
            raise self.fail(key, f"{value!r} {what} {', '.join(allowed)}")
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
        if not is_int(value) or not low <= value <= high:
            raise self.fail(key, f"must be an integer from {low:,} to {high:,}, got {value!r}")
        return value

    def number(self, key: str, low: float, high: float, default: Any = _MISSING) -> float | None:
        """A finite number in [low, high] (None only as the default of an optional key)."""
        value = self._get(key, default)
        if value is None and default is None:
            return None
        if not is_finite_number(value) or not low <= value <= high:
            raise self.fail(key, f"must be a number from {low:g} to {high:g}, got {value!r}")
        return float(value)


def read_toml(path: str | Path, what: str) -> TomlFile:
    """Parse a TOML file; an unreadable or malformed one, or one holding inf, nan or an integer beyond int64
    (TOML's own limit, which tomllib does not enforce), is one line naming the file, line and key."""
    path = Path(path)
    text = read_user_text(path, what)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "(at end of document)" for a truncated file; a line number is more useful.
        message = str(exc).replace("(at end of document)", f"(at end of document, line {text.count(chr(10)) + 1})")
        raise NasUserError(f"{path}: malformed TOML: {message}") from None
    except RecursionError:
        raise NasUserError(f"{path}: malformed TOML: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise NasUserError(f"{path}: malformed TOML: {_parser_refusal(exc)}") from None
    toml = TomlFile(path, data, text)
    problem = _out_of_bounds(data)
    if problem:
        key, _, message = problem.partition(": ")
        raise toml.fail(key, message, line=line_of(text, re.sub(r"\[\d+\]", "", key)))
    return toml


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
    text = read_user_text(path, what)
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


def read_json_file(path: str | Path, what: str = "JSON file") -> Any:
    """Load JSON, turning every failure into one line with the file, line and column (see `parse_json`)."""
    path = Path(path)
    return parse_json(read_user_text(path, what), str(path))
