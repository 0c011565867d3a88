"""Writing ONNX graphs to disk: one file, or a file plus external weights past protobuf's 2 GB limit."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import TensorProto

EXTERNAL_DATA_THRESHOLD = 1_500_000_000  # bytes of tensors above which save_graph writes external data


def tensor_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save_graph(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write `model` to `path`; tensors go to `<name>.data` beside it when they pass ~1.5 GB (protobuf's
    2 GB limit). `model` is unchanged afterwards."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tensor_bytes(model) <= EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path))
        return
    location = path.name + ".data"
    (path.parent / location).unlink(missing_ok=True)  # external data is appended to: start from empty
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)
    # onnx moved the tensors' bytes out of the proto while saving: read them back so the caller's model is whole.
    onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    for tensor in model.graph.initializer:  # loading sets data_location=DEFAULT explicitly; unset it as before
        if tensor.data_location == TensorProto.DEFAULT:
            tensor.ClearField("data_location")
