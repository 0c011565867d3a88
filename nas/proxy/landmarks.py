"""Published models trained as proxies, so that they sit on a proxy-quality front where they belong
(`nas report --landmark-quality` trains them; the report only reads the stored scores).

A proxy study's quality is held-out bits per byte of proxies trained under one rule, budget and corpus; a
landmark (`reports/landmarks.toml`) gets a comparable score only from the same procedure. `train_landmarks`
reads the proxy study's settings (`StudyMeta.proxy`, i.e. `ProxyOptions.identity`), trains each landmark's
proxy straight to the last rung's budget with the seeds the study's finalists had (its `final_seeds`, or
`repeats` when larger: a proxy's stable phase does not depend on the rungs it passed, so this is the same
score a finalist gets), and stores the results on the proxy study (STUDY_LANDMARK_PROXY), one landmark at a
time, so an interrupted run resumes and a second report trains nothing (`nas.study.read.landmark_scores`
reads them back).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

import numpy as np

from nas.core.arch import ArchConfig
from nas.core.errors import NasUserError
from nas.proxy.corpus import load_corpus
from nas.proxy.scaling import ProxyRule
from nas.proxy.train import ProxyDiverged, ProxyTrainer, TrainSettings
from nas.study.read import landmark_scores, settings_digest
from nas.study.schema import STUDY_LANDMARK_PROXY, StudyMeta


def train_landmarks(proxy_study, landmarks: Sequence[tuple[str, ArchConfig, str]], data: str | None = None,
                    threads: int | None = None, progress: bool = True,
                    log: Callable[[str], None] | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """Train every landmark's proxy that has no valid stored score (see the module docstring); returns the
    scores by landmark name and how many were trained now. `data`: the text the study was trained on when it
    was not the shipped corpus."""
    import torch

    log = log or (lambda line: print(line, file=sys.stderr))
    meta = StudyMeta.from_user_attrs(proxy_study.user_attrs)
    if meta is None or not meta.proxy:
        raise NasUserError(f"study {proxy_study.study_name!r} has no proxy settings to train landmarks with")
    identity = meta.proxy
    corpus = load_corpus(data)
    if corpus.sha256 != identity["corpus_sha256"]:
        hint = "pass the --data it was searched with" if data is None else "this is other text"
        raise NasUserError(f"the proxy study was trained on {identity['corpus']!r} (sha256 "
                           f"{identity['corpus_sha256'][:12]}), not on {corpus.name!r}: {hint}")
    rule = ProxyRule(**identity["rule"])
    rungs = list(identity["rung_tokens"])
    seeds = max(int(identity.get("repeats", 1)), int(identity.get("final_seeds", 1)))
    digest = settings_digest(identity)
    scores = dict(proxy_study.user_attrs.get(STUDY_LANDMARK_PROXY) or {})
    todo = [(name, arch) for name, arch, _ in landmarks
            if scores.get(name, {}).get("settings") != digest or scores[name].get("arch_id") != arch.arch_id]
    if not todo:
        return landmark_scores(proxy_study), 0
    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.use_deterministic_algorithms(True)
    bar = _bar(len(todo), progress)
    for name, arch in todo:
        base = TrainSettings(**identity["train"])
        results, reason = [], None
        for seed in range(seeds):
            settings = TrainSettings(**{**base.to_dict(), "seed": base.seed + seed})
            try:
                results.append(ProxyTrainer(arch, corpus, rule, settings).train_to(rungs[-1], len(rungs) - 1))
            except ProxyDiverged as exc:
                reason = f"ProxyDiverged: {exc}"
                break
        row = {"arch_id": arch.arch_id, "settings": digest, "tokens": rungs[-1]}
        if reason is None:
            row |= {"val_bpb": float(np.mean([r.val_bpb for r in results])),
                    "val_bpb_each": [float(r.val_bpb) for r in results],
                    "seconds": round(sum(r.seconds for r in results), 1)}
        else:
            row["failed"] = reason
            log(f"landmark {name}: its proxy failed ({reason})")
        scores[name] = row
        proxy_study.set_user_attr(STUDY_LANDMARK_PROXY, scores)  # one at a time: an interrupted run resumes
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return landmark_scores(proxy_study), len(todo)


def _bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="landmark proxies", unit="model", file=sys.stderr, dynamic_ncols=True)
