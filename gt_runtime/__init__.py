"""gt_runtime: the lean, torch-free playback core of gt.

    from gt_runtime import raster, Bundle, Player

It holds the bundle reader, the audio front end, the engines, the rasterizers,
the compositor, the streaming session and the video writer. It depends on numpy
and soundfile; cupy, tensorrt and onnxruntime are optional and imported inside the
functions that use them. It never imports torch, gt_train or gt_export.
"""

__version__ = "0.1.0"

from gt_runtime.errors import InputError  # noqa: E402

__all__ = ["Bundle", "InputError", "Player", "Session", "raster", "__version__"]

_LAZY = {"Bundle": "gt_runtime.bundle", "Player": "gt_runtime.playback.player", "Session": "gt_runtime.playback.session"}


def __getattr__(name):
    """Import Bundle / Player / Session / raster on first use, so `import gt_runtime` stays cheap."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "raster":
        return importlib.import_module("gt_runtime.raster")
    raise AttributeError(f"module 'gt_runtime' has no attribute {name!r}")
