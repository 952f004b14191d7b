"""gt_export: a trained run -> a frozen bundle (README: "Bundle format").

    from gt_export import ExportConfig, export
    path = export(ExportConfig(run="runs/may", out="may.gtb", fp16=True))

Steps: load the checkpoint (weights_only), freeze the canonical Gaussians and queries,
export the deform and audio-encoder graphs to ONNX (torch.onnx dynamo exporter, opset
18), FP16 mixed precision / INT8 dynamic quantisation, TensorRT's operator check, the
scene from the dataset, TensorRT engines on a GPU, and a parity check against torch
whose table goes into the manifest. Importing this package does not import torch.
"""
from gt_export.config import ExportConfig

__version__ = "0.1.0"


def export(cfg: ExportConfig):
    """ExportConfig -> path of the written bundle (see gt_export.exporter.export)."""
    from gt_export.exporter import export as _export

    return _export(cfg)


__all__ = ["ExportConfig", "export", "__version__"]
