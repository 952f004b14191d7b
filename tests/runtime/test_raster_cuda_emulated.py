"""raster_cuda.cu's kernels run on CPU threads (tests/cuda_emu), driven by CudaRasterizer's own host code
under the numpy stand-in for CuPy (tests/cuda_emu/fake_cupy.py): the kernels' logic checked on machines with
no GPU, against the numpy reference and the C++ rasterizer. What this cannot check (NVRTC, __expf, the
device itself) is in test_raster_cuda.py."""

from __future__ import annotations

import numpy as np
import pytest

from gt_runtime.raster import _cpu, _cuda
from gt_runtime.raster._reference import rasterize_reference
from tests.support.raster_scenes import CUDA_SCENES, assert_images_close, batch_of_frames, extreme_scene, random_scene


@pytest.fixture
def rasterizer(gpu):
    return _cuda.CudaRasterizer()


def _render(r, s, **kw):
    """One scene through CudaRasterizer.render -> host [H, W, 3]."""
    img = r.render(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmat"][None],
                   s["K"][None], s["width"], s["height"], s["background"], sh=s["colors"].ndim == 3, **kw)  # fmt: skip
    return r._cp.asnumpy(img[0])


# The GPU tests' scenes small enough for CPU threads (each 16x16 tile spawns 256 of them).
SCENES = [sc for sc in CUDA_SCENES if sc[0] * sc[1] * sc[2] <= 1e8]


@pytest.mark.parametrize("n,width,height,sh_degree,background", SCENES)
def test_matches_reference_and_cpu(rasterizer, n, width, height, sh_degree, background):
    scene = random_scene(n, width, height, sh_degree, seed=n + width, background=background)
    got = _render(rasterizer, scene)
    assert got.shape == (height, width, 3) and got.dtype == np.float32
    assert_images_close(got, rasterize_reference(**scene), "emulated cuda vs reference")
    if _cpu.available():
        assert_images_close(got, _cpu.forward(**scene), "emulated cuda vs cpu")


def test_tiles_longer_than_one_shared_memory_batch(rasterizer):
    """More than 256 Gaussians in a tile: the blend kernel stages them in several batches."""
    scene = random_scene(4000, 48, 32, 3, seed=21, background="color")
    got = _render(rasterizer, scene)
    ranges = rasterizer._cp.asnumpy(rasterizer._buffers["tile_ranges"][: 3 * 2 * 2]).reshape(-1, 2)
    assert (ranges[:, 1] - ranges[:, 0]).max() > 256
    assert_images_close(got, rasterize_reference(**scene), "long tile lists vs reference")


def test_batched_equals_per_frame(rasterizer):
    B, n, W, H = 3, 600, 48, 40
    scenes, attrs, views, Ks = batch_of_frames(B, n, W, H, 3, seed=40)
    bgs = np.stack([s["background"] for s in scenes])
    got = rasterizer._cp.asnumpy(rasterizer.render(**attrs, viewmats=views, Ks=Ks, width=W, height=H, background=bgs))
    for b, s in enumerate(scenes):
        np.testing.assert_array_equal(got[b], _render(rasterizer, s), err_msg=f"frame {b}: batch != single")
        assert_images_close(got[b], rasterize_reference(**s), f"frame {b} vs reference")


def test_shared_attributes_equal_repeated_ones(rasterizer):
    B, n, W, H = 3, 400, 40, 32
    scenes, attrs, views, Ks = batch_of_frames(B, n, W, H, 2, seed=60)
    shared = {k: v[0] for k, v in attrs.items()}
    repeated = {k: np.repeat(v[None], B, axis=0) for k, v in shared.items()}
    color = np.array([0.3, 0.2, 0.1], np.float32)
    host = rasterizer._cp.asnumpy
    a = host(rasterizer.render(**shared, viewmats=views, Ks=Ks, width=W, height=H, background=color))
    b = host(rasterizer.render(**repeated, viewmats=views, Ks=Ks, width=W, height=H,
                               background=np.repeat(color[None], B, 0)))  # fmt: skip
    np.testing.assert_array_equal(a, b)


def test_empty_and_culled_give_background_only(rasterizer):
    for n in (0, 30):
        scene = random_scene(n, 40, 24, None, seed=3, background="image")
        if n:
            scene["viewmat"] = np.eye(4, dtype=np.float32)
            scene["means"] = scene["means"] * 0.1 + np.array([0, 0, -5], np.float32)  # all behind the camera
        np.testing.assert_array_equal(_render(rasterizer, scene), scene["background"])


def test_extreme_gaussians_stay_finite(rasterizer):
    scene = extreme_scene()
    got = _render(rasterizer, scene)
    assert np.isfinite(got).all()
    assert_images_close(got, rasterize_reference(**scene), "extreme vs reference")


def test_mixed_per_frame_and_shared_attributes(rasterizer, emulated_kernels):
    """Per-frame means with every other attribute shared, and per-frame colour backgrounds [B, 3]."""
    B, W, H = 3, 35, 19
    scenes = [random_scene(30, W, H, 2, seed=100 + b, background="image") for b in range(B)]
    views, Ks = np.stack([s["viewmat"] for s in scenes]), np.stack([s["K"] for s in scenes])
    shared = {k: scenes[0][k] for k in ("means", "quats", "scales", "opacities", "colors")}
    means = np.stack([s["means"] for s in scenes])
    bgs = np.random.default_rng(0).uniform(size=(B, 3)).astype(np.float32)
    blends = emulated_kernels["gt_raster_blend"].calls
    got = rasterizer._cp.asnumpy(rasterizer.render(**dict(shared, means=means), viewmats=views, Ks=Ks, width=W,
                                                   height=H, background=bgs))  # fmt: skip
    for b, s in enumerate(scenes):
        want = rasterize_reference(**dict(shared, means=means[b]), viewmat=s["viewmat"], K=s["K"], width=W, height=H,
                                   background=bgs[b])  # fmt: skip
        assert_images_close(got[b], want, f"frame {b} vs reference")
    assert emulated_kernels["gt_raster_blend"].calls - blends == 1  # all frames in one launch


def test_render_checks_shapes(rasterizer):
    s = random_scene(5, 16, 16, None, seed=0, background="none")
    with pytest.raises(ValueError, match="quats"):
        rasterizer.render(s["means"], s["quats"][:, :3], s["scales"], s["opacities"], s["colors"], s["viewmat"],
                          s["K"], 16, 16)  # fmt: skip
    with pytest.raises(ValueError, match="background"):
        rasterizer.render(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmat"], s["K"],
                          16, 16, background=np.zeros((4, 4, 3), np.float32))  # fmt: skip
