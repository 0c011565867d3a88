"""The latency measurement protocol, as code.

One number reported as "latency" is the median over `sessions` independent ONNX Runtime sessions of each
session's median of `runs` timed `session.run` calls (which follow `warmup` untimed ones); threads and
session options are set explicitly and recorded next to the number (see `Protocol`). With one session it is
simply the median of the timed runs. Spread (min/max, p10/p90, IQR, coefficient of variation, over all timed
runs of all sessions), each session's median and the raw samples travel with the median, so a noisy
measurement can be seen to be noisy.

Why several sessions: the timed runs of one session agree with each other far better than two sessions of
the same graph agree. A session can sit in a slow state for longer than the back-to-back runs of one
measurement (the cause lies outside the graph: other load on the machine, where the session's memory and
threads landed), so more runs in a row do not average it out, and a predictor fitted to single-session
medians is held back by that noise rather than by its model. So each length is measured in `sessions`
freshly created sessions, spread out in time (all lengths of a graph are timed in one session before the
next session is created), and the median of the per-session medians is reported: it ignores one session out
of three that sat in a slow state. (The README's status section gives the session-to-session spread measured
on our machines.)

Execution providers are named exactly as ONNX Runtime names them ("CPUExecutionProvider",
"XnnpackExecutionProvider", ...). A session is created with the requested provider first and
CPUExecutionProvider after it: ORT assigns nodes the preferred provider cannot run to the next one, and
does so implicitly for the CPU provider anyway, so listing it makes the fallback visible rather than
changing it. A measurement therefore records `session.get_providers()` (what the session actually holds),
not only what was asked for.

The standalone on-device runner (device_runners/nas_runner.py) repeats `summarize` and the timing
loop because it must run without this package; tests check that both produce rows of the same schema.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nas.core.errors import NasUserError
from nas.core.limits import MAX_COUNT, MAX_THREADS, check_int, check_number
from nas.core.version import __version__

CPU_PROVIDER = "CPUExecutionProvider"

GRAPH_OPTIMIZATION_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")
EXECUTION_MODES = ("ORT_SEQUENTIAL", "ORT_PARALLEL")

# Keys of the statistics dict (all in milliseconds except `cv`, which is a ratio).
STAT_KEYS = ("median", "mean", "min", "max", "p10", "p90", "iqr", "cv")

# A ModelProto at or above this size cannot be serialised in one protobuf message (2 GiB limit);
# such a model is written to a temporary folder with external data and loaded from there.
_PROTOBUF_LIMIT_BYTES = 2**31 - 2**24


@dataclass(frozen=True)
class Protocol:
    """How one latency figure is measured.

    threads: intra-op threads of the session (ORT's own default depends on the machine, so it is always set).
    warmup: untimed runs first, in every session (first runs pay for memory allocation and caches).
    runs: timed runs per session; their median is that session's latency.
    sessions: independent ORT sessions per (graph, length), each freshly created; the reported latency is the
        median over sessions of each session's median (see the module docstring for why: one session can
        sit in a slow state, so one session's median is not a stable figure).

    The defaults are the protocol every measuring command (`nas profile`, `nas bundle`, `nas calibrate`) uses
    unless told otherwise: 3 fresh sessions x (1 warm-up + 5 timed runs).
    inter_op_threads: 1 with sequential execution, the usual setting for a single LLM forward pass.
    min_run_seconds: when > 0, keep running past `runs` until the timed runs add up to this many seconds
        (bounded by `max_runs`), so very short graphs still get a stable median.
    """

    threads: int
    warmup: int = 1
    runs: int = 5
    sessions: int = 3
    inter_op_threads: int = 1
    graph_optimization_level: str = "ORT_ENABLE_ALL"
    execution_mode: str = "ORT_SEQUENTIAL"
    min_run_seconds: float = 0.0
    max_runs: int = 1000

    def __post_init__(self) -> None:
        for name, low, high in (("threads", 1, MAX_THREADS), ("warmup", 0, MAX_COUNT), ("runs", 1, MAX_COUNT),
                                ("sessions", 1, MAX_COUNT), ("inter_op_threads", 1, MAX_THREADS),
                                ("max_runs", 1, MAX_COUNT)):
            check_int(getattr(self, name), f"protocol {name}", low, high)
        if self.max_runs < self.runs:
            raise NasUserError(f"protocol max_runs ({self.max_runs}) must be >= runs ({self.runs})")
        if self.graph_optimization_level not in GRAPH_OPTIMIZATION_LEVELS:
            raise NasUserError(f"graph_optimization_level {self.graph_optimization_level!r} is not one of "
                               f"{', '.join(GRAPH_OPTIMIZATION_LEVELS)}")
        if self.execution_mode not in EXECUTION_MODES:
            raise NasUserError(f"execution_mode {self.execution_mode!r} is not one of {', '.join(EXECUTION_MODES)}")
        check_number(self.min_run_seconds, "protocol min_run_seconds", 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Protocol":
        """The protocol of a row or manifest. Rows written before `sessions` existed were measured in one
        session, so a missing `sessions` is 1; any other missing field takes its default."""
        data = {"sessions": 1, **data}
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise NasUserError(f"protocol has unknown field(s) {', '.join(unknown)} (written by a newer nas?)")
        return cls(**data)

    def session_options_dict(self) -> dict[str, Any]:
        """The ORT SessionOptions this protocol sets, as recorded in every measurement row."""
        return {
            "intra_op_num_threads": self.threads,
            "inter_op_num_threads": self.inter_op_threads,
            "graph_optimization_level": self.graph_optimization_level,
            "execution_mode": self.execution_mode,
        }


PROTOCOL_DEFAULTS = Protocol(threads=1)  # read its warmup/runs/sessions; threads come from the target
# Lengths every measuring command (`nas profile`, `nas bundle`, `nas calibrate`) measures unless told otherwise.
DEFAULT_PROMPT_LENS = (64, 256, 512)
DEFAULT_CONTEXT_LENS = (512, 2048)


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers, in ORT's order of preference."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def check_provider(provider: str) -> None:
    """Refuse, in one line, a provider this onnxruntime build does not have."""
    available = available_providers()
    if provider not in available:
        raise NasUserError(f"execution provider {provider!r} is not available in this onnxruntime build; "
                           f"available: {', '.join(available)}")


def session_options(protocol: Protocol):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = protocol.threads
    opts.inter_op_num_threads = protocol.inter_op_threads
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, protocol.graph_optimization_level)
    opts.execution_mode = getattr(ort.ExecutionMode, protocol.execution_mode)
    opts.log_severity_level = 3  # errors only: ORT warns about every node it hands to the CPU fallback
    return opts


def make_session(model_or_path, provider: str, provider_options: Mapping[str, Any] | None, protocol: Protocol):
    """An InferenceSession on `provider` (exact ORT name) with CPUExecutionProvider as fallback.

    Every call creates a fresh session (its own memory arena and prepacked weights): this is what
    `protocol.sessions` repeats.

    `model_or_path` is an onnx.ModelProto, serialised model bytes, or a path to an .onnx file (external
    data next to it is found by ORT). Provider options are passed as strings, as ORT expects.
    """
    import onnxruntime as ort

    check_provider(provider)
    options = {str(k): str(v) for k, v in (provider_options or {}).items()}
    providers: list[Any] = [(provider, options)]
    if provider != CPU_PROVIDER:
        providers.append(CPU_PROVIDER)
    opts = session_options(protocol)
    if isinstance(model_or_path, (str, Path)):
        return ort.InferenceSession(str(model_or_path), sess_options=opts, providers=providers)
    if isinstance(model_or_path, (bytes, bytearray)):
        return ort.InferenceSession(bytes(model_or_path), sess_options=opts, providers=providers)
    if model_or_path.ByteSize() < _PROTOBUF_LIMIT_BYTES:
        return ort.InferenceSession(model_or_path.SerializeToString(), sess_options=opts, providers=providers)
    import onnx

    with tempfile.TemporaryDirectory(prefix="nas_graph_") as tmp:  # ORT reads the weights while creating
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model_or_path, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data")
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def reusable_model(model_or_path, folder):
    """A form of `model_or_path` that several sessions can be created from without serialising it each time:
    paths and bytes as they are, a ModelProto as its serialised bytes or, past protobuf's 2 GiB limit, as an
    .onnx file with external data written into `folder` (which must outlive the sessions' creation)."""
    if isinstance(model_or_path, (str, Path, bytes, bytearray)):
        return model_or_path
    if model_or_path.ByteSize() < _PROTOBUF_LIMIT_BYTES:
        return model_or_path.SerializeToString()
    import onnx

    path = Path(folder) / "model.onnx"
    onnx.save_model(model_or_path, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data")
    return path


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    n = len(sorted_values)
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """Median and spread of timed runs, in ms; `cv` is the sample standard deviation over the mean."""
    if not samples_ms:
        raise ValueError("no samples to summarize")
    values = sorted(float(v) for v in samples_ms)
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {
        "median": _percentile(values, 50),
        "mean": mean,
        "min": values[0],
        "max": values[-1],
        "p10": _percentile(values, 10),
        "p90": _percentile(values, 90),
        "iqr": _percentile(values, 75) - _percentile(values, 25),
        "cv": std / mean if mean > 0 else 0.0,
    }


def combine_sessions(session_samples: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Statistics of one (graph, length) measured in several sessions, from each session's timed runs (ms).

    "median" is the median of the per-session medians (listed as "session_medians"); the spread keys
    (mean, min, max, p10, p90, iqr, cv) are over all timed runs of all sessions, so they include the
    session-to-session spread; "samples" is every timed run, session after session. With one session this
    is exactly `summarize` of its runs.
    """
    sessions = [[float(v) for v in samples] for samples in session_samples]
    if not sessions or not all(sessions):
        raise ValueError("every session needs at least one sample")
    medians = [summarize(samples)["median"] for samples in sessions]
    everything = [v for samples in sessions for v in samples]
    stats = summarize(everything)
    stats["median"] = _percentile(sorted(medians), 50)
    return {**stats, "session_medians": medians, "samples": everything}


def shared_kv_pairs(session, feeds: Mapping[str, Any]) -> dict[str, str]:
    """present output -> past input that share one buffer in a GenAI-structured graph (nas.latency.graphs):
    every output "present.X" whose input "past_key_values.X" is fed. Empty for other graphs."""
    if not hasattr(session, "get_outputs"):  # a stand-in session in tests
        return {}
    outputs = [o.name for o in session.get_outputs()]
    inputs = {i.name for i in session.get_inputs()}
    pairs = {}
    for name in outputs:
        if name.startswith("present."):
            past = "past_key_values." + name[len("present."):]
            if past in inputs and past in feeds:
                pairs[name] = past
    return pairs


def step_runner(session, feeds: Mapping[str, Any]) -> Callable[[], Any]:
    """A callable that runs one step of `session` on `feeds` the way an app runs a GenAI graph.

    When the graph has past_key_values.* inputs with matching present.* outputs, the step runs through IO
    binding with each past buffer bound as its present output too (GenAI's past_present_share_buffer):
    GroupQueryAttention writes the new tokens into the buffer in place and nothing copies the cache. Repeated
    runs overwrite the same positions (the attention mask fixes them), so every run is the same step.
    Other graphs run through plain `session.run`.
    """
    feeds = dict(feeds)
    pairs = shared_kv_pairs(session, feeds)
    if not pairs:
        return lambda: session.run(None, feeds)
    import numpy as np
    import onnxruntime as ort

    values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array)) for name, array in feeds.items()}
    binding = session.io_binding()
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
    for out in session.get_outputs():
        if out.name in pairs:
            binding.bind_ortvalue_output(out.name, values[pairs[out.name]])
        else:
            binding.bind_output(out.name, "cpu")

    def run():
        session.run_with_iobinding(binding)
        return values  # keeps the buffers alive as long as the runner

    return run


def time_session(session, feeds: Mapping[str, Any], protocol: Protocol,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Run `protocol.warmup` untimed then at least `protocol.runs` timed steps (`step_runner`: IO binding with
    a shared past/present KV buffer for GenAI-structured graphs, else `session.run`).

    Returns the statistics of `summarize` (ms) plus "samples": every timed run in ms, in order.
    `clock` is injectable so the statistics can be tested without real timing.
    """
    step = step_runner(session, feeds)
    for _ in range(protocol.warmup):
        step()
    samples: list[float] = []
    total_s = 0.0
    while len(samples) < protocol.runs or (total_s < protocol.min_run_seconds and len(samples) < protocol.max_runs):
        start = clock()
        step()
        elapsed = clock() - start
        total_s += elapsed
        samples.append(elapsed * 1000.0)
    return {**summarize(samples), "samples": samples}


def ort_version() -> str:
    """The installed onnxruntime's version (what measurements and predictors record and are checked against)."""
    import onnxruntime as ort

    return ort.__version__


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux, Android), sysctl (macOS), or platform."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def environment() -> dict[str, Any]:
    """Where a measurement was taken: software versions and the CPU. Recorded in every row."""
    import numpy

    return {
        "ort_version": ort_version(),
        "numpy_version": numpy.__version__,
        "nas_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
