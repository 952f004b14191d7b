"""Reduced-precision deform graphs: FP16 mixed precision and ONNX Runtime dynamic INT8.

FP16 (`to_fp16`): onnxconverter-common's `convert_float_to_float16` with FP32 graph I/O
(`keep_io_types=True`) and a block list, so that LayerNormalization, Softmax and the residual
adds that feed each LayerNorm stay FP32; the GEMMs, bias adds and ReLUs run in FP16, and
the five offsets are cast to FP32 right after their head's last bias add, so the graph
outputs (and the runtime's "canonical + offset" adds) are FP32. TensorRT's strongly typed
networks take this precision from the ONNX as is (README: "Bundle format").

Why the output-producing Adds are not in the block list: with keep_io_types, onnxconverter-common
1.16 then labels the graph outputs float16 although the Cast it inserts yields float32 (an
invalid graph); `to_fp16` checks that the graph I/O stays float32.

INT8 (`to_int8`): `onnxruntime.quantization.quantize_dynamic` (8-bit MatMul weights,
activations quantised per call) for the CPU. Weights default to uint8 (U8U8 MatMulInteger):
on the 2-core AVX-512 machines int8 weights (U8S8) gave ~20x larger offset errors (max abs
0.15 vs 0.008 on the test model; ONNX Runtime's U8S8 path can saturate its 16-bit
intermediate sums, which is also why `reduce_range` exists) at about the same speed. Its ops
(DynamicQuantizeLinear, MatMulInteger) are an ONNX Runtime path, not a TensorRT one; the
exporter ships it only when its render PSNR against torch passes (gt_export.parity).
"""
from __future__ import annotations

import logging
import os
import tempfile

from gt_runtime.errors import require

FP16_OP_BLOCK_LIST = ("LayerNormalization", "Softmax")


def fp16_block_list(model) -> list[str]:
    """Node names kept FP32 beyond FP16_OP_BLOCK_LIST: the residual Adds that feed a LayerNormalization."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return [n.name for n in model.graph.node if n.name and n.op_type == "Add"
            and any(c.op_type == "LayerNormalization" for o in n.output for c in consumers.get(o, []))]


def to_fp16(model):
    """FP32 ModelProto -> mixed-precision ModelProto (FP32 I/O; see the module docstring)."""
    onnx = require("onnx", "gt export")
    require("onnxconverter_common", "gt export")
    from onnxconverter_common import float16

    unnamed = [i for i, n in enumerate(model.graph.node) if not n.name]
    if unnamed:  # the node block list needs names
        model = onnx.ModelProto.FromString(model.SerializeToString())
        for i in unnamed:
            model.graph.node[i].name = f"gt_node_{i}"
    out = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP16_OP_BLOCK_LIST),
                                           node_block_list=fp16_block_list(model))
    onnx.checker.check_model(out)
    for vi in (*out.graph.input, *out.graph.output):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise RuntimeError(f"FP16 conversion changed the dtype of graph I/O {vi.name} | expected float32 I/O")
    return out


def to_int8(model, per_channel: bool = False, weight_type: str = "uint8") -> bytes:
    """FP32 ModelProto -> ONNX Runtime dynamic INT8 model bytes. weight_type: "uint8" | "int8"."""
    onnx = require("onnx", "gt export")
    require("onnxruntime", "gt export")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint through the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="gt-int8-") as d:
            src, dst = os.path.join(d, "fp32.onnx"), os.path.join(d, "int8.onnx")
            onnx.save(model, src)
            wt = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[weight_type]
            quantize_dynamic(src, dst, weight_type=wt, per_channel=per_channel,
                             op_types_to_quantize=["MatMul", "Gemm"])
            with open(dst, "rb") as f:
                data = f.read()
    finally:
        root.setLevel(level)
    onnx.checker.check_model(onnx.load_from_string(data))
    return data
