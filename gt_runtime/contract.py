"""The model's contract: every shape, name, rate and setting that more than one module relies on.

Import-free (only the standard library), so gt_runtime, gt_train, gt_export, the C host's
bridge and the tests can all read it without pulling anything in, and a value is never
written twice (the model is gsplat's `cuda/_constants.py`; settings follow tinygrad's
`helpers.py`: each `GT_*` environment variable is declared once here, with its default,
and no other Python file reads it from `os.environ`). Native code mirrors the values it
needs in its own headers (`plugins/raster/gt_raster_math.h`, `plugins/host/gt_host.h`);
`tests/runtime/test_contract.py` checks that the two agree.

Letters used in shapes everywhere: N Gaussians, B frames in a batch, T frames of a
speech or track, K = (deg + 1)^2 SH bases, D audio feature width, H x W pixels.
See docs/ARCHITECTURE.md for the pipeline these names describe.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# -- audio and video clocks -----------------------------------------------------------
SAMPLE_RATE = 16000                      # Hz; every front end works on 16 kHz mono float32
FPS = 25                                 # video frames per second (one frame = 40 ms)
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS   # 640 samples per video frame
N_MELS = 80                              # width D of the `mel` front end's features
ROWS_PER_FRAME = 2                       # audio feature rows per video frame (50 Hz features)

# -- audio window of one frame -------------------------------------------------------------
WINDOW_BEFORE = 8                        # feature frames before frame t in its window
WINDOW_AFTER = 6                         # ... and after it: the model's lookahead in video frames
WINDOW = WINDOW_BEFORE + 1 + WINDOW_AFTER  # 15 feature frames t-8 .. t+6
SUB_FRAMES = 8                           # AudioNet frames u = t-4 .. t+3, each over feats[u-4 .. u+3]

# -- the deformation network (docs/MODEL.md) ------------------------------------------------------
HIDDEN = 64                              # token and query width
HEADS = 2                                # attention heads of 32
NUM_TOKENS = 4                           # audio, eye, view, null: in this order
TOKEN_NAMES = ("audio", "eye", "view", "null")
HEAD_NAMES = ("mu", "rot", "scale", "sh", "opacity")        # deformation heads
OFFSET_NAMES = ("dmu", "drot", "dscale", "dsh", "dopacity")  # their outputs, same order
HEAD_HIDDEN = 2 * HIDDEN                 # each head's fc1 width (the five fused: 640)
LEAK = 0.02                              # LeakyReLU slope of AudioNet
LN_EPS = 1e-5                            # LayerNorm epsilon (torch's default)
GAUSSIAN_KEYS = ("means", "quats", "log_scales", "opacity_logits", "sh", "queries")


def sh_bases(degree: int) -> int:
    """K = (deg + 1)^2 SH bases of degree `degree`."""
    return (int(degree) + 1) ** 2


def head_dims(sh_degree: int) -> dict[str, int]:
    """Output width of each deformation head: {mu: 3, rot: 4, scale: 3, sh: 3K, opacity: 1}."""
    return {"mu": 3, "rot": 4, "scale": 3, "sh": 3 * sh_bases(sh_degree), "opacity": 1}


# -- graphs: input name -> rank, output names (every engine, the exporter and the ONNX builders) --
DEFORM_INPUTS = {"tokens": 3, "queries": 2}      # tokens [B, 4, 64], queries [N, 64]
DEFORM_OUTPUTS = OFFSET_NAMES                    # dmu [B,N,3] drot [B,N,4] dscale [B,N,3] dsh [B,N,3K] dopacity [B,N,1]
AUDIO_INPUTS = {"audio_window": 4}               # audio_window [B, 15, 2, D]
AUDIO_OUTPUTS = ("audio_token",)                 # audio_token [B, 64]
FRONTEND_INPUT, FRONTEND_OUTPUT = "audio", "features"  # audio_frontend.onnx: audio [1, S] -> features [1, rows, D]
ONNX_OPSET = 18

# -- the bundle (gt_runtime/bundle) ----------------------------------------------------------
BUNDLE_FORMAT = "gt-bundle"
BUNDLE_VERSION = 1
DEFORM_ONNX = {"fp32": "deform.onnx", "fp16": "deform.fp16.onnx", "int8": "deform.int8.onnx"}
AUDIO_ONNX = "audio_encoder.onnx"
AUDIO_FRONTEND_ONNX = "audio_frontend.onnx"
FRONTENDS = ("mel", "hubert", "wav2vec2")
MODEL_FRONTENDS = ("hubert", "wav2vec2")

# -- rasterizer (mirrored by plugins/raster/gt_raster_math.h) ---------------------------------
TILE = 16                                # tile side in pixels (GT_TILE)
NEAR, FAR = 0.01, 1e10                   # camera-z clip planes (GT_NEAR, GT_FAR)
EPS2D = 0.3                              # low-pass dilation of cov2d's diagonal (GT_EPS2D)
MAX_ALPHA = 0.99                         # alpha clamp (GT_MAX_ALPHA)
ALPHA_THRESHOLD = 1.0 / 255.0            # alpha below this is skipped (GT_ALPHA_THRESHOLD)
T_THRESHOLD = 1e-4                       # stop once transmittance would fall to this (GT_T_THRESHOLD)

# -- per-frame stages, as gt profile lists them (Timings, gt profile, the C host's gt_frame_info) ----
STAGES = ("audio_frontend", "audio_encoder", "deform", "raster", "composite", "encode")
MODEL_STAGES = ("audio_encoder", "deform", "raster")   # the model's share of a frame (model FPS)


# -- settings: every GT_* environment variable, declared once ------------------------------------
@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default and what it does."""

    name: str
    default: str
    help: str

    def get(self) -> str:
        """The value in the environment now (an empty value counts as unset)."""
        return os.environ.get(self.name) or self.default

    def on(self) -> bool:
        """True when set to anything but "", "0", "false", "no"."""
        return self.get().strip().lower() not in ("", "0", "false", "no")


