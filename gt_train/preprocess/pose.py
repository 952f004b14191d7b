"""Head pose per frame: a 3-D face model fitted to the 2-D landmarks (PnP by Gauss-Newton in numpy).

The 3-D reference is MediaPipe's canonical face mesh (data/canonical_face_model.npz,
Apache-2.0), moved into the head frame that `gt_train.data.synthetic` uses:

    metres, x right, y down, z away from the camera (the face looks toward -z),
    origin ~10 cm behind the face, between the eyes.

Its 68 iBUG points are the mesh vertices named by `landmarks.MP_TO_IBUG68`. Only the
points that do not move with expressions enter the fit (nose, eye corners, brows at
half weight); jaw contour points are silhouettes, not fixed 3-D points, and the mouth
and eyelids move.

Cameras: OpenCV pinhole, fx = fy = f, principal point at the image centre (W/2, H/2;
pixel j covers [j, j + 1)). The head motion of frame t is x_cam = R_t x_head + t_t; as
in GaussianTalker the head stays fixed and the camera moves: camera-to-world is
[R_t^T | -R_t^T t_t]. f is the value that minimises the reprojection error over the clip
(a log-spaced search refined by a parabola), since the camera is fixed.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from gt_runtime.errors import require
from gt_train.preprocess.landmarks import mediapipe_to_ibug68

DATA = Path(__file__).parent / "data"
# iBUG indices that are rigid on the skull, and their weights in the fit
RIGID = np.array(list(range(17, 27)) + list(range(27, 36)) + [36, 39, 42, 45])
RIGID_W = np.array([0.5] * 10 + [1.0] * 9 + [1.0] * 4)
# iBUG indices that set the face's shape (`fit_shape`): jaw contour, brows, nose, eye corners, outer lips.
# The eyelids and inner lips are left out: they move with blinks and speech.
SHAPE = np.array(list(range(0, 36)) + [36, 39, 42, 45] + list(range(48, 60)))


@lru_cache(maxsize=1)
def face_model() -> tuple[np.ndarray, np.ndarray]:
    """-> (vertices [468, 3] float64 in the head frame (metres), triangles [F, 3] int64) of the canonical face."""
    with np.load(DATA / "canonical_face_model.npz") as z:
        v = z["vertices"].astype(np.float64) / 100.0  # cm -> m
        tri = z["triangles"].astype(np.int64)
    v = v * np.array([1.0, -1.0, -1.0])  # MediaPipe: y up, z toward the viewer -> y down, z away
    eyes = v[[33, 133, 362, 263]].mean(0)  # the four eye corners
    origin = np.array([eyes[0], eyes[1], eyes[2] + 0.10])
    return v - origin, tri


def model_landmarks() -> np.ndarray:
    """-> [68, 3] float64 iBUG-68 points of the canonical face in the head frame."""
    return mediapipe_to_ibug68(face_model()[0])


def _skew(v: np.ndarray) -> np.ndarray:
    """v [..., 3] -> [..., 3, 3] cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1),
                     np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def rodrigues(w: np.ndarray) -> np.ndarray:
    """Rotation vectors w [..., 3] -> rotation matrices [..., 3, 3]."""
    th = np.linalg.norm(w, axis=-1)[..., None, None]
    K = _skew(w / np.maximum(th[..., 0], 1e-12))
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * (K @ K)


