"""On-device profiling bundle: ONNX graphs + a manifest + a standalone runner, to measure a device nas
cannot reach.

Layout of a bundle folder:

    manifest.json      what to measure: target, providers, protocol, precision, and per graph its file,
                       ArchConfig, arch_id, phase, inputs (symbolic shapes) and one feeds spec per length
    nas_runner.py      a copy of nas/latency/nas_runner.py (Python 3 + onnxruntime + numpy only)
    README.txt         the steps, for whoever holds the device
    graphs/            <arch_id>__<phase>__<precision>.onnx, and <arch_id>__<precision>.weights: the
                       weights the prefill and decode graphs of a config share, stored once (ONNX
                       external data; keep the files together)

Feeds spec: the runner cannot import nas, so the inputs `graphs.graph_feeds` would make are written out.
Small inputs (token ids, positions, masks) are stored exactly, compressed to "fill" (one value) or
"arange" (consecutive integers) when they are; large float inputs (the past KV cache of a decode graph)
are stored as shape + dtype + "random" with the standard deviation to draw with, since latency depends
on shapes, not values.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from nas.core.accounting import PHASES
from nas.core.errors import NasUserError
from nas.core.version import __version__
from nas.latency import graphs
from nas.latency.measure import Protocol
from nas.latency.profile import fits_context
from nas.latency.provenance import GRAPH_BUILDER_VERSION

RUNNER_SOURCE = Path(__file__).resolve().parent / "nas_runner.py"
MANIFEST_NAME = "manifest.json"
# The runner version a manifest needs. 2: the protocol's "sessions" (a version-1 runner would ignore it and
# write single-session rows labelled with a multi-session protocol, so it must refuse these manifests).
RUNNER_VERSION = 3  # 3: weights made on the device ("weights_fill"), which a version-2 runner cannot do
_EXACT_MAX_ELEMENTS = 4096  # inputs up to this size are stored value by value

_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 9: "bool"}


def feed_spec(name: str, array) -> dict[str, Any]:
    """How the runner should rebuild one input array (see the module docstring)."""
    import numpy as np

    array = np.asarray(array)
    spec: dict[str, Any] = {"name": name, "dtype": str(array.dtype), "shape": [int(d) for d in array.shape]}
    flat = array.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        spec["fill"] = flat[0].item()
    elif np.issubdtype(array.dtype, np.integer) and flat.size and np.array_equal(
            flat, np.arange(flat[0], flat[0] + flat.size, dtype=flat.dtype)):
        spec["arange"] = int(flat[0])
    elif array.size <= _EXACT_MAX_ELEMENTS or not np.issubdtype(array.dtype, np.floating):
        spec["values"] = flat.tolist()
    else:
        std = float(np.std(flat.astype(np.float64)))
        spec["random"] = "normal"
        spec["std"] = round(std, 6) if std > 0 else 1.0
    return spec


def _input_specs(model) -> list[dict[str, Any]]:
    """Graph inputs with symbolic dims as their names (e.g. "P", "C"), for the manifest."""
    specs = []
    for inp in model.graph.input:
        tensor = inp.type.tensor_type
        dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in tensor.shape.dim]
        specs.append({"name": inp.name, "dtype": _ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type)),
                      "shape": dims})
    return specs


def _cast_to_inputs(feeds: dict, inputs: list[dict]) -> dict:
    dtypes = {i["name"]: i["dtype"] for i in inputs}
    return {k: (v.astype(dtypes[k]) if k in dtypes and str(v.dtype) != dtypes[k] and dtypes[k] in
                ("float32", "float16", "float64", "int64", "int32", "bool") else v) for k, v in feeds.items()}


def estimated_bundle_bytes(configs, precision: str) -> int:
    """Roughly what the graphs will take on disk: the weights once per config (shared by both phases)."""
    return sum(arch.weight_bytes(precision) for arch in configs)


_SHARE_MIN_BYTES = 1024  # smaller tensors stay inside each graph
_ALIGN = 64  # byte alignment of each tensor in the shared weights file


WEIGHTS_MODES = ("device", "ship")  # made on the device (the default) or shipped in the bundle
FILL_BYTE = 0x3C  # device weights: every byte; fp32 0.0115, fp16 1.06, int8 60, int4 nibbles 12 (no NaN, no denormal)


def save_graphs(models: dict, paths: dict, weights_path: Path, save_graph, write_weights: bool = True) -> int | None:
    """Save one config's prefill and decode graphs with their large tensors in one external weights file.

    `write_weights` (shipped weights): the tensors both graphs share byte for byte are written once to
    `weights_path` (ONNX external data, each graph pointing at the same offsets); what differs stays inside each
    graph; with one graph, or nothing shared, each graph is saved whole with `save_graph`. Otherwise (weights
    made on the device): every tensor of at least _SHARE_MIN_BYTES becomes external, shared ones once, and the
    file is not written at all: the runner fills it on the device (latency does not depend on weight values),
    so the bundle holds graphs of kilobytes. The models are modified. Returns the weights file's size in bytes,
    or None when the graphs hold their weights themselves.
    """
    import onnx

    def raw_tensors(model):
        return {t.name: t for t in model.graph.initializer
                if t.HasField("raw_data") and len(t.raw_data) >= _SHARE_MIN_BYTES}

    tensors = [raw_tensors(m) for m in models.values()]
    shared = [] if len(tensors) < 2 else [
        name for name, t in tensors[0].items()
        if all(name in other and other[name].data_type == t.data_type and list(other[name].dims) == list(t.dims)
               and other[name].raw_data == t.raw_data for other in tensors[1:])]
    # groups of tensors stored at one place: each shared name once, then (device weights) every other tensor
    places = [[table[name] for table in tensors] for name in shared]
    if not write_weights:
        places += [[t] for table in tensors for name, t in table.items() if name not in shared]
    if not places:
        for phase, model in models.items():
            save_graph(model, paths[phase])
        return None
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    location, position = weights_path.name, 0
    fh = weights_path.open("wb") if write_weights else None
    try:
        for group in places:
            position += -position % _ALIGN
            data = group[0].raw_data
            if fh is not None:
                fh.write(b"\0" * (position - fh.tell()))
                fh.write(data)
            for tensor in group:
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
                del tensor.external_data[:]
                for key, value in (("location", location), ("offset", str(position)), ("length", str(len(data)))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
            position += len(data)
    finally:
        if fh is not None:
            fh.close()
    for phase, model in models.items():
        paths[phase].parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(model, str(paths[phase]))  # tensors without raw_data are left where they point
    return position


def write_bundle(target, configs, out_dir, *, precision: str, prompt_lens, context_lens, protocol: Protocol,
                 seed: int = 0, space: str | None = None, progress: bool = True,
                 weights: str = "device") -> dict[str, Any]:
    """Write a profiling bundle for `configs` on `target` into `out_dir` (new or empty); return its manifest.
    `weights`: "device" (the runner makes each config's weights file on the device, filled with FILL_BYTE, and
    deletes it after measuring) or "ship" (random weights written into the bundle)."""
    if weights not in WEIGHTS_MODES:
        raise NasUserError(f"--weights {weights!r} is not one of {', '.join(WEIGHTS_MODES)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise NasUserError(f"--out {out_dir} already exists and is not an empty folder; choose a new folder")
    if precision not in target.precisions:
        raise NasUserError(f"precision {precision!r} is not deployable on {target.name}; "
                           f"its precisions: {', '.join(target.precisions)}")
    need = estimated_bundle_bytes(configs, precision) if weights == "ship" else 0
    existing = out_dir.resolve()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need > free:
        raise NasUserError(f"the bundle needs about {need / 2**30:.1f} GiB but {existing} has "
                           f"{free / 2**30:.1f} GiB free; use fewer --n-configs, a smaller space or precision")
    graphs_dir = out_dir / "graphs"
    graphs_dir.mkdir(parents=True, exist_ok=True)

    entries = []
    from tqdm import tqdm

    bar = tqdm(total=len(configs), desc=f"bundle {target.name}", unit="config", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    for arch in configs:
        models, files = {}, {}
        for phase in PHASES:
            if any(fits_context(arch, phase, n) for n in (prompt_lens if phase == "prefill" else context_lens)):
                models[phase] = graphs.build_graph(arch, phase, precision=precision, seed=seed)
                files[phase] = f"graphs/{arch.arch_id}__{phase}__{precision}.onnx"
        inputs_of = {phase: _input_specs(model) for phase, model in models.items()}
        weights_file = f"graphs/{arch.arch_id}__{precision}.weights"
        weights_bytes = save_graphs(models, {phase: out_dir / rel for phase, rel in files.items()},
                                    out_dir / weights_file, graphs.save_graph, write_weights=weights == "ship")
        if weights_bytes is None:
            weights_file = None
        made_on_device = {"weights_bytes": weights_bytes, "weights_fill": FILL_BYTE} if (
            weights == "device" and weights_bytes is not None) else {}
        del models
        for phase, rel in files.items():
            lengths = [n for n in (prompt_lens if phase == "prefill" else context_lens) if fits_context(arch, phase, n)]
            inputs = inputs_of[phase]
            measurements = []
            for n in lengths:
                feeds = graphs.graph_feeds(arch, phase, prompt_len=n if phase == "prefill" else None,
                                           context_len=n if phase == "decode" else None, seed=seed,
                                           precision=precision)
                feeds = _cast_to_inputs(feeds, inputs)
                measurements.append({"length": n, "feeds": [feed_spec(k, v) for k, v in feeds.items()]})
            entries.append({"file": rel, "weights": weights_file, **made_on_device, "arch": arch.to_dict(),
                            "arch_id": arch.arch_id, "phase": phase, "precision": precision, "inputs": inputs,
                            "measurements": measurements})
        bar.update(1)
    bar.close()

    manifest = {
        "kind": "nas-profiling-bundle",
        "runner_version": RUNNER_VERSION,
        "nas_version": __version__,
        "target": target.name,
        "display_name": target.display_name,
        "providers": list(target.execution_providers),
        "precision": precision,
        "prompt_lens": sorted(set(prompt_lens)),
        "context_lens": sorted(set(context_lens)),
        "protocol": protocol.to_dict(),
        "seed": seed,
        "weights": weights,
        "graph_builder": GRAPH_BUILDER_VERSION,
        "space": space,
        "length_names": {"P": "prompt_len (prefill)", "C": "context_len: tokens already in the KV cache (decode)"},
        "graphs": entries,
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.copyfile(RUNNER_SOURCE, out_dir / "nas_runner.py")
    (out_dir / "README.txt").write_text(readme_text(manifest))
    return manifest


def readme_text(manifest: dict[str, Any]) -> str:
    n_meas = sum(len(g["measurements"]) for g in manifest["graphs"])
    name = manifest["target"]
    largest = max([g.get("weights_bytes") or 0 for g in manifest["graphs"] if g.get("weights_fill") is not None],
                  default=0)
    weights = ("" if not largest else f"""