QUIET = Setting("GT_QUIET", "0", "1: no progress bars (tests and benchmarks set it)")
DEBUG = Setting("GT_DEBUG", "0", "1: print the traceback of an internal error (the CLI and the C host)")
RASTER_ISA = Setting("GT_RASTER_ISA", "", "force the C++ rasterizer's kernels: avx512, avx2 or generic (read by plugins/raster)")
DEFORM_ISA = Setting("GT_DEFORM_ISA", "", "cap the fused deformation kernels (cpu-fused): avx512 (no AMX), avx2 or generic (read by plugins/deform)")
AUTOTUNE = Setting("GT_AUTOTUNE", "1", "--engine auto: 1 times the engines that pass parity on the bundle's first frames "
                   "(cached per machine and bundle in $XDG_CACHE_HOME/gt/autotune.json), refresh: measure again, "
                   "0: the fixed order")
ENGINE = Setting("GT_ENGINE", "", "the C host's engine when gt_options.engine is empty (see --engine)")
RASTER = Setting("GT_RASTER", "", "the C host's rasterizer when gt_options.raster is empty (see --raster)")
DLIB_SHAPE_PREDICTOR = Setting("GT_DLIB_SHAPE_PREDICTOR", "", "dlib's 68-point model file (default: Debian's libdlib-data)")
TORSO_CACHE_MB = Setting("GT_TORSO_CACHE_MB", "512", "decoded torso frames kept in memory per open bundle, MB (beyond it "
                         "a frame's PNG is decoded each time it plays; 0: none kept)")
MARCH = Setting("GT_MARCH", "", "build only: extra -march for the C++ extension (setup.py)")
PYTHON = Setting("GT_PYTHON", "", "the C host's Python interpreter (a venv's bin/python)")
PYTHONPATH = Setting("GT_PYTHONPATH", "", "the C host's extra module path (where gt_runtime lives)")
SETTINGS = (QUIET, DEBUG, RASTER_ISA, DEFORM_ISA, AUTOTUNE, ENGINE, RASTER, DLIB_SHAPE_PREDICTOR, TORSO_CACHE_MB, MARCH, PYTHON,
            PYTHONPATH)
