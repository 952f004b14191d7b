"""Thin wrapper over the C++ CPU rasterizer extension `gt_runtime._raster_cpu`.

    img = forward(means, quats, scales, opacities, colors, viewmat, K, width, height, background)
    img, state = forward_with_state(...same...)                 # training
    v_means, v_quats, v_scales, v_opacities, v_colors, v_background = backward(state, v_image)

Arrays are float32 C-contiguous numpy (converted here, zero-copy when they already are).
The extension is optional: `load()` raises a one-line MissingDependencyError saying how to build it.
"""

from __future__ import annotations

import numpy as np

from gt_runtime.util.native import NativeExtension

_EXT = NativeExtension("_raster_cpu", "the C++ CPU rasterizer")
load = _EXT.load
available = _EXT.available


def _f32(a):
    return None if a is None else np.ascontiguousarray(a, dtype=np.float32)


def _args(means, quats, scales, opacities, colors, viewmat, K, width, height, background):
    return (_f32(means), _f32(quats), _f32(scales), _f32(opacities), _f32(colors), _f32(viewmat), _f32(K),
            int(width), int(height), _f32(background))


def forward(means, quats, scales, opacities, colors, viewmat, K, width, height, background=None) -> np.ndarray:
    """Render -> [H, W, 3] float32. Shapes as gt_runtime.raster.rasterize."""
    return load().forward(*_args(means, quats, scales, opacities, colors, viewmat, K, width, height, background))


def forward_with_state(means, quats, scales, opacities, colors, viewmat, K, width, height, background=None):
    """Render -> (image [H, W, 3] float32, opaque state for backward())."""
    return load().forward_with_state(*_args(means, quats, scales, opacities, colors, viewmat, K, width, height,
                                            background))


def backward(state, v_image):
    """v_image [H, W, 3] -> (v_means [N, 3], v_quats [N, 4], v_scales [N, 3], v_opacities [N],
    v_colors [N, 3] | [N, K, 3], v_background [3] | [H, W, 3] | None)."""
    return load().backward(state, _f32(v_image))
