"""Published training runs: read and check the data the quality law is fitted to.

Two files in `quality_models/`: `published_runs.toml` describes each study (`[[study]]`: its data, tokenizer,
metric and schedule, with sources) and each trained shape (`[[shape]]`: the config facts nas's ArchConfig
takes, with where they were read); `published_runs.csv` holds one published loss per line
(`study,shape,tokens,loss,cooled,where`). `load_runs` refuses a malformed or inconsistent file with one line
`path:line: key: message` (exit 2 through the CLI) and returns a `RunTable`: one row per run, as numpy columns
the law is fitted on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.core.arch import ArchConfig
from nas.core.errors import ArchConfigError, NasUserError
from nas.core.paths import shipped
from nas.core.userfiles import TomlTable, read_csv, read_toml

STUDIES_FILE = "published_runs.toml"
RUNS_FILE = "published_runs.csv"
RUN_COLUMNS = ("study", "shape", "tokens", "loss", "cooled", "where")

_STUDY_REQUIRED = ("name", "title", "source", "data", "tokenizer", "metric", "schedule")
_STUDY_KEYS = {*_STUDY_REQUIRED, "tokens_per_step", "notes"}
_SHAPE_REQUIRED = ("study", "name", "hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size",
                   "tie_embeddings", "where")
_SHAPE_KEYS = {*_SHAPE_REQUIRED, "num_kv_heads", "head_dim", "ffn_kind", "params", "notes"}
_ARCH_KEYS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
              "vocab_size", "ffn_kind", "tie_embeddings")
MAX_TOKENS = 1e15  # far beyond any published run; a larger value is a typo
MAX_LOSS = 20.0  # nats per token; the uniform guess over a 1M-token vocabulary is 13.8


@dataclass(frozen=True)
class PublishedStudy:
    name: str
    title: str
    source: str
    data: str
    tokenizer: str
    metric: str
    schedule: str
    notes: str
    line: int


@dataclass(frozen=True)
class RunShape:
    study: str
    name: str
    arch: ArchConfig
    params: int | None  # total parameters as the study published them (None: not published)
    where: str
    line: int


@dataclass(frozen=True)
class RunTable:
    """Every published run, one row each, as columns (numpy arrays of equal length)."""

    studies: tuple[PublishedStudy, ...]
    shapes: tuple[RunShape, ...]
    study: np.ndarray  # index into `studies`
    shape: np.ndarray  # index into `shapes`
    tokens: np.ndarray  # training tokens seen
    loss: np.ndarray  # the study's metric, nats per token
    cooled: np.ndarray  # bool: after a learning-rate cool-down (the loss a finished run reaches)
    lines: np.ndarray  # line of each run in the CSV file
    sha256: str  # of both files' text: the shipped fit records it, so a changed data file makes it stale

    def __len__(self) -> int:
        return len(self.loss)

    def column(self, name: str) -> np.ndarray:
        """A shape fact per run: num_layers, hidden_size, vocab_size, num_non_embedding_params, ..."""
        values = [getattr(s.arch, name) for s in self.shapes]
        return np.asarray(values, dtype=np.float64)[self.shape]

    def subset(self, mask: np.ndarray) -> "RunTable":
        mask = np.asarray(mask)
        return RunTable(self.studies, self.shapes, self.study[mask], self.shape[mask], self.tokens[mask],
                        self.loss[mask], self.cooled[mask], self.lines[mask], self.sha256)

    def study_names(self) -> list[str]:
        return [s.name for s in self.studies]

    def finished(self) -> np.ndarray:
        """Runs whose loss is what a finished run reaches: cooled ones, and every run of a study that publishes
        no cooled loss (whole-run figures such as Morph's run averages). Checkpoints of a constant-rate run whose
        cool-downs the study also publishes are left out: they are not what a user's finished run reaches."""
        with_cooled = {int(s) for s in self.study[self.cooled]}
        return self.cooled | ~np.isin(self.study, list(with_cooled))


def studies_path() -> Path:
    return shipped("quality_models") / STUDIES_FILE


def runs_path() -> Path:
    return shipped("quality_models") / RUNS_FILE


def _parse_study(t: TomlTable) -> PublishedStudy:
    name = t.string("name")
    if not name.replace("-", "").replace("_", "").isalnum() or name != name.lower():
        raise t.fail("name", f"must be a lowercase id (letters, digits, - and _), got {name!r}")
    t.integer("tokens_per_step", default=None)
    return PublishedStudy(name, t.string("title"), t.string("source"), t.string("data"), t.string("tokenizer"),
                          t.string("metric"), t.string("schedule"), t.string("notes", default=""), t.start)


def _parse_shape(t: TomlTable, studies: dict[str, PublishedStudy]) -> RunShape:
    study = t.string("study")
    if study not in studies:
        raise t.fail("study", f"{study!r} has no [[study]] table; defined: {', '.join(studies)}")
    fields = {k: t.data[k] for k in _ARCH_KEYS if k in t.data}
    try:
        arch = ArchConfig(**fields)
    except ArchConfigError as exc:
        raise t.fail(exc.field if exc.field in t.data else "", str(exc)) from None
    params = t.integer("params", low=1, high=10**13, default=None)
    return RunShape(study, t.string("name"), arch, params, t.string("where"), t.start)


def load_runs(studies_file: str | Path | None = None, runs_file: str | Path | None = None) -> RunTable:
    """Both files, checked; any problem is one `path:line: key: message` NasUserError."""
    toml = read_toml(Path(studies_file) if studies_file else studies_path(), "published-runs file")
    toml.keys(toml.data, "", {"study", "shape"}, {"study", "shape"})
    studies: dict[str, PublishedStudy] = {}
    for t in toml.tables("study", _STUDY_KEYS, _STUDY_REQUIRED, kinds=("shape",)):
        study = _parse_study(t)
        if study.name in studies:
            raise t.fail("name", f"study {study.name!r} is defined twice (first at line {studies[study.name].line})")
        studies[study.name] = study
    shapes: dict[tuple[str, str], RunShape] = {}
    for t in toml.tables("shape", _SHAPE_KEYS, _SHAPE_REQUIRED, kinds=("study",)):
        shape = _parse_shape(t, studies)
        key = (shape.study, shape.name)
        if key in shapes:
            raise t.fail("name", f"shape {shape.name!r} of study {shape.study!r} is defined twice (first at line "
                                 f"{shapes[key].line})")
        shapes[key] = shape
    csv_text, rows = read_csv(Path(runs_file) if runs_file else runs_path(), "published-runs table", RUN_COLUMNS)
    study_index = {name: i for i, name in enumerate(studies)}
    shape_index = {key: i for i, key in enumerate(shapes)}
    columns: dict[str, list] = {k: [] for k in ("study", "shape", "tokens", "loss", "cooled", "lines")}
    seen: dict[tuple, int] = {}
    for row in rows:
        study = row.text("study")
        if study not in studies:
            raise row.fail("study", f"{study!r} has no [[study]] table in {STUDIES_FILE}")
        shape = row.text("shape")
        if (study, shape) not in shapes:
            raise row.fail("shape", f"{shape!r} has no [[shape]] table of study {study!r} in {STUDIES_FILE}")
        tokens = row.number("tokens", 1.0, MAX_TOKENS)
        cooled = row.boolean("cooled")
        row.text("where")
        key = (study, shape, tokens, cooled)
        if key in seen:
            raise row.fail("", f"duplicates the run at line {seen[key]} (same study, shape, tokens and cool-down)")
        seen[key] = row.line
        columns["study"].append(study_index[study])
        columns["shape"].append(shape_index[(study, shape)])
        columns["tokens"].append(tokens)
        columns["loss"].append(row.number("loss", 1e-3, MAX_LOSS))
        columns["cooled"].append(cooled)
        columns["lines"].append(row.line)
    if not rows:
        raise NasUserError(f"{runs_file or runs_path()}: no runs")
    digest = hashlib.sha256((toml.text + "\0" + csv_text).encode("utf-8")).hexdigest()
    return RunTable(tuple(studies.values()), tuple(shapes.values()), np.array(columns["study"], dtype=np.int64),
                    np.array(columns["shape"], dtype=np.int64), np.array(columns["tokens"], dtype=np.float64),
                    np.array(columns["loss"], dtype=np.float64), np.array(columns["cooled"], dtype=bool),
                    np.array(columns["lines"], dtype=np.int64), digest)
