"""Reports: computed data tested directly (fronts, picks, hypervolume, table), pictures smoke-tested."""

from __future__ import annotations

import json
import random
import re

import pytest

from tests.helpers import make_study

# Plausible device figures for fake studies: effective memory bandwidth (GB/s) and matmul rate (GFLOP/s).








@pytest.fixture
def study_trials():
    from nas.study.read import read_study

    return read_study(make_study(None, "s", n_trials=80, targets=("pixel8", "host-cpu")))


# ----------------------------------------------------------------------------------------------- compute
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


def test_search_progress_is_monotone_over_the_samplers_trials(study_trials):
    from nas.report.data import search_progress

    h = search_progress(study_trials)
    assert len(h.numbers) == sum(p.feasible for p in study_trials.points.values())
    assert list(h.numbers) == sorted(h.numbers)
    assert all(b >= a - 1e-12 for a, b in zip(h.values, h.values[1:]))
    assert 0 < h.values[-1] <= 1.1 ** 3
    assert h.exact_added == 0 and h.final_with_exact is None


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
                "pixel8.ttft_ms", "pixel8.prefill_tokens_per_s", "host-cpu.decode_tokens_per_s"):
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


def test_parity_from_predictor_is_lenient(tmp_path):
    from nas.report.data import Parity, parity_from_predictor

    good = tmp_path / "p.json"
    good.write_text(json.dumps({"metadata": {"target": "host-cpu"}, "evaluation": {
        "prefill": {"mape": 0.05, "within_5": 0.6, "within_10": 0.9, "kendall_tau": 0.9,
                    "predicted_ms": [1.0, 2.0, 3.0], "measured_ms": [1.1, 1.9, 3.2]},
        "decode": {"predicted_ms": [0.5, 0.7], "measured_ms": [0.55, None]}}}))
    parity = parity_from_predictor("host-cpu", good)
    assert isinstance(parity, Parity)
    assert [p.phase for p in parity.phases] == ["prefill", "decode"]
    assert parity.phases[0].within_10_pct == pytest.approx(90.0)  # fractions read as fractions
    assert parity.phases[1].measured_ms == (0.55,) and parity.phases[1].mape_pct is None
    # The layout `nas calibrate` writes: percent units declared, metrics under "predictor".
    calibrated = tmp_path / "c.json"
    calibrated.write_text(json.dumps({"evaluation": {"metric_units": {"mape": "%"}, "phases": {"decode": {
        "predictor": {"mape": 0.8, "within_5": 0.5, "within_10": 99.0, "kendall_tau": 0.9},
        "predicted_ms": [1.0], "measured_ms": [1.0]}}}}))
    phase = parity_from_predictor("host-cpu", calibrated).phases[0]
    assert (phase.phase, phase.mape_pct, phase.within_5_pct, phase.kendall_tau) == ("decode", 0.8, 0.5, 0.9)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"metadata": {}}))
    assert "no held-out evaluation" in parity_from_predictor("host-cpu", bare)
    assert "could not be read" in parity_from_predictor("host-cpu", tmp_path / "missing.json")


def test_quality_axis_label(study_trials):
    from nas.report.data import quality_axis

    assert quality_axis(study_trials) == ("quality: non-embedding parameters (M)", 1e-6)


def test_no_feasible_trial_still_reports(tmp_path):
    from nas.report.data import compute_report
    from nas.study.read import read_study

    trials = read_study(make_study(None, "tight", n_trials=10, memory_mb=1.0))
    data = compute_report(trials, with_parity=False)
    assert data.pareto == () and data.picks == {} and data.rows == []
    assert any("No feasible trial" in n for n in data.notes)


# ----------------------------------------------------------------------------------------------- draw
def _fake_predictor(nas_home, target="host-cpu"):
    path = nas_home / "predictors" / f"{target}__CPUExecutionProvider__int4.json"
    path.parent.mkdir(parents=True)
    rng = random.Random(1)
    meas = [rng.uniform(2, 80) for _ in range(30)]
    def phase(k):
        return {"predictor": {"mape": 4.0 * k, "within_5": 70.0 / k, "within_10": 93.0 / k, "kendall_tau": 0.95},
                "measured_ms": meas, "predicted_ms": [m * rng.uniform(0.9, 1.1) for m in meas]}

    path.write_text(json.dumps({"metadata": {"target": target}, "evaluation": {
        "metric_units": {"mape": "%"}, "phases": {"prefill": phase(1), "decode": phase(2)}}}))
    return path


