"""A bundle's model folders are ONNX Runtime GenAI model folders: GenAI's runtime loads and runs them, and the
adb runner drives GenAI's model_benchmark through them (here against a stand-in phone: see below)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import pytest

from nas.latency.bundle import ADB_RUNNER_SOURCE, RUNNER_SOURCE, write_bundle
from nas.latency.measure import Protocol
from nas.latency.profiling import read_measurements
from nas.targets import load_target
from tests.helpers import small_arch

ARCH = small_arch(hidden=128, layers=2).replace(vocab_size=512, max_seq_len=128)


def load(path: Path, name: str):
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


def bundle(tmp_path: Path, weights: str) -> tuple[Path, list[dict]]:
    out = tmp_path / weights
    write_bundle(load_target("pixel8"), [ARCH], out, precision="int4", prompt_lens=(8, 16), context_lens=(16,),
                 protocol=Protocol(threads=1, warmup=0, runs=2, sessions=1), progress=False, weights=weights)
    return out, json.loads((out / "manifest.json").read_text())["graphs"]


@pytest.mark.parametrize("weights", ["device", "ship"])
def test_genai_loads_tokenizes_and_generates_with_the_bundled_graph(tmp_path, weights):
    out, graphs = bundle(tmp_path, weights)
    folder = out / graphs[0]["folder"]
    if weights == "device":
        runner = load(RUNNER_SOURCE, "nas_runner_genai_test")
        runner.make_weights(str(out / graphs[0]["weights"]), graphs[0]["weights_bytes"], graphs[0]["weights_fill"])
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    adb = load(ADB_RUNNER_SOURCE, "adb_runner_genai_test")
    for n in (1, 16, 37):  # the adb runner's prompts: n ASCII bytes are n tokens
        assert len(tokenizer.encode(adb.prompt_text(n))) == n
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=20)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode(adb.prompt_text(16)))
    for _ in range(3):
        generator.generate_next_token()
    sequence = generator.get_sequence(0)
    assert len(sequence) == 19 and np.all((0 <= sequence) & (sequence < ARCH.vocab_size))


def test_parse_benchmark_reads_model_benchmarks_format():
    adb = load(ADB_RUNNER_SOURCE, "adb_runner_parse_test")
    text = ("Batch size: 1, prompt tokens: 16, tokens to generate: 9\n"
            "Prompt processing (time to first token):\n\tavg (us):       2345.5\n\tavg (tokens/s): 6821.6\n"
            "\tp50 (us):       2300\n\tstddev (us):    12\n\tn:              1 * 16 token(s)\n"
            "Token generation:\n\tavg (us):       812.25\n\tavg (tokens/s): 1231.1\n\tp50 (us):       800\n"
            "Token sampling:\n\tavg (us):       3.5\n"
            "E2E generation (entire generation loop):\n\tavg (ms):       9.1\n")
    stats = adb.parse_benchmark(text)
    assert stats["Prompt processing (time to first token)"] == 2345.5 and stats["Token generation"] == 812.25
    assert (adb.fill_command("/x/model.weights", 10, 0x3C)
            == "head -c 10 /dev/zero | tr '\\000' '\\074' > /x/model.weights")


# A stand-in phone: `adb shell CMD` runs CMD with bash here, `adb push A B` copies; and a stand-in for GenAI's
# model_benchmark binary (a C++ program that cannot run here) that does what it does with GenAI's Python API and
# prints its format. What this exercises is the adb runner: files pushed, weights filled, prompts written,
# command lines, output parsed into rows nas reads; not timing on a phone.
FAKE_ADB = """\
    #!/usr/bin/env bash
    [ "$1" = "-s" ] && shift 2
    case "$1" in
      shell) shift; exec bash -c "$*" ;;
      push) src="$2"; dst="$3"; mkdir -p "$(dirname "$dst")"
            if [ -d "$src" ]; then mkdir -p "$dst" && cp -r "$src"/. "$dst"/; else cp "$src" "$dst"; fi ;;
      *) echo "fake adb: $1 not supported" >&2; exit 1 ;;
    esac
"""
FAKE_BENCHMARK = """\
    #!{python}
    import argparse, time
    import onnxruntime_genai as og
    p = argparse.ArgumentParser()
    for flag in ("-i", "-e", "--prompt_file"):
        p.add_argument(flag)
    for flag in ("-g", "-r", "-w"):
        p.add_argument(flag, type=int)
    a = p.parse_args()
    model = og.Model(a.i)
    ids = og.Tokenizer(model).encode(open(a.prompt_file).read())
    ttft, steps = [], []
    for i in range(a.w + a.r):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + a.g)
        gen = og.Generator(model, params)
        t = time.perf_counter(); gen.append_tokens(ids); prompt = time.perf_counter() - t
        gen.generate_next_token()
        times = []
        for _ in range(a.g - 1):
            t = time.perf_counter(); gen.generate_next_token(); times.append(time.perf_counter() - t)
        if i >= a.w:
            ttft.append(prompt); steps += times
    print("Prompt processing (time to first token):\\n\\tavg (us):       %g" % (1e6 * sum(ttft) / len(ttft)))
    if steps:
        print("Token generation:\\n\\tavg (us):       %g" % (1e6 * sum(steps) / len(steps)))
"""


def test_adb_runner_measures_every_length_through_a_stand_in_phone(tmp_path):
    out, graphs = bundle(tmp_path, "device")
    tools = tmp_path / "tools"
    genai_bin = tmp_path / "genai-android"
    tools.mkdir()
    genai_bin.mkdir()
    (tools / "adb").write_text(textwrap.dedent(FAKE_ADB))
    (genai_bin / "model_benchmark").write_text(textwrap.dedent(FAKE_BENCHMARK).replace("{python}", sys.executable))
    for tool in (tools / "adb", genai_bin / "model_benchmark"):
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    phone = tmp_path / "phone"
    argv = ["--manifest", str(out / "manifest.json"), "--out", str(out / "measurements.jsonl"), "--genai-bin",
            str(genai_bin), "--remote", str(phone), "--adb", str(tools / "adb"), "--decode-tokens", "3"]
    adb = load(out / "adb_runner.py", "adb_runner_e2e_test")
    assert adb.main(argv + ["--dry-run"]) == 0 and not (out / "measurements.jsonl").exists()
    assert adb.main(argv) == 0
    rows = read_measurements(out / "measurements.jsonl", target="pixel8")
    assert sorted((r["phase"], r["prompt_len"] or r["context_len"]) for r in rows) == [
        ("decode", 16), ("prefill", 8), ("prefill", 16)]
    for row in rows:
        assert row["env"]["engine"] == adb.ENGINE and len(row["samples_ms"]) == 2 and row["latency_ms"]["median"] > 0
    assert not (phone / graphs[0]["folder"]).exists() and (phone / "bin" / "model_benchmark").exists()
    assert os.listdir(phone / "models") == []  # each model folder removed once measured
