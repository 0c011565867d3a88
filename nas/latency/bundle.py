"""On-device profiling bundle: ONNX graphs + a manifest + a standalone runner, to measure a device nas
cannot reach.

Layout of a bundle folder:

    manifest.json      what to measure: target, providers, protocol, precision, and per graph its file,
                       ArchConfig, arch_id, phase, inputs (symbolic shapes) and one feeds spec per length
    nas_runner.py      a copy of device_runners/nas_runner.py (Python 3 + onnxruntime + numpy only)
    README.txt         the steps, for whoever holds the device
    adb_runner.py      the same measurements on an Android phone over adb, with ONNX Runtime GenAI's own
                       model_benchmark binary (no Python needed on the phone)
    models/<arch_id>__<precision>/
                       model.onnx (one graph for both phases), model.weights (ONNX external data: written
                       by the runner on the device, or shipped with --weights ship), and genai_config.json
                       with a byte-level tokenizer: an ONNX Runtime GenAI model folder

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
from nas.core.paths import ensure_folder, shipped
from nas.core.version import __version__
from nas.latency import graphs
from nas.latency.genai_folder import MODEL_FILE, write_genai_files
from nas.latency.measure import Protocol
from nas.latency.onnxio import save_graph
from nas.latency.profiling import fits_context
from nas.latency.provenance import GRAPH_BUILDER_VERSION

# The standalone runners are data, not modules of the package: they run where nas is not installed.
RUNNER_SOURCE = shipped("device_runners") / "nas_runner.py"
ADB_RUNNER_SOURCE = shipped("device_runners") / "adb_runner.py"
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


_EXTERNAL_MIN_BYTES = 1024  # device weights: smaller tensors stay inside the graph
_ALIGN = 64  # byte alignment of each tensor in a weights file
WEIGHTS_MODES = ("device", "ship")  # made on the device (the default) or shipped in the bundle
FILL_BYTE = 0x3C  # device weights: every byte; fp32 0.0115, fp16 1.06, int8 60, int4 nibbles 12 (no NaN, no denormal)


def save_model(model, path: Path, weights_path: Path, write_weights: bool) -> int | None:
    """Save one config's graph (one graph serves both phases).

    `write_weights` (shipped weights): the graph is saved whole (`nas.latency.onnxio.save_graph`: its tensors
    inside it, or in an external file past protobuf's limit); returns None. Otherwise (weights made on the
    device) every tensor of at least _EXTERNAL_MIN_BYTES points into `weights_path` as ONNX external data, and
    that file is not written at all: the runner fills it on the device (latency does not depend on weight
    values), so the bundle holds graphs of kilobytes. Returns the weights file's size in bytes. The model is
    modified.
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    if write_weights:
        save_graph(model, path)
        return None
    position = 0
    for tensor in model.graph.initializer:
        if not tensor.HasField("raw_data") or len(tensor.raw_data) < _EXTERNAL_MIN_BYTES:
            continue
        position += -position % _ALIGN
        length = len(tensor.raw_data)
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", weights_path.name), ("offset", str(position)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        position += length
    onnx.save_model(model, str(path))  # tensors without raw_data are left where they point
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
    created = not out_dir.exists()
    ensure_folder(out_dir / "models", "the bundle folder")
    try:
        return _write_bundle_files(target, configs, out_dir, precision=precision, prompt_lens=prompt_lens,
                                   context_lens=context_lens, protocol=protocol, seed=seed, space=space,
                                   progress=progress, weights=weights)
    except BaseException as exc:  # a full disk, a read-only folder, Ctrl-C: no half bundle is left behind
        _remove_partial(out_dir, created)
        if isinstance(exc, OSError):
            raise NasUserError(f"cannot write the bundle to {out_dir}: {exc.strerror or exc}; the partial bundle "
                               "was removed") from None
        raise


def _remove_partial(out_dir: Path, created: bool) -> None:
    """Remove what `write_bundle` wrote: the folder it created, or the contents of the empty one it was given."""
    if created:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for child in out_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _write_bundle_files(target, configs, out_dir: Path, *, precision, prompt_lens, context_lens, protocol, seed,
                        space, progress, weights) -> dict[str, Any]:
    """The graphs, manifest, runners and README of `write_bundle`."""

    entries = []
    from tqdm import tqdm

    bar = tqdm(total=len(configs), desc=f"bundle {target.name}", unit="config", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    for arch in configs:
        phases = [phase for phase in PHASES if any(
            fits_context(arch, phase, n) for n in (prompt_lens if phase == "prefill" else context_lens))]
        if not phases:
            bar.update(1)
            continue
        folder = f"models/{arch.arch_id}__{precision}"
        rel = f"{folder}/{MODEL_FILE}"
        model = graphs.build_graph(arch, "decode", precision=precision, seed=seed)  # one graph, both phases
        inputs = _input_specs(model)
        weights_file = f"{folder}/model.weights"
        weights_bytes = save_model(model, out_dir / rel, out_dir / weights_file, write_weights=weights == "ship")
        del model
        genai = write_genai_files(out_dir / folder, arch, protocol.threads) if arch.vocab_size >= 259 else []
        made_on_device = {} if weights_bytes is None else {"weights": weights_file, "weights_bytes": weights_bytes,
                                                           "weights_fill": FILL_BYTE}
        for phase in phases:
            lengths = [n for n in (prompt_lens if phase == "prefill" else context_lens) if fits_context(arch, phase, n)]
            measurements = []
            for n in lengths:
                feeds = graphs.graph_feeds(arch, phase, prompt_len=n if phase == "prefill" else None,
                                           context_len=n if phase == "decode" else None, seed=seed,
                                           precision=precision)
                feeds = _cast_to_inputs(feeds, inputs)
                measurements.append({"length": n, "feeds": [feed_spec(k, v) for k, v in feeds.items()]})
            entries.append({"file": rel, "folder": folder, "genai_files": genai, **made_on_device,
                            "arch": arch.to_dict(), "arch_id": arch.arch_id, "phase": phase, "precision": precision,
                            "inputs": inputs, "measurements": measurements})
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
    shutil.copyfile(ADB_RUNNER_SOURCE, out_dir / "adb_runner.py")
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

An Android phone without Python (Termux has no onnxruntime wheel): from the computer it is plugged into,
with adb, measure the same graphs with ONNX Runtime GenAI's own benchmark binary (build model_benchmark
from onnxruntime-genai's benchmark/c for the phone's ABI; put it and its .so files in one folder):
       python adb_runner.py --genai-bin path/to/that/folder --out measurements.jsonl
  (--dry-run prints the adb commands first; each models/ folder is an ONNX Runtime GenAI model folder.
  Not yet tried on a phone by nas's developers.)
"""
