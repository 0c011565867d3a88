"""Faults inside a measurement, each recorded on its own row while profiling goes on: an ONNX Runtime session
that cannot be created, and a config that would not fit in this machine's memory."""

from __future__ import annotations

from nas.core.arch import ArchConfig
from nas.latency.measure import Protocol
from nas.latency.profiling import ProfileSettings, profile_configs, read_measurements
from tests.helpers import fake_build_graph, killed_if_left, small_arch


def settings(**kw):
    base = {"precision": "fp32", "provider": "CPUExecutionProvider", "provider_options": {}, "prompt_lens": (4, 8),
            "context_lens": (8,), "protocol": Protocol(threads=1, warmup=1, runs=2, sessions=1)}
    return ProfileSettings(**{**base, **kw})


def test_a_session_onnx_runtime_refuses_fails_that_config_alone(fake_graphs, monkeypatch, tmp_path):
    """A graph that builds and passes onnx's checker, but with an operator ONNX Runtime has no kernel for: the
    session cannot be created, so every length of that config gets a failed row "session: ..."."""
    bad, good = small_arch(), small_arch(hidden=64)

    def build(arch, phase="decode", precision="fp32", seed=0, weights=None):
        model = fake_build_graph(arch, phase, precision, seed)
        if arch.arch_id == bad.arch_id:
            model.graph.node[1].op_type = "NoSuchOperator"
        return model

    monkeypatch.setattr(fake_graphs, "build_graph", build)
    out = tmp_path / "m.jsonl"
    rows = profile_configs("host-cpu", [bad, good], settings(), out, progress=False)
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["arch_id"] for r in failed} == {bad.arch_id} and len(failed) == 3  # 2 prefill + 1 decode lengths
    assert all(r["error"].startswith("session: ") and "NoSuchOperator" in r["error"] for r in failed), failed
    assert rows.measured == 3 and len(read_measurements(out)) == 3


def test_a_config_too_big_for_this_machine_is_recorded_not_tried(fake_graphs, tmp_path):
    """A config whose fp32 weights alone exceed the memory available is refused with a "memory: ..." row before
    anything is built (trying would get the process killed, not an error), and the next config is measured."""
    huge = ArchConfig(hidden_size=16384, num_layers=128, num_heads=128, intermediate_size=65536, vocab_size=64,
                      max_seq_len=64)  # ~550 B parameters: about 2 TB in fp32
    good = small_arch()
    rows = profile_configs("host-cpu", [huge, good], settings(), tmp_path / "m.jsonl", progress=False)
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["arch_id"] for r in failed} == {huge.arch_id} and len(failed) == 3
    assert all(r["error"].startswith("memory: needs about ") and "GiB available" in r["error"] for r in failed)
    assert rows.measured == 3


# The child `nas profile`, with its second config's measurement held until a signal comes: the test's SIGINT
# always reaches a profile in progress (a profile that finished between the test's polls exited 0 once in CI).
_HELD_PROFILE = """
import signal, sys
from nas.latency import measure
real, calls = measure.time_session, []

def time_session(*args, **kwargs):
    calls.append(1)
    if len(calls) > 2:  # the first config times two lengths (prefill 8, decode 8); the second waits
        signal.pause()  # SIGINT raises KeyboardInterrupt here, as Ctrl-C does mid-measurement
    return real(*args, **kwargs)

measure.time_session = time_session
from nas.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigint_stops_profile_with_one_line_and_keeps_the_rows(tmp_path):
    """Found when tried as a new user: Ctrl-C during `nas profile` printed nothing. Now, as for search and
    calibrate: "nas profile: interrupted", exit 130, and the rows measured so far stay readable."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _HELD_PROFILE, "profile", "--target", "host-cpu", "--space", "tiny",
                             "--n-configs", "3", "--prompt-lens", "8", "--context-lens", "8", "--warmup", "0",
                             "--runs", "1", "--sessions", "1", "--threads", "1", "--quiet", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NAS_HOME": str(tmp_path / "home")})
    with killed_if_left(proc):
        deadline = time.time() + 120
        while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 2):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["nas profile: interrupted"], stderr
    rows = read_measurements(out, require_ok=False)
    assert len(rows) == 2  # the first config's prefill and decode; the second's were not written


def test_a_full_disk_ends_profile_in_one_line_with_no_torn_row(tmp_path):
    """Found by a hostile new user: `nas profile --out` on a full disk ended in a traceback and left a torn row.
    The disk fills here as the kernel makes it fill for one process: a file-size limit (RLIMIT_FSIZE) on the
    `nas profile` subprocess, set one row short of room, so the kernel refuses the write part-way (EFBIG, as a full
    disk refuses it with ENOSPC). One line, exit 2, and the file exactly as it was: the cut row is taken back."""
    import os
    import resource
    import subprocess
    import sys

    from nas.cli import main

    out = tmp_path / "m.jsonl"
    common = ["profile", "--target", "host-cpu", "--space", "tiny", "--n-configs", "1", "--context-lens", "8",
              "--warmup", "0", "--runs", "1", "--sessions", "1", "--threads", "1", "--quiet", "--out", str(out)]
    assert main(common + ["--prompt-lens", "8"]) == 0
    before = out.read_bytes()
    limit = len(before) + 1000  # a row is about 2 KB: the next one is cut part-way

    def full_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "nas", *common, "--prompt-lens", "8,16"], capture_output=True,
                          text=True, preexec_fn=full_disk, timeout=300,
                          env={**os.environ, "NAS_HOME": str(tmp_path / "home")})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("nas profile: error: cannot write measurements to") and "File too large" in lines[0]
    assert out.read_bytes() == before
