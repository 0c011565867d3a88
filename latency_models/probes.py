"""Probes of this host's achievable memory bandwidth and matmul throughput, for the analytic model.

host-cpu has no spec sheet worth trusting (a cloud vCPU's share of a socket's memory bandwidth is unknown),
so when it has no fitted predictor the roofline is fed what this machine actually achieves:
- memory bandwidth: ONNX Runtime ReduceSum over a float32 tensor far larger than any cache (a pure read
  stream, like a decode step reading its weights), at the threads the target runs with; best of N;
- matmul throughput: ONNX Runtime MatMul in fp32 at a few LLM-like shapes (rows = tokens, K x N = a
  projection), same threads; best rate over shapes and runs.
numpy stands in when onnxruntime cannot be imported. Best-of-N, because noise (other processes) only ever
makes a run slower. The result is cached in NAS_HOME/probes/ per CPU, threads and ORT version, so the few
seconds are paid once.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from nas.paths import data_dir

PROBE_SCHEMA = 1
# 256 MiB of float32: well past the last-level cache of any CPU this runs on (tens of MiB), small enough to
# allocate anywhere.
_BANDWIDTH_ELEMENTS = 64 * 2**20
_BANDWIDTH_ELEMENTS_QUICK = 32 * 2**20
# (tokens, in_features, out_features): a prefill projection, an FFN matrix, a wide one.
_MATMUL_SHAPES = ((128, 1024, 1024), (256, 1024, 2816), (512, 2048, 2048))
_MATMUL_SHAPES_QUICK = ((128, 1024, 1024),)


def probe_path(threads: int) -> Path:
    return data_dir() / "probes" / f"host-cpu__threads{threads}.json"


def _ort_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("onnxruntime")
    except Exception:  # noqa: BLE001 -- not installed: the numpy probes are used
        return None


def _cpu_model() -> str:
    from latency_models.measure import cpu_model

    return cpu_model()


def _session(model, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _best_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def probe_bandwidth(threads: int, quick: bool = False, repeats: int = 5) -> tuple[float, str]:
    """Achievable read bandwidth in bytes/s (best of `repeats`) and how it was measured."""
    n = _BANDWIDTH_ELEMENTS_QUICK if quick else _BANDWIDTH_ELEMENTS
    x = np.random.default_rng(0).random(n, dtype=np.float32)
    try:
        import onnx
        from onnx import TensorProto, helper

        node = helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)
        graph = helper.make_graph([node], "bandwidth", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = min(model.ir_version, 9)
        onnx.checker.check_model(model)
        session = _session(model, threads)
        seconds = _best_seconds(lambda: session.run(None, {"x": x}), repeats)
        method = f"onnxruntime ReduceSum over {x.nbytes / 2**20:.0f} MiB float32, {threads} threads, best of {repeats}"
    except ImportError:
        seconds = _best_seconds(lambda: x.sum(), repeats)
        method = f"numpy sum over {x.nbytes / 2**20:.0f} MiB float32, best of {repeats}"
    return x.nbytes / seconds, method


def probe_matmul(threads: int, quick: bool = False, repeats: int = 5) -> tuple[float, dict[str, float], str]:
    """Best fp32 matmul FLOP/s over LLM-like shapes, the rate per shape, and how it was measured."""
    shapes = _MATMUL_SHAPES_QUICK if quick else _MATMUL_SHAPES
    rng = np.random.default_rng(0)
    by_shape: dict[str, float] = {}
    try:
        import onnx  # noqa: F401
        from onnx import TensorProto, helper, numpy_helper

        for m, k, n in shapes:
            a = rng.random((m, k), dtype=np.float32)
            b = rng.random((k, n), dtype=np.float32)
            graph = helper.make_graph(
                [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
                initializer=[numpy_helper.from_array(b, "b")])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            model.ir_version = min(model.ir_version, 9)
            session = _session(model, threads)
            seconds = _best_seconds(lambda: session.run(None, {"a": a}), repeats)
            by_shape[f"{m}x{k}x{n}"] = 2.0 * m * k * n / seconds
        method = f"onnxruntime MatMul fp32, {threads} threads, best of {repeats} per shape"
    except ImportError:
        for m, k, n in shapes:
            a = rng.random((m, k), dtype=np.float32)
            b = rng.random((k, n), dtype=np.float32)
            seconds = _best_seconds(lambda: a @ b, repeats)
            by_shape[f"{m}x{k}x{n}"] = 2.0 * m * k * n / seconds
        method = f"numpy matmul fp32 (BLAS threads), best of {repeats} per shape"
    return max(by_shape.values()), by_shape, method


def run_probes(threads: int, quick: bool = False) -> dict[str, Any]:
    """Measure now (a few seconds; about one with `quick`)."""
    start = time.perf_counter()
    bandwidth, bw_method = probe_bandwidth(threads, quick)
    flops, by_shape, mm_method = probe_matmul(threads, quick)
    return {
        "schema": PROBE_SCHEMA,
        "cpu_model": _cpu_model(),
        "threads": threads,
        "ort_version": _ort_version(),
        "mem_bandwidth_bytes_per_s": bandwidth,
        "matmul_flops_per_s": flops,
        "matmul_flops_per_s_by_shape": by_shape,
        "bandwidth_method": bw_method,
        "matmul_method": mm_method,
        "quick": quick,
        "probe_s": round(time.perf_counter() - start, 3),
        "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def host_probes(threads: int, refresh: bool = False, quick: bool = False) -> dict[str, Any]:
    """This host's probes at `threads`, from the NAS_HOME cache when it is for this CPU and ORT version."""
    path = probe_path(threads)
    if not refresh and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if (cached.get("schema") == PROBE_SCHEMA and cached.get("cpu_model") == _cpu_model()
                    and cached.get("ort_version") == _ort_version() and cached.get("threads") == threads
                    and cached.get("mem_bandwidth_bytes_per_s", 0) > 0 and cached.get("matmul_flops_per_s", 0) > 0
                    and (quick or not cached.get("quick"))):
                return cached
        except (OSError, ValueError):
            pass  # unreadable cache: measure again
    result = run_probes(threads, quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    return result
