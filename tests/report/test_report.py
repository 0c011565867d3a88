"""Reports of studies written by the real search: computed data tested directly (fronts, picks, hypervolume,
table, parity, landmarks), pictures smoke-tested.

The study: `nas calibrate` fits pixel8 on measurements in the on-device runner's format and saves the predictor;
the latency stage then searches pixel8 (calibrated: its parity data is the predictor's held-out evaluation) and
iphone15pro (analytic, uncalibrated: nothing to compare), under a memory limit some shapes break.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from nas.cli import main
from tests.helpers import device_rows, write_rows

TARGETS = ("pixel8", "iphone15pro")
LENGTHS = {"prompt_len": 64, "context_len": 128}  # within what the calibration measured (tiny's max_seq_len 256)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """(storage URL, the search's result, its StudyTrials, the saved predictor file's content)."""
    from nas.core.paths import predictor_path
    from nas.search import LatencyStage, SearchSettings
    from nas.search.problem import SearchProblem
    from nas.study.read import load_study, read_study

    tmp = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAS_HOME", str(tmp / "home"))
        assert main(["calibrate", "--target", "pixel8", "--measurements",
                     write_rows(tmp / "pixel8.jsonl", device_rows())]) == 0
        saved = json.loads(predictor_path("pixel8", "CPUExecutionProvider", "int4").read_text())
        base = dict(targets=TARGETS, space="tiny", quality="params", **LENGTHS)
        probe = SearchProblem(SearchSettings(**base))  # what the limit cuts: a fifth of the space
        memory = probe.figures(probe.space.enumerate()).memory_mb["pixel8"]
        storage = f"sqlite:///{tmp / 'nas.db'}"
        settings = SearchSettings(**base, trials=60, storage=storage, study="demo", seed=2,
                                  max_memory_mb=float(np.quantile(memory, 0.8)))
        result = LatencyStage(settings, log=lambda _: None).run(progress=False)
        trials = read_study(load_study(storage, "demo"))
    return storage, result, trials, saved


@pytest.fixture
def study_trials(searched):
    return searched[2]


# ----------------------------------------------------------------------------------------------- compute
def test_the_report_and_the_search_print_one_pareto_set(searched):
    """One Pareto-set and twin rule (nas.study.read.pareto_set): the rows the search printed are the report's."""
    from nas.study.read import study_pareto_set

    _, result, trials, _ = searched
    pareto = study_pareto_set(trials)
    assert sorted(r["trial"] for r in result.pareto) == list(pareto)
    twins = {r["arch_id"]: r["twins"] for r in result.pareto}
    assert any(twins.values())  # tiny has twins (the same shape tied or untied ...): listed, not repeated
    assert all(trials.points[n].arch_id in twins for n in pareto)


def test_study_pareto_set_is_feasible_non_dominated_and_unique(study_trials):
    from nas.study.pareto import pareto_mask_max
    from nas.study.read import study_pareto_set

    pareto = study_pareto_set(study_trials)
    assert pareto
    points = study_trials.points
    assert all(points[n].feasible for n in pareto)
    assert len({points[n].arch_id for n in pareto}) == len(pareto)
    feasible = [p for p in points.values() if p.feasible]
    mask = dict(zip([p.number for p in feasible], pareto_mask_max([p.values for p in feasible], [True] * 3)))
    assert all(mask[n] for n in pareto)
    # Infeasible trials are never on it even when they would dominate.
    assert any(not p.feasible for p in points.values())


def test_front_2d_partitions_points_and_is_monotone(study_trials):
    from nas.report.data import front_2d

    f = front_2d(study_trials, "pixel8", "decode_tokens_per_s")
    everything = set(f.front) | set(f.dominated) | set(f.infeasible)
    assert everything == set(study_trials.points)
    assert not set(f.front) & set(f.dominated)
    xs = [f.xy[n][0] for n in f.front]
    ys = [f.xy[n][1] for n in f.front]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # faster means less quality along a front
    for n in f.dominated:
        x, y = f.xy[n]
        assert any(fx >= x and fy >= y for fx, fy in (f.xy[m] for m in f.front))
    assert set(f.labelled) <= set(f.front)


def test_label_subset_keeps_picks_and_caps_count():
    from nas.report.data import label_subset

    front = list(range(40))
    chosen = label_subset(front, {"knee": 17, "fastest": 39, "best-quality": 0}, max_labels=8)
    assert {17, 39, 0} <= set(chosen) and len(chosen) <= 8
    assert list(chosen) == sorted(chosen)
    assert label_subset([3, 4], {}, 8) == (3, 4)


