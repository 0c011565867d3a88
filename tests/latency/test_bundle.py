"""On-device profiling bundle: manifest, feeds specs, and the standalone runner, run here as the 'device'."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main
from nas.latency.bundle import RUNNER_SOURCE, feed_spec, write_bundle
from nas.latency.measure import Protocol
from nas.latency.profiling import ProfileSettings, profile_configs, read_measurements
from nas.targets import load_target
from tests.helpers import small_arch


def load_runner():
    spec = importlib.util.spec_from_file_location("nas_runner_under_test", RUNNER_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_runner(bundle: Path, *extra: str) -> subprocess.CompletedProcess:
    """The runner as a device would run it: a copied script, its own folder as the working directory."""
    return subprocess.run([sys.executable, str(bundle / "nas_runner.py"), "--manifest", "manifest.json",
                           "--out", "measurements.jsonl", *extra], cwd=bundle, capture_output=True, text=True,
                          timeout=120)


def test_runner_needs_only_stdlib_numpy_onnxruntime():
    tree = ast.parse(RUNNER_SOURCE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    third_party = imported - set(sys.stdlib_module_names)
    # onnxruntime_genai is optional: imported inside a try only to record its version when installed
    assert third_party == {"numpy", "onnxruntime", "onnxruntime_genai"}
    assert "except Exception" in RUNNER_SOURCE.read_text().split("import onnxruntime_genai")[1][:200]


def test_feed_specs_rebuild_the_feeds():
    runner = load_runner()
    rng = np.random.default_rng(0)
    feeds = {"ids": rng.integers(0, 50, (1, 7), dtype=np.int64), "one": np.array([[5]], dtype=np.int64),
             "pos": np.arange(3, 9, dtype=np.int64).reshape(1, 6), "mask": np.ones((1, 9), dtype=np.float32),
             "small": rng.standard_normal((2, 3)).astype(np.float32),
             "kv": rng.standard_normal((1, 2, 4096, 8)).astype(np.float16)}
    specs = [feed_spec(k, v) for k, v in feeds.items()]
    assert "values" in specs[0] and specs[1]["fill"] == 5 and specs[2]["arange"] == 3 and specs[3]["fill"] == 1.0
    assert "values" in specs[4] and specs[5]["random"] == "normal" and "values" not in specs[5]
    assert 0.9 < specs[5]["std"] < 1.1
    json.dumps(specs)  # the manifest is JSON
    rebuilt = runner.make_feeds(np, json.loads(json.dumps(specs)), seed=0)
    for name, array in feeds.items():
        assert rebuilt[name].dtype == array.dtype and rebuilt[name].shape == array.shape
        if name != "kv":
            np.testing.assert_array_equal(rebuilt[name], array)


def test_one_graph_per_config_serves_both_phases(tmp_path):
    arch = small_arch(hidden=256, layers=2).replace(vocab_size=512)
    write_bundle(load_target("pixel8"), [arch], tmp_path / "b", precision="int4", prompt_lens=(4,),
                 context_lens=(8,), protocol=Protocol(threads=1, warmup=0, runs=1), progress=False, weights="ship")
    graphs = json.loads((tmp_path / "b" / "manifest.json").read_text())["graphs"]
    assert [g["phase"] for g in graphs] == ["prefill", "decode"] and graphs[0]["file"] == graphs[1]["file"]
    assert sorted(p.name for p in (tmp_path / "b" / graphs[0]["folder"]).iterdir()) == [
        "genai_config.json", "model.onnx", "tokenizer.json", "tokenizer_config.json"]


def test_runner_statistics_match_the_protocol():
    from nas.latency.measure import summarize

    runner = load_runner()
    samples = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    assert runner.summarize(samples) == pytest.approx(summarize(samples))


def test_runner_combines_sessions_like_the_protocol():
    from nas.latency.measure import combine_sessions

    runner = load_runner()
    sessions = [[9.0, 10.0, 40.0], [30.0, 30.0, 30.0], [11.0, 11.0, 35.0]]
    stats, samples = runner.combine_sessions(sessions)
    expected = combine_sessions(sessions)
    assert samples == expected.pop("samples")
    assert stats.pop("session_medians") == expected.pop("session_medians") == [10.0, 30.0, 11.0]
    assert stats == pytest.approx(expected) and stats["median"] == 11.0


def test_round_trip_cli_bundle_runner_read(fake_space, tmp_path, capsys):
    """nas bundle (real graphs) -> nas_runner.py in a subprocess -> read_measurements: same rows as profile."""
    bundle = tmp_path / "pixel8_bundle"
    assert main(["bundle", "--target", "pixel8", "--out", str(bundle), "--n-configs", "2", "--prompt-lens", "4,8",
                 "--context-lens", "8", "--warmup", "1", "--runs", "2", "--sessions", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["graphs"], summary["measurements"], summary["precision"]) == (4, 6, "int4")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"] == "pixel8" and manifest["providers"] == list(load_target("pixel8").execution_providers)
    assert manifest["protocol"]["threads"] == 4 and manifest["protocol"]["runs"] == 2
    assert manifest["protocol"]["sessions"] == 2 and manifest["runner_version"] == 3
    for graph in manifest["graphs"]:
        assert (bundle / graph["file"]).is_file()
        assert graph["arch_id"] in graph["file"] and graph["file"].endswith("/model.onnx")
        assert graph["weights_bytes"] > 0 and graph["weights_fill"] == 0x3C  # made on the device, one per config
        assert not (bundle / graph["weights"]).exists()
    decode = next(g for g in manifest["graphs"] if g["phase"] == "decode")
    past = next(i for i in decode["inputs"] if i["name"] == "past_key_values.0.key")
    assert isinstance(past["shape"][2], str)  # the symbolic past length
    assert (bundle / "README.txt").read_text().count("nas_runner.py") >= 2
    assert (bundle / "nas_runner.py").read_text() == RUNNER_SOURCE.read_text()

    done = run_runner(bundle, "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert "6 to go" in done.stdout and "[6/6]" in done.stdout
    rows = read_measurements(bundle / "measurements.jsonl", target="pixel8")
    assert len(rows) == 6 and {r["provider"] for r in rows} == {"CPUExecutionProvider"}
    assert {r["precision"] for r in rows} == {"int4"} and {r["threads"] for r in rows} == {1}
    for row in rows:  # two fresh sessions per graph, the median of their medians reported
        assert row["protocol"]["sessions"] == 2 and len(row["samples_ms"]) == 4
        medians = row["latency_ms"]["session_medians"]
        assert len(medians) == 2 and row["latency_ms"]["median"] == pytest.approx(sum(medians) / 2)
        assert medians[0] == pytest.approx(float(np.median(row["samples_ms"][:2])))

    # identical schema to what `nas profile` writes on this machine
    arch_cfg = type(small_arch()).from_dict(rows[0]["arch"])
    local = profile_configs("host-cpu", [arch_cfg], ProfileSettings(
        precision="int4", provider="CPUExecutionProvider", prompt_lens=(4,), context_lens=(),
        protocol=Protocol(threads=1, warmup=1, runs=2, sessions=2)), tmp_path / "local.jsonl", progress=False)[0]
    device = rows[0]
    assert list(device) == list(local)
    for field in ("env", "protocol", "session_options", "latency_ms"):
        assert sorted(device[field]) == sorted(local[field]), field
    assert device["protocol"] == {**local["protocol"], "threads": 1}
    assert len(device["latency_ms"]["session_medians"]) == len(local["latency_ms"]["session_medians"]) == 2

    again = run_runner(bundle, "--threads", "1")
    assert again.returncode == 0 and "6 already done, 0 to go" in again.stdout
    assert len((bundle / "measurements.jsonl").read_text().splitlines()) == 6


def test_runner_sessions_flag_and_a_manifest_from_before_sessions(tmp_path):
    bundle = tmp_path / "b"
    write_bundle(load_target("rpi5"), [small_arch()], bundle, precision="fp32", prompt_lens=(4, 8),
                 context_lens=(8,), protocol=Protocol(threads=1, warmup=0, runs=2, sessions=2), progress=False)
    done = run_runner(bundle, "--sessions", "3")
    assert done.returncode == 0, done.stderr
    rows = read_measurements(bundle / "measurements.jsonl", target="rpi5")
    assert len(rows) == 3
    assert all(r["protocol"]["sessions"] == 3 and len(r["latency_ms"]["session_medians"]) == 3
               and len(r["samples_ms"]) == 6 for r in rows)
    assert "--sessions S (default 2" in (bundle / "README.txt").read_text()

    # a manifest written before sessions existed: one session, and the rows say so
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["protocol"]["sessions"]
    manifest["runner_version"] = 1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (bundle / "measurements.jsonl").unlink()
    done = run_runner(bundle)
    assert done.returncode == 0, done.stderr
    rows = read_measurements(bundle / "measurements.jsonl", target="rpi5")
    assert all(r["protocol"]["sessions"] == 1 and len(r["latency_ms"]["session_medians"]) == 1
               and r["latency_ms"]["session_medians"][0] == r["latency_ms"]["median"] for r in rows)
    assert Protocol.from_dict(rows[0]["protocol"]).sessions == 1

    done = run_runner(bundle, "--sessions", "0")
    assert done.returncode == 2 and "--sessions must be >= 1" in done.stderr

    manifest["runner_version"] = 4  # a newer nas's bundle: refused rather than measured wrongly
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    done = run_runner(bundle)
    assert done.returncode == 2 and "needs runner version 4" in done.stderr


def test_runner_records_a_broken_graph_and_goes_on(tmp_path):
    bundle = tmp_path / "b"
    write_bundle(load_target("rpi5"), [small_arch(), small_arch(hidden=64)], bundle, precision="fp32",
                 prompt_lens=(4,), context_lens=(8,), protocol=Protocol(threads=1, warmup=0, runs=1, sessions=1),
                 progress=False)
    manifest = json.loads((bundle / "manifest.json").read_text())
    broken = manifest["graphs"][0]
    (bundle / broken["file"]).write_bytes(b"not an onnx file")
    done = run_runner(bundle)
    assert done.returncode == 0, done.stderr
    rows = read_measurements(bundle / "measurements.jsonl", target="rpi5", require_ok=False)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 4 and len(failed) == 2  # its one graph serves both phases: both rows fail
    assert {r["arch_id"] for r in failed} == {broken["arch_id"]}
    assert all(r["error"].startswith("session: ") for r in failed)


def test_runner_unknown_provider(tmp_path):
    bundle = tmp_path / "b"
    write_bundle(load_target("rpi5"), [small_arch()], bundle, precision="fp32", prompt_lens=(4,), context_lens=(),
                 protocol=Protocol(threads=1, sessions=1), progress=False)
    done = run_runner(bundle, "--provider", "QNNExecutionProvider")
    assert done.returncode == 2
    assert "'QNNExecutionProvider' is not available" in done.stderr and "CPUExecutionProvider" in done.stderr


def test_cli_bundle_errors(fake_space, tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("x")
    assert main(["bundle", "--target", "pixel8", "--out", str(occupied)]) == 2
    assert main(["bundle", "--target", "host-cpu", "--out", str(tmp_path / "new"), "--precision", "fp16"]) == 2
    assert main(["bundle", "--target", "pixel9", "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert "not an empty folder" in err[0] and "fp16" in err[1] and "pixel9" in err[2]


def test_runner_decodes_in_place_like_the_protocol(tiny_arch):
    """The runner times a GenAI graph as nas.latency.measure does: KV buffers bound as past and present, the new
    token written into the buffer in place, and the same logits."""
    import onnxruntime as ort

    from nas.latency import graphs, measure

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(graphs.build_graph(tiny_arch).SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    feeds = graphs.graph_feeds(tiny_arch, "decode", context_len=20)
    assert not feeds["past_key_values.1.value"][:, :, 20].any()  # the new token's slot starts empty
    ours = measure.step_runner(session, feeds)()
    theirs = load_runner().step_runner(session, feeds)()
    for name in ("past_key_values.0.key", "past_key_values.1.value"):
        assert np.abs(theirs[name].numpy()[:, :, 20]).max() > 0  # written in place
        np.testing.assert_array_equal(theirs[name].numpy()[:, :, :20], feeds[name][:, :, :20])
        np.testing.assert_allclose(theirs[name].numpy(), ours[name].numpy(), atol=1e-6)


def test_weights_made_on_the_device_keep_the_bundle_small_and_measure(tmp_path):
    """--weights device (the default): the bundle holds graphs of kilobytes; the runner writes each config's
    weights file (its declared size, every byte the fill value), measures, and deletes it; --weights ship
    writes the weights into the bundle instead. Both bundles' graphs run."""
    arch = small_arch(hidden=256, layers=2)
    kw = dict(precision="int4", prompt_lens=(4,), context_lens=(8,), protocol=Protocol(threads=1, warmup=0, runs=1),
              progress=False)
    light, heavy = tmp_path / "light", tmp_path / "heavy"
    write_bundle(load_target("pixel8"), [arch], light, weights="device", **kw)
    write_bundle(load_target("pixel8"), [arch], heavy, weights="ship", **kw)
    size = lambda folder: sum(p.stat().st_size for p in (folder / "models").rglob("*.onnx*"))  # noqa: E731
    graphs = json.loads((light / "manifest.json").read_text())["graphs"]
    declared = graphs[0]["weights_bytes"]
    assert size(light) < 0.1 * size(heavy) and declared > 0.8 * arch.weight_bytes("int4")
    assert "GiB free for the largest config" in (light / "README.txt").read_text()
    for bundle in (light, heavy):
        done = run_runner(bundle, "--threads", "1")
        assert done.returncode == 0 and "[2/2]" in done.stdout, done.stderr
        rows = read_measurements(bundle / "measurements.jsonl", target="pixel8")
        assert len(rows) == 2 and all(r["latency_ms"]["median"] > 0 for r in rows)
    assert not (light / graphs[0]["weights"]).exists()  # deleted once its config was measured
    (light / "measurements.jsonl").unlink()
    assert run_runner(light, "--threads", "1", "--keep-weights").returncode == 0
    kept = light / graphs[0]["weights"]
    assert kept.stat().st_size == declared and set(kept.read_bytes()[:4096]) == {0x3C}


