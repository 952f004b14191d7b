"""gt_runtime: the lean, torch-free playback core of gt.

It holds the bundle reader, the audio front end, the engines, the rasterizers,
the compositor, the streaming session and the video writer. It depends on numpy
and soundfile; cupy, tensorrt and onnxruntime are optional and imported inside the
functions that use them. It never imports torch, gt_train or gt_export.
"""

__version__ = "0.1.0"

from gt_runtime.errors import InputError  # noqa: E402

__all__ = ["InputError", "__version__"]
