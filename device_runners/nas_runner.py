#!/usr/bin/env python3
"""nas on-device latency runner: measure the ONNX graphs of a profiling bundle with ONNX Runtime.

Needs only Python 3.8+, onnxruntime and numpy (no nas), so it runs on a phone in Termux, a Raspberry Pi,
a Jetson or a Mac. Usage, from the unpacked bundle folder:

    python nas_runner.py --manifest manifest.json --out measurements.jsonl

Writes one JSON row per measurement in the same schema as `nas profile` (schema 1), appending and flushing
row by row; running it again skips what is already measured ("ok") and retries what failed. Copy the
output back and fit a predictor with `nas calibrate --target TARGET --measurements measurements.jsonl`.

Protocol (the same as nas's nas/latency/measure.py, which this file repeats on purpose so it can stand
alone): for each graph, `sessions` times a fresh ONNX Runtime session is created and every length is timed
in it: `warmup` untimed runs, then `runs` timed runs with time.perf_counter. The latency is the median over
sessions of each session's median (one session alone can sit in a slow state); spread over all timed runs,
each session's median and all samples are kept. Rows are written once a graph's sessions are done. Decode
graphs get a random past KV cache of length C: latency depends on shapes, not values.

Graphs with past_key_values.* inputs and present.* outputs (ONNX Runtime GenAI's structure, what nas bundles
since graph builder "genai-1") run the way GenAI runs them: through IO binding, each KV buffer bound as both
the past input and the present output, so GroupQueryAttention writes the new token in place and nothing copies
the cache (as nas/latency/measure.py's step_runner).
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone

RUNNER_VERSION = 3  # 2: protocol "sessions" (a runner of version 1 would ignore it); 3: weights made here
SCHEMA = 1
STAT_KEYS = ("median", "mean", "min", "max", "p10", "p90", "iqr", "cv")
KEY_FIELDS = ("arch_id", "phase", "prompt_len", "context_len", "precision", "provider", "threads")
CPU = "CPUExecutionProvider"


def die(message):
    sys.stderr.write("nas_runner: error: %s\n" % message)
    sys.exit(2)


def percentile(values, q):
    pos = (len(values) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def summarize(samples):
    v = sorted(samples)
    n = len(v)
    mean = sum(v) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    return {"median": percentile(v, 50), "mean": mean, "min": v[0], "max": v[-1], "p10": percentile(v, 10),
            "p90": percentile(v, 90), "iqr": percentile(v, 75) - percentile(v, 25),
            "cv": std / mean if mean > 0 else 0.0}


def combine_sessions(session_samples):
    """Median of per-session medians; spread over all samples (as measure.combine_sessions)."""
    medians = [summarize(samples)["median"] for samples in session_samples]
    everything = [v for samples in session_samples for v in samples]
    stats = summarize(everything)
    stats["median"] = percentile(sorted(medians), 50)
    stats["session_medians"] = medians
    return stats, everything


def step_runner(session, feeds):
    """One step of the graph as an app runs it: shared past/present KV buffers through IO binding when the
    graph has them, else plain session.run."""
    import numpy as np
    import onnxruntime as ort

    inputs = {i.name for i in session.get_inputs()}
    pairs = {}
    for out in session.get_outputs():
        past = "past_key_values." + out.name[len("present."):] if out.name.startswith("present.") else None
        if past and past in inputs and past in feeds:
            pairs[out.name] = past
    if not pairs:
        return lambda: session.run(None, feeds)
    values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for name, a in feeds.items()}
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
        return values

    return run


def time_session(session, feeds, protocol):
    step = step_runner(session, feeds)
    for _ in range(protocol["warmup"]):
        step()
    samples, total = [], 0.0
    while len(samples) < protocol["runs"] or (total < protocol.get("min_run_seconds", 0.0)
                                              and len(samples) < protocol.get("max_runs", 1000)):
        start = time.perf_counter()
        step()
        elapsed = time.perf_counter() - start
        total += elapsed
        samples.append(elapsed * 1000.0)
    return summarize(samples), samples


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess
        try:
            return subprocess.check_output(["sysctl", "-n", "machdep.cpu.brand_string"], timeout=5).decode().strip()
        except Exception:  # noqa: BLE001 -- the CPU name is informative only
            pass
    return platform.processor() or platform.machine() or "unknown"


def environment(ort, np, nas_version):
    env = {"ort_version": ort.__version__, "numpy_version": np.__version__, "nas_version": nas_version,
           "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
           "cpu_model": cpu_model(), "cpu_count": os.cpu_count()}
    try:  # recorded when installed, as nas.latency.provenance does on the host
        import onnxruntime_genai as og
    except Exception:  # noqa: BLE001 -- absent or broken: not recorded
        return env
    env["ort_genai_version"] = str(getattr(og, "__version__", "unknown"))
    return env


def make_feeds(np, specs, seed):
    """Feeds from the manifest's spec: integer inputs are stored exactly, float inputs are random."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        if "values" in spec:
            feeds[spec["name"]] = np.asarray(spec["values"], dtype=dtype).reshape(shape)
        elif "fill" in spec:
            feeds[spec["name"]] = np.full(shape, spec["fill"], dtype=dtype)
        elif "arange" in spec:
            start = spec["arange"]
            feeds[spec["name"]] = np.arange(start, start + int(np.prod(shape)), dtype=dtype).reshape(shape)
        else:
            feeds[spec["name"]] = (rng.standard_normal(shape) * spec.get("std", 1.0)).astype(dtype)
    return feeds


