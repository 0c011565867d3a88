"""What `nas search` takes, with its defaults, checked in one place.

This module imports nothing heavy (no numpy, optuna or torch): `nas.commands.search` builds its parser from
these defaults, and `nas --help` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from nas.core.errors import NasUserError
from nas.core.limits import MAX_COUNT, MAX_TOKENS, check_int, check_number

SAMPLERS = ("nsga2", "tpe", "gp", "random")
STAGES = ("all", "latency", "proxy")
DEFAULT_SPACE = "subbillion"
DEFAULT_TRIALS = 200
DEFAULT_PROMPT_LEN = 512
DEFAULT_CONTEXT_LEN = 2048
DEFAULT_SEED = 0
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take 32-bit seeds

# The proxy stage (nas.search.proxy_stage.ProxyOptions):
DEFAULT_PROXY_SHAPES = 12  # shapes trained; see nas.search.selection
DEFAULT_RUNG_TOKENS = (40_960, 122_880)  # rung budgets (eta = 3): see README "proxy stage" for the timing
DEFAULT_ETA = 3.0
DEFAULT_FINAL_SEEDS = 2  # the shapes that reach the last rung are trained with a second seed: the seed noise


@dataclass(frozen=True)
class SearchSettings:
    """Everything the latency stage of `nas search` takes; the defaults are the CLI's. Checked on construction
    (one line naming the flag); names (targets, space, objectives, quality, trainer) and the token budget are checked
    where they are resolved (`nas.search.problem`)."""

    targets: tuple[str, ...]
    space: str = DEFAULT_SPACE
    trials: int = DEFAULT_TRIALS
    prompt_len: int = DEFAULT_PROMPT_LEN
    context_len: int = DEFAULT_CONTEXT_LEN
    precision: str | None = None  # None: each target's default precision
    objectives: Sequence[str] | None = None  # None: quality, decode_tps
    multi_target: str | None = None  # "each" | "worst" | None (each for <= 2 targets)
    max_memory_mb: float | None = None  # None: each target's memory budget
    min_decode_tps: float | None = None
    max_ttft_ms: float | None = None
    params: str | None = None  # "LOW:HIGH", e.g. "450M:550M"
    sampler: str = "nsga2"
    population: int | None = None  # NSGA-II population; None: chosen from the trial budget
    seed: int = DEFAULT_SEED
    storage: str | None = None  # None: nas.core.paths.default_storage()
    study: str | None = None  # None: "<targets>-<space>"
    exact: bool = True
    trainer: str | None = None  # only shapes this trainer can build (nas.core.trainers)
    quality: str = "law"  # "law": predicted loss after train_tokens (nas.quality); "params": parameter count
    train_tokens: int | None = None  # the pretraining budget the loss is predicted at; None: the law's default

    def __post_init__(self) -> None:
        if not self.targets:
            raise NasUserError("give at least one --target")
        if len(set(self.targets)) != len(self.targets):
            raise NasUserError(f"--target listed twice: {', '.join(self.targets)}")
        check_int(self.trials, "--trials", 1, MAX_COUNT)
        check_int(self.prompt_len, "--prompt-len", 1, MAX_TOKENS)
        check_int(self.context_len, "--context-len", 1, MAX_TOKENS)
        check_int(self.seed, "--seed", 0, MAX_SEED)
        if self.sampler not in SAMPLERS:
            raise NasUserError(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")
        if self.population is not None:
            check_int(self.population, "--population", 2, MAX_COUNT)
        for name, value in (("--max-memory-mb", self.max_memory_mb), ("--min-decode-tps", self.min_decode_tps),
                            ("--max-ttft-ms", self.max_ttft_ms)):
            if value is not None:
                check_number(value, name, 0, low_open=True)

    @property
    def named_by_user(self) -> bool:
        return self.study is not None
