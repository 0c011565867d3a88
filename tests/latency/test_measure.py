"""The measurement protocol: warm-up and run counts, statistics, providers, sessions on real ORT."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from nas.core.errors import NasUserError
from nas.latency.measure import (
    Protocol,
    available_providers,
    combine_sessions,
    environment,
    make_session,
    reusable_model,
    summarize,
    time_session,
)


def matmul_model(n: int = 16):
    """x[batch?, n] @ W[n, n] with a symbolic leading dim, like the P/C dims of the real graphs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["P", n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["P", n])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeSession:
    """Each run 'takes' the next duration (seconds) on the fake clock; records how often it ran."""

    def __init__(self, clock, durations):
        self.clock, self.durations, self.calls = clock, list(durations), 0

    def run(self, outputs, feeds):
        self.clock.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


def test_warmup_and_runs_are_honoured_and_stats_are_right():
    clock = FakeClock()
    # 2 warm-ups (slow, must not be counted) then 5 timed runs of 1..5 ms
    session = FakeSession(clock, [1.0, 1.0, 0.001, 0.002, 0.003, 0.004, 0.005])
    stats = time_session(session, {}, Protocol(threads=1, warmup=2, runs=5), clock=clock)
    assert session.calls == 7
    assert stats["samples"] == pytest.approx([1, 2, 3, 4, 5])
    assert stats["median"] == pytest.approx(3)
    assert stats["mean"] == pytest.approx(3)
    assert stats["min"] == pytest.approx(1) and stats["max"] == pytest.approx(5)
    assert stats["p10"] == pytest.approx(np.percentile([1, 2, 3, 4, 5], 10))
    assert stats["p90"] == pytest.approx(np.percentile([1, 2, 3, 4, 5], 90))
    assert stats["iqr"] == pytest.approx(np.percentile([1, 2, 3, 4, 5], 75) - np.percentile([1, 2, 3, 4, 5], 25))
    assert stats["cv"] == pytest.approx(statistics.stdev([1, 2, 3, 4, 5]) / 3)


def test_min_run_seconds_extends_runs_up_to_max_runs():
    clock = FakeClock()
    session = FakeSession(clock, [0.125])  # exact in binary: 8 runs make exactly 1 s
    stats = time_session(session, {}, Protocol(threads=1, warmup=0, runs=3, min_run_seconds=1.0), clock=clock)
    assert len(stats["samples"]) == 8
    session = FakeSession(clock, [0.01])
    stats = time_session(session, {}, Protocol(threads=1, warmup=0, runs=3, min_run_seconds=10, max_runs=7),
                         clock=clock)
    assert len(stats["samples"]) == 7


def test_summarize_single_sample():
    assert summarize([2.5]) == {"median": 2.5, "mean": 2.5, "min": 2.5, "max": 2.5, "p10": 2.5, "p90": 2.5,
                                "iqr": 0.0, "cv": 0.0}


@pytest.mark.parametrize("field,value", [("threads", 0), ("runs", 0), ("warmup", -1), ("threads", 1.5),
                                         ("sessions", 0), ("sessions", True), ("sessions", 2.0),
                                         ("graph_optimization_level", "FAST"), ("min_run_seconds", -1)])
def test_protocol_rejects_bad_values(field, value):
    kwargs = {"threads": 1, field: value}
    with pytest.raises(NasUserError, match=field):
        Protocol(**kwargs)


def test_protocol_round_trips():
    p = Protocol(threads=2, warmup=1, runs=4, sessions=3, min_run_seconds=0.5)
    assert p.to_dict()["sessions"] == 3
    assert Protocol.from_dict(p.to_dict()) == p
    assert p.session_options_dict()["intra_op_num_threads"] == 2


def test_protocol_from_a_dict_written_before_sessions_existed():
    old = {"threads": 2, "warmup": 2, "runs": 7, "inter_op_threads": 1, "graph_optimization_level": "ORT_ENABLE_ALL",
           "execution_mode": "ORT_SEQUENTIAL", "min_run_seconds": 0.0, "max_runs": 1000}
    p = Protocol.from_dict(old)
    assert p.sessions == 1 and p == Protocol(threads=2, warmup=2, runs=7, sessions=1)
    with pytest.raises(NasUserError, match="unknown field.*turbo"):
        Protocol.from_dict({**old, "turbo": True})


def test_combine_sessions_is_the_median_of_session_medians():
    # session 2 sat in a slow state: its median must not drag the figure up, as a pooled median would
    sessions = [[10.0, 11.0, 10.5], [15.0, 14.0, 16.0], [9.0, 10.0, 9.5]]
    stats = combine_sessions(sessions)
    assert stats["session_medians"] == [10.5, 15.0, 9.5]
    assert stats["median"] == 10.5
    everything = [v for s in sessions for v in s]
    assert stats["samples"] == everything
    pooled = summarize(everything)
    for key in ("mean", "min", "max", "p10", "p90", "iqr", "cv"):
        assert stats[key] == pytest.approx(pooled[key]), key
    assert combine_sessions([[1.0, 3.0], [5.0, 7.0]])["median"] == 4.0  # even count: mean of the middle two
    # one session: exactly the single-session statistics
    assert combine_sessions([[3.0, 1.0, 2.0]]) == {**summarize([3.0, 1.0, 2.0]), "session_medians": [2.0],
                                                   "samples": [3.0, 1.0, 2.0]}
    with pytest.raises(ValueError):
        combine_sessions([[1.0], []])


def test_reusable_model_serialises_once(tmp_path):
    model = matmul_model()
    source = reusable_model(model, tmp_path)
    assert source == model.SerializeToString()
    assert reusable_model(source, tmp_path) is source and reusable_model("m.onnx", tmp_path) == "m.onnx"
    protocol = Protocol(threads=1)
    first, second = (make_session(source, "CPUExecutionProvider", None, protocol) for _ in range(2))
    assert first is not second and first.get_inputs()[0].name == second.get_inputs()[0].name == "x"


def test_unknown_provider_is_one_line_listing_available():
    with pytest.raises(NasUserError) as info:
        make_session(matmul_model(), "NoSuchExecutionProvider", None, Protocol(threads=1))
    message = str(info.value)
    assert "'NoSuchExecutionProvider' is not available" in message
    assert "CPUExecutionProvider" in message and "\n" not in message


def test_real_session_on_cpu_records_providers_and_times():
    protocol = Protocol(threads=1, warmup=1, runs=3)
    session = make_session(matmul_model(), "CPUExecutionProvider", {}, protocol)
    assert session.get_providers() == ["CPUExecutionProvider"]
    for p in (1, 8):  # one session serves every value of the symbolic dim
        stats = time_session(session, {"x": np.ones((p, 16), np.float32)}, protocol)
        assert len(stats["samples"]) == 3 and stats["median"] > 0


def test_session_from_path_and_bytes(tmp_path):
    import onnx

    model = matmul_model()
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path))
    protocol = Protocol(threads=1)
    for source in (path, str(path), model.SerializeToString()):
        assert make_session(source, "CPUExecutionProvider", None, protocol).get_inputs()[0].name == "x"


def test_environment_and_providers():
    import onnxruntime

    env = environment()
    assert env["ort_version"] == onnxruntime.__version__
    assert env["cpu_count"] >= 1 and env["cpu_model"] and env["nas_version"]
    assert "CPUExecutionProvider" in available_providers()
