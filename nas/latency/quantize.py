"""Quantise an fp32 profiling graph (nas.latency.graphs) to the int8 or int4 form ORT deployments run.

- ``int8``: ``onnxruntime.quantization.quantize_dynamic``, int8 weights with one scale per output column
  (per_channel, matching nas.accounting's one scale per row of the torch weight); MatMul becomes
  DynamicQuantizeLinear + MatMulInteger, which ORT fuses into DynamicQuantizeMatMul. Activations are quantised
  on the fly; the KV cache, norms and attention stay fp32.
- ``int4``: weight-only, ORT's MatMulNBits quantizer (round to nearest, block size 32 along the input dim,
  symmetric: no zero points), as in nas.accounting. `accuracy_level` 4 (int8 activations inside the kernel)
  is what onnxruntime-genai's model builder uses for CPU; 0 dequantises to fp32 instead.

Only MatMuls with constant weights are quantised. The embedding Gather keeps its fp32 table (a tied model's
table is the fp32 [hidden, vocab] matrix the int head was quantised from, so both copies are in the graph):
a Gather reads only the prompt's rows, so latency is unaffected; memory figures come from ArchConfig
accounting, not from the graph file.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx

from nas.core import accounting
from nas.core.errors import NasUserError
from nas.latency.onnxio import EXTERNAL_DATA_THRESHOLD, save_graph, tensor_bytes

QUANTIZED = ("int8", "int4")
ALLOWED = ("fp32", *QUANTIZED)
INT4_ACCURACY_LEVEL = 4


def quantize(model: onnx.ModelProto, precision: str, *, int4_accuracy_level: int = INT4_ACCURACY_LEVEL
             ) -> onnx.ModelProto:
    """`model` (an fp32 graph) at `precision`: "fp32" returns it as is; "int8" or "int4" a new quantised model.

    fp16 graphs are not converted here: build them natively with ``build_graph(..., precision="fp16")``.
    """
    if precision not in ALLOWED:
        hint = " (build fp16 graphs with build_graph(..., precision='fp16'))" if precision == "fp16" else ""
        raise NasUserError(f"quantize precision {precision!r} is not one of {', '.join(ALLOWED)}{hint}")
    if precision == "fp32":
        return model
    if precision == "int4":
        return _int4(model, int4_accuracy_level)
    return _int8(model)


def _int4(model: onnx.ModelProto, accuracy_level: int) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=accounting.INT4_BLOCK_SIZE, is_symmetric=True,
                                          accuracy_level=accuracy_level or None, op_types_to_quantize=("MatMul",),
                                          bits=4)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the quantizer edits its model in place
    quantizer = MatMulNBitsQuantizer(copy, algo_config=config)
    previous = logging.getLogger("onnxruntime.quantization").level
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # it logs every node at INFO
    try:
        quantizer.process()
    finally:
        logging.getLogger("onnxruntime.quantization").setLevel(previous)
    out = quantizer.model.model
    _copy_props(model, out, "int4")
    return out


def _int8(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    large = tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
    with tempfile.TemporaryDirectory(prefix="nas_quant_") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        save_graph(model, src)
        quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                         use_external_data_format=large)
        out = onnx.load(str(dst))  # loads external data into memory too
    _copy_props(model, out, "int8")
    return out


def _copy_props(src: onnx.ModelProto, dst: onnx.ModelProto, precision: str) -> None:
    props = {p.key: p.value for p in src.metadata_props}
    props["nas.precision"] = precision
    if precision == "int4":
        props["nas.int4_block_size"] = str(accounting.INT4_BLOCK_SIZE)
    del dst.metadata_props[:]
    onnx.helper.set_model_props(dst, props)


__all__ = ["quantize", "ALLOWED", "INT4_ACCURACY_LEVEL"]
