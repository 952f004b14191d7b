"""Differentiable pure-torch Gaussian rasterizer: the gradient oracle of the tests.

It mirrors `gt_runtime.raster._reference.rasterize_reference` (itself gsplat's
rasterization() with antialiased=False, packed=False): the same projection (EWA,
clamped Jacobian, 0.3 px dilation), the same SH colour (+0.5, clamp at 0), the same
tile coverage (radius box -> 16x16 tiles) and the same front-to-back rules (alpha =
min(0.99, o exp(-sigma)), skip sigma < 0 or alpha < 1/255, stop before T <= 1e-4).
Culling, radii and the discrete per-pixel decisions are taken without gradient, as in
gsplat. Slow (a loop over Gaussians on the whole image): for small test scenes only.
Works in float32 or float64 (the dtype of `means`).
"""

from __future__ import annotations

import math

import torch

TILE, NEAR, FAR, EPS2D = 16, 0.01, 1e10, 0.3
MAX_ALPHA, ALPHA_THRESHOLD, T_THRESHOLD = 0.99, 1.0 / 255.0, 1e-4


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """quats [N, 4] wxyz (any norm) -> R [N, 3, 3]."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1)
    return R.reshape(-1, 3, 3)


def project(means, quats, scales, viewmat, K, width: int, height: int):
    """-> means2d [N, 2], conics [N, 3], depths [N], radii [N] (no grad; 0 = culled)."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mean_c = means @ R.T + t
    Rq = quat_to_rotmat(quats)
    M = Rq * scales[:, None, :]
    covar_c = R @ (M @ M.transpose(1, 2)) @ R.T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x, y, z = mean_c.unbind(-1)
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = z * torch.minimum(lim_xp, torch.maximum(-lim_xn, x / z))
    ty = z * torch.minimum(lim_yp, torch.maximum(-lim_yn, y / z))
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / z**2, zero, fy / z, -fy * ty / z**2], -1).reshape(-1, 2, 3)
    cov2d = J @ covar_c @ J.transpose(1, 2)
    a, b, c = cov2d[:, 0, 0] + EPS2D, cov2d[:, 0, 1], cov2d[:, 1, 1] + EPS2D
    det = a * c - b * b
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    with torch.no_grad():
        half = 0.5 * (a + c)
        radii = torch.ceil(3 * torch.sqrt(half + torch.sqrt(torch.clamp(half * half - det, min=0.01))))
        ok = (z >= NEAR) & (z <= FAR) & (det > 0) & torch.isfinite(det) & (radii > 0) & torch.isfinite(radii)
        mx, my = means2d[:, 0], means2d[:, 1]
        ok &= ~((mx + radii <= 0) | (mx - radii >= width) | (my + radii <= 0) | (my - radii >= height))
        radii = torch.where(ok, radii, torch.zeros_like(radii))
    return means2d, conics, z, radii


def sh_to_color(degree: int, dirs: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """clamp_min(SH(dirs / |dirs|) . coeffs + 0.5, 0): dirs [N, 3], coeffs [N, K, 3] -> [N, 3] (gsplat constants)."""
    d = dirs / dirs.norm(dim=-1, keepdim=True)
    x, y, z = d.unbind(-1)
    B = [torch.full_like(x, 0.28209479177387814)]
    if degree >= 1:
        B += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        z2, fC1, fS1 = z * z, x * x - y * y, 2 * x * y
        B += [0.5462742152960395 * fS1, -1.092548430592079 * z * y, 0.9461746957575601 * z2 - 0.3153915652525201,
              -1.092548430592079 * z * x, 0.5462742152960395 * fC1]
    if degree >= 3:
        fTmp0C, fTmp1B = -2.285228997322329 * z2 + 0.4570457994644658, 1.445305721320277 * z
        fC2, fS2 = x * fC1 - y * fS1, x * fS1 + y * fC1
        B += [-0.5900435899266435 * fS2, fTmp1B * fS1, fTmp0C * y, z * (1.865881662950577 * z2 - 1.119528997770346),
              fTmp0C * x, fTmp1B * fC1, -0.5900435899266435 * fC2]
    basis = torch.stack(B, -1)  # [N, K]
    return torch.clamp_min((basis[:, :, None] * coeffs).sum(1) + 0.5, 0.0)


def rasterize_torch_impl(means, quats, scales, opacities, colors, viewmat, K, width: int, height: int,
                         background=None) -> torch.Tensor:
    """Differentiable render -> [H, W, 3]. Tensors as gt_runtime.raster.rasterize (one dtype)."""
    H, W = int(height), int(width)
    means2d, conics, depths, radii = project(means, quats, scales, viewmat, K, W, H)
    if colors.dim() == 3:
        degree = int(round(math.sqrt(colors.shape[1]))) - 1
        campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
        rgb = sh_to_color(degree, means - campos, colors)
    else:
        rgb = colors
    dev, dt = means.device, means.dtype
    py, px = torch.meshgrid(torch.arange(H, device=dev, dtype=dt) + 0.5,
                            torch.arange(W, device=dev, dtype=dt) + 0.5, indexing="ij")
    T = torch.ones(H, W, device=dev, dtype=dt)
    C = torch.zeros(H, W, 3, device=dev, dtype=dt)
    done = torch.zeros(H, W, dtype=torch.bool, device=dev)
    tiles_x, tiles_y = (W + TILE - 1) // TILE, (H + TILE - 1) // TILE
    order = torch.argsort(depths.detach(), stable=True)
    for g in order.tolist():
        r = float(radii[g])
        if r <= 0:
            continue
        mx, my = float(means2d[g, 0].detach()), float(means2d[g, 1].detach())
        x0 = min(max(math.floor(mx / TILE - r / TILE), 0), tiles_x)
        y0 = min(max(math.floor(my / TILE - r / TILE), 0), tiles_y)
        x1 = min(max(math.ceil(mx / TILE + r / TILE), 0), tiles_x)
        y1 = min(max(math.ceil(my / TILE + r / TILE), 0), tiles_y)
        in_rect = (px >= x0 * TILE) & (px < x1 * TILE) & (py >= y0 * TILE) & (py < y1 * TILE)
        dx, dy = means2d[g, 0] - px, means2d[g, 1] - py
        a, b, c = conics[g].unbind(-1)
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp_max(opacities[g] * torch.exp(-sigma), MAX_ALPHA)
        with torch.no_grad():
            valid = in_rect & ~done & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
            stop = valid & (T * (1 - alpha) <= T_THRESHOLD)
            add = valid & ~stop
            done = done | stop
        alpha = torch.where(add, alpha, torch.zeros_like(alpha))
        C = C + rgb[g] * (alpha * T)[..., None]
        T = T * (1 - alpha)
    if background is not None:
        C = C + T[..., None] * (background if background.dim() == 3 else background[None, None, :])
    return C
