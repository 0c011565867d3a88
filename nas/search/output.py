"""What a search prints: Pareto rows from stored trials, a readable subset of them, and the text table."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nas.study import schema as S
from nas.study.schema import FOUND_BY_EXACT, FOUND_BY_SAMPLER


def pareto_row(trial, objectives) -> dict[str, Any]:
    """One Pareto-table row from a trial's user attrs (the same data --json prints)."""
    a = trial.user_attrs
    return {
        "trial": trial.number,
        "arch_id": a[S.ARCH_ID],
        "shape": a[S.SHAPE],
        "attention": a[S.ATTENTION_TYPE],
        "num_params": a[S.NUM_PARAMS],
        "num_non_embedding_params": a[S.NUM_NON_EMBEDDING_PARAMS],
        "quality": a[S.QUALITY],
        "quality_source": a[S.QUALITY_SOURCE],
        "found_by": a.get(S.FOUND_BY, FOUND_BY_SAMPLER),
        "targets": {t: {k: p[k] for k in ("prefill_ms", "ttft_ms", "prefill_tokens_per_s", "decode_ms",
                                          "decode_tokens_per_s", "memory_mb", "latency_source")}
                    for t, p in a[S.PREDICTIONS].items()},
        "objectives": {o.label: v for o, v in zip(objectives, trial.values)},
        "arch": a[S.ARCH],
    }


def pick_rows(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most `limit` rows spread evenly along the front (first and last kept); limit <= 0: all."""
    if limit <= 0 or len(rows) <= limit:
        return rows
    if limit == 1:
        return rows[:1]
    index = np.unique(np.round(np.linspace(0, len(rows) - 1, limit)).astype(int))
    return [rows[i] for i in index]


def format_table(rows: list[dict[str, Any]], targets: Sequence[str]) -> str:
    """The Pareto set as a fixed-width text table (best quality first)."""
    head = ["trial", "shape", "attn", "ffn", "tied", "params", "non-emb"]
    for t in targets:
        suffix = f"@{t}" if len(targets) > 1 else ""
        head += [f"mem MB{suffix}", f"prefill t/s{suffix}", f"decode t/s{suffix}", f"TTFT ms{suffix}"]
    proxy = bool(rows) and all(r["quality_source"] == S.QUALITY_PROXY for r in rows)
    head += ["bits/byte" if proxy else "quality", "arch id", "found by"]
    body = []
    for r in rows:
        line = [str(r["trial"]), r["shape"], r["attention"], r["arch"]["ffn_kind"],
                "yes" if r["arch"]["tie_embeddings"] else "no", _millions(r["num_params"]),
                _millions(r["num_non_embedding_params"])]
        for t in targets:
            f = r["targets"][t]
            line += [f"{f['memory_mb']:.0f}", f"{f['prefill_tokens_per_s']:.0f}", f"{f['decode_tokens_per_s']:.1f}",
                     f"{f['ttft_ms']:.0f}"]
        quality = f"{-r['quality']:.3f}" if proxy else f"{r['quality']:.4g}"
        found = "proxy" if proxy else "exact" if r["found_by"] == FOUND_BY_EXACT else "search"
        line += [quality, r["arch_id"], found]
        body.append(line)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    left = {1, 2, 3, 4, len(head) - 2, len(head) - 1}

    def fmt(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def _millions(n: float) -> str:
    return f"{n / 1e6:.1f}M"