def session_options(ort, protocol):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = protocol["threads"]
    opts.inter_op_num_threads = protocol.get("inter_op_threads", 1)
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            protocol.get("graph_optimization_level", "ORT_ENABLE_ALL"))
    opts.execution_mode = getattr(ort.ExecutionMode, protocol.get("execution_mode", "ORT_SEQUENTIAL"))
    opts.log_severity_level = 3
    return opts


def session_options_dict(protocol):
    return {"intra_op_num_threads": protocol["threads"], "inter_op_num_threads": protocol.get("inter_op_threads", 1),
            "graph_optimization_level": protocol.get("graph_optimization_level", "ORT_ENABLE_ALL"),
            "execution_mode": protocol.get("execution_mode", "ORT_SEQUENTIAL")}


def error_text(stage, exc):
    lines = str(exc).strip().splitlines()
    return "%s: %s: %s" % (stage, type(exc).__name__, lines[0][:1000] if lines else "")


def make_weights(path, size, fill):
    """Write a config's weights file as the bundle describes it: `size` bytes, every one `fill`. Latency does
    not depend on weight values, and a bundle that ships no weights is kilobytes instead of gigabytes.
    Returns whether the file was written (False: it was there already, of that size)."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return False
    chunk = bytes([fill]) * (4 << 20)
    with open(path + ".part", "wb") as fh:
        left = size
        while left > 0:
            fh.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)
    os.replace(path + ".part", path)
    return True


def read_done(path):
    """Keys with an 'ok' row already in the output file; drops an unfinished last line."""
    done = set()
    if not os.path.exists(path):
        return done
    with open(path, "rb") as fh:
        data = fh.read()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        sys.stderr.write("nas_runner: dropping an unfinished last line of %s\n" % path)
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        data = data[:cut]
    for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            die("%s:%d: malformed JSON; move the file away or fix the line" % (path, lineno))
        if row.get("status") == "ok":
            done.add(tuple(row.get(k) for k in KEY_FIELDS))
    return done


def parse_args(argv):
    p = argparse.ArgumentParser(description="Measure a nas profiling bundle with ONNX Runtime.")
    p.add_argument("--manifest", default="manifest.json", help="the bundle's manifest.json")
    p.add_argument("--out", default="measurements.jsonl", help="JSONL file to append rows to")
    p.add_argument("--provider", help="ORT execution provider (default: the first of the manifest's that exists)")
    p.add_argument("--provider-option", action="append", default=[], metavar="KEY=VALUE",
                   help="option for the provider, repeatable")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the manifest's)")
    p.add_argument("--warmup", type=int, help="untimed runs before timing (default: the manifest's)")
    p.add_argument("--runs", type=int, help="timed runs per session (default: the manifest's)")
    p.add_argument("--sessions", type=int,
                   help="fresh sessions per graph; the median of their medians is kept (default: the manifest's)")
    p.add_argument("--keep-weights", action="store_true",
                   help="keep the weights files made on the device after measuring (default: delete each one "
                        "once its config is measured, so the device never holds more than one)")
    p.add_argument("--list-providers", action="store_true", help="print this onnxruntime's providers and exit")
    return p.parse_args(argv)


def load_manifest(path):
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        die("cannot read manifest %s: %s" % (path, exc))
    if manifest.get("runner_version", 1) > RUNNER_VERSION:
        die("manifest needs runner version %s; this runner is %d" % (manifest.get("runner_version"), RUNNER_VERSION))
    return manifest


def choose_provider(args, manifest, available):
    """The execution provider (--provider, else the manifest's first available one, else CPU) and its options."""
    if args.provider:
        provider = args.provider
    else:
        wanted = [p for p in manifest["providers"] if p in available]
        provider = wanted[0] if wanted else CPU
    if provider not in available:
        die("execution provider %r is not available in this onnxruntime build; available: %s"
            % (provider, ", ".join(available)))
    options = {}
    for item in args.provider_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            die("--provider-option expects KEY=VALUE, got %r" % item)
        options[key] = value
    return provider, options


def run_protocol(args, manifest):
    """The manifest's protocol with the command line's overrides (also adb_runner's)."""
    protocol = dict(manifest["protocol"])
    protocol.setdefault("sessions", 1)  # a manifest written before sessions existed: one session
    for name in ("threads", "warmup", "runs", "sessions"):
        value = getattr(args, name, None)  # adb_runner takes only --runs and --warmup
        if value is not None:
            if value < (0 if name == "warmup" else 1):
                die("--%s must be %s, got %d" % (name, ">= 0" if name == "warmup" else ">= 1", value))
            protocol[name] = value
    return protocol


def measurement_jobs(manifest, precision, provider, threads):
    """(graph, measurement, row key) of every measurement in the bundle, in bundle order."""
    jobs = []
    for graph in manifest["graphs"]:
        for m in graph["measurements"]:
            length = m["length"]
            key = (graph["arch_id"], graph["phase"], length if graph["phase"] == "prefill" else None,
                   length if graph["phase"] == "decode" else None, precision, provider, threads)
            jobs.append((graph, m, key))
    return jobs


def group_by_graph(todo):
    """[(graph, [measurement, ...])] in bundle order, consecutive measurements of one graph together."""
    groups = []
    for graph, m, _key in todo:
        if groups and groups[-1][0] is graph:
            groups[-1][1].append(m)
        else:
            groups.append((graph, [m]))
    return groups


class RowWriter:
    """Appends one measurement row at a time (flushed), counting ok and failed rows."""

    def __init__(self, path, manifest, provider, options, protocol, env):
        self.out = open(path, "a")
        self.manifest, self.provider, self.options, self.protocol, self.env = manifest, provider, options, protocol, env
        self.count = {"ok": 0, "failed": 0}

    def write(self, graph, m, stats=None, samples=None, error=None, used=(), build_s=None):
        length, protocol = m["length"], self.protocol
        row = {"schema": SCHEMA, "target": self.manifest["target"], "arch": graph["arch"],
               "arch_id": graph["arch_id"], "phase": graph["phase"],
               "prompt_len": length if graph["phase"] == "prefill" else None,
               "context_len": length if graph["phase"] == "decode" else None,
               "precision": self.manifest["precision"], "provider": self.provider, "providers_used": list(used),
               "provider_options": self.options, "threads": protocol["threads"], "protocol": protocol,
               "session_options": session_options_dict(protocol), "latency_ms": stats, "samples_ms": samples or [],
               "env": self.env, "status": "failed" if error else "ok", "error": error,
               "build_s": None if build_s is None else round(build_s, 4),
               "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.out.write(json.dumps(row) + "\n")
        self.out.flush()
        self.count["failed" if error else "ok"] += 1

    def close(self):
        self.out.close()


def measure_graph(ort, np, path, ms, protocol, providers, seed):
    """All `sessions` rounds of one graph: a fresh session per round, every length timed in each.
    Returns per measurement (stats, samples, error), the providers used and build_s (first session)."""
    errors, samples, feeds = {}, {}, {}
    used, build_s, sess = [], None, None
    for _ in range(protocol["sessions"]):
        sess = None  # one session in memory at a time
        start = time.perf_counter()
        try:
            sess = ort.InferenceSession(path, sess_options=session_options(ort, protocol), providers=providers)
        except Exception as exc:  # noqa: BLE001 -- recorded as a failed row, the run goes on
            err = error_text("session", exc)
            if build_s is None:
                build_s = time.perf_counter() - start
            for i in range(len(ms)):
                errors.setdefault(i, err)
            break
        if build_s is None:
            build_s = time.perf_counter() - start
            used = sess.get_providers()
        time_round(np, sess, ms, protocol, seed, errors, samples, feeds)
    sess = None
    results = [(None, None, errors[i]) if i in errors else combine_sessions(samples[i]) + (None,)
               for i in range(len(ms))]
    return results, used, build_s


def time_round(np, sess, ms, protocol, seed, errors, samples, feeds):
    """One session: every measurement not failed yet timed (its feeds made once), a failure recorded."""
    for i, m in enumerate(ms):
        if i in errors:
            continue
        try:
            if i not in feeds:
                feeds[i] = make_feeds(np, m["feeds"], seed)
            _, run_samples = time_session(sess, feeds[i], protocol)
        except Exception as exc:  # noqa: BLE001
            errors[i] = error_text("run", exc)
            feeds.pop(i, None)
            continue
        samples.setdefault(i, []).append(run_samples)


def main(argv=None):
    args = parse_args(argv)
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        die("%s; install with: pip install onnxruntime numpy" % exc)
    available = ort.get_available_providers()
    if args.list_providers:
        print("\n".join(available))
        return 0
    manifest = load_manifest(args.manifest)
    base = os.path.dirname(os.path.abspath(args.manifest))
    provider, options = choose_provider(args, manifest, available)
    protocol = run_protocol(args, manifest)
    env = environment(ort, np, manifest.get("nas_version"))
    env["graph_builder"] = manifest.get("graph_builder", "unknown")
    jobs = measurement_jobs(manifest, manifest["precision"], provider, protocol["threads"])
    done = read_done(args.out)
    todo = [j for j in jobs if j[2] not in done]
    print("nas_runner: %d measurements in the bundle, %d already done, %d to go; provider %s, %d threads"
          % (len(jobs), len(jobs) - len(todo), len(todo), provider, protocol["threads"]), flush=True)
    writer = RowWriter(args.out, manifest, provider, options, protocol, env)
    providers = [(provider, options)] + ([CPU] if provider != CPU else [])
    measure_groups(args, np, ort, base, group_by_graph(todo), len(todo), protocol, providers,
                   manifest.get("seed", 0), writer)
    writer.close()
    count = writer.count
    print("nas_runner: %d measured, %d failed; rows in %s" % (count["ok"], count["failed"], args.out), flush=True)
    return 0 if count["ok"] or not todo else 1


def measure_groups(args, np, ort, base, groups, total, protocol, providers, seed, writer):
    """Measure each graph's measurements, making its weights file first when the bundle ships none (and
    removing it after the graph's last use, unless --keep-weights), one progress line a row."""
    last_use = {graph["weights"]: index for index, (graph, _ms) in enumerate(groups)
                if graph.get("weights_fill") is not None}
    made, done, started = set(), 0, time.time()
    for index, (graph, ms) in enumerate(groups):
        weights = os.path.join(base, graph["weights"]) if graph.get("weights_fill") is not None else None
        if weights is not None:
            try:
                if make_weights(weights, graph["weights_bytes"], graph["weights_fill"]):
                    made.add(weights)
            except OSError as exc:
                die("cannot write the weights file %s (%.1f GB): %s; free some space" % (
                    weights, graph["weights_bytes"] / 1e9, exc.strerror or exc))
        results, used, build_s = measure_graph(ort, np, os.path.join(base, graph["file"]), ms, protocol, providers,
                                               seed)
        if weights in made and last_use[graph["weights"]] == index and not args.keep_weights:
            os.remove(weights)
        for m, (stats, samples, err) in zip(ms, results):
            done += 1
            writer.write(graph, m, stats=stats, samples=samples, error=err, used=used, build_s=build_s)
            status = "failed: " + err if err else "%.2f ms" % stats["median"]
            label = "%s %s %s=%d" % (graph["arch_id"], graph["phase"], "P" if graph["phase"] == "prefill" else "C",
                                     m["length"])
            eta = (time.time() - started) / done * (total - done)
            print("[%d/%d] %s: %s (eta %ds)" % (done, total, label, status, eta), flush=True)


if __name__ == "__main__":
    sys.exit(main())
