"""Readable numpy reference of the Gaussian rasterizer (the test oracle and the
last-resort backend).

It mirrors gsplat's ``rasterization()`` (antialiased=False, packed=False) and the
shared C++/CUDA header ``plugins/raster/gt_raster_math.h`` rule by rule, in float32
and in the same operation order, so that the compiled backends match it to ~1e-6:

- project: cull z outside [0.01, 1e10]; EWA with the clamped Jacobian; cov2d += 0.3 I;
  cull det <= 0; conic = inverse; radius = ceil(3 sqrt(max eigenvalue)); cull radius <= 0
  or the radius box fully off-screen;
- colours: SH(view direction from the camera centre) + 0.5, clamped at 0;
- blend: a Gaussian is evaluated on every pixel of the 16x16 tiles its radius box
  touches, front to back by depth (stable); alpha = min(0.99, o exp(-sigma)); skip
  sigma < 0 or alpha < 1/255; stop a pixel *before* a Gaussian that would bring T to
  <= 1e-4; image = sum(c a T) + T_final * background.
"""

from __future__ import annotations

import numpy as np

from gt_runtime.contract import ALPHA_THRESHOLD, EPS2D, FAR, MAX_ALPHA, NEAR, T_THRESHOLD, TILE  # noqa: F401 (re-exported)

_f = np.float32

SH_C0 = 0.28209479177387814
SH_C1 = 0.48860251190292


def quat_to_rotmat(quats: np.ndarray) -> np.ndarray:
    """quats [N, 4] wxyz (any norm) -> R [N, 3, 3]."""
    q = quats.astype(np.float32)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    inv = _f(1) / np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w * inv, x * inv, y * inv, z * inv
    x2, y2, z2 = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    one, two = _f(1), _f(2)
    R = np.stack([
        one - two * (y2 + z2), two * (xy - wz), two * (xz + wy),
        two * (xy + wz), one - two * (x2 + z2), two * (yz - wx),
        two * (xz - wy), two * (yz + wx), one - two * (x2 + y2),
    ], axis=-1)
    return R.reshape(-1, 3, 3)


