"""Every node of a graph that TensorRT will parse must be an operator its ONNX parser supports natively.

No plugins: an op outside `TRT_NATIVE_OPS` (or in a non-default domain, e.g. com.microsoft)
would need a TensorRT plugin, which a bundle may not depend on. The check walks the main
graph, subgraphs (If / Loop / Scan bodies) and local functions.

It applies to the graphs TensorRT builds engines from (deform.onnx, deform.fp16.onnx) and
to audio_encoder.onnx; deform.int8.onnx is an ONNX Runtime (CPU) graph (DynamicQuantizeLinear,
MatMulInteger) and is not meant for TensorRT.
"""
from __future__ import annotations

from gt_runtime.contract import ONNX_OPSET
from gt_runtime.errors import InputError, require

# The operators marked "Y" in the ONNX-TensorRT operator support matrix, "Supported ONNX
# Operators", TensorRT 10.0 (opset 9 to 20): onnx/onnx-tensorrt, docs/operators.md
# (https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md). Ops marked "N"
# there (e.g. DynamicQuantizeLinear, MatMulInteger, ConvInteger, QLinearMatMul, STFT,
# Unique, the Sequence* ops) are deliberately absent.
TRT_NATIVE_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
DEFAULT_DOMAINS = ("", "ai.onnx")
MIN_OPSET = ONNX_OPSET  # the bundle contract (gt_runtime.contract)


class GraphCheckError(InputError):
    """A graph uses an operator that TensorRT's ONNX parser does not support natively."""


def _walk(graph, functions: dict):
    """Yield (domain, op_type) of every node in graph, its subgraphs and the local functions it calls."""
    onnx = require("onnx", "gt export")
    seen_fn = set()
    stack = [graph]
    while stack:
        g = stack.pop()
        nodes = g.node
        for n in nodes:
            key = (n.domain, n.op_type)
            if key in functions and key not in seen_fn:
                seen_fn.add(key)
                stack.append(functions[key])  # FunctionProto: iterate its .node the same way
                continue
            yield n.domain, n.op_type
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    stack.append(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(a.graphs)


def op_types(model) -> set[str]:
    """-> the set of "op" (default domain) or "domain::op" names used anywhere in the model."""
    functions = {(f.domain, f.name): f for f in model.functions}
    return {op if dom in DEFAULT_DOMAINS else f"{dom}::{op}" for dom, op in _walk(model.graph, functions)}


def unsupported_ops(model) -> list[str]:
    """-> sorted op names that TensorRT would need a plugin for (empty = all native)."""
    return sorted(op for op in op_types(model) if op not in TRT_NATIVE_OPS)


def check_graph(model, name: str) -> set[str]:
    """Raise GraphCheckError naming the unsupported ops (or a too-old opset) -> the op set when it passes.

    model: onnx.ModelProto, or a path / bytes of one.
    """
    onnx = require("onnx", "gt export")
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    elif not hasattr(model, "graph"):
        model = onnx.load(str(model))
    opset = max((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), default=0)
    if opset < MIN_OPSET:
        raise GraphCheckError(f"{name}: opset {opset} | expected >= {MIN_OPSET}; re-export with gt export (opset 18)")
    bad = unsupported_ops(model)
    if bad:
        raise GraphCheckError(
            f"{name}: operator(s) {', '.join(bad)} are not supported natively by TensorRT's ONNX parser "
            f"(plugins are not allowed) | change the model so that it exports to supported ops (gt_export.graph_check.TRT_NATIVE_OPS)")
    return op_types(model)
