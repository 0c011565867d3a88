"""The proxy stage end to end on tiny proxies: planning, rungs, halving, failures, resuming, dead workers."""

from __future__ import annotations

import math
import os

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.proxy.scaling import ProxyRule
from nas.proxy.train import TrainSettings
from nas.search import ProxyOptions, Search, SearchSettings
from nas.search.proxy_stage import ProxyWorker
from nas.study import schema

TINY_TRAIN = TrainSettings(batch_size=4, seq_len=32, warmup_tokens=128, eval_windows=4, curve_every=2)
TINY = ProxyOptions(shapes=5, rung_tokens=(256, 768), rule=ProxyRule(shrink=4, head_dim=8), train=TINY_TRAIN,
                    threads=1)


def run(tmp_path, proxy=TINY, study="p", storage=None, **kw):
    storage = storage or f"sqlite:///{tmp_path / 'nas.db'}"
    settings = SearchSettings(targets=("pixel8",), space="tiny", trials=20, storage=storage, study=study, seed=1, **kw)
    return Search(settings, proxy=proxy, log=lambda _: None).run(progress=False), storage


def test_proxy_stage_trains_prunes_and_fronts(tmp_path):
    result, storage = run(tmp_path)
    summary = result.proxy
    study = optuna.load_study(study_name=schema.proxy_study_name("p"), storage=storage)
    assert study.directions[0].name == "MINIMIZE" and study.directions[1].name == "MAXIMIZE"
    assert study.metric_names == ["proxy_bpb", "decode_tokens_per_s@pixel8"]
    plan = study.user_attrs[schema.STUDY_PROXY_PLAN]
    assert len(plan["arch_ids"]) == 5 == summary.chosen and plan["candidates"] > 100
    trials = study.get_trials(deepcopy=False)
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert sorted(t.user_attrs[schema.ARCH_ID] for t in trials) == sorted(plan["arch_ids"])  # each shape once
    assert summary.outcome.done and summary.outcome.trained == 5
    for t in trials:
        assert 0 in t.intermediate_values and math.isfinite(t.intermediate_values[0])
        assert t.user_attrs[schema.QUALITY_SOURCE] == "proxy_bpb"
        assert t.user_attrs[schema.PROXY_ARCH]["vocab_size"] == 256
        history = t.user_attrs[schema.PROXY_HISTORY]
        assert history[0]["decision"]["peers"] == 5  # one worker: every rung-0 decision saw the whole rung
        if t.state == TrialState.PRUNED:
            assert t.user_attrs[schema.PRUNED_AT_RUNG] == 0 and "dominated" in t.user_attrs[schema.PRUNE_REASON]
            assert 1 not in t.intermediate_values and len(history) == 1
        else:
            assert t.values[0] == t.intermediate_values[1]
            assert t.values[1] == t.user_attrs[schema.PROXY_SPEED][0]
            each = history[1]["val_bpb_each"]  # the last rung: two seeds (the default final seeds), their mean
            assert len(each) == 2 and each[0] != each[1] and history[1]["val_bpb"] == pytest.approx(sum(each) / 2)
            assert len(history[0]["val_bpb_each"]) == 1
    assert summary.pareto and all(r["quality_source"] == "proxy_bpb" for r in summary.pareto)
    assert len(summary.pruned) == sum(t.state == TrialState.PRUNED for t in trials)
    kept = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 2 <= len(kept) <= 4  # halving: the rung's front, at least the best ceil(5 / 3)
    from nas.study.read import read_study, seed_noise

    spreads = sorted(abs(a - b) for t in kept for a, b in [t.user_attrs[schema.PROXY_HISTORY][-1]["val_bpb_each"]])
    assert summary.noise == pytest.approx(float(np.median(spreads))) and summary.noise > 0
    assert read_study(study).quality_noise == summary.noise == seed_noise(t.user_attrs for t in kept)


def test_resume_trains_nothing_twice_and_refuses_other_settings(tmp_path):
    first, storage = run(tmp_path)
    again, _ = run(tmp_path)
    study = optuna.load_study(study_name=schema.proxy_study_name("p"), storage=storage)
    assert len(study.get_trials(deepcopy=False)) == 5 and again.proxy.outcome.trained == 0
    from nas.core.errors import NasUserError

    other = ProxyOptions(**{**TINY.__dict__, "rung_tokens": (512, 1024)})
    with pytest.raises(NasUserError,  # the clash names the setting and both values
                       match=r"trained with other settings \(proxy\.rung_tokens: 256, 768 there, 512, 1024 here"):
        run(tmp_path, proxy=other)


def test_a_diverging_shape_fails_its_trial_and_the_search_goes_on(tmp_path):
    wild = ProxyOptions(**{**TINY.__dict__, "train": TrainSettings(**{**TINY_TRAIN.to_dict(), "lr": 1e2,
                                                                      "clip": 1e9})})
    result, _ = run(tmp_path, proxy=wild)
    assert result.proxy.failed and all("ProxyDiverged" in f["reason"] for f in result.proxy.failed)
    assert result.proxy.outcome.done and result.pareto  # the latency stage's front is still there


