"""Counts of parameters and tokens as people write them: '450M', '1.2B', '1T', '3e11', '125000000'.

One parser (`parse_count`) and one formatter (`format_count`) for every command that takes or prints a count.
"""

from __future__ import annotations

import math
import re

from nas.core.errors import NasUserError
from nas.core.limits import MAX_COUNT, shown

SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([kKmMbBgGtT]?)\s*")


def parse_count(text: str, what: str, example: str = "450M, 1.2B or 125000000") -> int:
    """'450M' -> 450_000_000. Accepts plain integers, decimals, scientific notation and the suffixes K, M, B (or
    G) and T. A malformed, zero or absurdly large count is one NasUserError naming `what` and the value."""
    m = _PATTERN.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise NasUserError(f"{what}: {shown(text)} is not a count such as {example}")
    value = float(m.group(1)) * SUFFIXES[m.group(2).upper()]
    if not math.isfinite(value) or value > MAX_COUNT:
        raise NasUserError(f"{what}: {shown(text)} is beyond the largest count nas takes ({MAX_COUNT:,})")
    return int(round(value))


def format_count(n: float, digits: int = 4) -> str:
    """A count with a suffix and at most `digits` significant digits: 124.6M, 1.2B, 300B, 1T, 48K."""
    n = float(n)
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{_significant(n / scale, digits)}{suffix}"
    return _significant(n, digits)


def _significant(x: float, digits: int) -> str:
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
