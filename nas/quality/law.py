"""The quality law: predicted pretraining loss of a shape after D training tokens, and its fit.

    loss = E_group + B_group * (D / 1e10) ** -beta_group + size term + shape term

A *group* is one study's runs of one kind: cooled (the loss a finished run reaches after its learning rate is
decayed) or not (checkpoints of a constant-rate run, run averages). Every group has its own offset E and, with
`tokens="per_group"`, its own token term (data, tokenizer and schedule differ, so losses compare only inside a
group); with `tokens="shared"` one token term serves all. The size and shape terms are shared by every study:

    size        A * (N / 1e8) ** -alpha          N: the parameters that count (COUNTS)
    depth       C * layers ** -gamma             shallow shapes lose at equal size
    depth_size  C * layers ** -gamma * (N / 1e8) ** -delta   the same, fading (or growing) with size
    aspect      C * (ln(hidden / layers) - rho) ** 2          an optimal aspect ratio

The parameters that count (COUNTS): "nonemb" counts the non-embedding parameters; "emb1" adds one embedding
table (vocab x hidden) and "emb2" two (an input table and a head), whether or not the model ties its head, so an
untied head never buys quality: the embedding count is a width credit (at equal non-embedding parameters a wider
shape has a larger table), the same for a tied and an untied shape of one width. When the
law predicts for a candidate it uses the vocabulary of the reference study (whose data the loss is predicted
on), not the candidate's: a larger vocabulary is not rewarded either (losses per token of different tokenizers
do not compare, and no study varies the vocabulary). Attention grouping (kv heads), FFN kind and ratio, and
head_dim enter only through N: no published run here isolates them.

Fitting (`fit_law`) is robust least squares (scipy.optimize.least_squares, Huber loss of scale HUBER_NATS) on
the loss in nats, each run weighted so that every shape of a study weighs the same however many of its runs
are published, from a small grid of starting points, keeping the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.quality.runs import RunTable

N_SCALE = 1e8  # parameters; keeps the fitted coefficients near 1
D_SCALE = 1e10  # tokens
HUBER_NATS = 0.02  # residuals beyond this count linearly: a digitised or mislabelled point cannot dominate
_TABLES = {"nonemb": 0.0, "emb1": 1.0, "emb2": 2.0}  # embedding tables (vocab x hidden) each count adds
COUNTS = tuple(_TABLES)
SHAPE_TERMS = ("depth", "depth_size", "aspect")
TOKEN_MODES = ("shared", "per_group")

# Parameters of each term: (name, start values (every combination is tried), lower, upper). Coefficients are
# fitted as logs so they stay positive.
_SPECS: dict[str, tuple[tuple[str, tuple[float, ...], float, float], ...]] = {
    "size": (("log_A", (math.log(0.8),), -12.0, 6.0), ("alpha", (0.25, 0.5), 0.02, 3.0)),
    "tokens": (("log_B", (math.log(0.6),), -12.0, 6.0), ("beta", (0.3,), 0.02, 3.0)),
    "depth": (("log_C", (math.log(0.6),), -12.0, 6.0), ("gamma", (0.7, 1.5), 0.02, 4.0)),
    "depth_size": (("log_C", (math.log(0.6),), -12.0, 6.0), ("gamma", (0.7, 1.5), 0.02, 4.0),
                   ("delta", (0.0, 0.3), -2.0, 2.0)),
    "aspect": (("log_C", (math.log(0.01),), -16.0, 4.0), ("rho", (3.5, 5.0), -2.0, 9.0)),
}


def group_name(study: str, cooled: bool) -> str:
    return study if cooled else f"{study}:not-cooled"


@dataclass(frozen=True)
class Form:
    """Which shape term the law has (none: the shape-blind law), which parameters count, and whether the
    token term is shared by every group or fitted per group."""

    shape: str | None = None
    count: str = "emb1"
    tokens: str = "per_group"

    def __post_init__(self):
        if self.shape not in (None, *SHAPE_TERMS) or self.count not in COUNTS or self.tokens not in TOKEN_MODES:
            raise ValueError(f"bad form {self}")

    @property
    def name(self) -> str:
        return f"size{'+' + self.shape if self.shape else ''} [{self.count}, tokens {self.tokens.replace('_', ' ')}]"

    @property
    def shape_blind(self) -> bool:
        return self.shape is None

    def shared_specs(self):
        terms = ("size", *((self.shape,) if self.shape else ()), *(("tokens",) if self.tokens == "shared" else ()))
        return [spec for term in terms for spec in _SPECS[term]]

    def group_specs(self):
        return _SPECS["tokens"] if self.tokens == "per_group" else ()

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "count": self.count, "tokens": self.tokens}


@dataclass(frozen=True)
class Features:
    """What the law sees of n runs or candidates (arrays of length n)."""

    layers: np.ndarray
    hidden: np.ndarray
    non_embedding: np.ndarray  # parameters without the embedding and head
    vocab: np.ndarray  # the vocabulary the loss is measured with (a study's, or the reference study's)
    tokens: np.ndarray

    def params(self, count: str) -> np.ndarray:
        return self.non_embedding + _TABLES[count] * self.vocab * self.hidden

    @classmethod
    def of_runs(cls, runs: RunTable) -> "Features":
        return cls(runs.column("num_layers"), runs.column("hidden_size"), runs.column("num_non_embedding_params"),
                   runs.column("vocab_size"), runs.tokens.astype(np.float64))

    @classmethod
    def of_batch(cls, batch, tokens: float, vocab: int) -> "Features":
        """Candidates of an ArchBatch trained on `tokens` tokens, measured with a `vocab`-token tokenizer."""
        c = batch.columns
        n = len(batch)
        return cls(c["num_layers"].astype(np.float64), c["hidden_size"].astype(np.float64),
                   np.asarray(batch.num_non_embedding_params, dtype=np.float64), np.full(n, float(vocab)),
                   np.full(n, float(tokens)))


def shape_part(form: Form, p: dict[str, float], x: Features) -> np.ndarray:
    """The size and shape terms (shared by every study), nats: what ranks shapes trained on equal tokens."""
    n = x.params(form.count) / N_SCALE
    out = np.exp(p["log_A"]) * n ** -p["alpha"]
    if form.shape == "depth":
        out = out + np.exp(p["log_C"]) * x.layers ** -p["gamma"]
    elif form.shape == "depth_size":
        out = out + np.exp(p["log_C"]) * x.layers ** -p["gamma"] * n ** -p["delta"]
    elif form.shape == "aspect":
        out = out + np.exp(p["log_C"]) * (np.log(x.hidden / x.layers) - p["rho"]) ** 2
    return out


def token_part(p: dict[str, float], tokens: np.ndarray) -> np.ndarray:
    return np.exp(p["log_B"]) * (tokens / D_SCALE) ** -p["beta"]


@dataclass
class FittedLaw:
    """A form with its fitted parameters: the shared ones, and each group's (offset, and token term when
    fitted per group)."""

    form: Form
    params: dict[str, float]
    groups: dict[str, dict[str, float]]  # group name -> {"offset": E, ["log_B", "beta"]}
    cost: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def group_params(self, group: str) -> dict[str, float]:
        return {**self.params, **self.groups[group]}

    def predict(self, x: Features, group: str, shared: dict[str, float] | None = None) -> np.ndarray:
        """Loss of `x` in `group`'s terms; `shared` replaces the shared parameters (a bootstrap fit's)."""
        g = self.groups[group]
        p = {**(shared or self.params), **{k: v for k, v in g.items() if k != "offset"}}
        return g["offset"] + token_part(p, x.tokens) + shape_part(self.form, p, x)

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form.to_dict(), "params": self.params, "groups": self.groups}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FittedLaw":
        return cls(Form(**data["form"]), {k: float(v) for k, v in data["params"].items()},
                   {g: {k: float(v) for k, v in d.items()} for g, d in data["groups"].items()})


def run_groups(runs: RunTable) -> np.ndarray:
    """Each run's group name."""
    names = runs.study_names()
    return np.array([group_name(names[s], bool(c)) for s, c in zip(runs.study, runs.cooled)], dtype=object)


