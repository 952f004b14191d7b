"""ONNX graphs of the gt networks built from `weights.npz` with the onnx helper API (no torch).

- `build_deform_onnx`: tokens [B,4,64], queries [N,64] -> dmu, drot, dscale, dsh, dopacity,
  line by line docs/MODEL.md (the layout the exporter writes; used by tests and random bundles),
  i.e. `gt_runtime.model.reference.deform_plain` as a graph (tests/runtime/test_model_reference.py).
  With `fast=True` it builds the CPU-tuned graph instead: inputs tokens, queries and
  q0 = queries Wq0^T + bq0 (layer 0's query projection, precomputed once per bundle),
  W_o folded into the token values, and the five head fc1 layers fused into one
  64 -> 640 GEMM. N stays dynamic, so the runner can feed the Gaussians in chunks.
- `build_audio_onnx`: audio_window [B,15,2,D] -> audio_token [B,64] (D = audio_dim, from the weights).

`onnx` is imported lazily (it ships with the `export` extra).
"""
from __future__ import annotations

import numpy as np

from gt_runtime.contract import HEAD_HIDDEN, HEAD_NAMES, HEADS, HIDDEN, LEAK, LN_EPS, NUM_TOKENS, OFFSET_NAMES, ONNX_OPSET, head_dims
from gt_runtime.errors import require

OPSET = ONNX_OPSET


class _G:
    """A tiny graph builder: initializers and nodes with generated names."""

    def __init__(self):
        self.onnx = require("onnx", "engine onnxruntime")
        self.nodes, self.inits, self._n = [], [], 0

    def const(self, arr, name=None):
        from onnx import numpy_helper

        self._n += 1
        name = name or f"c{self._n}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def op(self, op_type, inputs, n_out=1, **attrs):
        self._n += 1
        outs = [f"{op_type.lower()}_{self._n}_{i}" for i in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), outs, name=f"{op_type}_{self._n}", **attrs))
        return outs[0] if n_out == 1 else outs

    def linear(self, x, w, b):
        """x [..., in] @ w[out, in]^T + b."""
        y = self.op("MatMul", [x, self.const(np.ascontiguousarray(w.T, np.float32))])
        return self.op("Add", [y, self.const(np.asarray(b, np.float32))])

    def ints(self, vals):
        return self.const(np.asarray(vals, np.int64))

    def model(self, inputs, outputs, name):
        h = self.onnx.helper
        graph = h.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="gt_runtime")
        m.ir_version = 9
        self.onnx.checker.check_model(m)
        return m


