"""`nas calibrate`: real ORT measurements of tiny models end to end, device imports, and refused inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas.cli import main
from nas.core.arch import ArchBatch
from nas.core.errors import NasUserError
from nas.core.paths import predictor_path
from nas.latency import probes
from nas.latency.calibrate import default_holdout, select_rows
from nas.latency.provenance import FEATURE_VERSION, GRAPH_BUILDER_VERSION
from nas.latency.registry import CALIBRATED, MEASURED, latency_source, load_latency_model
from nas.spaces import load_space
from nas.targets import load_target
from tests.helpers import DEVICE_ENV, calibrated_pixel8, device_rows, write_rows


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch):
    """The real probes, in their ~0.2 s quick form."""
    real = probes.host_probes
    monkeypatch.setattr(probes, "host_probes", lambda threads, refresh=False, quick=False: real(threads, quick=True))








def test_host_calibration_end_to_end_with_real_measurements(capsys):
    code = main(["calibrate", "--target", "host-cpu", "--space", "tiny", "--n-configs", "8", "--holdout", "3",
                 "--prompt-lens", "16", "32", "--context-lens", "16", "64", "--warmup", "1", "--runs", "3",
                 "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads(out)
    assert data["latency_source"] == MEASURED
    assert data["n_configs_held_out"] == 3 and data["n_configs_fit"] == 5
    assert set(data["phases"]) == {"prefill", "decode"}
    for entry in data["phases"].values():
        assert set(entry["models"]) == {"predictor", "flops_only", "params_only", "analytic (host probes)"}
        assert entry["models"]["predictor"]["n"] == 6  # 3 held-out configs x 2 lengths
        assert entry["spread"]["median_cv_pct"] is not None
    assert data["plan"]["measured_now"] == 32
    assert data["plan"]["protocol"]["sessions"] == 3  # the default: median of 3 fresh sessions' medians
    # The measured predictor now answers for host-cpu at these threads.
    path = predictor_path("host-cpu", "CPUExecutionProvider", "fp32")
    assert data["predictor_path"] == str(path)
    saved = json.loads(path.read_text())
    assert saved["threads"] == load_target("host-cpu").threads and saved["ort_version"]
    assert saved["evaluation"]["phases"]["decode"]["predicted_ms"]
    model = load_latency_model("host-cpu")
    assert model.source == MEASURED == latency_source(load_target("host-cpu"))
    out = model.predict(ArchBatch.from_configs(load_space("tiny").sample(5, seed=3)), 32, 64)
    assert np.all(out["prefill_ms"] > 0) and np.all(out["decode_ms"] > 0)

    # Running again reuses every measurement already in the file.
    code = main(["calibrate", "--target", "host-cpu", "--space", "tiny", "--n-configs", "8", "--holdout", "3",
                 "--prompt-lens", "16", "32", "--context-lens", "16", "64", "--warmup", "1", "--runs", "3",
                 "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["plan"]["measured_now"] == 0 and data["plan"]["reused"] == 32


def test_dry_run_prints_plan_and_estimate(capsys):
    code = main(["calibrate", "--target", "host-cpu", "--space", "tiny", "--n-configs", "4", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "estimated" in out and "dry run" in out
    from nas.commands.calibrate import HOST_DEFAULTS

    assert (f"{HOST_DEFAULTS['sessions']} session(s) x (warmup {HOST_DEFAULTS['warmup']} + {HOST_DEFAULTS['runs']} "
            "runs)") in out
    assert "creating further sessions" in out
    assert not predictor_path("host-cpu", "CPUExecutionProvider", "fp32").exists()
    code = main(["calibrate", "--target", "host-cpu", "--space", "tiny", "--n-configs", "4", "--dry-run",
                 "--sessions", "1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["plan"]["protocol"]["sessions"] == 1 and data["plan"]["estimate_s"]["session_s"] == 0
    assert main(["calibrate", "--target", "host-cpu", "--n-configs", "4", "--dry-run", "--sessions", "0"]) == 2
    assert "--sessions must be at least 1" in capsys.readouterr().err


def test_estimate_counts_every_session():
    from nas.latency.calibrate import estimate_seconds

    host = load_target("host-cpu")
    configs = load_space("tiny").sample(4, seed=0)
    measured = probes.host_probes(2, quick=True)
    kw = dict(precision="fp32", prompt_lens=(16, 32), context_lens=(16,), warmup=1, runs=3, probes=measured)
    one, three = estimate_seconds(host, configs, **kw), estimate_seconds(host, configs, sessions=3, **kw)
    assert one["session_s"] == 0 and three["session_s"] > 0
    assert three["build_s"] == one["build_s"] and three["measure_s"] == pytest.approx(3 * one["measure_s"])
    assert three["total_s"] == pytest.approx(three["build_s"] + three["session_s"] + three["measure_s"])
    assert three["measurements"] == one["measurements"] == 12


def test_device_calibration_from_measurements(tmp_path, capsys):
    path = write_rows(tmp_path / "pixel8.jsonl", device_rows())
    assert latency_source(load_target("pixel8")).startswith("analytic, fitted to ")  # published fit
    code = main(["calibrate", "--target", "pixel8", "--measurements", path])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "fitted predictor" in out and "FLOPs-only linear" in out and "analytic (spec sheet)" in out
    assert "'calibrated'" in out
    model = load_latency_model("pixel8")
    assert model.source == CALIBRATED == latency_source(load_target("pixel8"))
    saved = json.loads(predictor_path("pixel8", "CPUExecutionProvider", "int4").read_text())
    assert saved["ort_version"] == "1.20.0" and saved["target"] == "pixel8" and saved["precision"] == "int4"
    ev = saved["evaluation"]["phases"]["prefill"]
    assert ev["predictor"]["mape"] < 5 and len(ev["arch_ids"]) == len(ev["measured_ms"])


def _assert_refused(capsys, argv, match, predictor=None, before=None):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert match in err and err.count("\n") == 1, err
    if predictor is not None:
        assert predictor.read_text() == before  # nothing overwritten


def test_bad_device_measurements_leave_existing_predictor_alone(tmp_path, capsys):
    good, saved = calibrated_pixel8(tmp_path, capsys)
    before = saved.read_text()

    other_target = write_rows(tmp_path / "host.jsonl", device_rows(target="host-cpu"))
    _assert_refused(capsys, ["calibrate", "--target", "pixel8", "--measurements", other_target],
                    "expected 'pixel8'", saved, before)
    mixed = write_rows(tmp_path / "mixed.jsonl",
                       device_rows() + device_rows(env={**DEVICE_ENV, "ort_version": "1.19.0"}, seed=1))
    _assert_refused(capsys, ["calibrate", "--target", "pixel8", "--measurements", mixed],
                    "mixes onnxruntime versions 1.19.0, 1.20.0", saved, before)
    rows = device_rows()
    del rows[3]["latency_ms"]
    missing = write_rows(tmp_path / "missing.jsonl", rows)
    _assert_refused(capsys, ["calibrate", "--target", "pixel8", "--measurements", missing],
                    "missing field 'latency_ms'", saved, before)
    fp32 = write_rows(tmp_path / "fp32.jsonl", device_rows(precision="fp32"))
    _assert_refused(capsys, ["calibrate", "--target", "pixel8", "--measurements", fp32],
                    "no measurements at precision 'int4'; found fp32", saved, before)
    _assert_refused(capsys, ["calibrate", "--target", "pixel8"], "cannot be measured on this machine", saved, before)
    _assert_refused(capsys, ["calibrate", "--target", "pixel8", "--precision", "fp16", "--provider", "Foo",
                             "--measurements", good], "no execution provider 'Foo'", saved, before)


def test_host_measurements_from_another_ort_version_are_refused(tmp_path, capsys):
    env = {"ort_version": "0.0.1", "cpu_model": "x", "graph_builder": GRAPH_BUILDER_VERSION}
    path = write_rows(tmp_path / "old.jsonl", device_rows(target="host-cpu", env=env, precision="fp32", threads=2))
    _assert_refused(capsys, ["calibrate", "--target", "host-cpu", "--threads", "2", "--measurements", path],
                    "no measurement of the graphs this nas builds (96 row(s): onnxruntime 0.0.1 (this is")
    assert not predictor_path("host-cpu", "CPUExecutionProvider", "fp32").exists()


def test_predictor_failing_its_metadata_check_is_refused_on_use(tmp_path, capsys):
    good, saved = calibrated_pixel8(tmp_path, capsys)
    data = json.loads(saved.read_text())
    data["precision"] = "fp32"  # copied under the wrong name
    saved.write_text(json.dumps(data))
    _assert_refused(capsys, ["predict", "--target", "pixel8", "--hidden-size", "64", "--layers", "2", "--heads", "2",
                             "--ffn", "128"], "predictor is for precision 'fp32', not 'int4'")
    with pytest.raises(NasUserError, match="precision"):
        load_latency_model("pixel8")


def test_select_rows_and_default_holdout():
    rows = device_rows(n=6)
    assert len(select_rows(rows, target="pixel8", precision="int4", provider="CPUExecutionProvider")) == len(rows)
    with pytest.raises(NasUserError, match="threads"):
        select_rows(rows, target="pixel8", precision="int4", provider="CPUExecutionProvider", threads=2)
    with pytest.raises(NasUserError, match="not this machine"):
        select_rows(rows, target="pixel8", precision="int4", provider="CPUExecutionProvider", cpu_model="other")
    only_prefill = [r for r in rows if r["phase"] == "prefill"]
    with pytest.raises(NasUserError, match="no decode measurements"):
        select_rows(only_prefill, target="pixel8", precision="int4", provider="CPUExecutionProvider")
    assert default_holdout(80) == 30 and default_holdout(50) == 30 and default_holdout(24) == 8


def test_other_threads_are_evaluated_but_not_saved(tmp_path, capsys):
    path = write_rows(tmp_path / "t2.jsonl", device_rows(threads=2))
    _assert_refused(capsys, ["calibrate", "--target", "pixel8", "--measurements", path],
                    "no measurements at threads 4; found 2")
    code = main(["calibrate", "--target", "pixel8", "--measurements", path, "--threads", "2", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["saved"] is False and data["latency_source"].startswith("analytic")
    assert not predictor_path("pixel8", "CPUExecutionProvider", "int4").exists()


def test_rows_of_another_graph_builder_are_skipped_and_a_file_of_only_them_is_one_line(tmp_path, capsys):
    old_env = {**DEVICE_ENV, "graph_builder": "0"}
    only_old = write_rows(tmp_path / "old.jsonl", device_rows(env=old_env))
    _assert_refused(capsys, ["calibrate", "--target", "pixel8", "--measurements", only_old],
                    f"no measurement of the graphs this nas builds (96 row(s): graph builder 0 (this nas builds "
                    f"{GRAPH_BUILDER_VERSION}))")
    assert not predictor_path("pixel8", "CPUExecutionProvider", "int4").exists()
    unversioned = write_rows(tmp_path / "unversioned.jsonl",
                             device_rows(env={k: v for k, v in DEVICE_ENV.items() if k != "graph_builder"}))
    _assert_refused(capsys, ["calibrate", "--target", "pixel8", "--measurements", unversioned],
                    "no graph-builder version recorded")
    mixed = write_rows(tmp_path / "mixed.jsonl", device_rows(env=old_env, n=5, seed=7) + device_rows())
    code = main(["calibrate", "--target", "pixel8", "--measurements", mixed, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["skipped_rows"] == {f"graph builder 0 (this nas builds {GRAPH_BUILDER_VERSION})": 20}
    assert data["n_configs_fit"] + data["n_configs_held_out"] == 24  # the old rows' configs were not fitted on
    saved = json.loads(predictor_path("pixel8", "CPUExecutionProvider", "int4").read_text())
    assert saved["graph_builder"] == GRAPH_BUILDER_VERSION and saved["feature_version"] == FEATURE_VERSION
    assert saved["provider"] == "CPUExecutionProvider" and saved["threads"] == 4 and saved["ort_version"] == "1.20.0"
    main(["calibrate", "--target", "pixel8", "--measurements", mixed])
    assert "20 row(s) skipped" in capsys.readouterr().out


@pytest.mark.parametrize("field, value, words", [("graph_builder", "0", "graph builder version 0"),
                                                 ("feature_version", None, "feature formulas version unrecorded")])
def test_predictor_of_other_graphs_or_features_is_refused_on_use(tmp_path, capsys, field, value, words):
    good, saved = calibrated_pixel8(tmp_path, capsys)
    data = json.loads(saved.read_text())
    data[field] = value
    saved.write_text(json.dumps(data))
    _assert_refused(capsys, ["predict", "--target", "pixel8", "--hidden-size", "64", "--layers", "2", "--heads", "2",
                             "--ffn", "128"], words)
    refused = pytest.raises(NasUserError, load_latency_model, "pixel8")
    assert "re-run `nas calibrate --target pixel8`" in str(refused.value)


def test_calibrate_says_which_feature_columns_it_left_out(tmp_path, capsys):
    # the tiny space has one head_dim: decode attention FLOPs are proportional to score elements on it
    path = write_rows(tmp_path / "pixel8.jsonl", device_rows())
    assert main(["calibrate", "--target", "pixel8", "--measurements", path]) == 0
    out = capsys.readouterr().out
    assert "decode   feature linear_gflop left out, its rate cannot be told apart: it equals" in out
