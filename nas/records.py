"""What a search writes into an Optuna study, and how everything downstream reads it back.

This is the contract between the search, the reports, the exports and later stages (proxy training,
many workers on one PostgreSQL study). Everything is stored as Optuna user attrs (plain JSON), so
`optuna-dashboard` and any Optuna API can read a study without nas installed.

Study user attrs (`StudyMeta`): what was searched, for which targets, under which settings.
Trial user attrs (`TrialRecord`): the ArchConfig, its accounting, and per-target predicted figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from nas.arch import ArchConfig

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TargetFigures:
    """Predicted figures of one ArchConfig on one target. Units are in the names."""

    prefill_ms: float  # time to first token for a prompt of prompt_len tokens
    decode_ms: float  # one decode step with context_len tokens in the KV cache
    memory_mb: float  # weights at the precision + KV cache + working memory (MiB = 2**20 bytes)
    latency_source: str  # "measured" | "calibrated" | "analytic, uncalibrated"
    prompt_len: int  # the P that prefill_ms is for

    @property
    def ttft_ms(self) -> float:
        return self.prefill_ms

    @property
    def prefill_tokens_per_s(self) -> float:
        return 0.0 if self.prefill_ms <= 0 else self.prompt_len * 1000.0 / self.prefill_ms

    @property
    def decode_tokens_per_s(self) -> float:
        return 0.0 if self.decode_ms <= 0 else 1000.0 / self.decode_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefill_ms": self.prefill_ms,
            "ttft_ms": self.ttft_ms,
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "decode_ms": self.decode_ms,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "memory_mb": self.memory_mb,
            "latency_source": self.latency_source,
            "prompt_len": self.prompt_len,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TargetFigures":
        return cls(prefill_ms=float(data["prefill_ms"]), decode_ms=float(data["decode_ms"]),
                   memory_mb=float(data["memory_mb"]), latency_source=str(data["latency_source"]),
                   prompt_len=int(data["prompt_len"]))


@dataclass(frozen=True)
class TrialRecord:
    """Everything nas knows about one evaluated candidate."""

    arch: ArchConfig
    figures: dict[str, TargetFigures]  # target name -> figures
    quality: float  # higher is better
    quality_source: str  # "non_embedding_params" until proxy training; then e.g. "proxy_loss"
    violations: tuple[str, ...] = ()  # human-readable reasons the candidate breaks a constraint

    @property
    def feasible(self) -> bool:
        return not self.violations

    def to_user_attrs(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "arch": self.arch.to_dict(),
            "arch_id": self.arch.arch_id,
            "shape": self.arch.short_tag,
            "attention_type": self.arch.attention_type,
            "num_params": self.arch.num_params,
            "num_non_embedding_params": self.arch.num_non_embedding_params,
            "quality": self.quality,
            "quality_source": self.quality_source,
            "predictions": {t: f.to_dict() for t, f in self.figures.items()},
            "feasible": self.feasible,
            "violations": list(self.violations),
        }

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> "TrialRecord":
        return cls(
            arch=ArchConfig.from_dict(attrs["arch"]),
            figures={t: TargetFigures.from_dict(f) for t, f in attrs["predictions"].items()},
            quality=float(attrs["quality"]),
            quality_source=str(attrs["quality_source"]),
            violations=tuple(attrs.get("violations", ())),
        )


@dataclass(frozen=True)
class Objective:
    """One study objective: a metric, its direction, and the target it is measured on (None: target-free)."""

    metric: str  # "quality", "decode_tokens_per_s", "prefill_tokens_per_s", "ttft_ms", "memory_mb"
    direction: str  # "maximize" | "minimize"
    target: str | None = None  # None for quality; "worst" for the worst case over all targets

    @property
    def label(self) -> str:
        return self.metric if self.target is None else f"{self.metric}@{self.target}"


@dataclass(frozen=True)
class StudyMeta:
    """Settings of a search, stored once per study; a resumed search must match them."""

    space: str
    space_fingerprint: str  # hash of the space definition: resuming with a changed space is refused
    targets: tuple[str, ...]
    precision: dict[str, str]  # target -> deployment precision
    prompt_len: int
    context_len: int
    objectives: tuple[Objective, ...]
    constraints: dict[str, Any]
    latency_sources: dict[str, str]
    nas_version: str

    def to_user_attrs(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = list(self.targets)
        data["objectives"] = [asdict(o) for o in self.objectives]
        return {"nas_schema_version": SCHEMA_VERSION, "nas_meta": data}

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> "StudyMeta | None":
        """None when the study was not written by nas."""
        data = attrs.get("nas_meta")
        if data is None:
            return None
        return cls(**{**data, "targets": tuple(data["targets"]),
                      "objectives": tuple(Objective(**o) for o in data["objectives"])})

    def identity(self) -> dict[str, Any]:
        """The settings that define what a study's trials mean; resuming with any of these changed is refused."""
        return {"space": self.space, "space_fingerprint": self.space_fingerprint, "targets": list(self.targets),
                "precision": self.precision, "prompt_len": self.prompt_len, "context_len": self.context_len,
                "objectives": [o.label for o in self.objectives]}