def test_build_report_writes_a_self_contained_folder(tmp_path, nas_home, monkeypatch):
    import nas.report.data
    from nas.report import build_report

    predictor = _fake_predictor(nas_home)

    def fake_find_parity(target, precision):
        return nas.report.data.parity_from_predictor(target, predictor)

    monkeypatch.setattr(nas.report.data, "find_parity", fake_find_parity)
    storage = f"sqlite:///{tmp_path / 'nas.db'}"
    make_study(storage, "demo", n_trials=70, targets=("pixel8", "host-cpu"))
    index = build_report(storage, "demo", tmp_path / "report")
    out = index.parent
    assert index.name == "index.html"
    for stem in ("pareto_decode", "pareto_prefill", "hypervolume", "parity_host-cpu"):
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000, stem
    assert not (out / "parity_pixel8.png").exists()  # analytic target: nothing measured to compare
    assert (out / "pareto.csv").read_text().startswith("pick,trial,shape")
    text = index.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    assert "<script" not in text
    assert text.count('src="data:image/png;base64,') >= 4
    assert 'name="viewport"' in text
    assert "knee (recommended)" in text and "nas export --study demo" in text
    assert "pixel8: no parity plot" in text and "analytic, uncalibrated" in text


def test_nas_report_cli(tmp_path, capsys):
    from nas.cli import main

    storage = f"sqlite:///{tmp_path / 'nas.db'}"
    make_study(storage, "cli", n_trials=20)
    assert main(["report", "--study", "cli", "--storage", storage, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").is_file()
    assert "report written" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["unknown-study", "missing-db", "not-nas", "unwritable"])
def test_nas_report_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    import optuna

    from nas.cli import main

    storage = f"sqlite:///{tmp_path / 'nas.db'}"
    make_study(storage, "real", n_trials=5)
    optuna.create_study(storage=storage, study_name="foreign")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = {"unknown-study": ["--study", "nope", "--storage", storage],
            "missing-db": ["--study", "real", "--storage", f"sqlite:///{tmp_path / 'none.db'}"],
            "not-nas": ["--study", "foreign", "--storage", storage],
            "unwritable": ["--study", "real", "--storage", storage, "--out", str(blocker / "sub")]}[case]
    capsys.readouterr()
    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "none.db").exists()


def test_landmarks_are_predicted_as_nas_predict_predicts_them(tmp_path, capsys):
    import json

    from nas.cli import main
    from nas.core.landmarks import load_landmarks
    from nas.report.data import landmark_figures
    from nas.study.schema import Objective, StudyMeta

    meta = StudyMeta(space="test", space_fingerprint="0", targets=("pixel8", "rpi5"),
                     precision={"pixel8": "int4", "rpi5": "int4"}, prompt_len=256, context_len=1024,
                     objectives=(Objective("quality", "maximize"),), constraints={}, latency_sources={},
                     nas_version="0")
    landmarks = landmark_figures(meta)
    assert {lm.name for lm in landmarks} >= {"MobileLLM-125M", "SmolLM2-360M", "Qwen2.5-0.5B", "Llama-3.2-1B"}
    assert len(landmarks) == len(load_landmarks())
    for lm in landmarks[:3]:
        path = tmp_path / f"{lm.name}.json"
        path.write_text(lm.arch.to_json())
        capsys.readouterr()
        assert main(["predict", "--target", "pixel8", "--target", "rpi5", str(path), "--prompt-len", "256",
                     "--context-len", "1024", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        rows = out["targets"] if isinstance(out, dict) and "targets" in out else out
        for row in (rows.values() if isinstance(rows, dict) else rows):
            target = row["target"]
            assert row["decode_ms"] == pytest.approx(lm.figures[target].decode_ms, rel=1e-9)
            assert row["prefill_ms"] == pytest.approx(lm.figures[target].prefill_ms, rel=1e-9)
