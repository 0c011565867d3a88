"""What a search optimises and what it must respect, computed for many configs at once.

Pure numpy, no Optuna: the search evaluates one trial as a 1-row batch and the exact stage evaluates a whole
enumerated space with the same functions, so a trial's values and the exact front can never disagree.

- `Figures`: predicted figures of a batch (parameters, predicted loss; per target prefill/decode ms, memory MiB).
- `parse_objectives`: CLI names (quality, decode_tps, prefill_tps, ttft, memory) -> `nas.study.schema.Objective`s.
- `Constraints`: the user's limits as Optuna constraint values (> 0 means violated, relative to the limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from nas.core import counts
from nas.core.counts import format_count
from nas.core.errors import NasUserError
from nas.study.schema import (
    DEFAULT_OBJECTIVES,
    MULTI_TARGET_MODES,
    QUALITY_CHOICES,
    QUALITY_LAW,
    QUALITY_PARAMS,
    Objective,
)

# CLI name -> (metric in TrialRecord/TargetFigures vocabulary, direction, measured per target?); "quality" is the
# predicted loss (QUALITY_LAW, minimised) unless the search ranks by parameter count (QUALITY_OBJECTIVE).
OBJECTIVES: dict[str, tuple[str, str, bool]] = {
    "quality": (QUALITY_LAW, "minimize", False),
    "decode_tps": ("decode_tokens_per_s", "maximize", True),
    "prefill_tps": ("prefill_tokens_per_s", "maximize", True),
    "ttft": ("ttft_ms", "minimize", True),
    "memory": ("memory_mb", "minimize", True),
}
QUALITY_OBJECTIVE = {"law": (QUALITY_LAW, "minimize"), "params": ("quality", "maximize")}
QUALITY_SOURCE_OF = {"law": QUALITY_LAW, "params": QUALITY_PARAMS}  # TrialRecord.quality_source of each choice
WORST = "worst"
MIB = 2**20


# --------------------------------------------------------------------------------------------- figures
@dataclass
class Figures:
    """Predicted figures of n configs. Arrays have length n; units are in the names."""

    num_params: np.ndarray
    non_embedding_params: np.ndarray
    prefill_ms: dict[str, np.ndarray]  # target -> [n]
    decode_ms: dict[str, np.ndarray]
    memory_mb: dict[str, np.ndarray]
    prompt_len: int
    predicted_loss: np.ndarray | None = None  # nats/token after the study's training tokens; None: --quality params

    def __len__(self) -> int:
        return len(self.num_params)

    @property
    def targets(self) -> list[str]:
        return list(self.decode_ms)

    @property
    def quality(self) -> np.ndarray:
        """Higher is better: minus the predicted loss, or (--quality params) the non-embedding parameters."""
        if self.predicted_loss is not None:
            return -self.predicted_loss
        return self.non_embedding_params.astype(np.float64)

    def per_target(self, metric: str, target: str) -> np.ndarray:
        if metric == "decode_tokens_per_s":
            return 1000.0 / self.decode_ms[target]
        if metric == "prefill_tokens_per_s":
            return self.prompt_len * 1000.0 / self.prefill_ms[target]
        if metric == "ttft_ms":
            return self.prefill_ms[target]
        if metric == "memory_mb":
            return self.memory_mb[target]
        raise KeyError(metric)

    def metric(self, objective: Objective) -> np.ndarray:
        """The raw values of one objective (its own direction), for all n configs."""
        if objective.metric == QUALITY_LAW:
            return self.predicted_loss
        if objective.metric == "quality":
            return self.quality
        if objective.target == WORST:
            stack = np.stack([self.per_target(objective.metric, t) for t in self.targets])
            return stack.min(axis=0) if objective.direction == "maximize" else stack.max(axis=0)
        return self.per_target(objective.metric, objective.target)

    def values(self, objectives: Sequence[Objective]) -> np.ndarray:
        """[n, k] objective values in the objectives' own directions (what Optuna is told)."""
        return np.stack([self.metric(o) for o in objectives], axis=1).astype(np.float64)

    def row(self, i: int) -> "Figures":
        sl = slice(i, i + 1)
        return Figures(self.num_params[sl], self.non_embedding_params[sl],
                       {t: v[sl] for t, v in self.prefill_ms.items()}, {t: v[sl] for t, v in self.decode_ms.items()},
                       {t: v[sl] for t, v in self.memory_mb.items()}, self.prompt_len,
                       None if self.predicted_loss is None else self.predicted_loss[sl])