def test_a_dead_workers_trial_is_failed_and_queued_again(tmp_path):
    """Journal storage (no heartbeats in Optuna): a RUNNING trial whose worker process is gone is requeued."""
    log = str(tmp_path / "nas.log")
    settings = SearchSettings(targets=("pixel8",), space="tiny", trials=20, storage=log, study="j", seed=1)
    search = Search(settings, proxy=TINY, stage="latency", log=lambda _: None)
    search.run(progress=False)
    storage = search.storage
    study = optuna.load_study(study_name=schema.proxy_study_name("j"), storage=storage)
    worker = ProxyWorker(storage, schema.proxy_study_name("j"), TINY, ["maximize"], progress=False)
    frozen, trial_id = worker.claim(study)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    storage.set_trial_user_attr(trial_id, schema.PROXY_WORKER, f"{os.uname().nodename}:{dead}")
    outcome = worker.run()
    trials = study.get_trials(deepcopy=False)
    assert outcome.done and trials[frozen.number].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == frozen.number]
    assert len(retried) == 1 and retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retried[0].user_attrs[schema.ARCH_ID] == frozen.user_attrs[schema.ARCH_ID]


def test_cli_prints_both_fronts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--target", "pixel8", "--space", "tiny", "--trials", "15", "--no-progress", "--no-report",
                 "--proxy-shapes", "3", "--proxy-tokens", "4096,8192", "--proxy-threads", "1", "--json"])
    import json

    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["pareto"] and data["proxy"]["chosen"] == 3
    assert data["proxy"]["pareto"] and data["proxy"]["done"]


def test_default_name_with_other_proxy_settings_gets_a_study_of_its_own(tmp_path):
    """The README tour's `nas search --target pixel8 --data my_texts/` after the quickstart: the default study's
    proxy stage was trained otherwise, so these settings get `<name>-<digest>` (and resume it the next time)."""
    storage = f"sqlite:///{tmp_path / 'nas.db'}"
    settings = SearchSettings(targets=("pixel8",), space="tiny", trials=20, storage=storage, seed=1)
    said: list[str] = []
    first = Search(settings, proxy=TINY, log=said.append).run(progress=False)
    other = ProxyOptions(**{**TINY.__dict__, "eta": 2.0})
    second = Search(settings, proxy=other, log=said.append).run(progress=False)
    assert first.study_name == "pixel8-tiny" and second.study_name.startswith("pixel8-tiny-")
    assert any("proxy stage trained with other settings" in line and "eta" in line for line in said)
    assert second.proxy.outcome.trained == 5
    again = Search(settings, proxy=other, log=lambda _: None).run(progress=False)
    assert again.study_name == second.study_name and again.proxy.outcome.trained == 0


def test_the_laws_picks_are_trained_first_never_halved_and_checked(tmp_path):
    result, storage = run(tmp_path)
    study = optuna.load_study(study_name=schema.proxy_study_name("p"), storage=storage)
    trials = study.get_trials(deepcopy=False)
    rec = result.recommendation
    picks = {p["arch_id"] for p in rec["picks"].values()}
    marked = {t.user_attrs[schema.ARCH_ID] for t in trials if t.user_attrs.get(schema.PROXY_PICK)}
    assert picks == marked and picks <= set(study.user_attrs[schema.STUDY_PROXY_PLAN]["arch_ids"])
    for t in trials:
        if t.user_attrs.get(schema.PROXY_PICK):  # halving never stops a pick: the check needs its last-rung score
            assert t.state == TrialState.COMPLETE
    check = rec["law_check"]
    assert check["trained"] == sum(t.state == TrialState.COMPLETE for t in trials)
    assert check["seed_noise_bpb"] == result.proxy.noise and check["band_nats"] == rec["band_nats"]
    assert {s["arch_id"] for s in check["shapes"]} == {t.user_attrs[schema.ARCH_ID] for t in trials}
    assert rec["fixed_speeds"] and rec["landmarks"] and rec["stability"]["fits"] > 0
    for name, pick in rec["picks"].items():  # the picks of the predicted-loss front, or moved by the one rule
        assert "predicted_loss" in pick and ("moved_from" not in pick or "moved by the proxy check" in pick["why"])


def test_quality_params_keeps_the_parameter_count_and_the_proxy_front(tmp_path):
    result, _ = run(tmp_path, study="q", quality="params")
    assert result.meta.quality == {"source": "non_embedding_params"}
    assert [o.label for o in result.meta.objectives][0] == "quality"
    rec = result.recommendation
    assert rec["study"] == schema.proxy_study_name("q") and "law_check" not in rec
    assert all(r["quality_source"] == "non_embedding_params" for r in result.pareto)
