"""torch module -> ONNX with one fallback, quietly: shared by `gt export` (the runtime graphs) and
`gt preprocess --audio-model` (the audio front end).

`torch.onnx.export(dynamo=True)` (torch.export + onnxscript) is tried first with the weights
inside the file; if it fails on this torch / model, the TorchScript exporter (`dynamo=False`)
at the same opset. The caller records which one was used.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

from gt_runtime.errors import require

_CHATTY = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "torch.fx", "transformers")


@contextlib.contextmanager
def quiet():
    """Silence exporter / transformers chatter (warnings, progress prints); callers show their own progress."""
    loggers = [logging.getLogger(n) for n in _CHATTY]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export_module(module, args, input_names, output_names, dynamic: dict[str, dict[int, str]] | None = None,
                  opset: int = 18):
    """-> (onnx.ModelProto checked by onnx.checker, exporter name). dynamic: input name -> {axis: dim name}.

    Raises RuntimeError naming both exporters' errors when neither works.
    """
    torch = require("torch", "ONNX export")
    onnx = require("onnx", "ONNX export")
    module = module.eval()
    dynamic = dynamic or {}
    errors = []
    try:
        dims = {}
        for axes in dynamic.values():
            for name in axes.values():
                dims.setdefault(name, torch.export.Dim(name, min=1 if name == "B" else 2, max=1 << 22))
        shapes = {k: {ax: dims[n] for ax, n in axes.items()} for k, axes in dynamic.items()}
        with quiet(), torch.no_grad():
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=list(input_names),
                                     output_names=list(output_names), dynamic_shapes=shapes or None,
                                     external_data=False, optimize=True, verbose=False)
        model, used = prog.model_proto, f"torch.onnx dynamo (torch {torch.__version__})"
    except Exception as exc:  # pragma: no cover - depends on the torch / transformers versions
        errors.append(f"dynamo: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        try:
            buf = io.BytesIO()
            with quiet(), torch.no_grad():
                torch.onnx.export(module, args, buf, dynamo=False, opset_version=opset, input_names=list(input_names),
                                  output_names=list(output_names), dynamic_axes=dynamic or None,
                                  do_constant_folding=True)
            model, used = onnx.load_from_string(buf.getvalue()), f"torch.onnx TorchScript (torch {torch.__version__})"
        except Exception as exc2:
            errors.append(f"torchscript: {type(exc2).__name__}: {str(exc2).splitlines()[0] if str(exc2) else ''}")
            raise RuntimeError(f"ONNX export of {type(module).__name__} failed ({'; '.join(errors)})") from None
    onnx.checker.check_model(model)
    return model, used