def predict_figures(batch, models: Mapping[str, Any], precisions: Mapping[str, str], prompt_len: int,
                    context_len: int, quality_model: Any = None) -> Figures:
    """Figures of every row of `batch` on every target (models: target -> LatencyModel), and its predicted loss
    when a quality model (nas.quality.QualityModel) is given."""
    prefill, decode, memory = {}, {}, {}
    for target, model in models.items():
        out = model.predict(batch, prompt_len, context_len)
        prefill[target] = np.asarray(out["prefill_ms"], dtype=np.float64)
        decode[target] = np.asarray(out["decode_ms"], dtype=np.float64)
        memory[target] = np.asarray(batch.memory_bytes(precisions[target], prompt_len, context_len),
                                    dtype=np.float64) / MIB
    loss = None if quality_model is None else np.asarray(quality_model.predict(batch), dtype=np.float64)
    return Figures(np.asarray(batch.num_params, dtype=np.int64), np.asarray(batch.num_non_embedding_params,
                   dtype=np.int64), prefill, decode, memory, prompt_len, loss)


# ------------------------------------------------------------------------------------------- objectives
def parse_objectives(names: Sequence[str] | None, targets: Sequence[str], mode: str | None = None,
                     quality: str = "law") -> tuple[Objective, ...]:
    """Objectives from CLI names ("quality" is the predicted loss, or with quality="params" the non-embedding
    parameter count). Per-target metrics get one objective per target in mode 'each' and one
    worst-case objective (slowest tokens/s, largest TTFT/memory over the targets) in mode 'worst'.
    Mode None: 'each' for up to two targets, 'worst' for more (keeps the objective count <= 3)."""
    names = list(names or DEFAULT_OBJECTIVES)
    flat: list[str] = []
    for name in names:
        flat.extend(part.strip() for part in name.split(",") if part.strip())
    unknown = [n for n in flat if n not in OBJECTIVES]
    if unknown:
        raise NasUserError(f"unknown objective {unknown[0]!r}; known: {', '.join(OBJECTIVES)}")
    if len(set(flat)) != len(flat):
        raise NasUserError(f"objective listed twice in --objectives {','.join(flat)}")
    if len(flat) < 2:
        raise NasUserError(f"a search needs at least two objectives to trade off, got {','.join(flat) or 'none'}")
    if mode is None:
        mode = "each" if len(targets) <= 2 else WORST
    if mode not in MULTI_TARGET_MODES:
        raise NasUserError(f"unknown multi-target mode {mode!r}; known: {', '.join(MULTI_TARGET_MODES)}")
    if quality not in QUALITY_CHOICES:
        raise NasUserError(f"--quality {quality!r} is not one of {', '.join(QUALITY_CHOICES)}")
    out: list[Objective] = []
    for name in flat:
        metric, direction, per_target = OBJECTIVES[name]
        if name == "quality":
            metric, direction = QUALITY_OBJECTIVE[quality]
        if not per_target:
            out.append(Objective(metric, direction, None))
        elif mode == WORST and len(targets) > 1:
            out.append(Objective(metric, direction, WORST))
        else:
            out.extend(Objective(metric, direction, t) for t in targets)
    return tuple(out)


# ------------------------------------------------------------------------------------------ constraints
MIN_PLAUSIBLE_PARAMS = 10_000  # a --params range entirely below this is a missing suffix, not a model


def parse_count(text: str, what: str = "--params") -> int:
    """'450M' -> 450_000_000 (nas.core.counts.parse_count)."""
    return counts.parse_count(text, what)


def parse_params_range(text: str | None) -> tuple[int | None, int | None]:
    """'100M:600M' -> (1e8, 6e8); either side may be empty ('450M:' or ':600M')."""
    if not text:
        return None, None
    if text.count(":") != 1:
        raise NasUserError(f"--params {text!r}: expected LOW:HIGH such as 100M:600M, one colon (either side may "
                           "be empty)")
    lo_text, hi_text = text.split(":")
    lo = parse_count(lo_text, f"--params {text!r}") if lo_text.strip() else None
    hi = parse_count(hi_text, f"--params {text!r}") if hi_text.strip() else None
    if (lo is not None or hi is not None) and max(v for v in (lo, hi) if v is not None) < MIN_PLAUSIBLE_PARAMS:
        suffixed = ":".join(f"{part.strip()}M" if part.strip() else "" for part in (lo_text, hi_text))
        raise NasUserError(f"--params {text!r} means fewer than {MIN_PLAUSIBLE_PARAMS:,} parameters; counts need a "
                           f"suffix (K, M, B): did you mean {suffixed}?")
    if lo is not None and hi is not None and lo > hi:
        raise NasUserError(f"--params {text!r}: the low end is above the high end")
    if lo is None and hi is None:
        raise NasUserError(f"--params {text!r}: give at least one bound")
    return lo, hi


