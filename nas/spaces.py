"""Search spaces: declarative TOML files of architecture choices, loaded, validated and enumerated.

A space file has four parts (see tiny.toml for a small commented example):

    name = "tiny"
    description = "..."
    ffn_multiple = 32            # optional (default 64): ffn_ratio * hidden_size is rounded to a multiple of it

    [dimensions]                 # what a sampler chooses, in this order
    hidden_size = { min = 64, max = 256, step = 64 }      # a stepped integer range: min, min+step, ... <= max
    num_layers = [2, 4, 6]                                 # or a list of choices
    num_heads = [2, 4]
    attention = ["mha", "gqa:2", "mqa"]
    ffn_ratio = [2.0, 3.0, 4.0]
    tie_embeddings = [true, false]

    [fixed]                      # ArchConfig fields held constant
    vocab_size = 512
    max_seq_len = 256

    [constraints]
    params_min = 100_000         # total parameters (ArchConfig.num_params), inclusive
    params_max = 4_000_000

Dimensions (each may instead be held in [fixed] when it is an ArchConfig field; a dimension with one choice
is also fixed in effect):
- hidden_size, num_layers, vocab_size, intermediate_size: positive integers.
- num_heads and/or head_dim: give either. With num_heads alone head_dim = hidden_size / num_heads (must
  divide); with head_dim alone num_heads = hidden_size / head_dim (must divide); with both, head_dim is
  explicit (q/k/v projections of width num_heads * head_dim, which need not equal hidden_size).
- attention: how key/value heads relate to query heads. Values:
    "mha"    one kv head per query head (num_kv_heads = num_heads);
    "mqa"    a single kv head shared by all query heads (num_kv_heads = 1);
    "gqa:G"  G query heads share each kv head (num_kv_heads = num_heads / G; G >= 2 must divide num_heads);
    "kv:N"   exactly N kv heads (N must divide num_heads).
  Without an attention dimension every config is MHA.
- intermediate_size (explicit) or ffn_ratio: intermediate_size = ffn_multiple * round(ffn_ratio * hidden_size /
  ffn_multiple), halves rounding up, at least ffn_multiple. E.g. ratio 2.667 with hidden 576 and multiple 64
  gives 1536 (MobileLLM-125M's FFN).
- ffn_kind: "swiglu", "reglu", "geglu" or "gelu" (see nas.accounting.FFN_MATRICES).
- tie_embeddings, qkv_bias: true / false.
Fields given neither as a dimension nor as fixed take ArchConfig's defaults.

Combinations that make no valid ArchConfig (a head count that does not divide the width, an odd head_dim, a
GQA group that does not divide the heads) or no deployable graph (a head_dim that is not a multiple of 16, which
ONNX Runtime's GroupQueryAttention refuses) are simply not in the space; neither are configs outside the
parameter range. Different combinations that give the same ArchConfig (e.g. "gqa:4" with 4 heads is "mqa")
count once. `enumerate()` lists every remaining config with numpy, without a Python loop per config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.core import accounting
from nas.core.arch import FIELD_MAX, ArchBatch, ArchConfig
from nas.core.counts import format_count
from nas.core.errors import NasUserError
from nas.core.limits import MAX_COUNT, MAX_WIDTH, check_int, is_finite_number, is_int, shown
from nas.core.paths import shipped
from nas.core.userfiles import TomlFile, read_toml

__all__ = ["Dimension", "SearchSpace", "load_space", "list_spaces", "known_space_names", "SPACES_DIR"]

SPACES_DIR = shipped("search_spaces")

FFN_KINDS = tuple(accounting.FFN_MATRICES)
_INT_DIMS = ("hidden_size", "num_layers", "num_heads", "head_dim", "intermediate_size", "vocab_size")
_BOOL_DIMS = ("tie_embeddings", "qkv_bias")
DIMENSION_NAMES = _INT_DIMS + ("attention", "ffn_ratio", "ffn_kind") + _BOOL_DIMS
_ARCH_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ArchConfig)
                  if f.default is not dataclasses.MISSING}
# ArchConfig fields a space may fix; num_kv_heads is set through the attention dimension.
FIXED_NAMES = tuple(f.name for f in dataclasses.fields(ArchConfig) if f.name != "num_kv_heads")
_EXTRA_FIELDS = ("max_seq_len", "rope_theta", "rms_norm_eps")  # not in ArchBatch's accounting columns
_TOP_KEYS = {"name", "description", "ffn_multiple", "dimensions", "fixed", "constraints"}
_CONSTRAINT_KEYS = {"params_min", "params_max"}
_ATTENTION_RE = re.compile(r"^(mha|mqa|gqa:(\d+)|kv:(\d+))$")
_ATTN_MHA, _ATTN_MQA, _ATTN_GQA, _ATTN_KV = 0, 1, 2, 3
_CHUNK = 1 << 20  # raw grid points processed per numpy pass
# Spaces up to this many configs are enumerated (listed and predicted in one vectorised pass: seconds and
# ~1 GB at the limit); larger ones are only sampled, and their size is reported as "more than" this.
ENUMERATION_LIMIT = 2_000_000


@dataclass(frozen=True)
class Dimension:
    name: str
    choices: tuple  # all values, in order
    low: int | None = None  # set for stepped integer ranges
    high: int | None = None
    step: int | None = None

    def __len__(self) -> int:
        return len(self.choices)


def _attention_code(label: str) -> tuple[int, int]:
    m = _ATTENTION_RE.match(label)
    assert m, label  # validated at load
    if m.group(2):
        return _ATTN_GQA, int(m.group(2))
    if m.group(3):
        return _ATTN_KV, int(m.group(3))
    return (_ATTN_MHA, 0) if label == "mha" else (_ATTN_MQA, 1)


def _round_to_multiple(np, x, multiple: int):
    """multiple * round(x / multiple), halves up, at least `multiple` (works on arrays)."""
    r = np.floor(np.asarray(x, dtype=np.float64) / multiple + 0.5).astype(np.int64) * multiple
    return np.maximum(r, multiple)


class SearchSpace:
    """A validated space. Build it with `load_space`; the constructor takes the parsed TOML."""

    def __init__(self, data: dict[str, Any], path: Path, text: str = ""):
        self.path = Path(path)
        self._toml = TomlFile(self.path, data, text)
        parts = _parse_space(self._toml, data)
        self.name: str = parts["name"]
        self.description: str = parts["description"]
        self.dimensions: dict[str, Dimension] = parts["dimensions"]
        self.fixed: dict[str, Any] = parts["fixed"]
        self.ffn_multiple: int = parts["ffn_multiple"]
        self.params_range: tuple[int | None, int | None] = parts["params_range"]
        canonical = {
            "dimensions": [[d.name, list(d.choices)] for d in self.dimensions.values()],
            "fixed": self.fixed,
            "params_range": list(self.params_range),
            "ffn_multiple": self.ffn_multiple,
        }
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()
        self._batch: ArchBatch | None = None
        self._dim_index = None

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, {len(self.dimensions)} dimensions, path={str(self.path)!r})"

    # ------------------------------------------------------------------ parsing
    def _fail(self, key: str, message: str) -> NasUserError:
        return self._toml.fail(key, message)

    # ------------------------------------------------------------------ vectorised derivation
    def _value(self, name: str) -> Any:
        return self.fixed.get(name, _ARCH_DEFAULTS.get(name))

    def _exceeds(self, limit: int) -> bool:
        """Whether the space has more than `limit` distinct configs, decided chunk by chunk without keeping the
        configs: distinct rows are counted by a 64-bit hash of their columns (a collision can only undercount,
        so "more than" is never wrong), and counting stops as soon as the limit is passed."""
        import numpy as np

        seen = np.zeros(0, dtype=np.uint64)
        raw = 0
        weights = np.random.default_rng(0x6E6173).integers(1, 2**63, size=len(ArchBatch.COLUMNS) + 1,
                                                            dtype=np.uint64) | np.uint64(1)
        for cols, kind_codes, _ in _valid_chunks(self):
            raw += len(kind_codes)
            rows = _row_matrix(cols, kind_codes).astype(np.uint64)
            with np.errstate(over="ignore"):
                hashes = (rows * weights).sum(axis=1, dtype=np.uint64)
                hashes ^= hashes >> np.uint64(29)
            merged = np.sort(np.concatenate([seen, hashes]))  # a sort: faster here than np.unique's hash table
            seen = merged[np.concatenate([[True], merged[1:] != merged[:-1]])]
            if len(seen) > limit:
                return True  # stop here: the rest of the grid cannot make it smaller
        if raw <= limit:
            return False
        return len(self.enumerate()) > limit  # close to the limit: count exactly

    def range_text(self, compact: bool = False) -> str:
        """The parameter range: '[450,000,000, 550,000,000]', or compact '450M-550M' ('-' for an open end)."""
        def show(n: int | None) -> str:
            return "-" if n is None else format_count(n, 3) if compact else f"{n:,}"

        low, high = self.params_range
        return f"{show(low)}-{show(high)}" if compact else f"[{show(low)}, {show(high)}]"

    # ------------------------------------------------------------------ public API
    def enumerate(self) -> ArchBatch:
        """Every valid config meeting the constraints, deduplicated, in grid order (cached)."""
        if self._batch is None:
            cached = _ENUM_CACHE.get(self.fingerprint)
            if cached is None:
                cached = _enumerate(self)
                _ENUM_CACHE[self.fingerprint] = cached
            self._batch, self._dim_index = cached
        return self._batch

    def size(self, limit: int | None = None) -> int | None:
        """The number of distinct configs. With `limit`: None when there are more than `limit`, found without
        enumerating (or holding) the whole space, so asking whether a huge space is small stays cheap."""
        if self._batch is not None or self.fingerprint in _ENUM_CACHE or limit is None:
            n = len(self.enumerate())
            return None if limit is not None and n > limit else n
        return None if self._exceeds(limit) else len(self.enumerate())

    def values_of(self, row: int) -> dict[str, Any]:
        """The dimension values that build row `row` of `enumerate()` (what a sampler would have chosen)."""
        self.enumerate()
        return {name: dim.choices[int(self._dim_index[row, j])]
                for j, (name, dim) in enumerate(self.dimensions.items())}

    def build(self, values: dict[str, Any]) -> ArchConfig:
        """The ArchConfig for one choice per dimension. Raises NasUserError if a value is not a choice or the
        combination makes no valid ArchConfig. Does not apply the params constraint (see `check`)."""
        import numpy as np

        unknown = sorted(set(values) - set(self.dimensions))
        if unknown:
            raise NasUserError(f"space {self.name!r}: {unknown[0]!r} is not a dimension; "
                               f"dimensions: {', '.join(self.dimensions)}")
        missing = [k for k in self.dimensions if k not in values]
        if missing:
            raise NasUserError(f"space {self.name!r}: no value for dimension(s) {', '.join(missing)}")
        index = {}
        for name, dim in self.dimensions.items():
            value = values[name]
            try:
                position = next(i for i, c in enumerate(dim.choices)
                                if c == value and isinstance(c, bool) == isinstance(value, bool))
            except StopIteration:
                shown = (f"{dim.low}..{dim.high} step {dim.step}" if dim.step else
                         ", ".join(map(str, dim.choices)))
                raise NasUserError(f"space {self.name!r}: {name}={value!r} is not a choice; allowed: {shown}") from None
            index[name] = np.array([position])
        cols, kind_codes, problems = _columns(self, np, index, 1)
        for mask, field, message in problems:
            if mask[0]:
                shown = ", ".join(f"{k}={values[k]!r}" for k in self.dimensions)
                raise NasUserError(f"space {self.name!r}: {field} {message} ({shown})")
        fields = {k: int(cols[k][0]) for k in ArchBatch.COLUMNS if k != "ffn_matrices"}
        fields["tie_embeddings"] = bool(fields["tie_embeddings"])
        fields["qkv_bias"] = bool(fields["qkv_bias"])
        fields["ffn_kind"] = FFN_KINDS[int(kind_codes[0])]
        for name in _EXTRA_FIELDS:
            fields[name] = self._value(name)
        return ArchConfig(**fields)

    def check(self, arch: ArchConfig) -> list[str]:
        """Reasons `arch` is outside this space ([] when it is inside)."""
        reasons = []
        given = set(self.dimensions) | set(self.fixed)
        for name in FIXED_NAMES:
            value = getattr(arch, name)
            if name in self.fixed:
                if value != self.fixed[name]:
                    reasons.append(f"{name}={value!r} but the space fixes it at {self.fixed[name]!r}")
            elif name in self.dimensions:
                if value in self.dimensions[name].choices:
                    continue
                reasons.append(f"{name}={value!r} is not one of {list(self.dimensions[name].choices)}")
            elif name in ("num_heads", "head_dim", "intermediate_size"):
                continue  # derived; checked below
            elif value != _ARCH_DEFAULTS.get(name):
                reasons.append(f"{name}={value!r} but the space only has the default {_ARCH_DEFAULTS.get(name)!r}")
        if "num_heads" not in given and arch.num_heads * arch.head_dim != arch.hidden_size:
            reasons.append(f"num_heads*head_dim={arch.num_heads * arch.head_dim} must equal hidden_size "
                           f"{arch.hidden_size} in this space")
        if "head_dim" not in given and arch.num_heads * arch.head_dim != arch.hidden_size:
            reasons.append(f"head_dim={arch.head_dim} must be hidden_size/num_heads in this space")
        labels = {"mha": arch.num_kv_heads == arch.num_heads, "mqa": arch.num_kv_heads == 1}
        choices = self.dimensions["attention"].choices if "attention" in self.dimensions else ("mha",)
        ok = False
        for label in choices:
            kind, arg = _attention_code(label)
            ok |= (kind == _ATTN_MHA and labels["mha"]) or (kind == _ATTN_MQA and labels["mqa"]) or (
                kind == _ATTN_GQA and arch.num_heads == arg * arch.num_kv_heads) or (
                kind == _ATTN_KV and arch.num_kv_heads == arg)
        if not ok:
            reasons.append(f"num_kv_heads={arch.num_kv_heads} with num_heads={arch.num_heads} matches no attention "
                           f"choice of {list(choices)}")
        if "ffn_ratio" in self.dimensions:
            import numpy as np

            ratios = self.dimensions["ffn_ratio"].choices
            allowed = {int(v) for v in _round_to_multiple(np, np.array(ratios) * arch.hidden_size, self.ffn_multiple)}
            if arch.intermediate_size not in allowed:
                reasons.append(f"intermediate_size={arch.intermediate_size} is not ffn_ratio*hidden_size for any ratio "
                               f"in {list(ratios)} (rounded to a multiple of {self.ffn_multiple}: {sorted(allowed)})")
        if arch.head_dim % accounting.HEAD_DIM_MULTIPLE:
            reasons.append(f"head_dim={arch.head_dim} is {accounting.HEAD_DIM_RULE}")
        low, high = self.params_range
        params = arch.num_params
        if (low is not None and params < low) or (high is not None and params > high):
            reasons.append(f"{params:,} parameters is outside the space's range {self.range_text()}")
        return reasons

    def sample(self, n: int, seed: int) -> list[ArchConfig]:
        """`n` distinct valid configs spread over the dimensions, the same for the same seed.

        Latin-hypercube targets in the space of choice positions (each dimension scaled to [0, 1]); each target
        takes the nearest still-unused valid config. Returns every config (shuffled) if the space has at most n.
        """
        import numpy as np

        check_int(n, "sample size", 0, MAX_COUNT)
        batch = self.enumerate()
        rng = np.random.default_rng(seed)
        total = len(batch)
        if n >= total:
            return [batch.config(int(i)) for i in rng.permutation(total)]
        lengths = np.array([len(d) for d in self.dimensions.values()], dtype=np.float64)
        varying = lengths > 1
        coords = ((self._dim_index[:, varying] + 0.5) / lengths[varying]).astype(np.float32)
        pool = np.arange(total) if total <= 50_000 else np.sort(rng.choice(total, 50_000, replace=False))
        points = coords[pool]
        d = points.shape[1]
        targets = np.empty((n, d), dtype=np.float32)
        for j in range(d):
            targets[:, j] = (rng.permutation(n) + rng.random(n)) / n
        used = np.zeros(len(pool), dtype=bool)
        chosen = []
        for t in targets:
            dist = ((points - t) ** 2).sum(axis=1)
            dist[used] = np.inf
            best = int(np.argmin(dist))
            used[best] = True
            chosen.append(int(pool[best]))
        return [batch.config(i) for i in chosen]

    def smallest_largest(self) -> tuple[ArchConfig, ArchConfig]:
        import numpy as np

        batch = self.enumerate()
        params = batch.num_params
        return batch.config(int(np.argmin(params))), batch.config(int(np.argmax(params)))

    def to_dict(self) -> dict[str, Any]:
        """Definition as plain JSON (no enumeration)."""
        dims = {}
        for d in self.dimensions.values():
            dims[d.name] = ({"min": d.low, "max": d.high, "step": d.step, "count": len(d)} if d.step
                            else list(d.choices))
        low, high = self.params_range
        return {"name": self.name, "description": self.description, "path": str(self.path),
                "fingerprint": self.fingerprint, "dimensions": dims, "fixed": dict(self.fixed),
                "ffn_multiple": self.ffn_multiple if "ffn_ratio" in self.dimensions else None,
                "constraints": {"params_min": low, "params_max": high}}


_ENUM_CACHE: dict[str, Any] = {}


# ---------------------------------------------------------------------- vectorised derivation
def _columns(space: SearchSpace, np, index: dict[str, Any], n: int):
    """Derive ArchBatch columns for rows given by per-dimension choice indices.

    Returns (columns, ffn_kind_codes, problems) where problems is a list of (mask, field, message):
    rows where mask is true make no valid ArchConfig.
    """
    def values(name, dtype):
        if name in space.dimensions:
            return np.asarray(space.dimensions[name].choices, dtype=dtype)[index[name]]
        return np.full(n, space._value(name), dtype=dtype)

    hidden = values("hidden_size", np.int64)
    layers = values("num_layers", np.int64)
    vocab = values("vocab_size", np.int64)
    given = set(space.dimensions) | set(space.fixed)
    problems = []
    if "num_heads" in given and "head_dim" in given:
        heads, head_dim = values("num_heads", np.int64), values("head_dim", np.int64)
    elif "num_heads" in given:
        heads = values("num_heads", np.int64)
        problems.append((hidden % heads != 0, "hidden_size", "is not divisible by num_heads"))
        head_dim = hidden // heads
    else:
        head_dim = values("head_dim", np.int64)
        problems.append((hidden % head_dim != 0, "hidden_size", "is not divisible by head_dim"))
        heads = hidden // head_dim
    problems.append((head_dim % 2 != 0, "head_dim", "is odd (rotary embeddings need an even head_dim)"))
    problems.append((head_dim % accounting.HEAD_DIM_MULTIPLE != 0, "head_dim",
                     f"is {accounting.HEAD_DIM_RULE}"))
    problems.append((head_dim <= 0, "head_dim", "is zero"))
    problems.append((heads <= 0, "num_heads", "is zero (head_dim wider than hidden_size)"))
    problems.append((heads * head_dim > MAX_WIDTH, "head_dim", f"makes num_heads * head_dim above {MAX_WIDTH:,}"))
    kv = _kv_heads(space, np, index, n, np.maximum(heads, 1), problems)

    if "ffn_ratio" in space.dimensions:
        ratio = np.asarray(space.dimensions["ffn_ratio"].choices, dtype=np.float64)[index["ffn_ratio"]]
        intermediate = _round_to_multiple(np, ratio * hidden, space.ffn_multiple)
    else:
        intermediate = values("intermediate_size", np.int64)
    problems.append((intermediate > MAX_WIDTH, "intermediate_size", f"is above {MAX_WIDTH:,}"))

    kinds = list(FFN_KINDS)
    if "ffn_kind" in space.dimensions:
        kind_codes = np.array([kinds.index(k) for k in space.dimensions["ffn_kind"].choices])[index["ffn_kind"]]
    else:
        kind_codes = np.full(n, kinds.index(space._value("ffn_kind")), dtype=np.int64)
    matrices = np.array([accounting.FFN_MATRICES[k] for k in kinds], dtype=np.int64)[kind_codes]

    columns = {
        "vocab_size": vocab, "hidden_size": hidden, "num_layers": layers, "num_heads": heads,
        "num_kv_heads": kv, "head_dim": head_dim, "intermediate_size": intermediate, "ffn_matrices": matrices,
        "tie_embeddings": values("tie_embeddings", np.int64), "qkv_bias": values("qkv_bias", np.int64),
    }
    return columns, kind_codes, problems

def _kv_heads(space: SearchSpace, np, index: dict[str, Any], n: int, heads, problems: list):
    """kv heads of each row from its attention label (mha, mqa, gqa:G, kv:N); rows it cannot build go to
    `problems`."""
    if "attention" in space.dimensions:
        codes = np.array([_attention_code(c) for c in space.dimensions["attention"].choices], dtype=np.int64)
        kind, arg = codes[index["attention"], 0], codes[index["attention"], 1]
    else:
        kind, arg = np.full(n, _ATTN_MHA, dtype=np.int64), np.zeros(n, dtype=np.int64)
    safe_arg = np.maximum(arg, 1)
    kv = np.where(kind == _ATTN_MHA, heads,
                  np.where(kind == _ATTN_MQA, 1, np.where(kind == _ATTN_GQA, heads // safe_arg, arg)))
    problems.append((((kind == _ATTN_GQA) | (kind == _ATTN_KV)) & (heads % safe_arg != 0), "attention",
                     "group size or kv-head count does not divide num_heads"))
    problems.append(((kv < 1) | (kv > heads), "attention", "needs more kv heads than query heads"))
    return kv


def _valid_chunks(space: SearchSpace):
    """(columns, ffn kind codes, dimension indices) of the valid configs in the params range, one grid chunk
    at a time (a chunk holds _CHUNK raw grid points), in grid order, before deduplication. Raises when the
    whole grid holds no valid config, or none in the params range."""
    import numpy as np

    names = list(space.dimensions)
    shape = tuple(len(space.dimensions[k]) for k in names) or (1,)
    total = math.prod(shape)  # within MAX_COUNT (checked at load): numpy indexes it in int64
    low, high = space.params_range
    smallest = largest = None
    kept_any = False
    for start in range(0, total, _CHUNK):
        flat = np.arange(start, min(total, start + _CHUNK), dtype=np.int64)
        unravelled = np.unravel_index(flat, shape)
        index = {k: unravelled[i] for i, k in enumerate(names)}
        cols, kind_codes, problems = _columns(space, np, index, len(flat))
        valid = np.ones(len(flat), dtype=bool)
        for mask, _field, _message in problems:
            valid &= ~mask
        params = accounting.total_params(
            cols["vocab_size"], cols["hidden_size"], cols["num_layers"], cols["num_heads"], cols["num_kv_heads"],
            cols["head_dim"], cols["intermediate_size"], cols["ffn_matrices"], cols["tie_embeddings"],
            cols["qkv_bias"])
        if valid.any():
            lo_, hi_ = int(params[valid].min()), int(params[valid].max())
            smallest = lo_ if smallest is None else min(smallest, lo_)
            largest = hi_ if largest is None else max(largest, hi_)
        if low is not None:
            valid &= params >= low
        if high is not None:
            valid &= params <= high
        if not valid.any():
            continue
        kept_any = True
        dim_index = (np.stack([unravelled[i][valid] for i in range(len(names))], axis=1) if names
                     else np.zeros((int(valid.sum()), 0), dtype=np.int64))
        yield {k: v[valid] for k, v in cols.items()}, kind_codes[valid], dim_index
    if not kept_any:
        if smallest is None:
            raise space._fail("dimensions", "no combination of the dimensions makes a valid ArchConfig")
        raise space._fail("constraints", f"params range {space.range_text()} admits no config of the space "
                                        f"(valid configs have {smallest:,} to {largest:,} parameters)")

def _row_matrix(cols, kind_codes):
    import numpy as np

    return np.stack([cols[k] for k in ArchBatch.COLUMNS] + [kind_codes], axis=1)

def _enumerate(space: SearchSpace):
    import numpy as np

    chunks = list(_valid_chunks(space))
    cols = {k: np.concatenate([c[0][k] for c in chunks]) for k in ArchBatch.COLUMNS}
    kind_codes = np.concatenate([c[1] for c in chunks])
    dim_index = np.concatenate([c[2] for c in chunks])
    # Deduplicate identical configs (e.g. "gqa:4" with 4 heads == "mqa"), keeping the first in grid order.
    _, first = np.unique(_row_matrix(cols, kind_codes), axis=0, return_index=True)
    first.sort()
    cols = {k: v[first] for k, v in cols.items()}
    n = len(first)
    extra = {}
    for name in _EXTRA_FIELDS:
        value = space._value(name)
        extra[name] = np.full(n, value, dtype=np.int64 if isinstance(value, int) else np.float64)
    batch = ArchBatch(cols, np.asarray(FFN_KINDS)[kind_codes[first]], extra)
    return batch, dim_index[first]


# ---------------------------------------------------------------------- parsing a space file
def _parse_space(toml: TomlFile, data: dict[str, Any]) -> dict[str, Any]:
    """A space file's parts, checked: name, description, dimensions, fixed values, ffn_multiple, params_range."""
    toml.keys(data, "", sorted(_TOP_KEYS), ("name", "description", "dimensions"))
    for key in ("name", "description"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise toml.fail(key, f"must be a non-empty string, got {data[key]!r}")

    dims = data["dimensions"]
    toml.keys(dims, "dimensions", DIMENSION_NAMES)
    dimensions: dict[str, Dimension] = {name: _parse_dimension(toml, name, spec) for name, spec in dims.items()}
    grid = math.prod(len(d) for d in dimensions.values())
    if grid > MAX_COUNT:
        raise toml.fail("dimensions", f"the dimensions make {grid:.3g} combinations; nas takes at most "
                                       f"{MAX_COUNT:.3g} (2**53): use fewer choices or larger steps")

    fixed = data.get("fixed", {})
    toml.keys(fixed, "fixed", FIXED_NAMES)
    fixed_values: dict[str, Any] = {}
    for name, value in fixed.items():
        if name in dimensions:
            raise toml.fail(f"fixed.{name}", "is also a dimension; keep it in one place")
        fixed_values[name] = _check_value(toml, name, value, f"fixed.{name}")

    given = set(dimensions) | set(fixed_values)
    for required in ("hidden_size", "num_layers"):
        if required not in given:
            raise toml.fail("dimensions", f"{required} must be a dimension or fixed")
    if not given & {"num_heads", "head_dim"}:
        raise toml.fail("dimensions", "give num_heads or head_dim (or both) as a dimension or fixed")
    if "intermediate_size" in given and "ffn_ratio" in given:
        raise toml.fail("dimensions", "give intermediate_size or ffn_ratio, not both")
    if not given & {"intermediate_size", "ffn_ratio"}:
        raise toml.fail("dimensions", "give intermediate_size or ffn_ratio as a dimension or fixed")

    multiple = data.get("ffn_multiple", 64)
    if not is_int(multiple) or not 1 <= multiple <= MAX_WIDTH:
        raise toml.fail("ffn_multiple", f"must be an integer from 1 to {MAX_WIDTH:,} (an FFN size is at most "
                                         f"that), got {shown(multiple)}")
    if "ffn_multiple" in data and "ffn_ratio" not in dimensions:
        raise toml.fail("ffn_multiple", "only applies with an ffn_ratio dimension")

    constraints = data.get("constraints", {})
    toml.keys(constraints, "constraints", sorted(_CONSTRAINT_KEYS))
    bounds = []
    for key in ("params_min", "params_max"):
        value = constraints.get(key)
        if value is not None and (not is_int(value) or value < 0):
            raise toml.fail(f"constraints.{key}", f"must be a non-negative integer, got {shown(value)}")
        bounds.append(value)
    if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
        raise toml.fail("constraints.params_min",
                         f"params_min={bounds[0]:,} exceeds params_max={bounds[1]:,}: no config can meet both")
    return {"name": data["name"], "description": data["description"], "dimensions": dimensions,
            "fixed": fixed_values, "ffn_multiple": multiple, "params_range": (bounds[0], bounds[1])}

def _parse_dimension(toml: TomlFile, name: str, spec: Any) -> Dimension:
    key = f"dimensions.{name}"
    if isinstance(spec, dict):
        if name not in _INT_DIMS:
            raise toml.fail(key, "a {min, max, step} range is only for integer dimensions "
                                  f"({', '.join(_INT_DIMS)}); give a list of choices")
        toml.keys(spec, key, ["min", "max", "step"], ("min", "max"))
        low, high, step = spec["min"], spec["max"], spec.get("step", 1)
        for part, value in (("min", low), ("max", high), ("step", step)):
            if not is_int(value) or not 1 <= value <= FIELD_MAX[name]:
                raise toml.fail(f"{key}.{part}", f"must be an integer from 1 to {FIELD_MAX[name]:,}, got "
                                                  f"{shown(value)}")
        if low > high:
            raise toml.fail(key, f"empty range: min={low} > max={high}")
        return Dimension(name, tuple(range(low, high + 1, step)), low, high, step)
    if not isinstance(spec, list):
        raise toml.fail(key, "must be a list of choices or a {min, max, step} table")
    if not spec:
        raise toml.fail(key, "empty list of choices")
    choices = tuple(_check_value(toml, name, value, key) for value in spec)
    if len(set(choices)) != len(choices):
        raise toml.fail(key, f"lists a choice twice: {list(spec)}")
    return Dimension(name, choices)

def _check_value(toml: TomlFile, name: str, value: Any, key: str) -> Any:
    if name in _INT_DIMS or name == "max_seq_len":
        if not is_int(value) or value <= 0:
            raise toml.fail(key, f"{shown(value)} is not a positive integer")
        if value > FIELD_MAX[name]:
            raise toml.fail(key, f"{shown(value)} is above {FIELD_MAX[name]:,}, the largest {name} nas takes")
        if name == "head_dim" and value % 2:
            raise toml.fail(key, f"head_dim {value} is odd; rotary embeddings need an even head_dim")
        return value
    if name in _BOOL_DIMS:
        if not isinstance(value, bool):
            raise toml.fail(key, f"{value!r} is not true or false")
        return value
    if name == "ffn_kind":
        if not isinstance(value, str) or value not in FFN_KINDS:
            raise toml.fail(key, f"{shown(value)} is not an ffn_kind; allowed: {', '.join(FFN_KINDS)}")
        return value
    if name == "attention":
        m = _ATTENTION_RE.match(value) if isinstance(value, str) else None
        number = int(m.group(2) or m.group(3) or 0) if m and len(value) < 64 else None
        if not m or number is None or number > MAX_WIDTH or (m.group(2) and number < 2) or (
                m.group(3) and number < 1):
            raise toml.fail(key, f"{shown(value)} is not an attention type; allowed: \"mha\", \"mqa\", "
                                  f"\"gqa:G\" (2 <= G <= {MAX_WIDTH:,} query heads per kv head), \"kv:N\" (1 <= N "
                                  f"<= {MAX_WIDTH:,} kv heads)")
        return value
    if name in ("ffn_ratio", "rope_theta", "rms_norm_eps"):
        if not is_finite_number(value) or not value > 0:
            raise toml.fail(key, f"{shown(value)} is not a positive finite number")
        if name == "ffn_ratio" and value > MAX_WIDTH:
            raise toml.fail(key, f"{value!r} is above {MAX_WIDTH:,}: no FFN is that many times the width")
        return float(value)
    raise AssertionError(name)


def _space_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SPACES_DIR.glob("*.toml"))}


def known_space_names() -> list[str]:
    return sorted(_space_files())


def _load_file(path: Path) -> SearchSpace:
    toml = read_toml(path, "search space file")
    return SearchSpace(toml.data, path, toml.text)


def load_space(name_or_path: str) -> SearchSpace:
    """A shipped preset by name (tiny, mobilellm, ...) or a space file by path."""
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    files = _space_files()
    if name_or_path in files:
        return _load_file(files[name_or_path])
    path = Path(name_or_path)
    if str(name_or_path).endswith(".toml") or path.is_file():
        if not path.exists():
            raise NasUserError(f"search space file {name_or_path} does not exist")
        return _load_file(path)  # a folder or a device is refused by the reader, as what it is
    raise NasUserError(f"{name_or_path!r} is not a known search space; known: {', '.join(sorted(files))} "
                       "(or give a path to a .toml file)")


def list_spaces() -> list[SearchSpace]:
    return [_load_file(path) for path in _space_files().values()]