def shape_weights(runs: RunTable) -> np.ndarray:
    """A weight per run so that every shape weighs the same, however many of its runs are published."""
    counts = np.bincount(runs.shape, minlength=len(runs.shapes)).astype(np.float64)
    return 1.0 / np.sqrt(counts[runs.shape])


def fit_law(runs: RunTable, form: Form, weights: np.ndarray | None = None) -> FittedLaw:
    """Fit `form` to `runs`: the shared parameters and each present group's own."""
    x = Features.of_runs(runs)
    w = shape_weights(runs) if weights is None else np.asarray(weights, dtype=np.float64)
    groups = run_groups(runs)
    shared = form.shared_specs()
    best = None
    for start in _starts(shared):
        fit = _solve(runs, x, w, groups, form, shared, start, fixed=None)
        if best is None or fit.cost < best.cost - 1e-12:
            best = fit
    return best


def fit_groups(law: FittedLaw, runs: RunTable) -> FittedLaw:
    """The law with the shared parameters kept and the groups of `runs` fitted anew: what a study the law was
    not fitted on tells about where its losses sit (and how they fall with tokens), not how its shapes rank."""
    x = Features.of_runs(runs)
    fit = _solve(runs, x, shape_weights(runs), run_groups(runs), law.form, [], (), fixed=law.params)
    return FittedLaw(law.form, dict(law.params), fit.groups, fit.cost)