@dataclass(frozen=True)
class Constraints:
    """Limits a candidate must meet on every target. Optuna's convention: value > 0 means violated; each
    value is relative to its limit ((value - limit) / limit), so violations of different units compare."""

    max_memory_mb: dict[str, float] = field(default_factory=dict)  # target -> MiB
    min_decode_tps: float | None = None
    max_ttft_ms: float | None = None
    min_params: int | None = None  # total parameters (embeddings included, as model cards count them)
    max_params: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"max_memory_mb": dict(self.max_memory_mb), "min_decode_tps": self.min_decode_tps,
                "max_ttft_ms": self.max_ttft_ms, "min_params": self.min_params, "max_params": self.max_params}

    def names(self, targets: Sequence[str]) -> list[str]:
        return [name for name, _ in self._columns(None, targets)]

    def _columns(self, figs: Figures | None, targets: Sequence[str]):
        """(name, relative values or None) per constraint, in a fixed order."""
        out = []
        for t in targets:
            if t in self.max_memory_mb:
                lim = self.max_memory_mb[t]
                out.append((f"memory@{t}", None if figs is None else (figs.memory_mb[t] - lim) / lim))
        if self.min_decode_tps is not None:
            lim = self.min_decode_tps
            for t in targets:
                out.append((f"decode_tps@{t}",
                            None if figs is None else (lim - figs.per_target("decode_tokens_per_s", t)) / lim))
        if self.max_ttft_ms is not None:
            lim = self.max_ttft_ms
            for t in targets:
                out.append((f"ttft@{t}", None if figs is None else (figs.prefill_ms[t] - lim) / lim))
        if self.min_params is not None:
            lim = float(self.min_params)
            out.append(("params_min", None if figs is None else (lim - figs.num_params) / lim))
        if self.max_params is not None:
            lim = float(self.max_params)
            out.append(("params_max", None if figs is None else (figs.num_params - lim) / lim))
        return out

    def evaluate(self, figs: Figures) -> tuple[list[str], np.ndarray]:
        """Constraint names and an [n, k] matrix of values (> 0: violated)."""
        cols = self._columns(figs, figs.targets)
        if not cols:
            return [], np.zeros((len(figs), 0))
        return [c[0] for c in cols], np.stack([np.asarray(c[1], dtype=np.float64) for c in cols], axis=1)

    def describe(self, name: str, figs: Figures, i: int) -> str:
        """One human-readable line for constraint `name` of row i (used for violations)."""
        kind, _, target = name.partition("@")
        if kind == "memory":
            return f"memory {figs.memory_mb[target][i]:.0f} MiB > {self.max_memory_mb[target]:.0f} MiB on {target}"
        if kind == "decode_tps":
            tps = figs.per_target("decode_tokens_per_s", target)[i]
            return f"decode {tps:.1f} tok/s < {self.min_decode_tps:g} tok/s on {target}"
        if kind == "ttft":
            return f"TTFT {figs.prefill_ms[target][i]:.0f} ms > {self.max_ttft_ms:g} ms on {target}"
        if kind == "params_min":
            return f"params {format_count(figs.num_params[i])} < {format_count(self.min_params)}"
        if kind == "params_max":
            return f"params {format_count(figs.num_params[i])} > {format_count(self.max_params)}"
        return name

    def flag_of(self, name: str) -> str:
        """The CLI flag that set constraint `name`."""
        kind = name.partition("@")[0]
        return {"memory": "--max-memory-mb", "decode_tps": "--min-decode-tps", "ttft": "--max-ttft-ms",
                "params_min": "--params", "params_max": "--params"}.get(kind, name)

    def violations(self, figs: Figures, i: int = 0) -> list[str]:
        names, matrix = self.evaluate(figs)
        return [self.describe(n, figs, i) for j, n in enumerate(names) if matrix[i, j] > 0]