def test_picks_are_on_the_pareto_set(study_trials):
    from nas.study.read import compute_picks, study_pareto_set

    pareto = study_pareto_set(study_trials)
    picks = compute_picks(study_trials, pareto)
    assert set(picks) == {"knee", "fastest", "best-quality"}
    assert set(picks.values()) <= set(pareto)
    pts = study_trials.points
    speed = {n: pts[n].speed("pixel8", "decode_tokens_per_s") for n in pareto}
    assert speed[picks["fastest"]] == max(speed.values())
    assert pts[picks["best-quality"]].quality == max(pts[n].quality for n in pareto)
    assert min(speed.values()) <= speed[picks["knee"]] <= max(speed.values())


def test_search_progress_is_the_searchs_own_figure(searched):
    from nas.report.data import search_progress
    from nas.study.schema import FOUND_BY_EXACT

    _, result, trials, _ = searched
    h = search_progress(trials)
    sampled = [p for p in trials.points.values() if p.feasible and p.found_by != FOUND_BY_EXACT]
    assert len(h.numbers) == len(sampled) and list(h.numbers) == sorted(h.numbers)
    assert all(b >= a - 1e-12 for a, b in zip(h.values, h.values[1:]))
    assert h.values[-1] == pytest.approx(result.hypervolume_ratio)
    assert h.exact_added == result.exact_added > 0 and h.final_with_exact == pytest.approx(1.0)


def test_table_rows(study_trials):
    from nas.report.data import table_columns, table_rows
    from nas.study.read import compute_picks, study_pareto_set

    pareto = study_pareto_set(study_trials)
    picks = compute_picks(study_trials, pareto)
    rows = table_rows(study_trials, pareto, picks)
    assert {r["trial"] for r in rows} == set(pareto)
    assert [r["quality"] for r in rows] == sorted((r["quality"] for r in rows), reverse=True)
    keys = {c.key for c in table_columns(study_trials)}
    for key in ("shape", "attention", "params_m", "quality", "arch_id", "trial", "pixel8.memory_mb",
                "pixel8.ttft_ms", "pixel8.prefill_tokens_per_s", "iphone15pro.decode_tokens_per_s"):
        assert key in keys
    r = next(r for r in rows if r["trial"] == picks["knee"])
    p = study_trials.points[picks["knee"]]
    assert "knee" in r["pick"]
    assert r["shape"] == p.shape and r["arch_id"] == p.arch_id
    assert r["quality"] == pytest.approx(p.record.arch.num_non_embedding_params / 1e6)  # shown in millions
    assert r["pixel8.decode_tokens_per_s"] == pytest.approx(p.record.figures["pixel8"].decode_tokens_per_s)


def test_markdown_and_csv_tables(study_trials):
    from nas.report import tables
    from nas.report.data import compute_report

    data = compute_report(study_trials, with_parity=False)
    md = tables.to_markdown(data.columns, data.rows).splitlines()
    assert len(md) == len(data.rows) + 2
    assert all(line.count("|") == len(data.columns) + 1 for line in md)
    import csv
    import io

    parsed = list(csv.reader(io.StringIO(tables.to_csv(data.columns, data.rows))))
    assert parsed[0][2] == "shape" and len(parsed) == len(data.rows) + 1


def test_parity_is_what_calibrate_saved(searched):
    """calibrate -> save -> search -> report: the parity plot's points are the predictor's held-out evaluation,
    as `nas calibrate` wrote it; an analytic target has none, and says why."""
    from nas.report.data import Parity, recorded_parity

    _, _, trials, saved = searched
    parity = recorded_parity(trials, "pixel8")
    assert isinstance(parity, Parity) and parity.path.endswith("pixel8__CPUExecutionProvider__int4.json")
    assert [p.phase for p in parity.phases] == ["prefill", "decode"]
    for phase in parity.phases:
        ev = saved["evaluation"]["phases"][phase.phase]
        assert list(phase.predicted_ms) == ev["predicted_ms"] and list(phase.measured_ms) == ev["measured_ms"]
        assert (phase.mape_pct, phase.within_10_pct, phase.kendall_tau) == (
            ev["predictor"]["mape"], ev["predictor"]["within_10"], ev["predictor"]["kendall_tau"])
    assert "no measurements to compare" in recorded_parity(trials, "iphone15pro")


def test_published_fit_parity_uses_the_left_out_predictions():
    """A target fitted to published measurements: each row's time against the fit that left its model out."""
    from nas.latency.registry import load_latency_model

    record = load_latency_model("rpi5").parity()
    assert record["source"].endswith("published_fit.json")
    for phase in record["phases"]:
        errors = np.abs(np.array(phase["predicted_ms"]) / np.array(phase["measured_ms"]) - 1) * 100
        assert phase["mape_pct"] == pytest.approx(errors.mean())
        assert phase["within_10_pct"] == pytest.approx((errors <= 10).mean() * 100)


