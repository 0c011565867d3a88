"""nas search: objectives, constraints, Pareto/hypervolume maths, the Optuna study it writes, and the CLI.

Real targets (pixel8, iphone15pro: analytic latency), real spaces (tiny, or a small file written here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from nas.core.errors import NasUserError
from nas.search import MAX_ASKS_PER_TRIAL, LatencyStage, SearchSettings
from nas.search.sampling import AskTell
from nas.study.pareto import to_minimisation
from nas.study.schema import FOUND_BY_EXACT
from tests.helpers import brute_pareto_mask

REPO = Path(__file__).resolve().parents[2]


def settings(**kw) -> SearchSettings:
    base = dict(targets=("pixel8",), space="tiny", trials=40, storage=":memory:", seed=3)
    base.update(kw)
    return SearchSettings(**base)


def quiet_search(**kw) -> LatencyStage:
    return LatencyStage(settings(**kw), log=lambda _: None)


def ctrl_c_at(monkeypatch, n: int) -> None:
    """Ctrl-C arrives during the n-th evaluation of the ask/tell loop."""
    real, calls = AskTell._objective, []

    def objective(self, trial):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(self, trial)

    monkeypatch.setattr(AskTell, "_objective", objective)


def test_trials_carry_records_and_constraints():
    from nas.core.arch import ArchBatch
    from nas.quality.model import load_quality_model
    from nas.study.schema import QUALITY_LAW, TrialRecord

    law = load_quality_model()
    search = quiet_search(trials=20)
    result = search.run(progress=False)
    trials = search.loop.working.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert complete and result.pareto
    for t in complete:
        rec = TrialRecord.from_user_attrs(t.user_attrs)
        assert rec.arch.arch_id == t.user_attrs["arch_id"]
        assert rec.quality_source == QUALITY_LAW and rec.loss == -rec.quality
        assert rec.loss == pytest.approx(law.predict(ArchBatch.from_configs([rec.arch]))[0])
        assert rec.figures["pixel8"].latency_source.startswith("analytic, fitted to ")  # published_fit.json
        assert set(t.constraints) == {"memory@pixel8", "space"}
        assert t.values[0] == pytest.approx(rec.loss)  # the objective is the predicted loss, minimised
        assert t.values[1] == pytest.approx(rec.figures["pixel8"].decode_tokens_per_s)
    meta = search.loop.working.user_attrs["nas_meta"]
    assert meta["targets"] == ["pixel8"] and meta["space"] == "tiny"
    assert meta["quality"]["source"] == QUALITY_LAW and meta["quality"]["fingerprint"] == law.fingerprint
    assert meta["quality"]["train_tokens"] == 10**12 and meta["quality"]["band_nats"] == law.band
    assert search.loop.working.user_attrs["nas_exact"]["front_size"] == len(result.exact.arch_ids)


def test_exact_front_is_enqueued_and_study_front_is_exact():
    search = quiet_search(trials=15)
    result = search.run(progress=False)
    # The Pareto set is the exact front, twins (identical objective values) shown once with the others listed; the
    # exact stage adds one member of each twin group (the one a user would choose).
    shown = sorted(a for r in result.pareto for a in [r["arch_id"], *r["twins"]])
    assert set(result.exact.arch_ids) <= set(shown) and len(result.pareto) == len(result.exact.arch_ids)
    assert result.exact.twins > 0 and len(set(map(tuple, result.exact.values))) == len(result.exact.arch_ids)
    assert result.exact_added >= sum(r["found_by"] == FOUND_BY_EXACT for r in result.pareto)
    assert 0 < result.hypervolume_ratio <= 1.0 + 1e-9
    exact_trials = [t for t in search.loop.working.get_trials(deepcopy=False)
                    if t.user_attrs.get("found_by") == FOUND_BY_EXACT]
    assert len(exact_trials) == result.exact_added > 0
    for t in exact_trials:  # sampler params that rebuild the same shape, so the dashboard can show them
        assert search.problem.space.build(t.params).arch_id == t.user_attrs["arch_id"]
    # The exact front equals a brute-force front over the enumerated space.
    exact = search.exact
    batch = search.problem.space.enumerate()
    values = search.problem.figures(batch).values(search.problem.objectives)
    brute = brute_pareto_mask(to_minimisation(values, search.problem.directions))
    assert len(np.unique(values[brute], axis=0)) == len(np.unique(exact.values, axis=0))


def test_duplicates_are_never_evaluated_twice():
    search = quiet_search(trials=60, population=10)  # tiny has 327 configs: duplicates are certain
    search.run(progress=False)
    trials = [t for t in search.loop.working.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
              and t.user_attrs.get("found_by") != FOUND_BY_EXACT]
    dups = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert dups, "expected the sampler to propose some shape twice"
    ids = [t.user_attrs["arch_id"] for t in trials if "duplicate_of" not in t.user_attrs]
    assert len(ids) == len(set(ids)) == search.loop.evaluations
    by_number = {t.number: t for t in search.loop.working.get_trials(deepcopy=False)}
    for t in dups:
        first = by_number[t.user_attrs["duplicate_of"]]
        assert first.user_attrs["arch_id"] == t.user_attrs["arch_id"] and first.values == t.values
    assert sum(bool(t.user_attrs.get("counted")) for t in trials) == 60


def test_converged_sampler_stops_early():
    search = quiet_search(trials=300, population=10, exact=False)  # NSGA-II converges long before 300
    result = search.run(progress=False)
    assert result.trials_new < 300 and result.notes[0].startswith("stopped early")
    assert search.loop.asked <= MAX_ASKS_PER_TRIAL * 300 + 100


def test_seeded_runs_repeat():
    def run(seed):
        search = quiet_search(trials=30, seed=seed)
        result = search.run(progress=False)
        trials = search.loop.working.get_trials(deepcopy=False)
        return [t.params for t in trials], sorted((r["trial"], r["arch_id"]) for r in result.pareto)

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first[0] != other[0]


def test_invalid_combination_fails_alone(tmp_path):
    space = tmp_path / "gappy.toml"
    space.write_text(
        'name = "gappy"\ndescription = "head_dim 128 leaves gaps"\n'
        "[dimensions]\nhidden_size = { min = 64, max = 384, step = 64 }\nnum_layers = [2, 4]\n"
        'head_dim = [64, 128]\nffn_ratio = [2.0, 4.0]\n[fixed]\nvocab_size = 512\nmax_seq_len = 256\n')
    search = quiet_search(space=str(space), trials=25, population=10)
    result = search.run(progress=False)
    failed = [t for t in search.loop.working.get_trials(deepcopy=False) if t.state.name == "FAIL"]
    assert failed, "hidden sizes not divisible by 128 with head_dim 128 must fail their trials"
    assert all("not divisible" in t.user_attrs["fail_reason"] or "divid" in t.user_attrs["fail_reason"]
               for t in failed)
    assert result.trials_total == 25 and result.pareto


def test_constraints_mark_infeasible_trials_with_reasons():
    search = quiet_search(trials=40, max_ttft_ms=1.5, exact=False)
    result = search.run(progress=False)
    trials = [t for t in search.loop.working.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    infeasible = [t for t in trials if t.constraints["ttft@pixel8"] > 0]
    assert infeasible and all(not t.user_attrs["feasible"] for t in infeasible)
    assert any("TTFT" in v and "> 1.5 ms on pixel8" in v for t in infeasible for v in t.user_attrs["violations"])
    assert all(r["targets"]["pixel8"]["ttft_ms"] <= 1.5 for r in result.pareto)


def test_params_budget_mode():
    search = quiet_search(trials=30, params="1M:2M")
    result = search.run(progress=False)
    assert result.pareto and all(1e6 <= r["num_params"] <= 2e6 for r in result.pareto)


def test_multi_target_each_and_worst():
    each = quiet_search(targets=("pixel8", "iphone15pro"), trials=20)
    assert [o.label for o in each.problem.objectives] == ["predicted_loss", "decode_tokens_per_s@pixel8",
                                                  "decode_tokens_per_s@iphone15pro"]
    result = each.run(progress=False)
    assert all(set(r["targets"]) == {"pixel8", "iphone15pro"} for r in result.pareto)
    worst = quiet_search(targets=("pixel8", "iphone15pro"), trials=20, multi_target="worst")
    result = worst.run(progress=False)
    for r in result.pareto:
        assert r["objectives"]["decode_tokens_per_s@worst"] == pytest.approx(
            min(f["decode_tokens_per_s"] for f in r["targets"].values()))


def test_impossible_constraint_is_refused_before_searching():
    with pytest.raises(NasUserError, match=r"no config in space 'tiny' meets --min-decode-tps .* the closest is L\d+"):
        quiet_search(min_decode_tps=1e7).run(progress=False)
    with pytest.raises(NasUserError, match="--max-memory-mb"):
        quiet_search(max_memory_mb=0.5).run(progress=False)


def test_unknown_names_are_one_line_errors():
    for kw, pattern in [({"targets": ("pixel9",)}, "'pixel9' is not a known target"),
                        ({"space": "huge"}, "huge"),
                        ({"sampler": "cmaes"}, "unknown sampler 'cmaes'; known: nsga2, tpe, gp, random"),
                        ({"objectives": ["quality", "joy"]}, "unknown objective 'joy'")]:
        with pytest.raises(NasUserError, match=pattern):
            quiet_search(**kw)


@pytest.mark.parametrize("url, pattern", [
    ("runs/nas.db", "is not a database URL"),
    ("sqlite:///{tmp}/a-file/x/nas.db", "cannot create the folder"),
    ("postgresql://nobody@127.0.0.1:1/none", "cannot open study storage"),
    ("mysql+nodriver://x/y", "cannot open study storage"),
])
def test_bad_storage_is_one_line(tmp_path, url, pattern):
    (tmp_path / "a-file").write_text("")
    url = url.format(tmp=tmp_path)
    with pytest.raises(NasUserError, match=pattern):
        quiet_search(storage=url, trials=2).run(progress=False)


# ---------------------------------------------------------------------------------------------- storage
def test_sqlite_resume_continues_and_refuses_other_settings(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'nas.db'}"
    first = quiet_search(storage=url, trials=10, study="s").run(progress=False)
    assert first.trials_new == 10
    again = quiet_search(storage=url, trials=16, study="s").run(progress=False)
    assert again.trials_new == 6 and again.trials_total == 16
    done = quiet_search(storage=url, trials=16, study="s").run(progress=False)
    assert done.trials_new == 0 and done.pareto
    study = optuna.load_study(study_name="s", storage=url)
    trials = study.get_trials(deepcopy=False)
    assert sum(bool(t.user_attrs.get("counted")) for t in trials) == 16
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    ids = [t.user_attrs["arch_id"] for t in trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert len(ids) == len(set(ids)), "a resumed run re-evaluated a shape"
    with pytest.raises(NasUserError, match=r"study 's' .* other settings \(prompt_len: 512 there, 256 here\)"):
        quiet_search(storage=url, trials=16, study="s", prompt_len=256).run(progress=False)
    with pytest.raises(NasUserError, match=r"targets: pixel8 there, iphone15pro here"):
        quiet_search(storage=url, trials=16, study="s", targets=("iphone15pro",)).run(progress=False)


def test_ctrl_c_keeps_finished_trials(tmp_path, monkeypatch):
    import optuna

    url = f"sqlite:///{tmp_path / 'nas.db'}"
    search = quiet_search(storage=url, trials=50, study="s", exact=False)
    ctrl_c_at(monkeypatch, 8)
    result = search.run(progress=False)
    assert result.interrupted and result.pareto
    stored = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    assert len(stored) == 7 and all(t.state.name != "RUNNING" for t in stored)


def test_kill_9_loses_no_finished_trial(tmp_path):
    import optuna

    db = tmp_path / "nas.db"
    # The schema exists before the search starts: this test's polling reader must not race the search to create
    # the tables of a fresh SQLite file (a race that is not what this test is about).
    optuna.storages.RDBStorage(f"sqlite:///{db}")
    cmd = [sys.executable, "-m", "nas", "search", "--no-proxy", "--target", "pixel8", "--space", "subbillion",
           "--trials", "5000",
           "--storage", f"sqlite:///{db}", "--study", "k", "--no-report", "--no-progress", "--no-exact"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 240  # a loaded 2-core machine starts Python + torch slowly
    n = 0
    while time.time() < deadline and n < 15:
        time.sleep(0.5)
        if db.exists():
            try:
                n = len(optuna.load_study(study_name="k", storage=f"sqlite:///{db}").get_trials(deepcopy=False))
            except Exception:  # noqa: BLE001 -- study not created yet
                n = 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert n >= 15
    stored = optuna.load_study(study_name="k", storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    assert len(stored) >= n and all(t.state.name in ("COMPLETE", "FAIL") for t in stored)
    before = sum(bool(t.user_attrs.get("counted")) for t in stored)
    result = LatencyStage(SearchSettings(targets=("pixel8",), space="subbillion", trials=before + 3, study="k",
                                   storage=f"sqlite:///{db}", exact=False), log=lambda _: None).run(progress=False)
    assert result.trials_new == 3 and result.trials_total == before + 3


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_prints_pareto_table_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--no-proxy", "--target", "pixel8", "--space", "tiny", "--trials", "15", "--no-report",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Pareto set:" in out and "decode t/s" in out and "arch id" in out
    assert "study 'pixel8-tiny' saved in sqlite:///runs/nas.db" in out
    assert (tmp_path / "runs" / "nas.db").is_file()
    code = main(["search", "--no-proxy", "--target", "pixel8", "--space", "tiny", "--trials", "15", "--no-report",
                 "--no-progress",
                 "--json", "--storage", ":memory:"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["pareto"] and data["exact_front"]["front_size"] == len(data["pareto"])
    assert data["quality"]["source"] == "predicted_loss" and data["recommendation"]["band_nats"] > 0
    row = data["pareto"][0]
    assert {"trial", "arch_id", "shape", "attention", "num_params", "quality", "targets", "found_by"} <= set(row)
    assert set(row["targets"]["pixel8"]) >= {"decode_tokens_per_s", "prefill_tokens_per_s", "ttft_ms", "memory_mb"}


def test_cli_writes_report_when_available(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--no-proxy", "--target", "pixel8", "--space", "tiny", "--trials", "10", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    line = next(text for text in out.splitlines() if text.startswith("report: "))
    assert line.endswith("index.html") and Path(line[len("report: "):]).is_file(), line
    # tiny's max_seq_len (256) is below the default lengths: said on stdout and on top of the report
    assert "warning: pixel8: all " in out and "max_seq_len below the lengths" in out
    page = Path(line[len("report: "):]).read_text()
    assert '<div class="warning"><b>Latency extrapolated</b>' in page and "max_seq_len below the lengths" in page


@pytest.mark.parametrize("argv, pattern", [
    (["--target", "pixel9"], "'pixel9' is not a known target"),
    (["--target", "pixel8", "--sampler", "bogus"], "unknown sampler 'bogus'"),
    (["--target", "pixel8", "--objectives", "quality,fun"], "unknown objective 'fun'"),
    (["--target", "pixel8", "--storage", "not-a-url"], "is not a database URL"),
    (["--target", "pixel8", "--min-decode-tps", "1e9"], "the closest is"),
    (["--target", "pixel8", "--params", "5B:6B"], "params"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, pattern):
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--no-proxy", "--space", "tiny", "--trials", "5", "--no-report", "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and pattern in err, err


def test_cli_interrupt_exits_130(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ctrl_c_at(monkeypatch, 5)
    code = main(["search", "--no-proxy", "--target", "pixel8", "--space", "tiny", "--trials", "30", "--no-report",
                 "--no-progress",
                 "--no-exact"])
    out = capsys.readouterr().out
    assert code == 130 and out.startswith("interrupted after") and "Pareto set:" in out


@pytest.mark.parametrize("sampler", ["gp", "tpe", "random"])
def test_every_sampler_runs_a_short_search(sampler):
    """Each --sampler choice evaluates new configs past its random start-up trials (10 for Optuna's GP and TPE;
    gp needs scipy, a declared dependency)."""
    result = quiet_search(sampler=sampler, trials=14).run(progress=False)
    assert result.trials_new == 14 and result.pareto


def test_report_progress_counts_only_the_samplers_trials(tmp_path):
    from nas.report.data import search_progress
    from nas.study.read import load_study, read_study

    url = f"sqlite:///{tmp_path / 's.db'}"
    result = LatencyStage(settings(trials=25, storage=url, study="p"), log=lambda _: None).run(progress=False)
    progress = search_progress(read_study(load_study(url, "p")))
    assert result.exact_added > 0 and progress.exact_added == result.exact_added
    assert progress.values[-1] == pytest.approx(result.hypervolume_ratio)  # the search's own figure
    assert progress.final_with_exact == pytest.approx(1.0)  # with the exact front added: all of it
    assert "exact front" in progress.unit


def test_unwritable_report_dir_is_refused_before_searching(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["search", "--no-proxy", "--target", "pixel8", "--space", "tiny", "--trials", "5", "--no-progress",
                 "--report-dir", str(blocker / "sub")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cannot write the report" in err
    assert not (tmp_path / "runs" / "nas.db").exists()  # nothing was searched or stored


def test_default_study_name_never_clashes_with_other_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["search", "--no-proxy", "--target", "pixel8", "--space", "tiny", "--trials", "5", "--no-report",
            "--no-progress"]
    assert main(base) == 0
    assert main(base + ["--params", "1M:4M"]) == 0  # the README tour's second step: no clash, no dicts
    captured = capsys.readouterr()
    assert "holds a search with other settings (constraints.max_params: none there, 4,000,000 here" in captured.err
    import re

    names = re.findall(r"study '([^']+)' saved", captured.out)
    assert names[0] == "pixel8-tiny" and re.fullmatch(r"pixel8-tiny-[0-9a-f]{8}", names[1])
    assert main(base + ["--params", "1M:4M"]) == 0  # the same settings resume their own study
    assert re.findall(r"study '([^']+)' saved", capsys.readouterr().out) == [names[1]]


def test_stored_trials_show_their_constraints_to_optuna_dashboard(tmp_path):
    """optuna-dashboard 0.21 reads constraints only from the legacy list: the front it draws (feasible by that
    list, non-dominated) must be nas's Pareto set, infeasible trials included in the study."""
    import optuna

    url = f"sqlite:///{tmp_path / 's.db'}"
    search = quiet_search(trials=40, max_ttft_ms=3.0, exact=False, storage=url, study="dash")
    result = search.run(progress=False)
    stored = optuna.load_study(study_name="dash", storage=url).get_trials(deepcopy=False)
    complete = [t for t in stored if t.state.name == "COMPLETE"]
    assert all(t.system_attrs["constraints"] == [t.constraints[k] for k in sorted(("space", "memory@pixel8",
                                                                                   "ttft@pixel8"))]
               for t in complete)
    feasible = [t for t in complete if all(c <= 0 for c in t.system_attrs["constraints"])]
    assert len(feasible) < len(complete)  # the TTFT limit makes some infeasible
    sign = [-1 if o.direction == "maximize" else 1 for o in search.problem.objectives]  # smaller is better after this

    def better_or_equal(u, t):
        return all(a * k <= b * k for a, b, k in zip(u.values, t.values, sign))

    front = {t.user_attrs["arch_id"] for t in feasible
             if not any(better_or_equal(u, t) and u.values != t.values for u in feasible)}
    assert front == {a for r in result.pareto for a in [r["arch_id"], *r.get("twins", [])]}