def _tensor(onnx, name, shape):
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def build_deform_onnx(weights, num_layers: int, sh_degree: int, fast: bool = False, fuse_heads: bool = True):
    """-> onnx.ModelProto of the deform graph (see module docstring)."""
    g = _G()
    onnx = g.onnx
    w = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    dh = HIDDEN // HEADS
    dims = head_dims(sh_degree)
    scale = np.float32(1.0 / np.sqrt(dh))
    c = "tokens"
    if not fast:
        h = g.op("Unsqueeze", ["queries", g.ints([0])])                  # [1, N, 64]
        for layer in range(num_layers):
            p = f"deform.layers.{layer}"
            q = g.linear(h, w[f"{p}.q.weight"], w[f"{p}.q.bias"])
            q = g.op("Transpose", [g.op("Reshape", [q, g.ints([0, 0, HEADS, dh])])], perm=[0, 2, 1, 3])  # [b,2,N,32]
            k = g.linear(c, w[f"{p}.k.weight"], w[f"{p}.k.bias"])
            k = g.op("Transpose", [g.op("Reshape", [k, g.ints([0, 0, HEADS, dh])])], perm=[0, 2, 3, 1])  # [B,2,32,4]
            v = g.linear(c, w[f"{p}.v.weight"], w[f"{p}.v.bias"])
            v = g.op("Transpose", [g.op("Reshape", [v, g.ints([0, 0, HEADS, dh])])], perm=[0, 2, 1, 3])  # [B,2,4,32]
            s = g.op("Mul", [g.op("MatMul", [q, k]), g.const(np.asarray(scale))])
            a = g.op("Softmax", [s], axis=-1)                                                          # [B,2,N,4]
            o = g.op("Transpose", [g.op("MatMul", [a, v])], perm=[0, 2, 1, 3])                          # [B,N,2,32]
            o = g.op("Reshape", [o, g.ints([0, 0, HIDDEN])])
            o = g.linear(o, w[f"{p}.o.weight"], w[f"{p}.o.bias"])
            h = g.op("LayerNormalization", [g.op("Add", [h, o]), g.const(w[f"{p}.norm1.weight"]), g.const(w[f"{p}.norm1.bias"])], axis=-1, epsilon=LN_EPS)
            f = g.linear(g.op("Relu", [g.linear(h, w[f"{p}.ffn1.weight"], w[f"{p}.ffn1.bias"])]), w[f"{p}.ffn2.weight"], w[f"{p}.ffn2.bias"])
            h = g.op("LayerNormalization", [g.op("Add", [h, f]), g.const(w[f"{p}.norm2.weight"]), g.const(w[f"{p}.norm2.bias"])], axis=-1, epsilon=LN_EPS)
        outs = []
        for name, key in zip(HEAD_NAMES, OFFSET_NAMES):
            p = f"deform.heads.{name}"
            y = g.linear(g.op("Relu", [g.linear(h, w[f"{p}.fc1.weight"], w[f"{p}.fc1.bias"])]), w[f"{p}.fc2.weight"], w[f"{p}.fc2.bias"])
            g.nodes.append(onnx.helper.make_node("Identity", [y], [key], name=f"out_{key}"))
            outs.append(_tensor(onnx, key, ["B", "N", dims[name]]))
        inputs = [_tensor(onnx, "tokens", ["B", NUM_TOKENS, HIDDEN]), _tensor(onnx, "queries", ["N", HIDDEN])]
        return g.model(inputs, outs, "gt_deform")

    # CPU-tuned graph: the algebraic savings; q0 is an input computed once per bundle.
    h = None
    for layer in range(num_layers):
        p = f"deform.layers.{layer}"
        # Kblk [B, 64, 8]: per head, K_h^T scaled, block diagonal; VO [B, 8, 64] = V_h Wo_h^T.
        kblocks, vblocks = [], []
        for hd in range(HEADS):
            sl = slice(hd * dh, (hd + 1) * dh)
            wk = np.zeros((HIDDEN, HIDDEN), np.float32)
            wk[sl] = w[f"{p}.k.weight"][sl] * scale                     # keep only this head's rows
            bk = np.zeros(HIDDEN, np.float32)
            bk[sl] = w[f"{p}.k.bias"][sl] * scale
            kblocks.append(g.op("Transpose", [g.linear(c, wk, bk)], perm=[0, 2, 1]))          # [B, 64, 4]
            wvo = w[f"{p}.o.weight"][:, sl] @ w[f"{p}.v.weight"][sl]                            # [64, 64]
            bvo = w[f"{p}.o.weight"][:, sl] @ w[f"{p}.v.bias"][sl]
            vblocks.append(g.linear(c, wvo, bvo))                                              # [B, 4, 64]
        kblk = g.op("Concat", kblocks, axis=2)                                                 # [B, 64, 8]
        vo = g.op("Concat", vblocks, axis=1)                                                   # [B, 8, 64]
        if layer == 0:
            s = g.op("MatMul", ["q0", kblk])                                                  # [B, N, 8]
            resid = "queries"
        else:
            s = g.op("MatMul", [g.linear(h, w[f"{p}.q.weight"], w[f"{p}.q.bias"]), kblk])
            resid = h
        a = g.op("Softmax", [g.op("Reshape", [s, g.ints([0, 0, HEADS, NUM_TOKENS])])], axis=-1)
        o = g.op("MatMul", [g.op("Reshape", [a, g.ints([0, 0, HEADS * NUM_TOKENS])]), vo])    # [B, N, 64]
        o = g.op("Add", [o, g.const(w[f"{p}.o.bias"])])
        h = g.op("LayerNormalization", [g.op("Add", [resid, o]), g.const(w[f"{p}.norm1.weight"]), g.const(w[f"{p}.norm1.bias"])], axis=-1, epsilon=LN_EPS)
        f = g.linear(g.op("Relu", [g.linear(h, w[f"{p}.ffn1.weight"], w[f"{p}.ffn1.bias"])]), w[f"{p}.ffn2.weight"], w[f"{p}.ffn2.bias"])
        h = g.op("LayerNormalization", [g.op("Add", [h, f]), g.const(w[f"{p}.norm2.weight"]), g.const(w[f"{p}.norm2.bias"])], axis=-1, epsilon=LN_EPS)
    if fuse_heads:
        w1 = np.concatenate([w[f"deform.heads.{nm}.fc1.weight"] for nm in HEAD_NAMES], axis=0)
        b1 = np.concatenate([w[f"deform.heads.{nm}.fc1.bias"] for nm in HEAD_NAMES])
        hh = g.op("Relu", [g.linear(h, w1, b1)])                                               # [B, N, 640]
        parts = g.op("Split", [hh, g.ints([HEAD_HIDDEN] * len(HEAD_NAMES))], n_out=len(HEAD_NAMES), axis=-1)
    else:
        parts = [g.op("Relu", [g.linear(h, w[f"deform.heads.{nm}.fc1.weight"], w[f"deform.heads.{nm}.fc1.bias"])])
                 for nm in HEAD_NAMES]
    outs = []
    for name, key, part in zip(HEAD_NAMES, OFFSET_NAMES, parts):
        p = f"deform.heads.{name}"
        y = g.linear(part, w[f"{p}.fc2.weight"], w[f"{p}.fc2.bias"])
        g.nodes.append(onnx.helper.make_node("Identity", [y], [key], name=f"out_{key}"))
        outs.append(_tensor(onnx, key, ["B", "N", dims[name]]))
    inputs = [_tensor(onnx, "tokens", ["B", NUM_TOKENS, HIDDEN]), _tensor(onnx, "queries", ["N", HIDDEN]),
              _tensor(onnx, "q0", ["N", HIDDEN])]
    return g.model(inputs, outs, "gt_deform_cpu")