def _solve(runs, x, w, groups, form, shared, start, fixed) -> FittedLaw:
    from scipy.optimize import least_squares

    names = sorted(set(groups.tolist()))
    slot = np.array([names.index(g) for g in groups])
    per = form.group_specs()
    k, m = len(shared), 1 + len(per)
    lower = [s[2] for s in shared] + [b for _ in names for b in (-np.inf, *(s[2] for s in per))]
    upper = [s[3] for s in shared] + [b for _ in names for b in (np.inf, *(s[3] for s in per))]
    shape_fixed = None if fixed is None else shape_part(form, fixed, x)
    # Start each offset where the group's losses sit: less the known terms when the shared part is fixed.
    known = np.ones(len(runs.loss)) if fixed is None else shape_fixed + (
        0.0 if per else token_part(fixed, x.tokens))
    starts = []
    for g in names:
        inside = groups == g
        starts += [float(np.median(runs.loss[inside] - known[inside])), *(s[1][0] for s in per)]

    def unpack(theta):
        p = dict(fixed) if fixed is not None else dict(zip((s[0] for s in shared), theta[:k]))
        g = theta[k:].reshape(len(names), m)
        return p, g

    def residuals(theta):
        p, g = unpack(theta)
        pred = g[slot, 0] + (shape_fixed if shape_fixed is not None else shape_part(form, p, x))
        if per:
            pred = pred + np.exp(g[slot, 1]) * (x.tokens / D_SCALE) ** -g[slot, 2]
        else:
            pred = pred + token_part(p, x.tokens)
        return w * (pred - runs.loss)

    fit = least_squares(residuals, np.array(list(start) + starts), bounds=(lower, upper), loss="huber",
                        f_scale=HUBER_NATS, x_scale="jac", max_nfev=3000, ftol=1e-12, xtol=1e-12, gtol=1e-12)
    p, g = unpack(fit.x)
    params = {kk: float(v) for kk, v in p.items()}
    fitted = {name: {"offset": float(g[i, 0]), **{s[0]: float(g[i, 1 + j]) for j, s in enumerate(per)}}
              for i, name in enumerate(names)}
    return FittedLaw(form, params, fitted, float(fit.cost))


def _starts(specs) -> list[tuple[float, ...]]:
    """Every combination of the parameters' start values (a small grid)."""
    grid: list[tuple[float, ...]] = [()]
    for _, values, _, _ in specs:
        grid = [g + (v,) for g in grid for v in values]
    return grid


def candidate_forms() -> list[Form]:
    """The forms leave-one-study-out chooses among, simpler first (the shape-blind law first: the baseline)."""
    return [Form(shape, count, tokens) for shape in (None, *SHAPE_TERMS) for tokens in ("shared", "per_group")
            for count in COUNTS]
