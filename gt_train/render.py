"""Renderer adapter: raw (pre-activation) Gaussians -> image, differentiable.

Activations: exp(log_scales), sigmoid(opacity_logits), SH of the current degree
(the first (d + 1)^2 coefficients; the rasterizer adds 0.5 and clamps at 0).
Backends: `gsplat.rasterization` when the tensors are on CUDA and gsplat imports,
else the C++ CPU autograd rasterizer (`gt_train.raster.rasterize_torch`).
"""
from __future__ import annotations

import torch


def _gsplat():
    try:
        import gsplat

        return gsplat
    except Exception:
        return None


def backend_for(device: torch.device) -> str:
    """-> "gsplat" (CUDA) or "cpu"."""
    if torch.device(device).type == "cuda":
        if _gsplat() is None:
            from gt_runtime.errors import MissingDependencyError

            raise MissingDependencyError("training on CUDA needs gsplat | pip install gsplat, or train with --device cpu")
        return "gsplat"
    return "cpu"


def render(means: torch.Tensor, quats: torch.Tensor, log_scales: torch.Tensor, opacity_logits: torch.Tensor,
           sh: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
           background: torch.Tensor, sh_degree: int) -> torch.Tensor:
    """Raw attributes means [N, 3], quats [N, 4], log_scales [N, 3], opacity_logits [N], sh [N, K, 3];
    viewmat [4, 4] world -> camera, K [3, 3], background [H, W, 3] -> image [H, W, 3].

    Only the first (sh_degree + 1)^2 SH coefficients are used.
    """
    n_sh = (sh_degree + 1) ** 2
    assert sh.shape[1] >= n_sh, (sh.shape, sh_degree)
    scales = torch.exp(log_scales)
    opacities = torch.sigmoid(opacity_logits)
    colors = sh[:, :n_sh].contiguous()
    if means.is_cuda:
        gsplat = _gsplat()
        img, alpha, _ = gsplat.rasterization(
            means, quats, scales, opacities, colors, viewmat[None], K[None], width, height,
            sh_degree=sh_degree, packed=False,
        )
        return img[0] + (1.0 - alpha[0]) * background
    from gt_train.raster import rasterize_torch

    return rasterize_torch(means, quats, scales, opacities, colors, viewmat, K, width, height, background=background)
