"""The shipped quality model: the law chosen and fitted on the published runs, read back for predictions.

`fit_quality(runs)` evaluates every candidate form by leave-one-study-out (`nas.quality.validate`), chooses the
one that orders held-out neighbouring shapes best (what a search asks of the law: which of two shapes a front
puts side by side trains to the lower loss; a simpler form wins within CHOICE_TOLERANCE), fits it on every
study's finished runs, and records its band (the 90% quantile of held-out errors of predicted loss differences
between neighbouring shapes), the ranges the data covers, and BOOTSTRAP fits on resampled shapes (for how stable
a pick is).
`nas quality fit` writes it to `quality_models/quality_fit.json`; `load_quality_model(train_tokens)` reads it
back as a `QualityModel` that predicts the loss of candidates on the reference study's data and tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nas.core.counts import format_count, parse_count
from nas.core.errors import NasUserError
from nas.core.paths import shipped, write_atomic
from nas.quality.law import Features, FittedLaw, candidate_forms, fit_law, group_name
from nas.quality.runs import RunTable
from nas.quality.validate import bootstrap_fits, evaluate

FIT_FILE = "quality_fit.json"
FIT_FORMAT = "nas-quality-fit/1"
REFERENCE_STUDY = "gemstones"  # the study whose data and tokenizer predicted losses are on
DEFAULT_TRAIN_TOKENS = 10**12  # MobileLLM's 125M-1B models were pretrained on 1T tokens
CHOICE_TOLERANCE = 0.005  # held-out order accuracy within which the simpler form is kept
BOOTSTRAP = 100
NO_EVIDENCE = {
    "kv_heads": "kv heads (MHA/GQA/MQA) enter only through the parameters they add: no published run here "
                "compares groupings at equal size",
    "ffn": "FFN ratio and kind enter only through the parameters they add",
    "head_dim": "head_dim does not enter: no published run isolates it",
    "tying": "tied or untied embeddings predict the same loss: the law counts the embedding tables of a shape's "
             "width the same whether the head is tied or not (an untied head adds parameters but, at equal compute, "
             "little quality)",
    "vocab": "the vocabulary does not enter: losses are predicted with the reference study's tokenizer",
}


def fit_path() -> Path:
    return shipped("quality_models") / FIT_FILE


def fit_quality(runs: RunTable, bootstrap: int = BOOTSTRAP, log: Callable[[str], None] = lambda _: None) \
        -> dict[str, Any]:
    """Choose the form by leave-one-study-out, fit it on every finished run (`RunTable.finished`), and describe
    it (the fit file's content)."""
    if REFERENCE_STUDY not in runs.study_names():
        raise NasUserError(f"the published runs hold no study {REFERENCE_STUDY!r}, the reference predictions are on")
    runs = runs.subset(runs.finished())
    evaluations = []
    for form in candidate_forms():
        log(f"leave-one-study-out: {form.name}")
        evaluations.append(evaluate(runs, form))
    chosen = choose(evaluations)
    log(f"fitting {chosen.form.name} on all {len(runs)} runs")
    law = fit_law(runs, chosen.form)
    log(f"bootstrap: {bootstrap} fits on resampled shapes")
    group = group_name(REFERENCE_STUDY, True)
    boots = [{"params": b.params, "reference": b.groups[group]}
             for b in (bootstrap_fits(runs, chosen.form, bootstrap) if bootstrap else []) if group in b.groups]
    return {
        "format": FIT_FORMAT,
        "data_sha256": runs.sha256,
        "reference_study": REFERENCE_STUDY,
        "reference_group": group,
        "reference_vocab": _reference_vocab(runs),
        "law": law.to_dict(),
        "band_nats": chosen.band,
        "chosen_by": "the best leave-one-study-out order accuracy over neighbouring shapes (non-embedding "
                     f"parameters within 2x, equal tokens); a simpler form wins within {CHOICE_TOLERANCE}",
        "evaluations": [e.to_dict() for e in evaluations],
        "ranges": _ranges(runs),
        "studies": {s.name: {"title": s.title, "source": s.source, "metric": s.metric, "runs_fitted": int(n),
                             "shapes": len({int(k) for k in runs.shape[runs.study == i]})}
                    for i, (s, n) in enumerate(zip(runs.studies, np.bincount(runs.study,
                                                                               minlength=len(runs.studies))))},
        "bootstrap": boots,
        "no_evidence": NO_EVIDENCE,
    }


def choose(evaluations):
    """The evaluation whose held-out order accuracy over neighbouring shapes is best, or the first (simplest:
    candidate_forms() lists simpler forms first) within CHOICE_TOLERANCE of it."""
    def accuracy(e):
        value = e.overall["neighbours"].order_accuracy
        return value if value is not None and np.isfinite(e.band) else -1.0

    best = max(accuracy(e) for e in evaluations)
    return next(e for e in evaluations if accuracy(e) >= best - CHOICE_TOLERANCE)


def _reference_vocab(runs: RunTable) -> int:
    vocabs = {s.arch.vocab_size for s in runs.shapes if s.study == REFERENCE_STUDY}
    return int(max(vocabs))


def _ranges(runs: RunTable) -> dict[str, list[float]]:
    total = runs.column("num_params")
    nonemb = runs.column("num_non_embedding_params")
    layers = runs.column("num_layers")
    return {"num_params": [float(total.min()), float(total.max())],
            "non_embedding_params": [float(nonemb.min()), float(nonemb.max())],
            "tokens": [float(runs.tokens.min()), float(runs.tokens.max())],
            "tokens_per_param": [float((runs.tokens / total).min()), float((runs.tokens / total).max())],
            "num_layers": [float(layers.min()), float(layers.max())]}


def write_fit(result: dict[str, Any], path: str | Path | None = None) -> Path:
    return write_atomic(Path(path) if path else fit_path(), json.dumps(result, indent=1) + "\n")


def load_fit(path: str | Path | None = None) -> dict[str, Any]:
    """The fit file, checked for its format; a missing or malformed one is one NasUserError naming it."""
    path = Path(path) if path else fit_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NasUserError(f"{path}: no quality fit; write it with `nas quality fit`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NasUserError(f"{path}: cannot read the quality fit ({exc}); rewrite it with `nas quality fit`") from None
    if not isinstance(data, dict) or data.get("format") != FIT_FORMAT:
        raise NasUserError(f"{path}: not a {FIT_FORMAT} file; rewrite it with `nas quality fit`")
    try:
        law = FittedLaw.from_dict(data["law"])
        float(data["band_nats"]), int(data["reference_vocab"]), dict(data["ranges"])
        law.groups[data["reference_group"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise NasUserError(f"{path}: incomplete quality fit ({exc!r}); rewrite it with `nas quality fit`") from None
    return data


def parse_train_tokens(text: str | int | float) -> int:
    """--train-tokens: '1T', '300B', '2e11' -> a token count, at least 1M (below that no published run exists)."""
    tokens = parse_count(str(text), "--train-tokens", example="1T, 300B or 2e11")
    if tokens < 10**6:
        raise NasUserError(f"--train-tokens: {text!r} is fewer than 1M tokens; give the pretraining budget, "
                           "e.g. 1T or 300B")
    return tokens


@dataclass(frozen=True)
class QualityModel:
    """Predicted pretraining loss of candidates trained on `train_tokens` tokens, on the reference study's data
    and tokenizer, with the band (nats) inside which two predictions are not told apart."""

    law: FittedLaw
    train_tokens: int
    reference: str  # the group (a study's cooled runs) whose data and tokenizer losses are predicted on
    reference_vocab: int
    band: float
    ranges: dict[str, list[float]]
    bootstrap: tuple[dict[str, dict[str, float]], ...]  # {"params": shared, "reference": its group's}
    fingerprint: str  # 12 hex digits of the fit file's content

    def features(self, batch) -> Features:
        return Features.of_batch(batch, float(self.train_tokens), self.reference_vocab)

    def predict(self, batch) -> np.ndarray:
        """Predicted loss (nats per token) of every row of an ArchBatch."""
        return self.law.predict(self.features(batch), self.reference)

    def bootstrap_losses(self, batch) -> np.ndarray:
        """[fits, rows]: the loss each bootstrap fit predicts."""
        x = self.features(batch)
        return np.stack([FittedLaw(self.law.form, b["params"], {self.reference: b["reference"]})
                         .predict(x, self.reference) for b in self.bootstrap])

    def extrapolation(self, batch) -> list[str]:
        """One line per way the rows of `batch` lie outside what the published runs cover."""
        notes = []
        total = np.asarray(batch.num_params, dtype=np.float64)
        layers = batch.columns["num_layers"].astype(np.float64)
        r = self.ranges
        tpp = self.train_tokens / total
        if self.train_tokens > r["tokens"][1]:
            notes.append(f"{format_count(self.train_tokens)} training tokens is beyond the published runs' "
                         f"{format_count(r['tokens'][1])}")
        if tpp.max() > r["tokens_per_param"][1]:
            notes.append(f"up to {tpp.max():,.0f} tokens per parameter, beyond the published runs' "
                         f"{r['tokens_per_param'][1]:,.0f}")
        for name, values, (low, high), unit in (("parameters", total, r["num_params"], "params"),
                                                ("layers", layers, r["num_layers"], "layers")):
            if values.min() < low or values.max() > high:
                show = format_count if unit == "params" else (lambda v: f"{v:.0f}")
                notes.append(f"{name} {show(values.min())}-{show(values.max())} outside the published runs' "
                             f"{show(low)}-{show(high)}")
        return notes

    def describe(self) -> str:
        return (f"predicted loss after {format_count(self.train_tokens)} training tokens (nats/token on "
                f"{self.reference}'s data and tokenizer; law {self.law.form.name}, fitted to published runs; "
                f"differences within {self.band:.3f} nats are ties)")

    def prediction(self, arch) -> dict[str, Any]:
        """What `nas predict` and `nas inspect` report of one ArchConfig: the loss with its band, and where the
        prediction leaves the published runs."""
        from nas.core.arch import ArchBatch

        batch = ArchBatch.from_configs([arch])
        loss = float(self.predict(batch)[0])
        return {"predicted_loss": loss, "low": loss - self.band, "high": loss + self.band,
                "band_nats": self.band, "train_tokens": self.train_tokens, "reference": self.reference,
                "law": self.law.form.name, "fingerprint": self.fingerprint, "warnings": self.extrapolation(batch),
                "no_evidence": dict(NO_EVIDENCE)}

    def prediction_text(self, arch) -> list[str]:
        q = self.prediction(arch)
        lines = [f"  predicted loss after {format_count(q['train_tokens'])} training tokens: {q['predicted_loss']:.3f} "
                 f"nats/token ({q['low']:.3f}-{q['high']:.3f}: differences within the {q['band_nats']:.3f} band are "
                 f"ties; on {q['reference']}'s data and tokenizer, law {q['law']}, `nas quality`)"]
        lines += [f"  warning: predicted loss: {w}" for w in q["warnings"]]
        return lines


def load_quality_model(train_tokens: int | str = DEFAULT_TRAIN_TOKENS, path: str | Path | None = None) -> QualityModel:
    """The shipped fit as a QualityModel for `train_tokens` (an int, or text such as '1T')."""
    tokens = parse_train_tokens(str(train_tokens))  # one rule for text and counts: at least 1M, bounded
    data = load_fit(path)
    law = FittedLaw.from_dict(data["law"])
    reference = str(data["reference_group"])
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    return QualityModel(law, tokens, reference, int(data["reference_vocab"]), float(data["band_nats"]),
                        {k: list(v) for k, v in data["ranges"].items()},
                        tuple(dict(b) for b in data.get("bootstrap", [])), digest)
