"""Published measurements: the shipped file is complete and traceable, bad files are refused with file:line and
the field, the fit recovers known parameters robustly, leave-one-model-out never sees the held-out model, the
shipped fit is current, and the registry/CLI label fitted targets (a user's calibration still wins)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from nas.core.errors import NasUserError
from nas.latency import published, registry
from nas.targets import load_target

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "fit_published.py"

MODEL = """
[[model]]
name = "M1"
hidden_size = 576
num_layers = 30
num_heads = 9
num_kv_heads = 3
intermediate_size = 1536
vocab_size = 49152
tie_embeddings = true

[[model]]
name = "M2"
hidden_size = 2048
num_layers = 16
num_heads = 32
num_kv_heads = 8
intermediate_size = 8192
vocab_size = 128256
tie_embeddings = true
"""


def row(model="M1", decode=50.0, prefill=None, device="rpi5", where="table 1", **extra) -> str:
    fields = {"device": device, "hardware": "board", "runtime": "llama.cpp", "runtime_version": "b1",
              "compute_unit": "cpu", "model": model, "quant": "q4_0", "context_len": 64, "decode_tok_s": decode,
              "source": "https://example.org/bench", "where": where, "date": "2024-05", **extra}
    if prefill is not None:
        fields = {"prompt_len": 128, **fields, "prefill_tok_s": prefill}
    lines = ["", "[[measurement]]"]
    for key, value in fields.items():
        if value is None:
            continue
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "published.toml"
    path.write_text(text)
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[occurrence - 1]


# ------------------------------------------------------------------------------------------ the shipped file

def test_shipped_file_is_complete_and_traceable():
    data = published.load_published()
    rows = data.measurements
    assert len(rows) >= 40 and len({r.device for r in rows}) >= 5
    for r in rows:
        assert r.source.strip() and r.where.strip() and r.date and r.model in data.models
        assert r.decode_tok_s or r.prefill_tok_s
    per_device = {}
    for r in rows:
        per_device.setdefault(r.device, set()).add(r.model)
    assert sum(len(models) >= 3 for models in per_device.values()) >= 4  # several shapes per device


def test_shipped_fit_is_what_a_refit_writes():
    """The shipped published_fit.json is exactly what `nas targets fit` writes today: fails when published.toml,
    the analytic model or the fit changed without a refit."""
    data = published.load_published()
    shipped = published.load_fit()
    assert shipped is not None and shipped["data_sha256"] == data.sha256, "rerun `nas targets fit`"
    fresh = json.loads(json.dumps(published.fit_published(data)))  # as written: tuples become lists
    assert fresh == shipped, "rerun `nas targets fit`"


# ------------------------------------------------------------------------------------------------ bad input

BAD = [
    # (name, text, needle on the expected line, expected key in the message, words in the message)
    ("unknown device", MODEL + row() + row(device="pixel9", where="t2"), 'device = "pixel9"',
     "measurement[1].device", "not a described target"),
    ("host-cpu is not a described device", MODEL + row(device="host-cpu"), 'device = "host-cpu"',
     "measurement[0].device", "not a described target"),
    ("negative rate", MODEL + row() + row(decode=-3.0, where="t2"), "decode_tok_s = -3.0",
     "measurement[1].decode_tok_s", "positive number"),
    ("zero prefill", MODEL + row(prefill=0), "prefill_tok_s = 0", "measurement[0].prefill_tok_s", "positive"),
    ("unknown model", MODEL + row(model="M9"), 'model = "M9"', "measurement[0].model", "no [[model]] table"),
    ("unknown quant", MODEL + row(quant="q3_k_xs"), 'quant = "q3_k_xs"', "measurement[0].quant",
     "not a format nas knows"),
    ("prefill without prompt_len", MODEL + row(prefill=40.0, prompt_len=None), "prefill_tok_s = 40.0",
     "measurement[0].prefill_tok_s", "needs prompt_len"),
    ("bad date", MODEL + row(date="May 2024"), 'date = "May 2024"', "measurement[0].date", "YYYY"),
    ("unknown key", MODEL + row(tokens_per_joule=3), "tokens_per_joule = 3", "measurement[0].tokens_per_joule",
     "unknown key"),
    ("missing source", MODEL + row(source=None), "[[measurement]]", "measurement[0]", "missing key(s) source"),
    ("no rate at all", MODEL + row(decode=None), "[[measurement]]", "measurement[0]",
     "neither prefill_tok_s nor decode_tok_s"),
    ("missing architecture field", MODEL.replace("hidden_size = 2048\n", "") + row(), "[[model]]",
     "model[1]", "missing key(s) hidden_size"),
    ("impossible architecture", MODEL.replace("num_kv_heads = 8", "num_kv_heads = 7") + row(), "num_kv_heads = 7",
     "model[1].num_kv_heads", "not divisible"),
    ("model defined twice", MODEL + MODEL.split("[[model]]")[1].join(["[[model]]", ""]) + row(), 'name = "M1"',
     "model[2].name", "defined twice"),
]


@pytest.mark.parametrize("name,text,needle,key,words", BAD, ids=[b[0] for b in BAD])
def test_bad_file_is_refused_with_file_line_and_field(tmp_path, name, text, needle, key, words):
    path = write(tmp_path, text)
    occurrence = 2 if name in ("missing architecture field", "model defined twice") else 1
    expected_line = line_of(text, needle, occurrence)
    with pytest.raises(NasUserError) as info:
        published.load_published(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{expected_line}: {key}"), message
    assert words in message and "\n" not in message


def test_duplicate_rows_are_refused_naming_both_lines(tmp_path):
    text = MODEL + row() + row(model="M2") + row()
    path = write(tmp_path, text)
    first, third = line_of(text, "[[measurement]]", 1), line_of(text, "[[measurement]]", 3)
    with pytest.raises(NasUserError, match=rf"^{re.escape(str(path))}:{third}: measurement\[2\]: duplicates the "
                                           rf"measurement at line {first}"):
        published.load_published(path)
    # the same figure read from another place of the source is not a duplicate
    published.load_published(write(tmp_path, MODEL + row() + row(where="table 2")))


def test_malformed_toml_and_fitted_file_are_one_line_errors(tmp_path):
    with pytest.raises(NasUserError, match="malformed TOML"):
        published.load_published(write(tmp_path, MODEL + "[[measurement]\n"))
    bad = tmp_path / "fit.json"
    bad.write_text("{not json")
    with pytest.raises(NasUserError, match="regenerate it with `nas targets fit`"):
        published.load_fit(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(NasUserError, match="not a nas-published-fit/1 file"):
        published.target_fits("rpi5", bad)
    assert published.load_fit(tmp_path / "absent.json") is None


def test_failed_fit_exits_2_and_leaves_the_fitted_file(tmp_path):
    out = tmp_path / "fit.json"
    out.write_text("previous fit\n")
    bad = write(tmp_path, MODEL + row(decode=-1.0))
    for argv in ([sys.executable, "-m", "nas", "targets", "fit"], [sys.executable, str(SCRIPT)]):
        proc = subprocess.run(argv + ["--data", str(bad), "--out", str(out)], capture_output=True, text=True,
                              cwd=tmp_path, check=False)
        assert proc.returncode == 2 and f"{bad}:" in proc.stderr and "decode_tok_s" in proc.stderr
        assert "Traceback" not in proc.stderr and out.read_text() == "previous fit\n"


# ------------------------------------------------------------------------------------------------- the fit

def _synthetic(tmp_path, truth, unit="cpu"):
    """Observations of real shapes whose times come from known parameters."""
    text = MODEL + "".join(row(model=m, decode=10.0, prefill=10.0, quant=q, where=f"{m} {q}")
                           for m in ("M1", "M2") for q in ("q4_0", "q8_0", "f16"))
    obs = published.observations(published.load_published(write(tmp_path, text)))
    times = published.predict_ms(truth, obs)
    return [dataclasses.replace(o, observed_ms=float(t)) for o, t in zip(obs, times)]


def _params(compute: float, bandwidth: float, per_layer_ms: float, per_run_ms: float) -> dict[str, float]:
    return dict(zip(published.PARAM_NAMES, (compute, bandwidth, per_layer_ms, per_run_ms)))


def test_fit_recovers_known_parameters_and_ignores_an_outlier(tmp_path):
    obs = _synthetic(tmp_path, _params(0.15, 0.5, 0.3, 0.2))
    fitted = published.fit_params(obs, "cpu")
    assert fitted["compute_efficiency"] == pytest.approx(0.15, rel=0.05)
    assert fitted["bandwidth_efficiency"] == pytest.approx(0.5, rel=0.05)
    assert fitted["per_layer_overhead_ms"] == pytest.approx(0.3, rel=0.15)
    spec = published.spec_params("cpu")
    assert abs(np.log(fitted["bandwidth_efficiency"] / 0.5)) < abs(np.log(spec["bandwidth_efficiency"] / 0.5))
    # one row three times slower (a throttled phone): the Huber fit barely moves
    bad = list(obs)
    bad[0] = dataclasses.replace(bad[0], observed_ms=bad[0].observed_ms * 3)
    robust = published.fit_params(bad, "cpu")
    assert robust["bandwidth_efficiency"] == pytest.approx(0.5, rel=0.1)
    assert robust["compute_efficiency"] == pytest.approx(0.15, rel=0.1)


def test_leave_one_model_out_never_sees_the_held_out_model(tmp_path):
    obs = _synthetic(tmp_path, _params(0.2, 0.6, 0.1, 0.3))
    held = [i for i, o in enumerate(obs) if o.row.model == "M2"]
    before, _ = published.leave_one_model_out(obs, "cpu")
    changed = [dataclasses.replace(o, observed_ms=o.observed_ms * (5 if i in held else 1)) for i, o in enumerate(obs)]
    after, summary = published.leave_one_model_out(changed, "cpu")
    assert all(after[i] == pytest.approx(before[i]) for i in held)  # M2's prediction comes from M1 only
    assert summary["decode"]["median_abs_pct"] > 20 and summary["decode"]["models"] == 2


def test_group_needs_enough_rows_and_models(tmp_path):
    text = MODEL + row() + row(model="M2") + row(model="M2", where="t2")
    result = published.fit_published(published.load_published(write(tmp_path, text)))
    entry = result["targets"]["rpi5"]["cpu"]
    assert entry["fitted"] is False and "needs >= 4 rows" in entry["reason"] and "params" not in entry
    text += row(model="M1", where="t3")
    entry = published.fit_published(published.load_published(write(tmp_path, text)))["targets"]["rpi5"]["cpu"]
    assert entry["fitted"] is True and entry["label"] == "analytic, fitted to 4 published measurements (llama.cpp)"
    assert entry["loo"]["decode"]["n"] == 4


def test_proxies_are_shown_never_fitted(tmp_path):
    base = MODEL + row() + row(where="2") + row(model="M2") + row(model="M2", where="2")
    proxy = row(decode=1.0, proxy=True, where="proxy")
    a = published.fit_published(published.load_published(write(tmp_path, base)))["targets"]["rpi5"]["cpu"]
    b = published.fit_published(published.load_published(write(tmp_path, base + proxy)))["targets"]["rpi5"]["cpu"]
    assert a["params"] == b["params"] and b["n_rows"] == 4 and len(b["proxy_rows"]) == 1


# ------------------------------------------------------------------------------ registry, CLI, own calibration

def test_fitted_target_uses_fitted_parameters_and_label():
    target = load_target("sd8gen3")
    fit = published.fitted_group("sd8gen3", "cpu")
    model = registry.load_latency_model(target)
    assert model.source == fit["label"] == registry.latency_source(target)
    assert fit["label"].startswith("analytic, fitted to ") and "executorch" in fit["label"]
    roofline = model.describe()["roofline"]
    assert all(roofline[k] == v for k, v in fit["params"].items())
    assert "leave-one-model-out" in model.note
    # an unfitted target keeps the spec-sheet defaults and its label
    other = registry.load_latency_model(load_target("macbook-m3"))
    assert other.source == registry.ANALYTIC and other.describe()["roofline"]["bandwidth_efficiency"] == 0.7


def test_users_own_calibration_wins_over_the_published_fit(tmp_path, nas_home):
    """A predictor file in NAS_HOME takes over from the published fit (real predictor, fitted by calibrate)."""
    from tests.helpers import device_rows, write_rows

    path = write_rows(tmp_path / "pixel8.jsonl", device_rows())
    assert registry.latency_source(load_target("pixel8")).startswith("analytic, fitted to ")
    assert main(["calibrate", "--target", "pixel8", "--measurements", path]) == 0
    assert registry.latency_source(load_target("pixel8")) == registry.CALIBRATED
    shutil.rmtree(nas_home / "predictors")
    assert registry.latency_source(load_target("pixel8")).startswith("analytic, fitted to ")


def test_targets_commands_show_label_parameters_rows_and_loo(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "analytic, fitted to 13 published measurements" in out and "leave-one-model-out decode" in out
    assert "analytic, uncalibrated" in out
    assert main(["targets", "show", "rpi5"]) == 0
    out = capsys.readouterr().out
    for words in ("published measurements", "bandwidth_efficiency", "spec sheet", "leave-one-model-out",
                  "runtime ollama alone", "TinyLlama-1.1B, q8_0, llama.cpp, prefill"):
        assert words in out, words
    assert main(["targets", "show", "jetson-orin-nano", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    gpu = data["published_fit"]["gpu"]
    assert gpu["fitted"] and len(gpu["proxy_rows"]) == 7 and all(r["proxy"] for r in gpu["proxy_rows"])
    assert main(["targets", "show", "macbook-m3"]) == 0
    assert "not fitted (needs >= 4 rows" in capsys.readouterr().out


def test_parity_of_a_fitted_target_uses_left_out_predictions(tmp_path):
    """What a study records for its report's parity plot (LatencyModel.parity) of a target fitted to published
    measurements: each row against the fit that left its architecture out."""
    from nas.report.data import Parity, ParityPhase
    from nas.report.plots import plot_parity

    record = registry.load_latency_model("sd8gen3").parity()
    assert Path(record["source"]).name == "published_fit.json"
    entry = published.fitted_group("sd8gen3", "cpu")
    decode = next(p for p in record["phases"] if p["phase"] == "decode")
    rows = [r for r in entry["rows"] if r["phase"] == "decode"]
    assert decode["measured_ms"] == pytest.approx([1000 / r["published_tok_s"] for r in rows])
    assert decode["predicted_ms"] == pytest.approx([1000 / r["loo_tok_s"] for r in rows])
    assert {p["phase"] for p in record["phases"]} == {"decode", "prefill"}
    parity = Parity("sd8gen3", record["source"], tuple(ParityPhase(
        p["phase"], tuple(p["predicted_ms"]), tuple(p["measured_ms"]), p["mape_pct"], p["within_5_pct"],
        p["within_10_pct"], p["kendall_tau"]) for p in record["phases"]))
    assert all(path.stat().st_size > 1000 for path in plot_parity(parity, tmp_path))
    assert "no measurements to compare" in registry.load_latency_model("macbook-m3").parity()["none"]


def test_fitted_target_error_band_comes_from_left_out_predictions():
    from nas.latency.uncertainty import relative_band

    entry = published.fitted_group("jetson-orin-nano", "gpu")
    band = registry.load_latency_model("jetson-orin-nano").error_band()
    rows = [r for r in entry["rows"] if r["phase"] == "decode"]
    expected = relative_band([1 / r["loo_tok_s"] for r in rows], [1 / r["published_tok_s"] for r in rows])
    assert band["decode"] == pytest.approx(expected) and 0 < band["decode"] < 1
    assert band["prefill"] is None and "left its architecture out" in band["basis"]
    # rpi5's prefill rows are all TinyLlama: nothing tests a new shape, so no prefill band
    assert registry.load_latency_model("rpi5").error_band()["prefill"] is None
    assert registry.load_latency_model("macbook-m3").error_band()["decode"] is None
