"""Random Gaussian scenes for rasterizer tests (shared by the CPU and CUDA tests, and tools/bench/raster_cpu_quick.py).

    scene = random_scene(n=500, width=64, height=48, sh_degree=2, seed=0, background="color")
    img = rasterize(**scene)            # keys match gt_runtime.raster.rasterize's arguments

Every array is float32 numpy. `shape="cloud"` puts the Gaussians in a box in front of
the camera; `shape="head"` on an ellipsoidal shell (a head-sized point cloud).
"""

from __future__ import annotations

import numpy as np


# Tolerance of a fast backend against another (assert_images_close): |err| <= ATOL except at a few
# pixels. Backends whose exp differs by a few ulp (CUDA's __expf, the CPU's SIMD polynomial) can flip a
# pixel whose alpha sits at the 1/255 threshold, or whose T sits at the 1e-4 stop; that moves it by up
# to ~alpha * colour (< 1e-2).
ATOL = 1e-4
OUTLIER_FRACTION = 2e-4  # of pixels*channels allowed above ATOL
OUTLIER_ATOL = 2e-2


def assert_images_close(got, want, what: str, atol=ATOL, outlier_fraction=OUTLIER_FRACTION, outlier_atol=OUTLIER_ATOL):
    """got and want [..., 3] agree within the tolerance above; the message says by how much."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    n_out = int((err > atol).sum())
    stats = f"max {err.max() if err.size else 0:.3g}, mean {err.mean() if err.size else 0:.3g}, {n_out} of {err.size} above {atol}"
    assert n_out <= outlier_fraction * err.size, f"{what}: {stats}"
    assert err.size == 0 or err.max() <= outlier_atol, f"{what}: {stats}"


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """World->camera viewmat [4, 4] (OpenCV: x right, y down, z forward) looking from eye at target."""
    eye = np.asarray(eye, np.float64)
    f = np.asarray(target, np.float64) - eye
    f /= np.linalg.norm(f)
    r = np.cross(np.asarray(up, np.float64), f)
    r /= np.linalg.norm(r)
    d = np.cross(f, r)  # y axis (down when up = -y)
    R = np.stack([r, d, f])  # rows: camera axes in world
    V = np.eye(4)
    V[:3, :3] = R
    V[:3, 3] = -R @ eye
    return V.astype(np.float32)


def random_camera(rng: np.random.Generator, width: int, height: int, target=(0.0, 0.0, 0.0), dist=(2.5, 4.0)):
    """(viewmat [4, 4], K [3, 3]) of a random camera looking at target with random pinhole intrinsics."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    eye = np.asarray(target) + direction * rng.uniform(*dist)
    up = rng.normal(size=3)
    viewmat = look_at(eye, target, up=up)
    f = rng.uniform(0.8, 1.4) * max(width, height)
    K = np.array([[f * rng.uniform(0.9, 1.1), 0, width / 2 + rng.uniform(-0.1, 0.1) * width],
                  [0, f * rng.uniform(0.9, 1.1), height / 2 + rng.uniform(-0.1, 0.1) * height],
                  [0, 0, 1]], np.float32)
    return viewmat, K


