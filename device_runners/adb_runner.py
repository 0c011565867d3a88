#!/usr/bin/env python3
"""nas latency runner for Android phones over adb, with ONNX Runtime GenAI's own benchmark binary.

Termux on Android has no onnxruntime wheel, so nas_runner.py cannot run on most phones. This script runs on
the computer the phone is plugged into (Python 3.8+, adb on PATH; nothing else) and drives the phone with
adb: for each model folder of the bundle (an ONNX Runtime GenAI model folder: model.onnx, genai_config.json,
a byte-level tokenizer) it pushes the folder, writes the weights file on the phone when the bundle ships none
(every byte the bundle's fill value), and runs GenAI's `model_benchmark` (built from onnxruntime-genai's
benchmark/c for the phone's ABI, with its libonnxruntime-genai.so and libonnxruntime.so beside it):

    python adb_runner.py --genai-bin path/to/android-arm64/ --out measurements.jsonl

    prefill at prompt length P: a prompt file of P ASCII bytes (= P tokens with the bundle's tokenizer),
        `model_benchmark --prompt_file F -g 1 -r 1 -w W`, its "Prompt processing (time to first token)" average;
    decode at context C: a prompt of C tokens and `-g 1+D`: its "Token generation" average over the D decode
        steps after the prompt (contexts C+1 .. C+D; D = --decode-tokens, default 8).
Each measurement is `--runs` such invocations (a fresh model load each, like a session of nas_runner), and
the rows are in nas_runner.py's schema (imported from beside this file), so `nas calibrate --measurements`
reads them. The phone's folder is removed config by config.

Not tested on a phone by nas's developers: the command lines follow model_benchmark's options (-i, -g, -r,
-w, --prompt_file, -e) and its printed format; check `--dry-run` first and report what differs.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone

# nas_runner is shipped beside this file in every bundle. Run as a script, this folder is already on sys.path;
# loaded from elsewhere (tests), it is put there for this import.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import nas_runner  # noqa: E402

ENGINE = "onnxruntime-genai model_benchmark over adb"
PROMPT_TEXT = "the quick brown fox jumps over the lazy dog "  # ASCII: one byte, one token
_STAT = re.compile(r"^(?P<label>[^\n:]+):\s*\n\s*avg \(us\):\s*(?P<avg>[0-9.eE+-]+)", re.MULTILINE)


def parse_benchmark(text):
    """{label: average in microseconds} from model_benchmark's output, e.g. {"Prompt processing (time to first
    token)": 1234.5, "Token generation": 56.7, ...}."""
    return {m.group("label").strip(): float(m.group("avg")) for m in _STAT.finditer(text)}


