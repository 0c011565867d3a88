"""Measured latency of onnxruntime-genai's builder graph against nas's direct graph (nas.latency.graphs) of the
same config, on this host, int4, CPU EP. Run in a venv with onnxruntime-genai (its builder needs torch,
transformers, onnx-ir; see benchmarks/genai_builder_fixture.py) and the same onnxruntime as nas:

    flock /work/scratch/bench.lock /work/venv-genai/bin/python benchmarks/bench_builder_vs_direct.py

For each config: a random-weight Hugging Face checkpoint -> `python -m onnxruntime_genai.models.builder -p int4
-e cpu`; the direct graph from the same ArchConfig (random weights). Both are timed with
nas.latency.measure.time_session (decode with the shared in-place KV buffer) in two rounds of fresh sessions;
prints medians, builder / direct ratios, the re-measure noise, and whether the two graphs have the same op
histogram and initializer bytes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from genai_builder_fixture import describe, save_checkpoint  # noqa: E402

from nas.core.arch import ArchConfig  # noqa: E402
from nas.latency import graphs, measure  # noqa: E402

CONFIGS = {
    "llama-h512-L8-gqa2-tied": dict(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2,
                                    intermediate_size=1408),
    "llama-h768-L6-gqa4-untied": dict(hidden_size=768, num_layers=6, num_heads=12, num_kv_heads=4,
                                      intermediate_size=2048, tie_embeddings=False),
    "llama-h384-L12-mqa-tied": dict(hidden_size=384, num_layers=12, num_heads=6, num_kv_heads=1,
                                    intermediate_size=1024),
    "qwen2-h512-L8-mha-tied": dict(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=8,
                                   intermediate_size=1536, qkv_bias=True),
    "llama-h640-L10-gqa2-tied": dict(hidden_size=640, num_layers=10, num_heads=10, num_kv_heads=5,
                                     intermediate_size=1792),
}


def hf_config(arch: ArchConfig) -> dict:
    return dict(model_type="qwen2" if arch.qkv_bias else "llama", vocab_size=arch.vocab_size,
                hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads,
                num_key_value_heads=arch.num_kv_heads, intermediate_size=arch.intermediate_size,
                tie_word_embeddings=arch.tie_embeddings, max_position_embeddings=arch.max_seq_len,
                rms_norm_eps=arch.rms_norm_eps, rope_theta=arch.rope_theta)


def time_graph(source, feeds, protocol) -> dict[str, float]:
    """A fresh session, each phase's feeds timed in it (median of the timed runs each)."""
    session = measure.make_session(source, measure.CPU_PROVIDER, None, protocol)
    return {phase: measure.time_session(session, f, protocol)["median"] for phase, f in feeds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--context-len", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    protocol = measure.Protocol(threads=args.threads, warmup=1, runs=args.runs, sessions=1)
    import onnxruntime_genai

    print(f"int4, CPU EP, {args.threads} threads, prompt {args.prompt_len}, decode at context {args.context_len}; "
          f"ORT {measure.ort_version()}, onnxruntime-genai {onnxruntime_genai.__version__}, nas graph builder "
          f"{graphs.BUILDER_VERSION}; machine: {measure.cpu_model()}")
    print(f"{'config':<28} {'builder p/d ms':>16} {'direct p/d ms':>16} {'ratio p/d':>12} {'noise p/d':>12}")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="nas_b_vs_d_") as tmp:
        for name, kw in CONFIGS.items():
            arch = ArchConfig(vocab_size=32000, max_seq_len=2048, **kw)
            hf, out = Path(tmp) / name / "hf", Path(tmp) / name / "int4"
            save_checkpoint(name, hf_config(arch), hf)
            subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                            "-p", "int4", "-e", "cpu", "-c", str(Path(tmp) / name / "cache")], check=True,
                           capture_output=True)
            feeds = {"prefill": graphs.graph_feeds(arch, "prefill", prompt_len=args.prompt_len, precision="int4"),
                     "decode": graphs.graph_feeds(arch, "decode", context_len=args.context_len, precision="int4")}
            direct_model = graphs.build_graph(arch, precision="int4")
            direct_path = Path(tmp) / name / "direct.onnx"
            graphs.save_graph(direct_model, direct_path)
            ref, ours = describe(out / "model.onnx"), describe(direct_path)
            same = {key: ref[key] == ours[key] for key in ("ops", "initializer_bytes")}
            direct = direct_model.SerializeToString()
            builder = str(out / "model.onnx")
            # two rounds of fresh sessions, the order swapped in the second so drifting load hits both alike
            first = (time_graph(builder, feeds, protocol), time_graph(direct, feeds, protocol))
            second_direct = time_graph(direct, feeds, protocol)
            rounds = [first, (time_graph(builder, feeds, protocol), second_direct)]
            b = {p: np.mean([r[0][p] for r in rounds]) for p in graphs.PHASES}
            d = {p: np.mean([r[1][p] for r in rounds]) for p in graphs.PHASES}
            noise = {p: np.median([abs(rounds[0][k][p] - rounds[1][k][p]) / ((rounds[0][k][p] + rounds[1][k][p]) / 2)
                                   for k in (0, 1)]) for p in graphs.PHASES}
            ratio = {p: b[p] / d[p] for p in graphs.PHASES}
            ratios.append(ratio)
            print(f"{name:<28} {b['prefill']:>7.1f}/{b['decode']:<8.2f} {d['prefill']:>7.1f}/{d['decode']:<8.2f} "
                  f"{ratio['prefill']:>5.2f}/{ratio['decode']:<6.2f} "
                  f"{100 * noise['prefill']:>4.1f}%/{100 * noise['decode']:.1f}%   same ops/bytes as builder: "
                  f"{same['ops']}/{same['initializer_bytes']}", flush=True)
    for p in graphs.PHASES:
        values = [r[p] for r in ratios]
        print(f"{p}: builder / direct median {np.median(values):.3f}, range {min(values):.3f}-{max(values):.3f}")


if __name__ == "__main__":
    main()
