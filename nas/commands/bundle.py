"""`nas bundle`: write a profiling bundle to measure a device nas cannot reach."""

from __future__ import annotations

import argparse

from nas.commands._common import add_json_flag, emit
from nas.commands.profile import add_sampling_arguments, make_protocol, sample_configs

HELP = "write ONNX graphs + a standalone runner to measure latency on a device (phone, Pi, Jetson, Mac)"
DESCRIPTION = """Write a profiling bundle: ONNX graphs for a space-filling sample of configs (one per config and
phase), a manifest.json, a README.txt and nas_runner.py, a runner that needs only Python 3, onnxruntime
and numpy. Copy the folder to the device, run

  python nas_runner.py --manifest manifest.json --out measurements.jsonl

and bring measurements.jsonl back for `nas calibrate --target TARGET --measurements measurements.jsonl`.
The runner times each graph in --sessions fresh ONNX Runtime sessions (WARMUP + RUNS each, at every length)
and reports the median of the session medians, as `nas profile` does.

Examples:
  nas bundle --target pixel8 --out pixel8_bundle
  nas bundle --target rpi5 --out rpi5_bundle --space tiny --n-configs 8 --precision fp32
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sampling_arguments(parser, n_configs=12)
    parser.add_argument("--out", required=True, help="folder to write the bundle into (new or empty)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from nas.latency.bundle import write_bundle
    from nas.latency.registry import resolve_deployment

    target, precision, _ = resolve_deployment(args.target, args.precision)
    protocol = make_protocol(args, target)
    space_name, configs = sample_configs(args)
    manifest = write_bundle(target, configs, args.out, precision=precision, prompt_lens=args.prompt_lens,
                            context_lens=args.context_lens, protocol=protocol, seed=args.seed, space=space_name,
                            progress=not (args.quiet or args.json))
    n_meas = sum(len(g["measurements"]) for g in manifest["graphs"])
    summary = {"target": target.name, "out": str(args.out), "space": space_name, "configs": len(configs),
               "graphs": len(manifest["graphs"]), "measurements": n_meas, "precision": precision,
               "providers": manifest["providers"], "protocol": manifest["protocol"]}
    text = (f"wrote a profiling bundle for {target.name} to {args.out}: {len(manifest['graphs'])} graphs "
            f"({len(configs)} configs from space {space_name}, {precision}), {n_meas} measurements\n"
            f"on the device: python nas_runner.py --manifest manifest.json --out measurements.jsonl\n"
            f"then: nas calibrate --target {target.name} --measurements measurements.jsonl  (steps in README.txt)")
    emit(args, summary, text)
    return 0