The bundle ships no weights: before measuring a config, the runner writes its weights file into graphs/
(every byte the same value: latency does not depend on weight values) and deletes it afterwards
(--keep-weights keeps them). The device needs {largest / 2**30:.2f} GiB free for the largest config.
""")
    return f"""nas profiling bundle for {manifest['display_name']} ({name})
{len(manifest['graphs'])} ONNX graphs at {manifest['precision']}, {n_meas} measurements.
{weights}
On the device (phone with Termux, Raspberry Pi, Jetson, Mac, ...):
  1. Copy this whole folder to the device.
  2. Install Python 3 and the runtime:   pip install onnxruntime numpy
     (Termux: pkg install python python-numpy, then pip install onnxruntime; an ORT build with the
     execution provider you want, e.g. {manifest['providers'][0]}, must be installed to measure on it)
  3. See which execution providers this onnxruntime offers:
       python nas_runner.py --list-providers
  4. Measure (resumable: run it again after an interruption and it skips what is done):
       python nas_runner.py --manifest manifest.json --out measurements.jsonl
     Options: --provider EP (default: the first of {', '.join(manifest['providers'])} that exists),
              --threads N (default {manifest['protocol']['threads']}), --warmup W, --runs R,
              --sessions S (default {manifest['protocol'].get('sessions', 1)}: each graph is timed in S fresh
              sessions and the median of their medians kept), --provider-option KEY=VALUE.
     Keep the device plugged in, screen on, other apps closed, and at a steady temperature.
  5. Copy measurements.jsonl back and fit the target's latency model:
       nas calibrate --target {name} --measurements measurements.jsonl
"""
