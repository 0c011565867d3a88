"""The ranges every number a user gives nas must lie in, and the one check that enforces them.

Numbers reach nas from flags, TOML, JSON and JSONL files. Python's ints are unbounded, but nas computes on
numpy int64 columns (the vectorised accounting of whole search spaces), where a value past 2**63 - 1 raises
OverflowError and a product past it wraps around silently, giving a wrong answer without a word. So every
integer is checked against a range at the boundary where it enters, and every float must be finite.

The shape bounds are far beyond any model nas is for (the largest published models have hidden sizes of
16,384, FFNs of 53,248, 126 layers and vocabularies of 256K), and they are chosen so that no parameter count,
weight byte count or KV-cache byte count of a shape within them can pass 2**62: with widths up to 2**20
(hidden size, FFN size, and the attention width num_heads * head_dim), 2**12 layers and a vocabulary up to
2**24, one layer holds under 2**44 parameters and a model under 2**57 bytes at fp32. Lengths (prompt, context,
max_seq_len) are at most 2**24 tokens (16.8M; the longest context windows published are 10M); FLOPs and
working memory at a length grow with its square, so the vectorised accounting computes those in float64
(`nas.core.arch.ArchBatch`), which cannot wrap.
"""

from __future__ import annotations

import math
from typing import Any

from nas.core.errors import NasUserError

INT64_MAX = 2**63 - 1
MAX_WIDTH = 2**20  # hidden_size, intermediate_size, num_heads * head_dim, an FFN rounding multiple
MAX_LAYERS = 2**12
MAX_VOCAB = 2**24
MAX_TOKENS = 2**24  # a prompt or context length, max_seq_len
MAX_THREADS = 2**12  # threads: ONNX Runtime and torch take a C int; no machine nas runs on has more cores
MAX_COUNT = 2**53  # any other count a flag or file gives (trials, configs, token budgets): exact as a float too


def is_int(value: Any) -> bool:
    """An integer that is not a bool (JSON's true is not 1 to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(value: Any, what: str, low: int = 1, high: int = MAX_COUNT) -> int:
    """`value` as an int in [low, high], else one line naming `what`, the range and the value."""
    if not is_int(value) or not low <= value <= high:
        raise NasUserError(f"{what} must be an integer from {low:,} to {high:,}, got {shown(value)}")
    return value


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite; ints beyond a float's range are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def check_number(value: Any, what: str, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """`value` as a finite float within [low, high] ((low, high] with `low_open`), else one line."""
    ok = is_finite_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bound = ("" if low is None else f" {'above' if low_open else 'at least'} {low:g}") + (
            "" if high is None else f"{',' if low is not None else ''} at most {high:g}")
        raise NasUserError(f"{what} must be a finite number{bound}, got {shown(value)}")
    return float(value)


def shown(value: Any, limit: int = 80) -> str:
    """A user value as an error line quotes it: repr (quotes, escaped control characters), cut to `limit`
    characters so that a 5,000-digit integer or a long list does not become the whole line."""
    if is_int(value) and value.bit_length() > 256:  # repr() of a 4,300-digit int raises
        return f"an integer of {value.bit_length():,} bits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