def test_resume_under_another_latency_model_is_refused_naming_it(tmp_path, monkeypatch, capsys):
    import optuna

    from nas.latency import load_latency_model
    from tests.helpers import device_rows, write_rows

    url = f"sqlite:///{tmp_path / 'nas.db'}"
    first = quiet_search(storage=url, trials=8, study="s")
    first.run(progress=False)
    analytic = load_latency_model("pixel8")
    stored = optuna.load_study(study_name="s", storage=url).user_attrs["nas_meta"]["latency_models"]
    assert stored == {"pixel8": {"fingerprint": analytic.fingerprint(), "provenance": analytic.provenance()}}
    assert analytic.fingerprint() == load_latency_model("pixel8").fingerprint()  # stable across loads

    # pixel8 is calibrated from device measurements: its latency model changes under the study
    assert main(["calibrate", "--target", "pixel8", "--measurements",
                 write_rows(tmp_path / "p8.jsonl", device_rows())]) == 0
    fitted = load_latency_model("pixel8")
    assert fitted.fingerprint() != analytic.fingerprint()
    with pytest.raises(NasUserError) as refused:
        quiet_search(storage=url, trials=16, study="s").run(progress=False)
    line = str(refused.value)
    assert line.startswith(f"study 's' was searched with pixel8's latency model {analytic.fingerprint()} "
                           f"({analytic.provenance()}); now it is {fitted.fingerprint()} (calibrated")
    assert "start a new study (--study NAME)" in line and "\n" not in line
    trials = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    assert sum(bool(t.user_attrs.get("counted")) for t in trials) == 8  # nothing was added under the new model
    capsys.readouterr()
    code = main(["search", "--target", "pixel8", "--space", "tiny", "--trials", "16", "--storage", url,
                 "--study", "s", "--no-proxy", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and "pixel8's latency model" in err and err.count("\n") == 1, err
    # the report draws published models as the search predicted them (the study's own latency model), never with
    # today's: beside the study's points, they come from the same model
    from nas.core.arch import ArchBatch
    from nas.core.landmarks import landmark_configs
    from nas.report.data import compute_report
    from nas.search.settings import DEFAULT_CONTEXT_LEN, DEFAULT_PROMPT_LEN
    from nas.study.read import read_study

    data = compute_report(read_study(optuna.load_study(study_name="s", storage=url)))
    drawn = {lm.name: lm.figures["pixel8"].decode_ms for lm in data.landmarks}
    marks = landmark_configs(DEFAULT_PROMPT_LEN, DEFAULT_CONTEXT_LEN)
    before = analytic.predict(ArchBatch.from_configs([a for _, a, _ in marks]), DEFAULT_PROMPT_LEN,
                              DEFAULT_CONTEXT_LEN)["decode_ms"]
    assert [drawn[name] for name, _, _ in marks] == pytest.approx(list(before), rel=1e-12)
    # a new study under the new model is fine
    assert quiet_search(storage=url, trials=4, study="s2").run(progress=False).trials_new == 4


def test_study_written_before_fingerprints_resumes_and_records_them(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'nas.db'}"
    quiet_search(storage=url, trials=6, study="s").run(progress=False)
    study = optuna.load_study(study_name="s", storage=url)
    meta = dict(study.user_attrs["nas_meta"])
    del meta["latency_models"]
    study.set_user_attr("nas_meta", meta)
    assert quiet_search(storage=url, trials=8, study="s").run(progress=False).trials_new == 2
    assert "latency_models" in optuna.load_study(study_name="s", storage=url).user_attrs["nas_meta"]


def test_extrapolation_warnings_in_the_result_and_json(tmp_path, monkeypatch, capsys):
    from nas.search import DEFAULT_CONTEXT_LEN, DEFAULT_PROMPT_LEN

    result = quiet_search(trials=10).run(progress=False)  # tiny: max_seq_len 256 < the default lengths
    latency = [w for w in result.warnings if not w.startswith("predicted loss: ")]
    assert len(latency) == 1 and result.warnings[0] == latency[0]
    # tiny's shapes are far smaller and shallower than any published run: the law's extrapolation is said too
    quality = " ".join(w for w in result.warnings if w.startswith("predicted loss: "))
    assert "outside the published runs'" in quality and "tokens per parameter" in quality
    assert result.warnings[0].startswith("pixel8: all ")
    assert (f"configs have a max_seq_len below the lengths (prompt {DEFAULT_PROMPT_LEN}, decode after "
            f"{DEFAULT_CONTEXT_LEN} cached tokens needs {DEFAULT_CONTEXT_LEN + 1})") in result.warnings[0]
    assert result.warnings[0].endswith("(Pareto shapes)")
    assert quiet_search(trials=10, prompt_len=64, context_len=128, quality="params").run(progress=False).warnings == []
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--no-proxy", "--target", "pixel8", "--space", "tiny", "--trials", "10", "--no-report",
                 "--no-progress", "--json", "--storage", ":memory:"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["warnings"] == result.warnings
    assert set(data["latency_models"]["pixel8"]) == {"fingerprint", "provenance"}