def _matmul3(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """[N, 3, 3] @ [N, 3, 3] summed left to right in float32 (as the C++ loops)."""
    return A[:, :, 0, None] * B[:, None, 0, :] + A[:, :, 1, None] * B[:, None, 1, :] + A[:, :, 2, None] * B[:, None, 2, :]


def project(means, quats, scales, viewmat, K, width, height):
    """Project Gaussians to the image.

    Args: means [N, 3], quats [N, 4], scales [N, 3], viewmat [4, 4], K [3, 3], width, height.
    Returns: means2d [N, 2], conics [N, 3] (a, b, c), depths [N], radii [N] (float, 0 = culled).
    """
    N = means.shape[0]
    means = means.astype(np.float32)
    V = viewmat.astype(np.float32)
    fx, fy, cx, cy = (_f(K[0, 0]), _f(K[1, 1]), _f(K[0, 2]), _f(K[1, 2]))
    Rv, t = V[:3, :3], V[:3, 3]
    mean_c = means[:, 0, None] * Rv[None, :, 0] + means[:, 1, None] * Rv[None, :, 1] + means[:, 2, None] * Rv[None, :, 2] + t
    R = quat_to_rotmat(quats)
    M = R * scales.astype(np.float32)[:, None, :]
    Rb = np.broadcast_to(Rv, (N, 3, 3))
    with np.errstate(all="ignore"):  # huge scales overflow to inf; such Gaussians are culled below
        covar = _matmul3(M, np.swapaxes(M, 1, 2))
        covar_c = _matmul3(_matmul3(Rb, covar), np.swapaxes(Rb, 1, 2))

    x, y, z = mean_c[:, 0], mean_c[:, 1], mean_c[:, 2]
    with np.errstate(all="ignore"):
        tan_fovx = _f(0.5) * _f(width) / fx
        tan_fovy = _f(0.5) * _f(height) / fy
        lim_xp = (_f(width) - cx) / fx + _f(0.3) * tan_fovx
        lim_xn = cx / fx + _f(0.3) * tan_fovx
        lim_yp = (_f(height) - cy) / fy + _f(0.3) * tan_fovy
        lim_yn = cy / fy + _f(0.3) * tan_fovy
        rz = _f(1) / z
        rz2 = rz * rz
        tx = z * np.minimum(lim_xp, np.maximum(-lim_xn, x * rz))
        ty = z * np.minimum(lim_yp, np.maximum(-lim_yn, y * rz))
        zero = np.zeros_like(z)
        J = np.stack([fx * rz, zero, -fx * tx * rz2, zero, fy * rz, -fy * ty * rz2], -1).reshape(N, 2, 3)
        JC = J[:, :, 0, None] * covar_c[:, None, 0, :] + J[:, :, 1, None] * covar_c[:, None, 1, :] + J[:, :, 2, None] * covar_c[:, None, 2, :]
        c_xx = JC[:, 0, 0] * J[:, 0, 0] + JC[:, 0, 1] * J[:, 0, 1] + JC[:, 0, 2] * J[:, 0, 2]
        c_xy = JC[:, 0, 0] * J[:, 1, 0] + JC[:, 0, 1] * J[:, 1, 1] + JC[:, 0, 2] * J[:, 1, 2]
        c_yy = JC[:, 1, 0] * J[:, 1, 0] + JC[:, 1, 1] * J[:, 1, 1] + JC[:, 1, 2] * J[:, 1, 2]
        means2d = np.stack([fx * x * rz + cx, fy * y * rz + cy], -1)
        c_xx = c_xx + _f(EPS2D)
        c_yy = c_yy + _f(EPS2D)
        det = c_xx * c_yy - c_xy * c_xy
        inv_det = _f(1) / det
        conics = np.stack([c_yy * inv_det, -c_xy * inv_det, c_xx * inv_det], -1)
        b = _f(0.5) * (c_xx + c_yy)
        v1 = b + np.sqrt(np.maximum(_f(0.01), b * b - det))
        radii = np.ceil(_f(3) * np.sqrt(v1))
        big = _f(3.0e38)
        ok = (z >= _f(NEAR)) & (z <= _f(FAR)) & (det > 0) & (det < big) & (radii > 0) & (radii < big)
        ok &= np.isfinite(means2d).all(-1)
        off = ((means2d[:, 0] + radii <= 0) | (means2d[:, 0] - radii >= _f(width))
               | (means2d[:, 1] + radii <= 0) | (means2d[:, 1] - radii >= _f(height)))
        ok &= ~off
    radii = np.where(ok, radii, _f(0)).astype(np.float32)
    return means2d.astype(np.float32), conics.astype(np.float32), z.astype(np.float32), radii


def sh_basis(degree: int, dirs_n: np.ndarray) -> np.ndarray:
    """Real SH basis [N, K] (K = (degree + 1)^2) at unit directions dirs_n [N, 3] (gsplat's constants)."""
    x, y, z = dirs_n[:, 0], dirs_n[:, 1], dirs_n[:, 2]
    out = [np.full_like(x, _f(SH_C0))]
    if degree >= 1:
        out += [_f(-SH_C1) * y, _f(SH_C1) * z, _f(-SH_C1) * x]
    if degree >= 2:
        z2 = z * z
        fTmp0B = _f(-1.092548430592079) * z
        fC1 = x * x - y * y
        fS1 = _f(2) * x * y
        out += [_f(0.5462742152960395) * fS1, fTmp0B * y, _f(0.9461746957575601) * z2 - _f(0.3153915652525201),
                fTmp0B * x, _f(0.5462742152960395) * fC1]
    if degree >= 3:
        fTmp0C = _f(-2.285228997322329) * z2 + _f(0.4570457994644658)
        fTmp1B = _f(1.445305721320277) * z
        fC2 = x * fC1 - y * fS1
        fS2 = x * fS1 + y * fC1
        out += [_f(-0.5900435899266435) * fS2, fTmp1B * fS1, fTmp0C * y,
                z * (_f(1.865881662950577) * z2 - _f(1.119528997770346)), fTmp0C * x, fTmp1B * fC1,
                _f(-0.5900435899266435) * fC2]
    return np.stack(out, -1)


def camera_center(viewmat: np.ndarray) -> np.ndarray:
    """World position [3] of the camera of a world->camera viewmat [4, 4]: -R^T t."""
    V = viewmat.astype(np.float32)
    return -(V[0, :3] * V[0, 3] + V[1, :3] * V[1, 3] + V[2, :3] * V[2, 3])


def sh_to_color(degree: int, dirs: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """max(SH(dirs / |dirs|) . coeffs + 0.5, 0): dirs [N, 3] (any length), coeffs [N, K, 3] -> [N, 3]."""
    dirs = dirs.astype(np.float32)
    if degree > 0:
        with np.errstate(all="ignore"):
            inorm = _f(1) / np.sqrt(dirs[:, 0] * dirs[:, 0] + dirs[:, 1] * dirs[:, 1] + dirs[:, 2] * dirs[:, 2])
            dn = dirs * inorm[:, None]  # NaN only for culled Gaussians at the camera centre
    else:
        dn = dirs
    basis = sh_basis(degree, dn)
    out = np.zeros((dirs.shape[0], 3), np.float32)
    for k in range((degree + 1) ** 2):  # same summation order as the C++ loop
        out = out + basis[:, k, None] * coeffs[:, k, :].astype(np.float32)
    return np.maximum(out + _f(0.5), _f(0))


def tile_bounds(means2d: np.ndarray, radii: np.ndarray, width: int, height: int) -> np.ndarray:
    """[N, 4] tile rectangles (x0, y0, x1, y1), max exclusive, of gsplat's isect_tiles."""
    tiles_x, tiles_y = (width + TILE - 1) // TILE, (height + TILE - 1) // TILE
    tr = radii / _f(TILE)
    tx, ty = means2d[:, 0] / _f(TILE), means2d[:, 1] / _f(TILE)
    with np.errstate(all="ignore"):
        x0 = np.clip(np.floor(tx - tr), 0, tiles_x)
        y0 = np.clip(np.floor(ty - tr), 0, tiles_y)
        x1 = np.clip(np.ceil(tx + tr), 0, tiles_x)
        y1 = np.clip(np.ceil(ty + tr), 0, tiles_y)
    return np.nan_to_num(np.stack([x0, y0, x1, y1], -1)).astype(np.int64)


def colors_for(means, colors, viewmat) -> np.ndarray:
    """Per-Gaussian RGB [N, 3] from colors [N, 3] (as is) or SH [N, K, 3] (+0.5, clamped)."""
    if colors.ndim == 2:
        return colors.astype(np.float32)
    degree = int(round(np.sqrt(colors.shape[1]))) - 1
    dirs = means.astype(np.float32) - camera_center(viewmat)
    return sh_to_color(degree, dirs, colors)


def rasterize_reference(means, quats, scales, opacities, colors, viewmat, K, width, height, background=None):
    """Render [H, W, 3] float32. Arguments as gt_runtime.raster.rasterize (already validated)."""
    H, W = int(height), int(width)
    means2d, conics, depths, radii = project(means, quats, scales, viewmat, K, W, H)
    rgb = colors_for(means, colors, viewmat)
    opac = opacities.astype(np.float32)
    rects = tile_bounds(means2d, radii, W, H)

    T = np.ones((H, W), np.float32)
    C = np.zeros((H, W, 3), np.float32)
    done = np.zeros((H, W), bool)
    order = np.argsort(depths, kind="stable")
    for g in order:
        if radii[g] <= 0:
            continue
        x0, y0, x1, y1 = rects[g]
        px0, py0, px1, py1 = x0 * TILE, y0 * TILE, min(x1 * TILE, W), min(y1 * TILE, H)
        if px1 <= px0 or py1 <= py0:
            continue
        px = np.arange(px0, px1, dtype=np.float32) + _f(0.5)
        py = np.arange(py0, py1, dtype=np.float32) + _f(0.5)
        dx = (means2d[g, 0] - px)[None, :]
        dy = (means2d[g, 1] - py)[:, None]
        a, b, c = conics[g]
        sigma = _f(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy
        with np.errstate(over="ignore"):
            alpha = np.minimum(_f(MAX_ALPHA), opac[g] * np.exp(-sigma))
        Tw = T[py0:py1, px0:px1]
        dw = done[py0:py1, px0:px1]
        valid = ~((sigma < 0) | (alpha < _f(ALPHA_THRESHOLD))) & ~dw
        next_T = Tw * (_f(1) - alpha)
        stop = valid & (next_T <= _f(T_THRESHOLD))  # exclusive: this Gaussian is not added
        add = valid & ~stop
        vis = np.where(add, alpha * Tw, _f(0))
        C[py0:py1, px0:px1] += rgb[g][None, None, :] * vis[..., None]
        T[py0:py1, px0:px1] = np.where(add, next_T, Tw)
        done[py0:py1, px0:px1] = dw | stop

    if background is not None:
        bg = np.asarray(background, np.float32)
        C = C + T[..., None] * (bg if bg.ndim == 3 else bg[None, None, :])
    return C.astype(np.float32)
