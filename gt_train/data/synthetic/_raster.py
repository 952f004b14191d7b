"""A small vectorised numpy z-buffer rasterizer for the synthetic identity's meshes.

Triangles are tiny (about a pixel), so every triangle's bounding box is expanded
into candidate pixels with `np.repeat`, tested with edge functions at the pixel
centre (x + 0.5, y + 0.5), and the nearest candidate per pixel wins through
`np.minimum.at` on a packed (depth, candidate) int64 key. Attributes are
interpolated linearly in screen space (no perspective correction: at a pixel per
triangle the difference is far below one grey level).
"""
from __future__ import annotations

import numpy as np

_IDX_BITS = 31
_IDX_MASK = (1 << _IDX_BITS) - 1
_EMPTY = np.iinfo(np.int64).max


def rasterize(
    xyz: np.ndarray,  # [V, 3] float: pixel x, pixel y, camera depth z (> 0)
    faces: np.ndarray,  # [F, 3] int: counter-clockwise in a y-down image = front facing
    attrs: np.ndarray,  # [V, C] float32, interpolated per pixel
    height: int,
    width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """-> (covered [H, W] bool, image [H, W, C] float32 with zeros where not covered)."""
    sx, sy = xyz[:, 0], xyz[:, 1]
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    area = (sx[b] - sx[a]) * (sy[c] - sy[a]) - (sx[c] - sx[a]) * (sy[b] - sy[a])
    front = np.nonzero(area > 1e-9)[0]  # back faces and slivers out first: half the work
    faces, area = faces[front], area[front]
    tri = xyz[faces]  # [F', 3, 3]
    x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
    x1, y1 = tri[:, 1, 0], tri[:, 1, 1]
    x2, y2 = tri[:, 2, 0], tri[:, 2, 1]
    # pixel j covers [j, j + 1); its centre j + 0.5 is inside the box when j in [ceil(min - .5), floor(max - .5)]
    xmin = np.maximum(np.ceil(np.minimum(np.minimum(x0, x1), x2) - 0.5), 0)
    xmax = np.minimum(np.floor(np.maximum(np.maximum(x0, x1), x2) - 0.5), width - 1)
    ymin = np.maximum(np.ceil(np.minimum(np.minimum(y0, y1), y2) - 0.5), 0)
    ymax = np.minimum(np.floor(np.maximum(np.maximum(y0, y1), y2) - 0.5), height - 1)
    nx = (xmax - xmin + 1).astype(np.int64)
    ny = (ymax - ymin + 1).astype(np.int64)
    keep = np.nonzero((nx > 0) & (ny > 0) & (tri[:, :, 2].min(1) > 1e-6))[0]
    C = attrs.shape[1]
    image = np.zeros((height, width, C), np.float32)
    covered = np.zeros((height, width), bool)
    if keep.size == 0:
        return covered, image
    nx, ny = nx[keep], ny[keep]
    count = nx * ny
    f = np.repeat(keep, count)  # [K] triangle of each candidate
    start = np.repeat(np.cumsum(count) - count, count)
    local = np.arange(f.size, dtype=np.int64) - start
    nxr = np.repeat(nx, count)
    px = np.repeat(xmin[keep].astype(np.int64), count) + local % nxr
    py = np.repeat(ymin[keep].astype(np.int64), count) + local // nxr
    cx = px + 0.5
    cy = py + 0.5
    ax, ay, bx, by, ex, ey = x0[f], y0[f], x1[f], y1[f], x2[f], y2[f]
    inv = 1.0 / area[f]
    w0 = ((bx - cx) * (ey - cy) - (ex - cx) * (by - cy)) * inv
    w1 = ((ex - cx) * (ay - cy) - (ax - cx) * (ey - cy)) * inv
    w2 = 1.0 - w0 - w1
    eps = -1e-7
    inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    f, px, py, w0, w1, w2 = f[inside], px[inside], py[inside], w0[inside], w1[inside], w2[inside]
    if f.size == 0:
        return covered, image
    z = w0 * tri[f, 0, 2] + w1 * tri[f, 1, 2] + w2 * tri[f, 2, 2]
    zlo, zhi = float(z.min()), float(z.max())
    zq = np.round((z - zlo) / max(zhi - zlo, 1e-12) * ((1 << 30) - 1)).astype(np.int64)
    key = (zq << _IDX_BITS) | np.arange(f.size, dtype=np.int64)
    pix = py * width + px
    zbuf = np.full(height * width, _EMPTY, np.int64)
    np.minimum.at(zbuf, pix, key)
    hit = np.nonzero(zbuf != _EMPTY)[0]
    win = zbuf[hit] & _IDX_MASK
    fw = faces[f[win]]  # [P, 3]
    val = (w0[win, None] * attrs[fw[:, 0]] + w1[win, None] * attrs[fw[:, 1]] + w2[win, None] * attrs[fw[:, 2]])
    image.reshape(-1, C)[hit] = val
    covered.reshape(-1)[hit] = True
    return covered, image


def grid_faces(rows: int, cols: int, wrap: bool, offset: int = 0) -> np.ndarray:
    """Triangles of a rows x cols vertex grid (row-major, +row = down, +col = right) -> [F, 3] int64.

    With wrap, column cols-1 connects back to column 0 (a ring).
    """
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols if wrap else cols - 1), indexing="ij")
    c1 = (c + 1) % cols
    v00 = r * cols + c
    v01 = r * cols + c1
    v10 = (r + 1) * cols + c
    v11 = (r + 1) * cols + c1
    t1 = np.stack([v00, v01, v10], -1).reshape(-1, 3)
    t2 = np.stack([v01, v11, v10], -1).reshape(-1, 3)
    return np.concatenate([t1, t2]).astype(np.int64) + offset


def sample_bilinear(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """tex [Ht, Wt, C] float32, u, v [P] texel coords (centres at integers) -> [P, C] float32."""
    Ht, Wt = tex.shape[:2]
    u = np.clip(u, 0, Wt - 1.001)
    v = np.clip(v, 0, Ht - 1.001)
    iu = u.astype(np.int64)
    iv = v.astype(np.int64)
    fu = (u - iu)[:, None].astype(np.float32)
    fv = (v - iv)[:, None].astype(np.float32)
    flat = tex.reshape(-1, tex.shape[2])
    i00 = iv * Wt + iu
    top = flat[i00] * (1 - fu) + flat[i00 + 1] * fu
    bot = flat[i00 + Wt] * (1 - fu) + flat[i00 + Wt + 1] * fu
    return top * (1 - fv) + bot * fv