def prompt_text(n):
    """`n` ASCII bytes: a prompt of exactly n tokens under the bundle's byte-level tokenizer."""
    return (PROMPT_TEXT * (n // len(PROMPT_TEXT) + 1))[:n]


class Device:
    """adb to one phone: run shell commands, push files. `dry_run` prints the commands instead."""

    def __init__(self, serial=None, dry_run=False, adb="adb"):
        self.base = [adb] + (["-s", serial] if serial else [])
        self.dry_run = dry_run

    def run(self, args, check=True):
        if self.dry_run:
            print("$ " + " ".join(shlex.quote(a) for a in self.base + args))
            return ""
        done = subprocess.run(self.base + args, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError("adb %s failed (%d): %s" % (" ".join(args[:2]), done.returncode,
                                                          (done.stderr or done.stdout).strip()[:500]))
        return done.stdout

    def shell(self, command, check=True):
        return self.run(["shell", command], check=check)

    def push(self, local, remote):
        return self.run(["push", local, remote])


def benchmark_command(remote, folder, prompt_file, generate, warmup):
    """The shell command that runs model_benchmark once on the phone."""
    binary = remote + "/bin"
    return ("cd %s && LD_LIBRARY_PATH=%s %s/model_benchmark -i . -e cpu --prompt_file %s -g %d -r 1 -w %d"
            % (shlex.quote(remote + "/" + folder), shlex.quote(binary), shlex.quote(binary),
               shlex.quote(prompt_file), generate, warmup))


def fill_command(path, size, fill):
    """Write `size` bytes of value `fill` to `path` on the phone (toybox head and tr)."""
    return "head -c %d /dev/zero | tr '\\000' '\\%03o' > %s" % (size, fill, shlex.quote(path))


def device_env(device):
    props = {}
    for key in ("ro.product.manufacturer", "ro.product.model", "ro.soc.model", "ro.build.version.release",
                "ro.product.cpu.abi"):
        props[key] = device.shell("getprop " + key, check=False).strip()
    return {"engine": ENGINE, "android": props, "host_python": sys.version.split()[0]}


def parse_args(argv):
    p = argparse.ArgumentParser(description="Measure a nas profiling bundle on an Android phone over adb with "
                                            "ONNX Runtime GenAI's model_benchmark.")
    p.add_argument("--manifest", default="manifest.json", help="the bundle's manifest.json")
    p.add_argument("--out", default="measurements.jsonl", help="JSONL file to append rows to")
    p.add_argument("--genai-bin", required=True,
                   help="local folder with model_benchmark and its shared libraries, built for the phone's ABI")
    p.add_argument("--serial", help="adb serial of the phone (default: the only one connected)")
    p.add_argument("--remote", default="/data/local/tmp/nas", help="working folder on the phone")
    p.add_argument("--runs", type=int, help="model_benchmark invocations per measurement (default: the manifest's)")
    p.add_argument("--warmup", type=int, help="model_benchmark -w (default: the manifest's)")
    p.add_argument("--decode-tokens", type=int, default=8, help="decode steps averaged per invocation (default 8)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the adb commands instead of running them (writes no rows)")
    p.add_argument("--adb", default="adb", help="the adb executable (default: adb on PATH)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    manifest = nas_runner.load_manifest(args.manifest)
    base = os.path.dirname(os.path.abspath(args.manifest))
    if not os.path.isfile(os.path.join(args.genai_bin, "model_benchmark")):
        nas_runner.die("--genai-bin %s has no model_benchmark; build it from onnxruntime-genai's benchmark/c for "
                       "the phone's ABI" % args.genai_bin)
    protocol = nas_runner.run_protocol(args, manifest)
    protocol["sessions"] = protocol["runs"]  # each invocation loads the model afresh
    if args.decode_tokens < 1:
        nas_runner.die("--decode-tokens must be >= 1, got %d" % args.decode_tokens)
    device = Device(args.serial, args.dry_run, args.adb)
    env = device_env(device) if not args.dry_run else {"engine": ENGINE}
    env["nas_version"] = manifest.get("nas_version")
    env["graph_builder"] = manifest.get("graph_builder", "unknown")
    provider, threads, precision = nas_runner.CPU, protocol["threads"], manifest["precision"]
    done = nas_runner.read_done(args.out)
    graphs = [g for g in manifest["graphs"] if g.get("genai_files")]
    if not graphs:
        nas_runner.die("this bundle has no GenAI model folders (a vocabulary below 259 tokens?)")
    device.shell("mkdir -p %s/bin" % shlex.quote(args.remote))
    device.push(os.path.join(args.genai_bin, "."), args.remote + "/bin")
    device.shell("chmod +x %s/bin/model_benchmark" % shlex.quote(args.remote))
    out = open(os.devnull if args.dry_run else args.out, "a")
    folders = []
    for g in graphs:
        if g["folder"] not in folders:
            folders.append(g["folder"])
    count = {"ok": 0, "failed": 0}
    for folder in folders:
        entries = [g for g in graphs if g["folder"] == folder]
        todo = [(g, m) for g in entries for m in g["measurements"]
                if (g["arch_id"], g["phase"], m["length"] if g["phase"] == "prefill" else None,
                    m["length"] if g["phase"] == "decode" else None, precision, provider, threads) not in done]
        if not todo:
            continue
        remote = push_folder(device, args.remote, base, folder, entries[0])
        for graph, m in todo:
            row = measure(device, args, graph, m, remote, folder, protocol)
            row.update({"target": manifest["target"], "precision": precision, "provider": provider,
                        "providers_used": [provider], "provider_options": {}, "threads": threads,
                        "protocol": protocol, "session_options": {"engine": ENGINE},
                        "env": env, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            if args.dry_run:
                continue
            out.write(json.dumps(row) + "\n")
            out.flush()
            count["failed" if row["error"] else "ok"] += 1
            print("%s %s %d: %s" % (graph["arch_id"], graph["phase"], m["length"],
                                   row["error"] or "%.2f ms" % row["latency_ms"]["median"]), flush=True)
        device.shell("rm -rf %s" % shlex.quote(remote), check=False)
    out.close()
    print("adb_runner: %d measured, %d failed; rows in %s" % (count["ok"], count["failed"], args.out), flush=True)
    return 0


def push_folder(device, remote_root, base, folder, first):
    """A model folder on the phone (its weights made there when the bundle ships none); returns its path."""
    remote = remote_root + "/" + folder
    device.shell("mkdir -p %s" % shlex.quote(remote))
    for name in ["model.onnx"] + list(first["genai_files"]):
        device.push(os.path.join(base, folder, name), remote + "/" + name)
    if first.get("weights_fill") is not None:
        device.shell(fill_command(remote + "/model.weights", first["weights_bytes"], first["weights_fill"]))
    else:
        local = os.path.join(base, folder, "model.onnx.data")
        if os.path.exists(local):
            device.push(local, remote + "/model.onnx.data")
    return remote


def measure(device, args, graph, m, remote, folder, protocol):
    """One measurement: `runs` model_benchmark invocations; a row without the run-wide fields."""
    length, phase = m["length"], graph["phase"]
    row = {"schema": nas_runner.SCHEMA, "arch": graph["arch"], "arch_id": graph["arch_id"], "phase": phase,
           "prompt_len": length if phase == "prefill" else None,
           "context_len": length if phase == "decode" else None,
           "latency_ms": None, "samples_ms": [], "status": "ok", "error": None, "build_s": None}
    prompt = "prompt_%d.txt" % length
    device.shell("printf %%s %s > %s/%s" % (shlex.quote(prompt_text(length)), shlex.quote(remote), prompt))
    generate = 1 if phase == "prefill" else 1 + args.decode_tokens
    label = "Prompt processing (time to first token)" if phase == "prefill" else "Token generation"
    samples = []
    start = time.time()
    try:
        for _ in range(protocol["runs"]):
            text = device.shell(benchmark_command(args.remote, folder, prompt, generate, protocol["warmup"]))
            if args.dry_run:  # nothing ran: a placeholder so the dry run walks every command
                text = "%s:\n\tavg (us):       1\n" % label
            stats = parse_benchmark(text)
            if label not in stats:
                raise RuntimeError("model_benchmark printed no %r line: %s" % (label, text.strip()[:300]))
            samples.append(stats[label] / 1000.0)
    except RuntimeError as exc:
        row.update(status="failed", error=nas_runner.error_text("run", exc))
        return row
    row["build_s"] = round(time.time() - start, 3)
    stats, everything = nas_runner.combine_sessions([[s] for s in samples])
    row.update(latency_ms=stats, samples_ms=everything)
    return row


if __name__ == "__main__":
    sys.exit(main())
