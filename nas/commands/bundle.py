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

An Android phone without Python (Termux has no onnxruntime wheel) is measured from the computer it is plugged
into: `python adb_runner.py --genai-bin DIR` pushes each model folder (an ONNX Runtime GenAI model folder:
model.onnx, genai_config.json, a byte-level tokenizer) and runs GenAI's model_benchmark binary (built for the
phone, in DIR) over adb; its rows are read by `nas calibrate` alike. Not yet tried on a phone.

By default the bundle ships no weights (kilobytes, not gigabytes): the runner writes each config's weights file
on the device, every byte one constant (latency does not depend on weight values), measures that config and
deletes the file, so the device needs free space for the largest config's weights only. --weights ship writes
random weights into the bundle instead.

Examples:
  nas bundle --target pixel8 --out pixel8_bundle
  nas bundle --target rpi5 --out rpi5_bundle --space tiny --n-configs 8 --precision fp32
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sampling_arguments(parser, n_configs=12)
    parser.add_argument("--out", required=True, help="folder to write the bundle into (new or empty)")
    parser.add_argument("--weights", default="device", choices=("device", "ship"),
                        help="device (default): the runner makes the weights on the device; ship: write them into "
                             "the bundle")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.latency.bundle import write_bundle
    from nas.latency.registry import resolve_deployment

    target, precision, _ = resolve_deployment(args.target, args.precision)
    protocol = make_protocol(args, target)
    space_name, configs = sample_configs(args)
    manifest = write_bundle(target, configs, args.out, precision=precision, prompt_lens=args.prompt_lens,
                            context_lens=args.context_lens, protocol=protocol, seed=args.seed, space=space_name,
                            progress=not (args.quiet or args.json), weights=args.weights)
    n_meas = sum(len(g["measurements"]) for g in manifest["graphs"])
    on_device = sum(g.get("weights_bytes") or 0 for g in {g["weights"]: g for g in manifest["graphs"]
                                                         if g.get("weights_fill") is not None}.values())
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    summary = {"target": target.name, "out": str(args.out), "space": space_name, "configs": len(configs),
               "bundle_bytes": size, "weights": args.weights, "weights_made_on_device_bytes": on_device,
               "graphs": len(manifest["graphs"]), "measurements": n_meas, "precision": precision,
               "providers": manifest["providers"], "protocol": manifest["protocol"]}
    folders = len({g["folder"] for g in manifest["graphs"]})
    text = (f"wrote a profiling bundle for {target.name} to {args.out}: {folders} model folders (one graph per "
            f"config for both phases; {len(configs)} configs from space {space_name}, {precision}), "
            f"{n_meas} measurements; "
            f"{size / 2**20:.1f} MiB"
            + (f" (the runner makes {on_device / 2**30:.2f} GiB of weights on the device, one config at a time)"
               if on_device else "") + "\n"
            f"on the device: python nas_runner.py --manifest manifest.json --out measurements.jsonl\n"
            f"then: nas calibrate --target {target.name} --measurements measurements.jsonl  (steps in README.txt)")
    emit(args, summary, text)
    return 0
