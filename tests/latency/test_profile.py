"""Profiling: rows, skip on re-run, failures recorded, validation on read, and the `nas profile` command.

Most tests swap `nas.latency.graphs` for a tiny stand-in (an embedding gather and a matmul with the same
symbolic P / C inputs) so they run in milliseconds; `test_real_graphs_*` uses the real graph builder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas.cli import main
from nas.core.errors import NasUserError
from nas.latency.measure import Protocol
from nas.latency.profiling import (
    KEY_FIELDS,
    ROW_FIELDS,
    ProfileSettings,
    measurement_key,
    profile_configs,
    read_measurements,
)
from tests.helpers import fake_build_graph, fake_graph_feeds, small_arch, write_rows


def settings(**kw):
    base = dict(precision="fp32", provider="CPUExecutionProvider", provider_options={}, prompt_lens=(4, 8),
                context_lens=(8,), protocol=Protocol(threads=1, warmup=1, runs=2, sessions=1))
    return ProfileSettings(**{**base, **kw})


def test_rows_schema_and_skip_on_rerun(fake_graphs, tmp_path):
    out = tmp_path / "m.jsonl"
    configs = [small_arch(), small_arch(hidden=64)]
    rows = profile_configs("host-cpu", configs, settings(), out, progress=False)
    assert (rows.measured, rows.failed, rows.skipped) == (6, 0, 0)
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert list(rows[0]) == list(ROW_FIELDS)
    read = read_measurements(out, target="host-cpu")
    assert [measurement_key(r) for r in read] == [measurement_key(r) for r in rows]
    prefill = [r for r in read if r["phase"] == "prefill"]
    decode = [r for r in read if r["phase"] == "decode"]
    assert {r["prompt_len"] for r in prefill} == {4, 8} and all(r["context_len"] is None for r in prefill)
    assert {r["context_len"] for r in decode} == {8} and all(r["prompt_len"] is None for r in decode)
    row = read[0]
    assert row["providers_used"] == ["CPUExecutionProvider"] and row["threads"] == 1
    assert len(row["samples_ms"]) == 2 and row["protocol"]["warmup"] == 1 and row["build_s"] > 0
    assert row["latency_ms"]["min"] <= row["latency_ms"]["median"] <= row["latency_ms"]["max"]

    again = profile_configs("host-cpu", configs, settings(), out, progress=False)
    assert (again.measured, again.failed, again.skipped) == (0, 0, 6)
    assert len(out.read_text().splitlines()) == 6
    assert [r["timestamp"] for r in again] == [r["timestamp"] for r in rows]
    # a new length measures only what is new
    more = profile_configs("host-cpu", configs, settings(prompt_lens=(4, 8, 16)), out, progress=False)
    assert (more.measured, more.skipped) == (2, 6)


def test_failed_build_is_recorded_and_profiling_goes_on(fake_graphs, monkeypatch, tmp_path):
    bad, good = small_arch(), small_arch(hidden=64)

    def build(arch, phase="decode", precision="fp32", seed=0, weights=None):
        if arch.arch_id == bad.arch_id:
            raise RuntimeError("boom\nsecond line")
        return fake_build_graph(arch, phase, precision, seed)

    monkeypatch.setattr(fake_graphs, "build_graph", build)
    out = tmp_path / "m.jsonl"
    rows = profile_configs("host-cpu", [bad, good], settings(), out, progress=False)
    assert (rows.measured, rows.failed) == (3, 3)
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["arch_id"] for r in failed} == {bad.arch_id}
    assert failed[0]["error"] == "build: RuntimeError: boom" and failed[0]["latency_ms"] is None
    assert len(read_measurements(out)) == 3
    assert len(read_measurements(out, require_ok=False)) == 6
    # a re-run retries the failed keys only
    monkeypatch.setattr(fake_graphs, "build_graph", fake_build_graph)
    again = profile_configs("host-cpu", [bad, good], settings(), out, progress=False)
    assert (again.measured, again.skipped, again.failed) == (3, 3, 0)
    assert all(r["status"] == "ok" for r in again)


def test_failed_run_fails_only_that_length(fake_graphs, monkeypatch, tmp_path):
    def feeds(arch, phase, prompt_len=None, context_len=None, seed=0, precision="fp32"):
        if prompt_len == 8:
            return {"input_ids": np.zeros((1, 8, 3), np.int64)}  # wrong rank: ORT refuses to run
        return fake_graph_feeds(arch, phase, prompt_len, context_len, seed)

    monkeypatch.setattr(fake_graphs, "graph_feeds", feeds)
    rows = profile_configs("host-cpu", [small_arch()], settings(), tmp_path / "m.jsonl", progress=False)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["prompt_len"] == 8 and failed[0]["error"].startswith("run: ")
    assert rows.measured == 2


def test_lengths_beyond_max_seq_len_are_not_measured(fake_graphs, tmp_path):
    arch = small_arch().replace(max_seq_len=8)
    rows = profile_configs("host-cpu", [arch], settings(prompt_lens=(4, 8, 16), context_lens=(4, 8)),
                           tmp_path / "m.jsonl", progress=False)
    assert sorted((r["phase"], r["prompt_len"] or r["context_len"]) for r in rows) == [
        ("decode", 4), ("prefill", 4), ("prefill", 8)]
    assert rows.out_of_range == 2


def test_unfinished_last_line_is_dropped(fake_graphs, tmp_path, capsys):
    out = tmp_path / "m.jsonl"
    profile_configs("host-cpu", [small_arch()], settings(), out, progress=False)
    with out.open("a") as fh:
        fh.write('{"schema": 1, "target": "ho')  # a kill -9 in the middle of a write
    again = profile_configs("host-cpu", [small_arch()], settings(), out, progress=False)
    assert again.skipped == 3 and again.measured == 0
    assert "unfinished last line" in capsys.readouterr().err
    assert len(read_measurements(out)) == 3


@pytest.mark.parametrize("content", [
    b"first line\nsecond, no newline",  # someone's notes: the unfinished last line is not a row cut off
    bytes(range(256)) * 3,  # a binary file
    b'{"a": 1}',  # another tool's JSONL, its last line without a newline
    b'{"schema": 1, "target": "ho',  # looks like a row cut off, but nothing before it says nas wrote the file...
], ids=["notes", "binary", "other-jsonl", "row-prefix-alone"])
def test_a_file_nas_did_not_write_is_refused_untouched(fake_graphs, tmp_path, content):
    """Found by a hostile new user: `--out notes.txt` cut the notes' last line as "left by an interrupted run",
    then refused; a binary file lost 245 bytes, then a traceback. Now every complete line must be a row before
    anything is written, and only a last line that begins as nas writes a row is dropped."""
    out = tmp_path / "notes.txt"
    out.write_bytes(content)
    if content.startswith(b'{"schema": 1,'):  # ...and alone it is dropped: a file of one cut-off row is nas's
        rows = profile_configs("host-cpu", [small_arch()], settings(), out, progress=False)
        assert rows.measured == 3 and len(read_measurements(out)) == 3
        return
    with pytest.raises(NasUserError, match="measurements"):
        profile_configs("host-cpu", [small_arch()], settings(), out, progress=False)
    assert out.read_bytes() == content


def test_a_whole_last_row_without_newline_is_kept(fake_graphs, tmp_path):
    """A row a runner wrote without its newline is a whole row: kept, and the next row starts on a new line."""
    out = tmp_path / "m.jsonl"
    profile_configs("host-cpu", [small_arch()], settings(prompt_lens=(4,), context_lens=()), out, progress=False)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))
    rows = profile_configs("host-cpu", [small_arch()], settings(), out, progress=False)
    assert (rows.skipped, rows.measured) == (1, 2)
    assert len(read_measurements(out)) == 3 and out.read_bytes().count(b"\n") == 3


def test_out_that_is_a_folder_or_under_a_file_is_one_line(fake_graphs, tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NasUserError, match="it is a folder, not a file"):
        profile_configs("host-cpu", [small_arch()], settings(), tmp_path, progress=False)
    with pytest.raises(NasUserError, match="a_file is a file, not a folder"):
        profile_configs("host-cpu", [small_arch()], settings(), tmp_path / "a_file" / "m.jsonl", progress=False)


def test_rows_of_other_graphs_or_runtime_are_measured_again_not_reused(fake_graphs, tmp_path):
    from nas.latency.provenance import GRAPH_BUILDER_VERSION

    out = tmp_path / "m.jsonl"
    configs = [small_arch()]
    rows = profile_configs("host-cpu", configs, settings(), out, progress=False)
    assert rows.measured == 3 and rows.stale == 0
    assert all(r["env"]["graph_builder"] == GRAPH_BUILDER_VERSION and r["env"]["ort_version"] for r in rows)
    old = [json.loads(line) for line in out.read_text().splitlines()]
    old[0]["env"]["graph_builder"] = "0"
    old[1]["env"]["ort_version"] = "0.0.1"
    del old[2]["env"]["graph_builder"]
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    again = profile_configs("host-cpu", configs, settings(), out, progress=False)
    assert (again.measured, again.skipped, again.stale) == (3, 0, 3)
    assert set(again.stale_reasons) == {f"graph builder 0 (this nas builds {GRAPH_BUILDER_VERSION})",
                                        "no graph-builder version recorded (measured before versioning)",
                                        f"onnxruntime 0.0.1 (this is {rows[0]['env']['ort_version']})"}
    assert all(r["env"]["graph_builder"] == GRAPH_BUILDER_VERSION for r in again)
    third = profile_configs("host-cpu", configs, settings(), out, progress=False)
    assert (third.measured, third.skipped) == (0, 3)


def test_other_targets_rows_are_left_alone(fake_graphs, tmp_path):
    out = tmp_path / "m.jsonl"
    profile_configs("other", [small_arch()], settings(), out, progress=False)
    rows = profile_configs("host-cpu", [small_arch()], settings(), out, progress=False)
    assert rows.measured == 3
    with pytest.raises(NasUserError, match=r"m.jsonl:1: field 'target' is 'other', expected 'host-cpu'"):
        read_measurements(out, target="host-cpu")


def test_measurement_key():
    row = {"arch_id": "a", "phase": "decode", "prompt_len": None, "context_len": 8, "precision": "fp32",
           "provider": "CPUExecutionProvider", "threads": 2, "other": 1}
    assert measurement_key(row) == ("a", "decode", None, 8, "fp32", "CPUExecutionProvider", 2)
    assert measurement_key(list(measurement_key(row))) == measurement_key(row)
    assert len(KEY_FIELDS) == 7
    with pytest.raises(ValueError):
        measurement_key(("a", "b"))


@pytest.fixture
def good_row(fake_graphs, tmp_path):
    out = tmp_path / "one.jsonl"
    return profile_configs("host-cpu", [small_arch()], settings(prompt_lens=(4,), context_lens=()), out,
                           progress=False)[0]


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.pop("latency_ms"), "missing field 'latency_ms'"),
    (lambda r: r.update(phase="train"), "field 'phase' must be one of prefill, decode"),
    (lambda r: r.update(context_len=8), "field 'context_len' must be null for a prefill row"),
    (lambda r: r.update(prompt_len=None), "field 'prompt_len' is required for a prefill row"),
    (lambda r: r["latency_ms"].pop("p90"), "field 'latency_ms.p90'"),
    (lambda r: r.update(arch_id="0123456789abcdef"), "field 'arch_id' is '0123456789abcdef' but the arch hashes"),
    (lambda r: r["arch"].update(num_heads=3), "field 'arch'"),
    (lambda r: r.update(status="failed", error=None), "field 'error' must say why"),
    (lambda r: r.update(schema=2), "schema"),
])
def test_read_measurements_names_line_and_field(good_row, tmp_path, mutate, message):
    bad = json.loads(json.dumps(good_row))
    mutate(bad)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good_row) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(NasUserError) as info:
        read_measurements(path)
    assert str(info.value).startswith(f"{path}:3: ") and message in str(info.value)


def test_read_measurements_malformed_json_and_versions(good_row, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good_row) + "\n{not json\n")
    with pytest.raises(NasUserError, match=r"bad.jsonl:2: malformed JSON"):
        read_measurements(path)
    path.write_text(json.dumps(good_row) + "\n")
    assert len(read_measurements(path, ort_version=good_row["env"]["ort_version"])) == 1
    with pytest.raises(NasUserError, match=r"bad.jsonl:1: field 'env.ort_version'"):
        read_measurements(path, ort_version="0.0.1")
    with pytest.raises(NasUserError, match="no measurements file"):
        read_measurements(tmp_path / "missing.jsonl")


# ----- the command -----

def test_cli_profile_json_and_rerun(fake_graphs, fake_space, capsys, nas_home):
    argv = ["profile", "--target", "host-cpu", "--n-configs", "2", "--prompt-lens", "4,8", "--context-lens", "8",
            "--warmup", "1", "--runs", "2", "--threads", "1", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["measured"], summary["skipped"], summary["failed"]) == (6, 0, 0)
    assert summary["out"] == str(nas_home / "measurements" / "host-cpu.jsonl")
    assert len(read_measurements(summary["out"], target="host-cpu")) == 6
    assert main(argv[:-1]) == 0
    text = capsys.readouterr().out
    assert "measured now: 0, already measured (skipped): 6, failed: 0" in text and summary["out"] in text


def test_cli_profile_device_target_points_to_bundle(capsys):
    assert main(["profile", "--target", "pixel8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nas bundle --target pixel8" in err


def test_cli_profile_unknown_provider(capsys):
    assert main(["profile", "--target", "host-cpu", "--provider", "CUDAExecutionProvider"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no execution provider 'CUDAExecutionProvider'" in err and "CPUExecutionProvider" in err


def test_cli_profile_bad_values(capsys):
    with pytest.raises(SystemExit) as info:  # argparse: usage error, exit 2
        main(["profile", "--target", "host-cpu", "--prompt-lens", "4,x"])
    assert info.value.code == 2
    assert main(["profile", "--target", "host-cpu", "--provider-option", "novalue"]) == 2
    assert main(["profile", "--target", "host-cpu", "--precision", "fp16"]) == 2  # host-cpu does not list fp16
    err = capsys.readouterr().err
    assert "comma-separated" in err and "KEY=VALUE" in err and "fp16" in err


def test_cli_profile_precision_the_provider_cannot_run(fake_graphs, fake_space, monkeypatch, capsys, nas_home):
    import nas.latency.measure as measure

    def refuse(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for MatMul")

    monkeypatch.setattr(measure, "make_session", refuse)
    code = main(["profile", "--target", "host-cpu", "--n-configs", "2", "--prompt-lens", "4", "--context-lens", "8",
                 "--precision", "int8", "--threads", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "precision int8 could not run on CPUExecutionProvider" in err and "NOT_IMPLEMENTED" in err
    rows = read_measurements(nas_home / "measurements" / "host-cpu.jsonl", require_ok=False)
    assert len(rows) == 4 and all(r["status"] == "failed" for r in rows)


def test_real_graphs_prefill_and_decode(tiny_arch, tmp_path):
    """The real graph builder: one graph per phase serves every length; rows validate."""
    from nas.latency import graphs

    assert tuple(graphs.PHASES) == ("prefill", "decode")
    out = tmp_path / "m.jsonl"
    rows = profile_configs("host-cpu", [tiny_arch], settings(prompt_lens=(4, 16), context_lens=(8, 32)), out,
                           progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 4, [r["error"] for r in rows]
    assert len(read_measurements(out, target="host-cpu")) == 4


# ----- several sessions per measurement -----

@pytest.fixture
def recorded(monkeypatch):
    """Wrap make_session and time_session to record which session timed which length, in order."""
    import nas.latency.measure as measure

    real_make, real_time = measure.make_session, measure.time_session
    log = {"sessions": [], "timed": []}

    def make_session(*args, **kwargs):
        session = real_make(*args, **kwargs)
        log["sessions"].append(session)
        return session

    def time_session(session, feeds, protocol, **kwargs):
        decode = feeds["input_ids"].shape[1] == 1  # one new token (the tests' prompts are longer)
        length = feeds["past_kv"].shape[2] if decode else feeds["input_ids"].shape[1]
        log["timed"].append((log["sessions"].index(session), decode, length))
        return real_time(session, feeds, protocol, **kwargs)

    monkeypatch.setattr(measure, "make_session", make_session)
    monkeypatch.setattr(measure, "time_session", time_session)
    return log


def test_sessions_are_honoured_and_lengths_interleaved(fake_graphs, recorded, tmp_path):
    protocol = Protocol(threads=1, warmup=1, runs=2, sessions=3)
    rows = profile_configs("host-cpu", [small_arch()], settings(prompt_lens=(4, 8), context_lens=(8, 16),
                                                                protocol=protocol), tmp_path / "m.jsonl",
                           progress=False)
    assert rows.measured == 4
    # one graph for both phases: 3 fresh sessions in all, each a new object
    assert len(recorded["sessions"]) == 3 and len({id(s) for s in recorded["sessions"]}) == 3
    # every session times every (phase, length) before the next session is created
    assert recorded["timed"] == [(0, False, 4), (0, False, 8), (0, True, 8), (0, True, 16),
                                 (1, False, 4), (1, False, 8), (1, True, 8), (1, True, 16),
                                 (2, False, 4), (2, False, 8), (2, True, 8), (2, True, 16)]
    for row in read_measurements(tmp_path / "m.jsonl"):
        lat = row["latency_ms"]
        assert len(lat["session_medians"]) == 3 and len(row["samples_ms"]) == 6
        assert lat["median"] == pytest.approx(float(np.median(lat["session_medians"])))
        assert lat["min"] == min(row["samples_ms"]) and lat["max"] == max(row["samples_ms"])
        assert row["protocol"]["sessions"] == 3


def test_row_median_is_the_median_of_session_medians(fake_graphs, monkeypatch, tmp_path):
    import nas.latency.measure as measure

    # per call, session-major (lengths 4 then 8); session 2 sits in a slow state
    per_call = iter([[9.0, 10.0, 40.0], [20.0, 20.0, 20.0],
                     [30.0, 30.0, 30.0], [60.0, 60.0, 61.0],
                     [11.0, 11.0, 35.0], [21.0, 22.0, 23.0]])

    def time_session(session, feeds, protocol, **kwargs):
        samples = next(per_call)
        return {**measure.summarize(samples), "samples": samples}

    monkeypatch.setattr(measure, "time_session", time_session)
    rows = profile_configs("host-cpu", [small_arch()], settings(prompt_lens=(4, 8), context_lens=(),
                                                                protocol=Protocol(threads=1, sessions=3)),
                           tmp_path / "m.jsonl", progress=False)
    by_length = {r["prompt_len"]: r for r in rows}
    four, eight = by_length[4], by_length[8]
    assert four["latency_ms"]["session_medians"] == [10.0, 30.0, 11.0]
    assert four["latency_ms"]["median"] == 11.0  # the pooled median of the 9 samples would be 30.0
    assert four["samples_ms"] == [9.0, 10.0, 40.0, 30.0, 30.0, 30.0, 11.0, 11.0, 35.0]
    assert four["latency_ms"]["min"] == 9.0 and four["latency_ms"]["max"] == 40.0
    assert four["latency_ms"]["mean"] == pytest.approx(206 / 9)
    assert eight["latency_ms"]["session_medians"] == [20.0, 60.0, 22.0] and eight["latency_ms"]["median"] == 22.0


def test_a_length_failing_in_a_later_session_fails_only_that_length(fake_graphs, monkeypatch, tmp_path):
    import nas.latency.measure as measure

    real, calls = measure.time_session, []

    def time_session(session, feeds, protocol, **kwargs):
        calls.append(feeds["input_ids"].shape[1])
        if len(calls) == 4:  # session 2, length 8
            raise RuntimeError("device lost")
        return real(session, feeds, protocol, **kwargs)

    monkeypatch.setattr(measure, "time_session", time_session)
    rows = profile_configs("host-cpu", [small_arch()], settings(context_lens=(), protocol=Protocol(
        threads=1, warmup=0, runs=1, sessions=3)), tmp_path / "m.jsonl", progress=False)
    assert calls == [4, 8, 4, 8, 4]  # length 8 is not timed again once it failed
    status = {r["prompt_len"]: r for r in rows}
    assert status[8]["status"] == "failed" and status[8]["error"] == "run: RuntimeError: device lost"
    assert status[4]["status"] == "ok" and len(status[4]["latency_ms"]["session_medians"]) == 3


def test_rows_written_before_sessions_existed_still_read_and_count_as_measured(good_row, fake_graphs, tmp_path):
    old = json.loads(json.dumps(good_row))
    del old["latency_ms"]["session_medians"]
    del old["protocol"]["sessions"]
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(old) + "\n")
    assert read_measurements(path, target="host-cpu")[0]["latency_ms"]["median"] == good_row["latency_ms"]["median"]
    # the same protocol (one session) is not "another protocol"; three sessions is, but the row is reused
    same = profile_configs("host-cpu", [small_arch()], settings(prompt_lens=(4,), context_lens=()), path,
                           progress=False)
    assert (same.skipped, same.measured, same.other_protocol) == (1, 0, 0)
    more = profile_configs("host-cpu", [small_arch()], settings(prompt_lens=(4,), context_lens=(), protocol=Protocol(
        threads=1, warmup=1, runs=2, sessions=3)), path, progress=False)
    assert (more.skipped, more.measured, more.other_protocol) == (1, 0, 1)


@pytest.mark.parametrize("medians", [[], [0.0], "1.0", [1.0, None]])
def test_bad_session_medians_are_refused(good_row, tmp_path, medians):
    bad = json.loads(json.dumps(good_row))
    bad["latency_ms"]["session_medians"] = medians
    with pytest.raises(NasUserError, match=r"bad.jsonl:1: field 'latency_ms.session_medians'"):
        read_measurements(write_rows(tmp_path / "bad.jsonl", [bad]))


def test_make_row_needs_session_medians_for_several_sessions():
    from nas.latency.measure import summarize
    from nas.latency.profiling import make_row

    stats = {**summarize([1.0, 2.0]), "samples": [1.0, 2.0]}
    kw = dict(target="t", arch=small_arch(), phase="prefill", length=4, env={}, providers_used=[], stats=stats)
    assert make_row(settings=settings(), **kw)["latency_ms"]["session_medians"] == [1.5]
    with pytest.raises(ValueError, match="session_medians"):
        make_row(settings=settings(protocol=Protocol(threads=1, sessions=2)), **kw)


def test_cli_profile_sessions_flag(fake_graphs, fake_space, capsys, nas_home):
    argv = ["profile", "--target", "host-cpu", "--n-configs", "1", "--prompt-lens", "4", "--context-lens", "8",
            "--warmup", "0", "--runs", "2", "--threads", "1", "--json"]
    assert main(argv + ["--sessions", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["protocol"]["sessions"] == 2 and summary["measured"] == 2
    rows = read_measurements(summary["out"])
    assert all(len(r["latency_ms"]["session_medians"]) == 2 and len(r["samples_ms"]) == 4 for r in rows)
    assert main(argv[:-1] + ["--sessions", "3"]) == 0  # already measured, with 2 sessions: reused, and said so
    assert "2 of the skipped rows were measured with another protocol" in capsys.readouterr().out
    assert main(argv + ["--sessions", "0"]) == 2
    assert "--sessions must be at least 1" in capsys.readouterr().err
