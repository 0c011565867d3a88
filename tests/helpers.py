"""Fakes and builders several test modules share (fixtures built on them live in conftest.py)."""

from __future__ import annotations

import json
import random
import types

import numpy as np

from nas.core.arch import ArchBatch, ArchConfig
from nas.latency.features import DEFAULT_FEATURES, PHASES, feature_matrix
from nas.latency.measure import Protocol, summarize
from nas.latency.profiling import ProfileSettings, make_row
from nas.latency.provenance import GRAPH_BUILDER_VERSION
from nas.spaces import load_space
from nas.study.schema import Objective, StudyMeta, TargetFigures, TrialRecord


# ----------------------------------------------------------------------------------------------- profiling
def small_arch(hidden=32, layers=1, **kw):
    return ArchConfig(hidden_size=hidden, num_layers=layers, num_heads=2, intermediate_size=2 * hidden,
                      vocab_size=64, max_seq_len=64, **kw)


def fake_build_graph(arch, phase="decode", precision="fp32", seed=0, weights=None):
    """One graph for both phases, as the real builder: embedding gather + matmul over S new tokens, and a
    reduction over a past KV buffer [layers, kv, C, head_dim] (C = S for a prompt, the context for decode)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((arch.vocab_size, arch.hidden_size)).astype(np.float32), "E"),
             numpy_helper.from_array(rng.standard_normal((arch.hidden_size, arch.hidden_size)).astype(np.float32), "W")]
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["h"]), helper.make_node("MatMul", ["h", "W"], ["y"]),
             helper.make_node("ReduceSum", ["past_kv"], ["s"], keepdims=0),
             helper.make_node("Identity", ["position_ids"], ["pos"])]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "S"]),
              helper.make_tensor_value_info("past_kv", TensorProto.FLOAT,
                                            [arch.num_layers, arch.num_kv_heads, "C", arch.head_dim]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, "S"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "S", arch.hidden_size]),
               helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
               helper.make_tensor_value_info("pos", TensorProto.INT64, [1, "S"])]
    model = helper.make_model(helper.make_graph(nodes, "fake", inputs, outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def fake_graph_feeds(arch, phase, prompt_len=None, context_len=None, seed=0, precision="fp32"):
    rng = np.random.default_rng(seed)
    if phase == "prefill":
        return {"input_ids": rng.integers(0, arch.vocab_size, (1, prompt_len), dtype=np.int64),
                "past_kv": np.zeros((arch.num_layers, arch.num_kv_heads, prompt_len, arch.head_dim), np.float32),
                "position_ids": np.arange(prompt_len, dtype=np.int64)[None]}
    return {"input_ids": np.array([[3]], dtype=np.int64),
            "past_kv": rng.standard_normal((arch.num_layers, arch.num_kv_heads, context_len, arch.head_dim))
            .astype(np.float32),
            "position_ids": np.array([[context_len]], dtype=np.int64)}


def fake_save_graph(model, path):
    import onnx

    onnx.save_model(model, str(path))


def fake_graphs_module():
    module = types.ModuleType("nas.latency.graphs")
    module.PHASES = ("prefill", "decode")
    module.build_graph = fake_build_graph
    module.graph_feeds = fake_graph_feeds
    module.save_graph = fake_save_graph
    return module


class FakeSpace:
    name = "fake"

    def sample(self, n, seed=0):
        return [small_arch(hidden=32 * (i + 1)) for i in range(n)]  # head_dim 16, 32, ...: GQA needs 16k


# ----------------------------------------------------------------------------------------------- studies
PROMPT, CONTEXT = 256, 1024  # the lengths of the fake studies' figures
FAKE_TARGETS = {"pixel8": (22.0, 180.0, "analytic, uncalibrated"), "host-cpu": (14.0, 420.0, "calibrated")}



def fake_figures(arch: ArchConfig, target: str) -> TargetFigures:
    bw, rate, source = FAKE_TARGETS[target]
    decode_ms = (arch.weight_bytes("int4") + arch.kv_cache_bytes(CONTEXT)) / (bw * 1e9) * 1e3 + 0.04 * arch.num_layers
    prefill_ms = arch.prefill_flops(PROMPT) / (rate * 1e9) * 1e3 + 0.3 * arch.num_layers
    return TargetFigures(prefill_ms=prefill_ms, decode_ms=decode_ms,
                         memory_mb=arch.memory_bytes("int4", PROMPT, CONTEXT) / 2**20, latency_source=source,
                         prompt_len=PROMPT)


def random_arch(rng: random.Random) -> ArchConfig:
    hidden = rng.choice([384, 512, 576, 640, 768, 896, 1024, 1152, 1280, 1536, 1792, 2048])
    heads = hidden // 64
    kv = rng.choice([d for d in range(1, heads + 1) if heads % d == 0 and d <= 8] + [heads])
    inter = int(round(hidden * rng.uniform(2.5, 4.0) / 64)) * 64
    return ArchConfig(hidden_size=hidden, num_layers=rng.randint(8, 32), num_heads=heads, num_kv_heads=kv,
                      intermediate_size=inter, vocab_size=32000, max_seq_len=2048)


def make_study(storage, name: str, n_trials: int = 60, targets=("pixel8",), seed: int = 0, memory_mb: float = 700.0,
               n_failed: int = 2, n_pruned: int = 1):
    """A study as `nas search` writes it: StudyMeta, TrialRecords, Optuna constraints; some FAIL/PRUNED."""
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = (Objective("quality", "maximize"),) + tuple(
        Objective("decode_tokens_per_s", "maximize", t) for t in targets)
    study = optuna.create_study(storage=storage, study_name=name, directions=[o.direction for o in objectives])
    meta = StudyMeta(space="test", space_fingerprint="0" * 16, targets=tuple(targets),
                     precision={t: "int4" for t in targets}, prompt_len=PROMPT, context_len=CONTEXT,
                     objectives=objectives, constraints={"memory_mb": memory_mb},
                     latency_sources={t: FAKE_TARGETS[t][2] for t in targets}, nas_version="0.1.0")
    for key, value in meta.to_user_attrs().items():
        study.set_user_attr(key, value)
    rng = random.Random(seed)
    dist = {"x": IntDistribution(0, 10**6)}
    trials = []
    for i in range(n_trials):
        arch = random_arch(rng)
        figs = {t: fake_figures(arch, t) for t in targets}
        worst_mem = max(f.memory_mb for f in figs.values())
        violations = (f"memory {worst_mem:.0f} MB > {memory_mb:.0f} MB",) if worst_mem > memory_mb else ()
        record = TrialRecord(arch, figs, float(arch.num_non_embedding_params), "non_embedding_params", violations)
        values = [record.quality] + [figs[t].decode_tokens_per_s for t in targets]
        trials.append(create_trial(values=values, params={"x": i}, distributions=dist,
                                   user_attrs=record.to_user_attrs(),
                                   system_attrs={"constraints": [worst_mem - memory_mb]}))
    for _ in range(n_failed):
        trials.insert(rng.randrange(len(trials)), create_trial(state=TrialState.FAIL, params={"x": 0},
                                                               distributions=dist, user_attrs={"fail_reason": "x"}))
    for _ in range(n_pruned):
        trials.insert(rng.randrange(len(trials)), create_trial(state=TrialState.PRUNED, params={"x": 0},
                                                               distributions=dist))
    study.add_trials(trials)
    return study


# ----------------------------------------------------------------------------------------------- device rows
DEVICE_ENV = {"ort_version": "1.20.0", "cpu_model": "Tensor G3", "nas_version": "0.1.0",
              "graph_builder": GRAPH_BUILDER_VERSION}
DEVICE_RATES = {"prefill": {"one": 1.0, "layers": 0.2, "linear_gflop": 8.0, "score_melems": 0.05,
                            "streamed_weight_mb": 0.002},
                "decode": {"one": 0.5, "layers": 0.1, "streamed_weight_mb": 0.02, "kv_mb": 0.05}}


def device_rows(target="pixel8", n=24, env=DEVICE_ENV, precision="int4", seed=0, threads=4):
    """Rows as the on-device runner writes them, with latencies from a known model plus 1% noise."""
    rng = np.random.default_rng(seed)
    configs = load_space("tiny").sample(n, seed=seed)
    settings = ProfileSettings(precision=precision, provider="CPUExecutionProvider", prompt_lens=(32, 64),
                               context_lens=(32, 128), protocol=Protocol(threads=threads, warmup=1, runs=3, sessions=1))
    rows = []
    for arch in configs:
        batch = ArchBatch.from_configs([arch])
        for phase in PHASES:
            coef = np.array([DEVICE_RATES[phase].get(k, 0.0) for k in DEFAULT_FEATURES[phase]])
            for length in settings.lengths(phase):
                ms = float((feature_matrix(batch, phase, length, precision) @ coef)[0])
                samples = list(ms * (1 + 0.01 * rng.standard_normal(3)))
                stats = {**summarize(samples), "samples": samples}
                rows.append(make_row(target=target, arch=arch, phase=phase, length=length, settings=settings,
                                     env=env, providers_used=["CPUExecutionProvider"], stats=stats, build_s=0.1))
    return rows


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def calibrated_pixel8(tmp_path, capsys):
    """`nas calibrate --target pixel8` on `device_rows()`: (the measurements file, the predictor it saved)."""
    from nas.cli import main
    from nas.core.paths import predictor_path

    good = write_rows(tmp_path / "good.jsonl", device_rows())
    assert main(["calibrate", "--target", "pixel8", "--measurements", good]) == 0
    capsys.readouterr()
    return good, predictor_path("pixel8", "CPUExecutionProvider", "int4")


# ----------------------------------------------------------------------------------------------- maths
def killed_if_left(proc):
    """A context for a test's work with a child process: a child still running when it ends (a failed assert,
    a time-out) is killed, never left behind."""
    import contextlib

    @contextlib.contextmanager
    def context():
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()

    return context()


def brute_pareto_mask(points):
    """Non-dominated rows of minimised `points`, the O(n^2) way (the oracle for nas.study.pareto)."""
    n = len(points)
    return np.array([not any(np.all(points[j] <= points[i]) and np.any(points[j] < points[i]) for j in range(n))
                     for i in range(n)])
