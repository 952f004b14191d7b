"""`ExportConfig`: everything `gt export` needs (one dataclass, saved into the manifest)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from gt_runtime.contract import ONNX_OPSET, QUIET
from gt_runtime.errors import InputError

MIN_OPSET = ONNX_OPSET  # the bundle contract; attention down-converted to 17 is invalid


@dataclass
class ExportConfig:
    """`gt export RUN --fp16 [--int8] -o NAME.gtb`.

    run: run directory of `gt train` (RUN/config.json, RUN/checkpoints/*.pt).
    checkpoint: a checkpoint file (default: the run's latest).
    dataset: identity directory for the scene and the parity frames (default: the one in the run config).
    trt: build a TensorRT engine: None = when tensorrt imports and a GPU is present.
    """

    run: Path
    out: Path
    fp16: bool = False
    int8: bool = False
    dataset: Path | None = None
    checkpoint: Path | None = None
    trt: bool | None = None
    overwrite: bool = False
    opset: int = MIN_OPSET
    parity_frames: int = 8            # val frames used by the parity check (evenly spaced)
    fp16_min_psnr: float = 40.0       # render PSNR vs torch below which the export fails
    int8_min_psnr: float = 38.0       # render PSNR vs torch below which INT8 is left out
    fp32_max_abs: float = 1e-3        # ONNX FP32 vs torch, any offset: above this the export fails
    int8_per_channel: bool = False
    int8_weight_type: str = "uint8"   # uint8 | int8 (see gt_export.precision.to_int8)
    trt_max_batch: int = 8
    track_frames: int | None = None   # keep the first N frames of the camera/blink/torso track (played ping-pong); None: all
    quiet: bool | None = None         # None: GT_QUIET=1 in the environment

    def __post_init__(self):
        self.run = Path(self.run)
        self.out = Path(self.out)
        self.dataset = None if self.dataset is None else Path(self.dataset)
        self.checkpoint = None if self.checkpoint is None else Path(self.checkpoint)
        if self.quiet is None:
            self.quiet = QUIET.on()
        if self.opset < MIN_OPSET:
            raise InputError(f"--opset {self.opset} | expected >= {MIN_OPSET} (the bundle contract; attention is not valid below 18)")
        if self.int8_weight_type not in ("uint8", "int8"):
            raise InputError(f"int8_weight_type {self.int8_weight_type!r} | expected uint8 or int8")
        if self.parity_frames < 1 or self.trt_max_batch < 1 or (self.track_frames is not None and self.track_frames < 1):
            raise InputError(f"parity_frames {self.parity_frames}, trt_max_batch {self.trt_max_batch}, track_frames {self.track_frames} | expected >= 1")

    def to_dict(self) -> dict:
        """JSON-ready dict; paths reduced to their names (a bundle does not carry the exporting machine's paths)."""
        d = asdict(self)
        for k in ("run", "out", "dataset", "checkpoint"):
            d[k] = None if d[k] is None else Path(d[k]).name
        return d
