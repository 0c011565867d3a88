"""Probes of this host's achievable memory bandwidth and matmul throughput, for the analytic model.

host-cpu has no spec sheet worth trusting (a cloud vCPU's share of a socket's memory bandwidth is unknown),
so when it has no fitted predictor the roofline is fed what this machine actually achieves:
- memory bandwidth: ONNX Runtime MatMul of one token row against a float32 weight far larger than any cache
  ([1 x 2048] x [2048 x 32768], 256 MiB): the matrix-vector product a decode step streams its weights
  through, the same kernel and access pattern, at the threads the target runs with; best of N. (Schema 1
  used a ReduceSum, which read 3-5x slower than decode's MatMuls on the same host: it made the roofline
  predict decode ~5x too slow.)
- matmul throughput: ONNX Runtime MatMul in fp32 at a few LLM-like shapes (rows = tokens, K x N = a
  projection), same threads; best rate over shapes and runs;
- dispatch overhead: the decode graph (`nas.latency.graphs`) of a near-zero-work model (hidden 64,
  vocab 256) at 1 and 9 layers: the difference per layer is what ORT spends launching one decoder layer's
  ~40 kernels, the 1-layer time less one layer the fixed cost of a session run;
- attention rates: the graph of an MQA model with a tiny FFN, decoding after 16 and after 2048 cached tokens
  and prefilling 64 and 512 tokens; the differences are attention's work, which a CPU runs far below its
  MatMul rate (`analytic.RooflineParams.attention_flops_per_s`).
numpy stands in when onnxruntime cannot be imported (no dispatch probe then). Best-of-N, because noise
(other processes) only ever makes a run slower: on a busy machine the probes still read low, so probe on a
quiet one (`nas calibrate` records when and how they were taken). The result is cached in NAS_HOME/probes/
per CPU, threads and ORT version, so the few seconds are paid once.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.arch import ArchBatch, ArchConfig
from nas.core.errors import NasUserError
from nas.core.limits import is_finite_number
from nas.core.paths import data_dir, ensure_folder, write_atomic
from nas.core.userfiles import parse_json, read_user_bytes
from nas.latency import graphs
from nas.latency.measure import cpu_model, ort_version, step_runner

PROBE_SCHEMA = 3  # 3: + attention rates; 2: GEMV bandwidth and dispatch overhead (1: ReduceSum)
# (in_features, out_features) of the streamed weight: 256 MiB of float32 (64 MiB quick), well past the
# last-level cache of any CPU this runs on (tens of MiB), small enough to allocate anywhere.
_BANDWIDTH_SHAPE = (2048, 32768)
_BANDWIDTH_SHAPE_QUICK = (2048, 8192)
# (tokens, in_features, out_features): a prefill projection, an FFN matrix, a wide one.
_MATMUL_SHAPES = ((128, 1024, 1024), (256, 1024, 2816), (512, 2048, 2048))
_MATMUL_SHAPES_QUICK = ((128, 1024, 1024),)


def probe_path(threads: int) -> Path:
    return data_dir() / "probes" / f"host-cpu__threads{threads}.json"


def _cpu_model() -> str:
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


def _matmul_model(k: int, n: int, rows: int, weight: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [rows, k])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [rows, n])],
        initializer=[numpy_helper.from_array(weight, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 9)
    return model


def probe_bandwidth(threads: int, quick: bool = False, repeats: int | None = None) -> tuple[float, str]:
    """Achievable weight-streaming bandwidth in bytes/s (best of `repeats`) and how it was measured: one
    token row times a weight matrix far larger than the caches, the way decode reads its weights."""
    k, n = _BANDWIDTH_SHAPE_QUICK if quick else _BANDWIDTH_SHAPE
    repeats = repeats or (5 if quick else 10)
    rng = np.random.default_rng(0)
    weight = rng.random((k, n), dtype=np.float32)
    row = rng.random((1, k), dtype=np.float32)
    model = _matmul_model(k, n, 1, weight)
    # At `threads` and at 1 thread, the faster counts: one core streams nearly as fast as several on most
    # CPUs, and a 1-thread run is not held back by another process busy on one of the other cores.
    seconds = float("inf")
    for t in sorted({1, threads}):
        session = _session(model, t)
        seconds = min(seconds, _best_seconds(lambda: session.run(None, {"a": row}), repeats, warmup=2))
    method = (f"onnxruntime MatMul [1 x {k}] x [{k} x {n}] float32 ({weight.nbytes / 2**20:.0f} MiB weight), "
              f"best of {repeats} at {threads} and 1 threads")
    return weight.nbytes / seconds, method


def probe_dispatch(threads: int, quick: bool = False) -> tuple[float, float, str]:
    """(per-layer overhead ms, per-run overhead ms, method) from the decode graphs of a near-zero-work model
    at 1 and 9 layers."""
    runs = 30 if quick else 300
    best = {}
    for layers in (1, 9):
        arch = ArchConfig(vocab_size=256, hidden_size=64, num_layers=layers, num_heads=2, num_kv_heads=1,
                          head_dim=32, intermediate_size=128, ffn_kind="swiglu", tie_embeddings=False,
                          qkv_bias=False, max_seq_len=64)
        session = _session(graphs.build_graph(arch, "decode"), threads)
        feeds = graphs.graph_feeds(arch, "decode", context_len=16)
        best[layers] = _best_seconds(lambda: session.run(None, feeds), runs, warmup=5) * 1e3
    per_layer = max(0.0, (best[9] - best[1]) / 8)
    per_run = max(0.0, best[1] - per_layer)
    method = (f"onnxruntime decode graph, hidden 64, vocab 256, 1 and 9 layers, context 16, {threads} threads, "
              f"best of {runs}")
    return per_layer, per_run, method


_ATTENTION_PROBE_ARCH = ArchConfig(vocab_size=256, hidden_size=1024, num_layers=4, num_heads=16, num_kv_heads=1,
                                   head_dim=64, intermediate_size=64, ffn_kind="swiglu", tie_embeddings=False,
                                   qkv_bias=False, max_seq_len=4096)


def probe_attention(threads: int, matmul_flops_per_s: float, quick: bool = False
                    ) -> tuple[float | None, float | None, str]:
    """(decode, prefill attention FLOP/s, method) from the deployed graph of an MQA model whose FFN is tiny
    (hidden 1024 = 16 heads x 64, FFN 64, vocab 256, 4 layers), stepped through IO binding as GenAI runs it.
    Decode: after 2048 less after 16 cached tokens, which adds only attention over 2032 positions (one kv head:
    a 0.5 MB cache a layer, so the rate is the kernel's arithmetic, not the memory's). Prefill: a 512-token
    less a 64-token prompt, less the projections' extra work at `matmul_flops_per_s`. None where the
    difference is lost in noise."""
    runs = 10 if quick else 40
    arch = _ATTENTION_PROBE_ARCH
    batch = ArchBatch.from_configs([arch])
    session = _session(graphs.build_graph(arch, "decode"), threads)

    def best(phase: str, length: int, repeats: int) -> float:
        feeds = graphs.graph_feeds(arch, phase, **{"context_len" if phase == "decode" else "prompt_len": length})
        return _best_seconds(step_runner(session, feeds), repeats, warmup=2)

    def added(flops, short: int, long: int) -> float:
        return float(np.asarray(flops(long))[0] - np.asarray(flops(short))[0])

    decode_s = best("decode", 2048, runs) - best("decode", 16, runs)
    decode_flops = added(batch.decode_attention_flops, 16, 2048)
    prefill_runs = max(3, runs // 4)
    prefill_flops = added(batch.prefill_attention_flops, 64, 512)
    projections = added(batch.prefill_flops, 64, 512) - prefill_flops
    prefill_s = (best("prefill", 512, prefill_runs) - best("prefill", 64, prefill_runs)
                 - projections / matmul_flops_per_s)
    method = (f"onnxruntime decode graph (GroupQueryAttention), 16 query heads / 1 kv head x 64, 4 layers, FFN 64: "
              f"decode at context 2048 less 16 (best of {runs}), prefill of 512 less 64 tokens less the projections "
              f"at the MatMul rate (best of {prefill_runs}), {threads} threads")
    return (decode_flops / decode_s if decode_s > 0 else None,
            prefill_flops / prefill_s if prefill_s > 0 else None, method)


def probe_matmul(threads: int, quick: bool = False, repeats: int = 10) -> tuple[float, dict[str, float], str]:
    """Best fp32 matmul FLOP/s over LLM-like shapes, the rate per shape, and how it was measured."""
    shapes = _MATMUL_SHAPES_QUICK if quick else _MATMUL_SHAPES
    rng = np.random.default_rng(0)
    by_shape: dict[str, float] = {}
    for m, k, n in shapes:
        a = rng.random((m, k), dtype=np.float32)
        b = rng.random((k, n), dtype=np.float32)
        session = _session(_matmul_model(k, n, m, b), threads)
        seconds = _best_seconds(lambda: session.run(None, {"a": a}), repeats)
        by_shape[f"{m}x{k}x{n}"] = 2.0 * m * k * n / seconds
    method = f"onnxruntime MatMul fp32, {threads} threads, best of {repeats} per shape"
    return max(by_shape.values()), by_shape, method


def run_probes(threads: int, quick: bool = False) -> dict[str, Any]:
    """Measure now (a few seconds; about one with `quick`)."""
    start = time.perf_counter()
    bandwidth, bw_method = probe_bandwidth(threads, quick)
    flops, by_shape, mm_method = probe_matmul(threads, quick)
    per_layer_ms, per_run_ms, dispatch_method = probe_dispatch(threads, quick)
    attention, prefill_attention, attention_method = probe_attention(threads, flops, quick)
    return {
        "schema": PROBE_SCHEMA,
        "cpu_model": _cpu_model(),
        "threads": threads,
        "ort_version": ort_version(),
        "mem_bandwidth_bytes_per_s": bandwidth,
        "matmul_flops_per_s": flops,
        "matmul_flops_per_s_by_shape": by_shape,
        "bandwidth_method": bw_method,
        "matmul_method": mm_method,
        "per_layer_overhead_ms": per_layer_ms,
        "per_run_overhead_ms": per_run_ms,
        "dispatch_method": dispatch_method,
        "decode_attention_flops_per_s": attention,
        "prefill_attention_flops_per_s": prefill_attention,
        "attention_method": attention_method,
        "quick": quick,
        "probe_s": round(time.perf_counter() - start, 3),
        "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def host_probes(threads: int, refresh: bool = False, quick: bool = False) -> dict[str, Any]:
    """This host's probes at `threads`, from the NAS_HOME cache when it is for this CPU and ORT version."""
    path = probe_path(threads)
    if not refresh and path.is_file():
        try:
            cached = parse_json(read_user_bytes(path, "probe cache"), str(path))
        except NasUserError:
            cached = None  # unreadable or malformed cache: measure again
        if _usable(cached, threads, quick):
            return cached
    result = run_probes(threads, quick)
    ensure_folder(path.parent, "the folder for host probes")
    write_atomic(path, json.dumps(result, indent=1) + "\n")
    return result


def _usable(cached: Any, threads: int, quick: bool) -> bool:
    """Whether a cache file holds probes of this CPU, ORT version and threads, every rate a finite positive
    number and every overhead finite and >= 0 (a cache edited by hand, or written by an older nas, is measured
    again rather than trusted)."""
    if not isinstance(cached, dict):
        return False
    rates = [cached.get("mem_bandwidth_bytes_per_s"), cached.get("matmul_flops_per_s")] + [
        cached[k] for k in ("decode_attention_flops_per_s", "prefill_attention_flops_per_s")
        if cached.get(k) is not None]
    overheads = [cached[k] for k in ("per_layer_overhead_ms", "per_run_overhead_ms") if cached.get(k) is not None]
    return (cached.get("schema") == PROBE_SCHEMA and cached.get("cpu_model") == _cpu_model()
            and cached.get("ort_version") == ort_version() and cached.get("threads") == threads
            and all(is_finite_number(v) and v > 0 for v in rates)
            and all(is_finite_number(v) and v >= 0 for v in overheads)
            and (quick or not cached.get("quick")))
