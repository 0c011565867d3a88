"""What `nas search` recommends, and why (`recommendation`): the picks of the predicted-loss front under the law
(losses within its band tie), what the knee trades, the best shape at fixed speeds, how stable the knee is,
where published models sit, and what the proxy check on the user's text says and moves (`nas.search.advice`);
with --quality params, the picks of the proxy front or of the parameter-count front."""

from __future__ import annotations

from typing import Any

from nas.core.arch import ArchBatch, ArchConfig
from nas.search import advice
from nas.search.latency_stage import LatencyStage, SearchResult
from nas.search.output import decode_text, recommend
from nas.study import schema
from nas.study.read import failure_reason


def law_picks(result: SearchResult, stage: LatencyStage, storage_arg: str | None,
              exclude: frozenset = frozenset()) -> dict[str, Any] | None:
    """The three picks of the latency stage's front under the law (losses within its band tie)."""
    target = result.meta.targets[0]
    rows = [r for r in result.pareto if r["arch_id"] not in exclude]
    rec = recommend(rows, target, result.study_name, storage_arg,
                    result.meta.latency_errors.get(target), tie=stage.problem.quality_model.band,
                    unit="nats", tie_what="the quality law's band")
    if rec is not None:
        by_id = {r["arch_id"]: r for r in rows}
        for pick in rec["picks"].values():
            pick["predicted_loss"] = -pick["quality"]
            pick["arch"] = by_id[pick["arch_id"]]["arch"]
    return rec

def recommendation(result: SearchResult, stage: LatencyStage, storage_arg: str | None,
                   storage) -> dict[str, Any] | None:
    """What nas recommends, and why: with the law, the picks of the predicted-loss front, what the knee
    trades, the best shape at fixed speeds, how stable the knee is, where published models sit and what the
    proxy check on the user's text says (and moves, by `advice.proxy_move`); with --quality params, the picks
    of the proxy front (its seed noise as the tie) or of the parameter-count front. `storage_arg`: the --storage
    the user gave (for the export commands); `storage`: the opened storage (to read the proxy stage)."""
    target = result.meta.targets[0]
    law = stage.problem.quality_model
    if law is None:
        proxy = result.proxy
        final = proxy.pareto if proxy is not None and proxy.pareto else result.pareto
        study = proxy.study_name if final is not result.pareto else result.study_name
        noise = proxy.noise if final is not result.pareto else None
        return recommend(final, target, study, storage_arg, result.meta.latency_errors.get(target),
                         noise)
    scores = _proxy_scores(result, law, storage)
    failed = frozenset(s.arch_id for s in scores if s.state == "FAIL")
    rec = law_picks(result, stage, storage_arg, failed)
    if rec is None:
        return None
    table = stage.shape_table(target)
    picks = rec["picks"]
    knee = picks["knee"]
    rec["band_nats"] = law.band
    rec["train_tokens"] = law.train_tokens
    rec["fixed_speeds"] = advice.fixed_speed_picks(table, law.band)
    row = table.batch.index_of(ArchConfig.from_dict(knee["arch"]))
    rec["stability"] = advice.knee_stability(table, law, row) if row is not None else {"fits": 0}
    rec["landmarks"] = advice.landmark_matches(stage.problem.landmark_rows(target), table)
    rec["skipped_failed"] = sorted(failed)
    if result.proxy is not None:
        _proxy_check(rec, result, scores, law.band)
    rec["trade"] = advice.trade_words(picks["knee"], picks["best-quality"], picks["fastest"], law.band)
    for pick in picks.values():
        pick.pop("arch", None)
    return rec

def _proxy_check(rec: dict[str, Any], result: SearchResult, scores: list[advice.ProxyScore], band: float) -> None:
    """The law checked on the user's text, and the picks it moves (`advice.proxy_move`)."""
    noise, picks = result.proxy.noise, rec["picks"]
    rec["law_check"] = advice.law_check(scores, noise, band)
    for name in ("knee", "best-quality"):
        moved, why = advice.proxy_move(picks[name]["arch_id"], scores, noise, band)
        if moved is not None:
            picks[name] = {**picks[name], "moved_from": picks[name]["shape"], "shape": moved.shape,
                           "arch_id": moved.arch_id, "why": why, "predicted_loss": moved.predicted_loss,
                           "trial": moved.trial, "study": result.proxy.study_name,
                           "decode_tokens_per_s": moved.decode_tokens_per_s,
                           "decode_text": decode_text(moved.decode_tokens_per_s, picks[name]["decode_error"],
                                                      rec["target"]),
                           "export": picks[name]["export"] and picks[name]["export"].replace(
                               f"--study {result.study_name} --trial {picks[name]['trial']}",
                               f"--study {result.proxy.study_name} --trial {moved.trial}")}

def _proxy_scores(result: SearchResult, quality_model, storage) -> list[advice.ProxyScore]:
    """Every proxy trial that ended, with the law's prediction for its shape (empty without a proxy stage)."""
    if result.proxy is None:
        return []
    import optuna

    target = result.meta.targets[0]
    study = optuna.load_study(study_name=result.proxy.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    out = []
    for t in trials:
        if t.state.name not in ("COMPLETE", "PRUNED", "FAIL") or not schema.TrialRecord.present_in(t.user_attrs):
            continue
        rec = schema.TrialRecord.from_user_attrs(t.user_attrs)
        loss = float(quality_model.predict(ArchBatch.from_configs([rec.arch]))[0])
        fig = rec.figures.get(target)
        bpb = None if t.state.name == "FAIL" else rec.loss
        reason = (failure_reason(t, trials) if t.state.name == "FAIL"
                  else str(t.user_attrs.get(schema.PRUNE_REASON, "")))
        out.append(advice.ProxyScore(rec.arch.arch_id, rec.arch.short_tag, t.state.name, bpb, loss,
                              None if fig is None else fig.decode_tokens_per_s, t.number, reason))
    return out