def test_nas_bundle_default_is_light_and_says_so(fake_space, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["bundle", "--target", "pixel8", "--out", str(out), "--n-configs", "1", "--prompt-lens", "4",
                 "--context-lens", "8", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["weights"] == "device" and summary["weights_made_on_device_bytes"] > 0 < summary["bundle_bytes"]
    assert not list(out.rglob("*.weights"))


def test_a_bundle_that_cannot_be_written_whole_is_removed(tmp_path):
    """A disk that fills while a bundle is written (a file-size limit on the process, RLIMIT_FSIZE, makes the
    kernel refuse the shipped weights part-way): one line, exit 2, and no half bundle left to be copied to a
    device; an empty --out folder given by the user stays, empty."""
    import os
    import resource

    out = tmp_path / "given"
    out.mkdir()

    def full_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = subprocess.run([sys.executable, "-m", "nas", "bundle", "--target", "rpi5", "--space", "tiny",
                           "--n-configs", "2", "--precision", "fp32", "--weights", "ship", "--quiet", "--out",
                           str(out)], capture_output=True, text=True, preexec_fn=full_disk, timeout=300,
                          env={**os.environ, "NAS_HOME": str(tmp_path / "home")})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "cannot write the bundle to" in lines[0] and "the partial bundle was removed" in lines[0]
    assert out.is_dir() and not any(out.iterdir())
