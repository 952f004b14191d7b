"""torch.autograd.Function over the C++ CPU rasterizer (gt_runtime._raster_cpu).

    img = rasterize_torch(means, quats, scales, opacities, colors, viewmat, K, width, height,
                          background=None)   # [H, W, 3], differentiable w.r.t. means, quats,
                                             # scales, opacities, colors (RGB or SH), background

Tensors go to numpy with .detach().cpu().numpy() (zero-copy for contiguous float32 CPU
tensors); the forward keeps the extension's opaque state for backward. viewmat and K get
no gradient. The torch oracle is gt_train.raster._torch_impl.
"""

from __future__ import annotations

import numpy as np
import torch

from gt_runtime.raster import _cpu, validate_inputs


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


class _RasterizeCPU(torch.autograd.Function):
    """Forward: gt_runtime._raster_cpu.forward_with_state; backward: its backward()."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, colors, background, viewmat, K, width, height):
        bg = None if background is None else _np(background)
        img, state = _cpu.forward_with_state(_np(means), _np(quats), _np(scales), _np(opacities), _np(colors),
                                             _np(viewmat), _np(K), width, height, bg)
        ctx.state = state
        ctx.has_bg = background is not None
        return torch.from_numpy(img).to(means.device, means.dtype)

    @staticmethod
    def backward(ctx, v_img):
        v = _cpu.backward(ctx.state, _np(v_img))
        ctx.state = None  # free the per-pixel buffers early
        dev, dt = v_img.device, v_img.dtype
        to = [torch.from_numpy(a).to(dev, dt) for a in v[:5]]
        v_bg = torch.from_numpy(v[5]).to(dev, dt) if ctx.has_bg else None
        return (*to, v_bg, None, None, None, None)


def rasterize_torch(means, quats, scales, opacities, colors, viewmat, K, width: int, height: int,
                    background=None) -> torch.Tensor:
    """Differentiable CPU render -> [H, W, 3] tensor (dtype and device of means).

    means [N, 3], quats [N, 4] wxyz, scales [N, 3] linear, opacities [N] in [0, 1],
    colors [N, 3] RGB or SH [N, K, 3], viewmat [4, 4] world -> camera, K [3, 3],
    background None | [3] | [H, W, 3]. Same conventions as gt_runtime.raster.rasterize.
    """
    validate_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, background)
    return _RasterizeCPU.apply(means, quats, scales, opacities, colors, background, viewmat, K, int(width),
                               int(height))
