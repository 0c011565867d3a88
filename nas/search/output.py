"""What a search prints: Pareto rows from stored trials, a readable subset of them, and the text table."""

from __future__ import annotations

import shlex
from typing import Any, Sequence

import numpy as np

from nas.core.counts import format_count
from nas.latency.uncertainty import band_for, legend, show, show_plain
from nas.study import schema
from nas.study.pareto import ALL_TIED, PICK_REASONS, TIE_NOTE, all_tied, picks
from nas.study.storage import MEMORY_STORAGES


def pareto_row(trial, objectives) -> dict[str, Any]:
    """One Pareto-table row from a trial's user attrs (the same data --json prints)."""
    a = trial.user_attrs
    return {
        "trial": trial.number,
        "arch_id": a[schema.ARCH_ID],
        "shape": a[schema.SHAPE],
        "attention": a[schema.ATTENTION_TYPE],
        "num_params": a[schema.NUM_PARAMS],
        "num_non_embedding_params": a[schema.NUM_NON_EMBEDDING_PARAMS],
        "quality": a[schema.QUALITY],
        "quality_source": a[schema.QUALITY_SOURCE],
        "found_by": a.get(schema.FOUND_BY, schema.FOUND_BY_SAMPLER),
        "targets": {t: {k: p[k] for k in ("prefill_ms", "ttft_ms", "prefill_tokens_per_s", "decode_ms",
                                          "decode_tokens_per_s", "memory_mb", "latency_source")}
                    for t, p in a[schema.PREDICTIONS].items()},
        "objectives": {o.label: v for o, v in zip(objectives, trial.values)},
        "arch": a[schema.ARCH],
    }


def pick_rows(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most `limit` rows spread evenly along the front (first and last kept); limit <= 0: all."""
    if limit <= 0 or len(rows) <= limit:
        return rows
    if limit == 1:
        return rows[:1]
    index = np.unique(np.round(np.linspace(0, len(rows) - 1, limit)).astype(int))
    return [rows[i] for i in index]


def format_table(rows: list[dict[str, Any]], targets: Sequence[str],
                 bands: dict[str, Any] | None = None) -> str:
    """The Pareto set as a fixed-width text table (best quality first). `bands` (target -> error band,
    `nas.latency.uncertainty`): a target without a known band has its speeds rounded and marked "~"."""
    bands = bands or {}
    head = ["trial", "shape", "attn", "ffn", "tied", "params", "non-emb"]
    for t in targets:
        suffix = f"@{t}" if len(targets) > 1 else ""
        head += [f"mem MB{suffix}", f"prefill t/s{suffix}", f"decode t/s{suffix}", f"TTFT ms{suffix}"]
    proxy = bool(rows) and all(r["quality_source"] == schema.QUALITY_PROXY for r in rows)
    law = bool(rows) and all(r["quality_source"] == schema.QUALITY_LAW for r in rows)
    head += ["bits/byte" if proxy else "loss" if law else "quality", "arch id", "found by"]
    body = []
    for r in rows:
        line = [str(r["trial"]), r["shape"], r["attention"], r["arch"]["ffn_kind"],
                "yes" if r["arch"]["tie_embeddings"] else "no", format_count(r["num_params"]),
                format_count(r["num_non_embedding_params"])]
        for t in targets:
            f, band = r["targets"][t], bands.get(t)
            line += [f"{f['memory_mb']:.0f}",
                     show_plain(f["prefill_tokens_per_s"], band_for("prefill_tokens_per_s", band)),
                     show_plain(f["decode_tokens_per_s"], band_for("decode_tokens_per_s", band), 1),
                     show_plain(f["ttft_ms"], band_for("ttft_ms", band))]
        quality = f"{-r['quality']:.3f}" if proxy or law else f"{r['quality']:.4g}"
        found = "proxy" if proxy else "exact" if r["found_by"] == schema.FOUND_BY_EXACT else "search"
        line += [quality, r["arch_id"], found]
        body.append(line)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    left = {1, 2, 3, 4, len(head) - 2, len(head) - 1}

    def fmt(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    notes = [f"speeds{f' @{t}' if len(targets) > 1 else ''}: {legend(bands[t])}" for t in targets if t in bands]
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body] + notes)


def decode_text(decode: float | None, rel: float | None, target: str) -> str:
    """A pick's predicted decode speed with its error band, as the recommendation prints it."""
    if decode is None:
        return f"no decode speed recorded on {target}"
    return f"{show(decode, rel, 1)} tokens/s decode on {target}"


def recommend(rows: list[dict[str, Any]], target: str, study: str, storage: str | None,
              band: dict[str, Any] | None = None, tie: float | None = None, unit: str = "bits/byte",
              tie_what: str = "the seed noise") -> dict[str, Any] | None:
    """The three picks of a Pareto set (`nas.study.pareto.picks`, on decode tokens/s on `target`), with why, the
    predicted decode speed as text with its error band (`band`, `nas.latency.uncertainty`) and the command
    that exports each. `tie`: the quality's noise or band (`unit`; `tie_what` names it), below which qualities
    tie."""
    rows = [r for r in rows if target in r["targets"]]
    if not rows:
        return None
    speeds = [r["targets"][target]["decode_tokens_per_s"] for r in rows]
    qualities = [r["quality"] for r in rows]
    chosen = picks(list(range(len(rows))), speeds, qualities, tie=tie or 0.0)
    where = [] if storage in (None, "sqlite:///runs/nas.db") else ["--storage", storage]
    exportable = storage not in MEMORY_STORAGES  # an in-memory study is gone when the search ends
    out = {}
    for name, i in chosen.items():
        row = rows[i]
        command = ["nas", "export", *where, "--study", study, "--trial", str(row["trial"]), "--format", "hf",
                   "--out", f"{study.replace(':', '-')}-{name}"]
        decode = row["targets"][target]["decode_tokens_per_s"]
        rel = band_for("decode_tokens_per_s", band)
        why = PICK_REASONS[name] + (f" ({TIE_NOTE.format(tie=tie, unit=unit, what=tie_what)})"
                                    if tie and name != "fastest" else "")
        if tie and name != "fastest" and all_tied(speeds, qualities, tie):
            why = ALL_TIED.format(tie=tie, unit=unit, what=tie_what)
        out[name] = {"trial": row["trial"], "shape": row["shape"], "arch_id": row["arch_id"], "why": why,
                     "num_params": row.get("num_params"), "num_layers": row.get("arch", {}).get("num_layers"),
                     "quality": row["quality"], "quality_source": row.get("quality_source"),
                     "decode_tokens_per_s": decode, "decode_error": rel,
                     "decode_text": decode_text(decode, rel, target),
                     "export": shlex.join(command) if exportable else None}
    return {"target": target, "study": study, "quality_noise": tie, "tie_unit": unit, "picks": out}