def random_gaussians(rng: np.random.Generator, n: int, sh_degree: int | None, shape: str = "cloud",
                     scale_range=(0.01, 0.15)):
    """Dict of means [n, 3], quats [n, 4], scales [n, 3], opacities [n], colors [n, 3] or [n, K, 3]."""
    if shape == "head":
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
        means = d * np.array([0.8, 1.0, 0.9]) * rng.uniform(0.85, 1.0, size=(n, 1))
        scales = np.exp(rng.uniform(np.log(0.005), np.log(0.05), size=(n, 3)))
    else:
        means = rng.uniform(-1.0, 1.0, size=(n, 3))
        scales = np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]), size=(n, 3)))
    quats = rng.normal(size=(n, 4))
    opacities = rng.uniform(0.05, 1.0, size=n)
    if sh_degree is None:
        colors = rng.uniform(0.0, 1.0, size=(n, 3))
    else:
        K = (sh_degree + 1) ** 2
        colors = rng.normal(scale=0.3, size=(n, K, 3))
        colors[:, 0, :] += 0.5
    out = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def random_scene(n: int, width: int = 64, height: int = 48, sh_degree: int | None = None, seed: int = 0,
                 background: str = "none", shape: str = "cloud") -> dict:
    """A random scene as keyword arguments of gt_runtime.raster.rasterize (without backend).

    sh_degree None gives RGB colors [n, 3]; 0..3 gives SH [n, (deg + 1)^2, 3].
    background: "none" (None), "color" ([3]) or "image" ([H, W, 3]).
    """
    rng = np.random.default_rng(seed)
    scene = random_gaussians(rng, n, sh_degree, shape=shape)
    viewmat, K = random_camera(rng, width, height)
    scene.update(viewmat=viewmat, K=K, width=width, height=height)
    if background == "none":
        scene["background"] = None
    elif background == "color":
        scene["background"] = rng.uniform(0, 1, size=3).astype(np.float32)
    elif background == "image":
        scene["background"] = rng.uniform(0, 1, size=(height, width, 3)).astype(np.float32)
    else:
        raise ValueError(f"background: got {background!r}, expected 'none', 'color' or 'image'")
    return scene


def head_scene(n: int, width: int = 256, height: int = 256, sh_degree: int | None = 3, seed: int = 0,
               background: str = "color") -> dict:
    """A head-shaped cloud seen from the front, filling most of the frame (benchmarks)."""
    rng = np.random.default_rng(seed)
    scene = random_gaussians(rng, n, sh_degree, shape="head")
    viewmat = look_at(np.array([0.0, 0.0, -3.0]), np.zeros(3), up=(0.0, -1.0, 0.0))
    f = 1.1 * max(width, height)
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float32)
    scene.update(viewmat=viewmat, K=K, width=width, height=height)
    scene["background"] = {"none": None, "color": np.array([0.2, 0.3, 0.4], np.float32),
                           "image": rng.uniform(0, 1, size=(height, width, 3)).astype(np.float32)}[background]
    return scene


def extreme_scene():
    """200 Gaussians at 64x48 of which some are huge, far below a pixel, far away, transparent or with a tiny quaternion."""
    scene = random_scene(200, 64, 48, 1, seed=11, background="color")
    scene["scales"][:50] *= 100.0  # huge, covering every tile
    scene["scales"][50:100] *= 1e-4  # far below a pixel
    scene["means"][100:120] += np.array([0, 0, 50], np.float32)  # far away
    scene["opacities"][120:140] = 0.0
    scene["quats"][140:150] = np.array([0, 0, 0, 1e-3], np.float32)  # tiny, unnormalised
    return scene


def batch_of_frames(B, n, width, height, sh_degree, seed):
    """B random scenes -> (scenes, per-frame attributes [B, N, ...], viewmats [B, 4, 4], Ks [B, 3, 3])."""
    scenes = [random_scene(n, width, height, sh_degree, seed=seed + b, background="image") for b in range(B)]
    attrs = {k: np.stack([s[k] for s in scenes]) for k in ("means", "quats", "scales", "opacities", "colors")}
    return scenes, attrs, np.stack([s["viewmat"] for s in scenes]), np.stack([s["K"] for s in scenes])


# Scenes of the CUDA rasterizer tests: every colour and background layout, odd sizes.
CUDA_SCENES = [
    # n, width, height, sh_degree, background
    (0, 64, 48, None, "color"),
    (1, 64, 48, None, "none"),
    (100, 64, 48, None, "image"),
    (500, 128, 72, 0, "color"),
    (1000, 96, 160, 1, "image"),
    (2000, 256, 256, 2, "none"),
    (5000, 200, 120, 3, "color"),
    (5000, 321, 179, None, "image"),
    (3000, 17, 300, 3, "none"),
]
