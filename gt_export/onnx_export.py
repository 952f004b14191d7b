"""torch -> ONNX for the two runtime graphs (docs/MODEL.md; names as gt_runtime.engines.base).

    deform.onnx         tokens [B, 4, 64], queries [N, 64] -> dmu [B,N,3], drot [B,N,4], dscale [B,N,3],
                        dsh [B,N,3K], dopacity [B,N,1]          (B and N dynamic)
    audio_encoder.onnx  audio_window [B, 15, 2, D] -> audio_token [B, 64]   (B dynamic; D = model.cfg.audio_dim, 80 for mel)

Exporter: gt_train.torch_onnx.export_module (dynamo first, TorchScript as the fallback) at
opset >= 18 with the weights inside the file; the exporter used is recorded in the bundle manifest. Every graph is checked with `onnx.checker`, and
its input/output names, ranks and static dims are checked against the contract.
"""
from __future__ import annotations

from gt_runtime.contract import AUDIO_INPUTS, AUDIO_OUTPUTS, DEFORM_INPUTS, OFFSET_NAMES
from gt_runtime.errors import require
from gt_train.torch_onnx import export_module
# Example sizes for tracing: distinct from every static dim (4, 64, 15, 2, 80), so that
# torch.export never ties B or N to one of them.
_EXAMPLE_B, _EXAMPLE_N = 3, 37


def _modules():
    torch = require("torch", "gt export")
    nn = torch.nn

    class DeformGraph(nn.Module):
        """model.deform without the attention output: (tokens [B,4,64], queries [N,64]) -> 5 offsets."""

        def __init__(self, deform: nn.Module):
            super().__init__()
            self.deform = deform

        def forward(self, tokens, queries):
            dmu, drot, dscale, dsh, dopacity, _attn = self.deform(tokens, queries)
            return dmu, drot, dscale, dsh, dopacity

    class AudioGraph(nn.Module):
        """model.audio: audio_window [B,15,2,D] -> audio_token [B,64]."""

        def __init__(self, audio: nn.Module):
            super().__init__()
            self.audio = audio

        def forward(self, audio_window):
            return self.audio(audio_window)

    return torch, DeformGraph, AudioGraph


def _dims(vi) -> list:
    return [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?") for d in vi.type.tensor_type.shape.dim]


def check_io(model, inputs: dict[str, list], outputs: dict[str, list], where: str) -> None:
    """Assert the graph's I/O names, float32 dtype and shapes (str = any symbolic dim, int = that size)."""
    onnx = require("onnx", "gt export")
    for kind, got_list, want in (("input", model.graph.input, inputs), ("output", model.graph.output, outputs)):
        got = {v.name: v for v in got_list}
        if list(got) != list(want):
            raise RuntimeError(f"{where}: {kind}s {list(got)} | expected {list(want)} (gt_runtime.engines names)")
        for name, shape in want.items():
            vi = got[name]
            if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                raise RuntimeError(f"{where}: {kind} {name} has elem_type {vi.type.tensor_type.elem_type} | expected float32")
            dims = _dims(vi)
            ok = len(dims) == len(shape) and all(
                (isinstance(w, str) and isinstance(d, str) and d != "?") or (isinstance(w, int) and d == w)
                for d, w in zip(dims, shape))
            if not ok:
                raise RuntimeError(f"{where}: {kind} {name} has shape {dims} | expected {shape}")


def _annotate(model, graph: str, meta: dict) -> None:
    model.producer_name = "gt_export"
    model.doc_string = f"gt {graph} graph (docs/MODEL.md)"
    for k, v in {"gt.graph": graph, **meta}.items():
        p = model.metadata_props.add()
        p.key, p.value = str(k), str(v)


def export_deform(model, opset: int = 18):
    """GaussianTalker -> (deform ModelProto, exporter name). B and N dynamic, FP32."""
    torch, DeformGraph, _ = _modules()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(_EXAMPLE_B, 4, 64, generator=gen)
    queries = torch.randn(_EXAMPLE_N, 64, generator=gen)
    onnx_model, used = export_module(DeformGraph(model.deform), (tokens, queries), tuple(DEFORM_INPUTS), OFFSET_NAMES,
                               {"tokens": {0: "B"}, "queries": {0: "N"}}, opset)
    k3 = 3 * (model.cfg.sh_degree + 1) ** 2
    check_io(onnx_model, {"tokens": ["B", 4, 64], "queries": ["N", 64]},
             {"dmu": ["B", "N", 3], "drot": ["B", "N", 4], "dscale": ["B", "N", 3], "dsh": ["B", "N", k3],
              "dopacity": ["B", "N", 1]}, "deform.onnx")
    _annotate(onnx_model, "deform", {"gt.num_layers": model.cfg.num_layers, "gt.sh_degree": model.cfg.sh_degree,
                                     "gt.exporter": used})
    return onnx_model, used


def export_audio(model, opset: int = 18):
    """GaussianTalker -> (audio_encoder ModelProto, exporter name). B dynamic, D = model.cfg.audio_dim static."""
    torch, _, AudioGraph = _modules()
    dim = int(model.cfg.audio_dim)
    bsz = _EXAMPLE_B if dim != _EXAMPLE_B else _EXAMPLE_B + 2  # B must not be tied to a static dim
    window = torch.randn(bsz, 15, 2, dim, generator=torch.Generator().manual_seed(1))
    onnx_model, used = export_module(AudioGraph(model.audio), (window,), tuple(AUDIO_INPUTS), AUDIO_OUTPUTS,
                               {"audio_window": {0: "B"}}, opset)
    check_io(onnx_model, {"audio_window": ["B", 15, 2, dim]}, {"audio_token": ["B", 64]}, "audio_encoder.onnx")
    _annotate(onnx_model, "audio_encoder", {"gt.exporter": used, "gt.audio_dim": dim})
    return onnx_model, used