def layer0_query(weights, queries) -> np.ndarray:
    """q0 = queries Wq0^T + bq0 [N, 64]: the constant input of the fast graph."""
    return np.ascontiguousarray(np.asarray(queries, np.float32) @ np.asarray(weights["deform.layers.0.q.weight"], np.float32).T
                                + np.asarray(weights["deform.layers.0.q.bias"], np.float32))


def build_audio_onnx(weights):
    """-> onnx.ModelProto: audio_window [B,15,2,D] -> audio_token [B,64] (docs/MODEL.md, audio.*; D from audio.net.conv.0)."""
    g = _G()
    onnx = g.onnx
    w = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    dim = int(w["audio.net.conv.0.weight"].shape[1])
    idx = (np.arange(8)[:, None] + np.arange(8)[None, :]).astype(np.int64)
    x = g.op("Gather", ["audio_window", g.const(idx)], axis=1)                  # [B, 8, 8, 2, D]
    x = g.op("Reshape", [x, g.ints([-1, 16, dim])])                             # [B 8, 16 rows, D]
    x = g.op("Transpose", [x], perm=[0, 2, 1])                                  # [B 8, D, 16] (NCL)

    def conv(x, name, stride):
        y = g.op("Conv", [x, g.const(w[f"{name}.weight"]), g.const(w[f"{name}.bias"])], kernel_shape=[3], strides=[stride], pads=[1, 1])
        return g.op("LeakyRelu", [y], alpha=LEAK)

    for i in (0, 2, 4, 6):
        x = conv(x, f"audio.net.conv.{i}", 2)                                   # -> [B 8, 64, 1]
    x = g.op("Reshape", [x, g.ints([-1, 64])])
    x = g.op("LeakyRelu", [g.linear(x, w["audio.net.fc.0.weight"], w["audio.net.fc.0.bias"])], alpha=LEAK)
    code = g.linear(x, w["audio.net.fc.2.weight"], w["audio.net.fc.2.bias"])   # [B 8, 32]
    code = g.op("Reshape", [code, g.ints([-1, 8, 32])])                         # [B, 8, 32]
    a = g.op("Transpose", [code], perm=[0, 2, 1])                               # [B, 32, 8]
    for i in (0, 2, 4, 6, 8):
        a = conv(a, f"audio.att.conv.{i}", 1)                                   # -> [B, 1, 8]
    a = g.op("Reshape", [a, g.ints([-1, 8])])
    att = g.op("Softmax", [g.linear(a, w["audio.att.fc.weight"], w["audio.att.fc.bias"])], axis=-1)  # [B, 8]
    sm = g.op("MatMul", [g.op("Unsqueeze", [att, g.ints([1])]), code])          # [B, 1, 32]
    sm = g.op("Reshape", [sm, g.ints([-1, 32])])
    hdn = g.op("Relu", [g.linear(sm, w["audio.mlp.0.weight"], w["audio.mlp.0.bias"])])
    y = g.linear(hdn, w["audio.mlp.2.weight"], w["audio.mlp.2.bias"])
    g.nodes.append(onnx.helper.make_node("Identity", [y], ["audio_token"], name="out_audio_token"))
    return g.model([_tensor(onnx, "audio_window", ["B", 15, 2, dim])], [_tensor(onnx, "audio_token", ["B", HIDDEN])], "gt_audio_encoder")


def fp16_model(model):
    """FP32 deform ModelProto -> mixed precision (FP32 I/O; LayerNorm, Softmax, Add kept FP32)."""
    require("onnxconverter_common", "engine onnxruntime")
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(
        model, keep_io_types=True, op_block_list=["LayerNormalization", "Softmax", "Add"])


def int8_model_bytes(model) -> bytes:
    """FP32 deform ModelProto -> ONNX Runtime dynamic INT8 (weights int8, activations quantized per call)."""
    import os
    import tempfile

    onnx = require("onnx", "engine onnxruntime")
    require("onnxruntime", "engine onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "f.onnx"), os.path.join(d, "q.onnx")
        onnx.save(model, src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        with open(dst, "rb") as f:
            return f.read()
