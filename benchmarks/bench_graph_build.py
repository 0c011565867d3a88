"""How long it takes to get a profiling graph: the direct ONNX builder vs torch.onnx.export.

Prints one line per measurement (median of --repeats builds, wall clock, perf_counter), then the headline:
how many times faster the direct builder is than torch.onnx.export(dynamo=True) on the same model and phase.
Direct-builder times include drawing the random weights and, for int8/int4, quantisation. Export times
exclude building the torch model. The legacy exporter (dynamo=False) is not measured: it fails on aten::rms_norm.

    .venv/bin/python benchmarks/bench_graph_build.py [--repeats 3] [--sizes 20M,125M,350M] [--export-size 20M]
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.core.arch import ArchConfig  # noqa: E402
from nas.latency.graphs import PHASES, PRECISIONS, build_graph  # noqa: E402

# Llama-2 tokenizer (32k), tied embeddings, as small on-device models ship.
SIZES = {
    "20M": ArchConfig(hidden_size=256, num_layers=14, num_heads=4, num_kv_heads=2, intermediate_size=704),
    "125M": ArchConfig(hidden_size=768, num_layers=14, num_heads=12, intermediate_size=2048),
    "350M": ArchConfig(hidden_size=1024, num_layers=24, num_heads=16, num_kv_heads=4, intermediate_size=3072),
}


def _median_s(fn, repeats: int) -> tuple[float, float]:
    """(median, min) seconds over `repeats` calls; the result of each call is dropped before the next."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        del result
        gc.collect()
    return statistics.median(times), min(times)


def _export_s(arch: ArchConfig, repeats: int) -> tuple[float, float, float]:
    """(first call, median, min) seconds of torch.onnx.export(dynamo=True) of the prefill graph."""
    import torch

    from nas.model import build_model

    warnings.filterwarnings("ignore")
    for name in ("torch.onnx", "onnx_ir", "onnxscript"):  # they log every pass at INFO
        logging.getLogger(name).setLevel(logging.ERROR)
    model = build_model(arch).eval()
    ids = torch.randint(0, arch.vocab_size, (1, 16))
    prompt = torch.export.Dim("prompt_len", min=2, max=arch.max_seq_len)

    def export():
        program = torch.onnx.export(model, (ids,), dynamo=True, dynamic_shapes={"input_ids": {1: prompt}},
                                    input_names=["input_ids"], verbose=False)
        return program.model_proto

    t0 = time.perf_counter()
    export()
    first = time.perf_counter() - t0
    median, best = _median_s(export, repeats)
    return first, median, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--export-size", default="20M", help="size to export with torch for the comparison")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs through the root logger

    direct = {}
    for size in args.sizes.split(","):
        arch = SIZES[size]
        for precision in args.precisions.split(","):
            for phase in PHASES:
                median, best = _median_s(lambda: build_graph(arch, phase, precision), args.repeats)
                direct[size, phase, precision] = median
                print(f"direct_build size={size} params={arch.num_params} phase={phase} precision={precision} "
                      f"median_s={median:.3f} min_s={best:.3f} repeats={args.repeats}", flush=True)

    size = args.export_size
    arch = SIZES[size]
    first, median, best = _export_s(arch, args.repeats)
    print(f"torch_onnx_export_dynamo size={size} params={arch.num_params} phase=prefill precision=fp32 "
          f"median_s={median:.3f} min_s={best:.3f} first_call_s={first:.3f} repeats={args.repeats}", flush=True)
    ours = direct.get((size, "prefill", "fp32"))
    if ours is None:
        ours, _ = _median_s(lambda: build_graph(arch, "prefill", "fp32"), args.repeats)
    print(f"headline: direct builder is {median / ours:.0f}x faster than torch.onnx.export(dynamo=True) "
          f"({ours:.3f} s vs {median:.2f} s median, {size} prefill fp32)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