def test_quality_axis_label(study_trials):
    from nas.report.data import quality_axis

    assert quality_axis(study_trials) == ("quality: non-embedding parameters (M)", 1e-6)


def test_no_feasible_trial_still_reports(tmp_path):
    """A limit no shape meets, on a space searched without its exact stage (which would refuse it)."""
    from nas.report.data import compute_report
    from nas.search import LatencyStage, SearchSettings
    from nas.study.read import load_study, read_study

    storage = f"sqlite:///{tmp_path / 'nas.db'}"
    LatencyStage(SearchSettings(targets=("pixel8",), space="tiny", trials=10, storage=storage, study="tight",
                                exact=False, max_memory_mb=0.01), log=lambda _: None).run(progress=False)
    data = compute_report(read_study(load_study(storage, "tight")), with_parity=False)
    assert data.pareto == () and data.picks == {} and data.rows == []
    assert any("No feasible trial" in n for n in data.notes)


def test_a_study_without_records_says_so(searched):
    """A study searched before nas recorded parity data and landmarks: the report says so, it never re-derives
    them from files that may have changed since."""
    import dataclasses

    from nas.report.data import compute_report

    trials = dataclasses.replace(searched[2], parity=None, landmarks=None)
    data = compute_report(trials)
    assert all("recorded no parity data" in why for why in data.parity.values())
    assert data.landmarks == [] and any("Published models are not drawn" in n for n in data.notes)


# ----------------------------------------------------------------------------------------------- draw
def test_build_report_writes_a_self_contained_folder(searched, tmp_path):
    from nas.report import build_report

    storage = searched[0]
    index = build_report(storage, "demo", tmp_path / "report")
    out = index.parent
    assert index.name == "index.html"
    for stem in ("pareto_decode", "pareto_prefill", "hypervolume", "parity_pixel8"):
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000, stem
    assert not (out / "parity_iphone15pro.png").exists()  # analytic target: nothing measured to compare
    assert (out / "pareto.csv").read_text().startswith("pick,trial,shape")
    text = index.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    assert "<script" not in text
    assert text.count('src="data:image/png;base64,') >= 4
    assert 'name="viewport"' in text
    assert "knee (recommended)" in text and "nas export --study demo" in text
    assert "iphone15pro: no parity plot" in text and "analytic, uncalibrated" in text


def test_nas_report_cli(searched, tmp_path, capsys):
    storage = searched[0]
    assert main(["report", "--study", "demo", "--storage", storage, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").is_file()
    assert "report written" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["unknown-study", "missing-db", "not-nas", "unwritable"])
def test_nas_report_bad_input_is_one_line_exit_2(searched, tmp_path, capsys, case):
    import optuna

    shutil.copy(searched[0].removeprefix("sqlite:///"), tmp_path / "nas.db")
    storage = f"sqlite:///{tmp_path / 'nas.db'}"
    optuna.create_study(storage=storage, study_name="foreign")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = {"unknown-study": ["--study", "nope", "--storage", storage],
            "missing-db": ["--study", "demo", "--storage", f"sqlite:///{tmp_path / 'none.db'}"],
            "not-nas": ["--study", "foreign", "--storage", storage],
            "unwritable": ["--study", "demo", "--storage", storage, "--out", str(blocker / "sub")]}[case]
    capsys.readouterr()
    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "none.db").exists()


def test_landmarks_are_placed_as_nas_predict_predicts_them(searched, tmp_path, capsys):
    """The published models the search recorded sit where `nas predict` puts the same shape at the study's
    lengths (the pixel8 predictor is gone by now: the record stands, nothing is predicted again)."""
    from nas.core.landmarks import load_landmarks
    from nas.report.data import recorded_landmarks

    landmarks = recorded_landmarks(searched[2])
    assert {lm.name for lm in landmarks} >= {"MobileLLM-125M", "SmolLM2-360M", "Qwen2.5-0.5B", "Llama-3.2-1B"}
    assert len(landmarks) == len(load_landmarks())
    for lm in landmarks[:3]:
        path = tmp_path / f"{lm.name}.json"
        path.write_text(lm.arch.to_json())
        capsys.readouterr()
        assert main(["predict", "--target", "iphone15pro", str(path), "--prompt-len", str(LENGTHS["prompt_len"]),
                     "--context-len", str(LENGTHS["context_len"]), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        rows = out["targets"] if isinstance(out, dict) and "targets" in out else out
        for row in (rows.values() if isinstance(rows, dict) else rows):
            assert row["decode_ms"] == pytest.approx(lm.figures["iphone15pro"].decode_ms, rel=1e-9)
            assert row["prefill_ms"] == pytest.approx(lm.figures["iphone15pro"].prefill_ms, rel=1e-9)