def log_rotation(R: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> rotation vectors [..., 3] (angles < pi)."""
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1, 1)
    th = np.arccos(cos)
    v = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    s = np.where(th[..., None] > 1e-8, th[..., None] / np.maximum(2 * np.sin(th[..., None]), 1e-12), 0.5)
    return v * s


def project(X: np.ndarray, R: np.ndarray, t: np.ndarray, f: float, c: np.ndarray) -> np.ndarray:
    """Points X [N, 3] (head frame), R [T, 3, 3], t [T, 3] -> pixels [T, N, 2]."""
    P = X[None] @ np.swapaxes(R, -1, -2) + t[:, None]
    return f * P[..., :2] / P[..., 2:3] + c


def solve_pnp(pts2d: np.ndarray, X: np.ndarray, f: float, c: np.ndarray, w: np.ndarray | None = None,
              R0: np.ndarray | None = None, t0: np.ndarray | None = None, iters: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched PnP by damped Gauss-Newton.

    pts2d [T, N, 2] pixels, X [N, 3] model points, f focal (px), c [2] principal point,
    w [N] weights -> (R [T, 3, 3], t [T, 3], rms residual [T] px).
    """
    T, N = pts2d.shape[:2]
    w = np.ones(N) if w is None else np.asarray(w, np.float64)
    sw = np.sqrt(np.repeat(w, 2))[None]  # [1, 2N]
    if R0 is None:
        R = np.repeat(np.eye(3)[None], T, 0)
        # distance from the apparent size: spread of the points vs the model's
        spread2d = np.sqrt(((pts2d - pts2d.mean(1, keepdims=True)) ** 2).sum(-1).mean(1))
        spread3d = np.sqrt(((X[:, :2] - X[:, :2].mean(0)) ** 2).sum(-1).mean())
        z = f * spread3d / np.maximum(spread2d, 1e-6) - X[:, 2].mean()
        xy = (pts2d.mean(1) - c) / f * (z + X[:, 2].mean())[:, None] - X[:, :2].mean(0)
        t = np.concatenate([xy, z[:, None]], 1)
    else:
        R, t = R0.copy(), t0.copy()
    lam = np.full(T, 1e-3)

    def residual(R, t):
        return (project(X, R, t, f, c) - pts2d).reshape(T, 2 * N)

    r = residual(R, t)
    cost = ((r * sw) ** 2).sum(1)
    for _ in range(iters):
        P = X[None] @ np.swapaxes(R, -1, -2) + t[:, None]  # [T, N, 3]
        RX = P - t[:, None]
        iz = 1.0 / P[..., 2]
        dpi = np.zeros((T, N, 2, 3))
        dpi[..., 0, 0] = f * iz
        dpi[..., 1, 1] = f * iz
        dpi[..., 0, 2] = -f * P[..., 0] * iz * iz
        dpi[..., 1, 2] = -f * P[..., 1] * iz * iz
        dP = np.concatenate([-_skew(RX), np.broadcast_to(np.eye(3), (T, N, 3, 3))], -1)  # [T, N, 3, 6]
        J = (dpi @ dP).reshape(T, 2 * N, 6) * sw[..., None]
        rw = r * sw
        H = np.swapaxes(J, 1, 2) @ J
        g = np.swapaxes(J, 1, 2) @ rw[..., None]
        H = H + lam[:, None, None] * (np.eye(6) * np.diagonal(H, axis1=1, axis2=2)[:, None, :] + 1e-9 * np.eye(6))
        d = -np.linalg.solve(H, g)[..., 0]
        Rn = rodrigues(d[:, :3]) @ R
        tn = t + d[:, 3:]
        rn = residual(Rn, tn)
        cn = ((rn * sw) ** 2).sum(1)
        ok = (cn < cost) & np.isfinite(cn)
        R = np.where(ok[:, None, None], Rn, R)
        t = np.where(ok[:, None], tn, t)
        r = np.where(ok[:, None], rn, r)
        cost = np.where(ok, cn, cost)
        lam = np.where(ok, lam * 0.3, lam * 10)
    rms = np.sqrt((r.reshape(T, N, 2) ** 2).sum(-1).mean(-1))
    return R, t, rms


def search_focal(pts2d: np.ndarray, X: np.ndarray, w: np.ndarray, c: np.ndarray, size: int,
                 lo: float = 0.8, hi: float = 5.0, n: int = 12) -> float:
    """The focal length (px) that minimises the mean reprojection error over the frames given.

    A log-spaced grid f = size * [lo, hi] (normal lenses on a face crop; the error is flat
    in f when the motion is small, so the range is kept plausible), then a parabola through the best point and its
    neighbours in log f.
    """
    grid = size * np.geomspace(lo, hi, n)
    costs = []
    for f in grid:
        _, _, rms = solve_pnp(pts2d, X, f, c, w, iters=15)
        costs.append(float(np.mean(rms ** 2)))
    costs = np.array(costs)
    k = int(np.argmin(costs))
    if 0 < k < n - 1:
        x = np.log(grid[k - 1:k + 2])
        a, b, _ = np.polyfit(x, costs[k - 1:k + 2], 2)
        if a > 0:
            return float(np.exp(np.clip(-b / (2 * a), x[0], x[2])))
    return float(grid[k])


def smooth_poses(R: np.ndarray, t: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian temporal smoothing (sigma in frames) of R [T, 3, 3] (as rotation vectors about their mean) and t [T, 3]."""
    if sigma <= 0 or len(R) < 3:
        return R, t
    gaussian_filter1d = require("scipy.ndimage", "gt preprocess").gaussian_filter1d

    R_mean = _mean_rotation(R)
    w = log_rotation(R @ R_mean.T)
    w = gaussian_filter1d(w, sigma, axis=0, mode="nearest")
    t = gaussian_filter1d(t, sigma, axis=0, mode="nearest")
    return rodrigues(w) @ R_mean, t


def _mean_rotation(R: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(R.sum(0))
    M = U @ Vt
    if np.linalg.det(M) < 0:
        M = U @ np.diag([1, 1, -1]) @ Vt
    return M


def fit_poses(lms: np.ndarray, size: int, sigma: float = 1.0) -> dict:
    """Landmarks [T, 68, 2] in a size x size image -> {"R" [T,3,3], "t" [T,3], "c2w" [T,4,4], "f", "rms" [T]}."""
    X = model_landmarks()[RIGID]
    pts = lms[:, RIGID].astype(np.float64)
    c = np.array([size / 2, size / 2])
    T = len(pts)
    sub = pts[np.linspace(0, T - 1, min(T, 80)).round().astype(int)]
    f = search_focal(sub, X, RIGID_W, c, size)
    R, t, rms = solve_pnp(pts, X, f, c, RIGID_W, iters=25)
    R, t = smooth_poses(R, t, sigma)
    c2w = np.tile(np.eye(4), (T, 1, 1))
    c2w[:, :3, :3] = np.swapaxes(R, 1, 2)
    c2w[:, :3, 3] = -(np.swapaxes(R, 1, 2) @ t[..., None])[..., 0]
    return {"R": R, "t": t, "c2w": c2w, "f": f, "rms": rms}


def landmark_targets(lms: np.ndarray, fit: dict, size: int, max_frames: int = 200) -> np.ndarray:
    """Where the identity's landmarks sit in the head frame -> Y [68, 3] float64.

    Each observed landmark lms [T, 68, 2] is lifted onto its camera ray at the depth of the model's point
    (`model_landmarks`) in that frame's pose and moved back to the head frame; Y is the median over frames.
    Depth is the model's (one camera cannot see it), so Y - model differs in the image plane: the person's
    proportions (face width, eye spacing, nose length, mouth width and height).
    """
    X = model_landmarks()
    T = len(lms)
    idx = np.linspace(0, T - 1, min(T, max_frames)).round().astype(int)
    R, t, f = fit["R"][idx], fit["t"][idx], fit["f"]
    c = np.array([size / 2, size / 2])
    z = (X[None] @ np.swapaxes(R, -1, -2) + t[:, None])[..., 2]  # [n, 68] model depth per frame
    xy = (lms[idx].astype(np.float64) - c) / f * z[..., None]
    P = np.concatenate([xy, z[..., None]], -1)  # camera space [n, 68, 3]
    Y = (P - t[:, None]) @ R  # R^T (P - t), row vectors
    return np.median(Y, axis=0)


def fit_shape(vertices: np.ndarray, lms: np.ndarray, fit: dict, size: int) -> np.ndarray:
    """The canonical face mesh vertices [V, 3] warped to the identity's landmarks -> [V, 3] float64.

    A thin-plate spline (with its affine part, so far from the face it is an affine map, not a bend)
    moves the model's `SHAPE` landmarks toward `landmark_targets`; smoothing keeps single-landmark noise
    from denting the mesh.
    """
    RBFInterpolator = require("scipy.interpolate", "gt preprocess").RBFInterpolator

    X = model_landmarks()[SHAPE]
    D = landmark_targets(lms, fit, size)[SHAPE] - X
    warp = RBFInterpolator(X, D, kernel="thin_plate_spline", degree=1, smoothing=1e-5)
    return vertices + warp(vertices)


def best_fixed_rotation(R_est: np.ndarray, R_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Align two rotation tracks [T, 3, 3] that differ by a fixed change of the head frame.

    R_est_t ~= R_true_t @ Q (the estimated head frame is the true one rotated by a fixed Q);
    Q = the rotation closest to mean_t(R_true_t^T R_est_t). -> (Q, per-frame angle error [T] in degrees).
    """
    Q = _mean_rotation(np.swapaxes(R_true, 1, 2) @ R_est)
    E = np.swapaxes(R_true @ Q, 1, 2) @ R_est
    err = np.degrees(np.linalg.norm(log_rotation(E), axis=-1))
    return Q, err
