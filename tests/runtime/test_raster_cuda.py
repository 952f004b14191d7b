"""CUDA rasterizer (gt_runtime/raster/_cuda.py) against the C++ CPU rasterizer, the numpy
reference and gsplat, on the random scenes of tests/support/raster_scenes.py. Needs CuPy and a GPU
(test_raster_cuda_emulated.py runs the same kernels on CPU threads everywhere).

Tolerance (tests/support/gpu_tolerance.py, derived there): the device evaluates exp with __expf (as
gsplat; gt_raster_math.h's GT_EXPF, up to 8 ulp off where a Gaussian is blended) in code CuPy compiles
with -ftz=true, so a GPU image is close to the CPU's, not bit-identical, and a pixel at the 1/255 threshold
or the 1e-4 stop can flip. The emulation's agreement (exact expf) does not set these tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest

from gt_runtime.raster import _cuda
from gt_runtime.raster._reference import rasterize_reference
from tests.support.gpu_tolerance import assert_gpu_images_close
from tests.support.raster_scenes import CUDA_SCENES, assert_images_close, batch_of_frames, extreme_scene, random_scene


pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    """cupy, when it imports and sees a CUDA device; else skip with the reason."""
    try:
        import cupy
    except Exception as exc:
        pytest.skip(f"CuPy is not importable ({exc.__class__.__name__}): pip install 'gt[gpu]'")
    if not _cuda.cuda_available():
        pytest.skip("CuPy sees no usable CUDA device")
    return cupy


@pytest.fixture(scope="module")
def rasterizer(cp):
    return _cuda.CudaRasterizer()


def _cpu_render(scene):
    """The C++ backend's image, or None when the extension is not built on this machine."""
    try:
        from gt_runtime.raster import rasterize

        return np.asarray(rasterize(**scene, backend="cpu"))
    except Exception as exc:  # not built (no `pip install .`), or the public API not there
        if "cpu" in str(exc).lower() or isinstance(exc, ImportError):
            return None
        raise




@pytest.mark.parametrize("n,width,height,sh_degree,background", CUDA_SCENES)
def test_matches_reference_and_cpu(cp, n, width, height, sh_degree, background):
    scene = random_scene(n, width, height, sh_degree, seed=n + width, background=background)
    got = _cuda.rasterize_cuda(**scene)
    assert isinstance(got, cp.ndarray) and got.dtype == cp.float32 and got.shape == (height, width, 3)
    got = cp.asnumpy(got)
    assert_gpu_images_close(got, rasterize_reference(**scene), "cuda vs reference")
    cpu = _cpu_render(scene)
    if cpu is not None:
        assert_gpu_images_close(got, cpu, "cuda vs cpu")


def test_public_api_cuda_backend(cp):
    try:
        from gt_runtime.raster import rasterize
    except ImportError as exc:
        pytest.skip(f"gt_runtime.raster.rasterize is not importable: {exc}")
    scene = random_scene(300, 80, 60, 2, seed=5, background="color")
    got = rasterize(**scene, backend="cuda")
    assert isinstance(got, cp.ndarray)
    assert_gpu_images_close(cp.asnumpy(got), rasterize_reference(**scene), "rasterize(backend='cuda') vs reference")


def test_accepts_cupy_inputs(cp):
    scene = random_scene(400, 70, 50, 1, seed=9, background="image")
    on_gpu = {k: (cp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in scene.items()}
    a = cp.asnumpy(_cuda.rasterize_cuda(**on_gpu))
    b = cp.asnumpy(_cuda.rasterize_cuda(**scene))
    np.testing.assert_array_equal(a, b)


def test_batched_equals_per_frame(cp, rasterizer):
    B, n, W, H = 5, 1500, 96, 64
    scenes, attrs, views, Ks = batch_of_frames(B, n, W, H, 3, seed=40)
    bgs = np.stack([s["background"] for s in scenes])
    got = cp.asnumpy(rasterizer.render(**attrs, viewmats=views, Ks=Ks, width=W, height=H, background=bgs))
    for b, s in enumerate(scenes):
        one = cp.asnumpy(_cuda.rasterize_cuda(**s))
        np.testing.assert_array_equal(got[b], one, err_msg=f"frame {b}: batch differs from a single render")
        assert_gpu_images_close(got[b], rasterize_reference(**s), f"frame {b} vs reference")


def test_shared_attributes_equal_repeated_ones(cp, rasterizer):
    B, n, W, H = 4, 800, 64, 64
    scenes, attrs, views, Ks = batch_of_frames(B, n, W, H, 2, seed=60)
    shared = {k: v[0] for k, v in attrs.items()}
    repeated = {k: np.repeat(v[None], B, axis=0) for k, v in shared.items()}
    color = np.array([0.3, 0.2, 0.1], np.float32)
    a = cp.asnumpy(rasterizer.render(**shared, viewmats=views, Ks=Ks, width=W, height=H, background=color))
    b = cp.asnumpy(rasterizer.render(**repeated, viewmats=views, Ks=Ks, width=W, height=H,
                                     background=np.repeat(color[None], B, 0)))  # fmt: skip
    np.testing.assert_array_equal(a, b)


def test_buffers_grow_and_shrink(cp, rasterizer):
    small = random_scene(50, 32, 32, None, seed=1, background="color")
    big = random_scene(5000, 300, 200, 3, seed=2, background="image")
    first = cp.asnumpy(_cuda.rasterize_cuda(**small))
    r = _cuda.CudaRasterizer()
    for s in (small, big, small):
        got = r.render(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmat"][None],
                       s["K"][None], s["width"], s["height"], s["background"], sh=s["colors"].ndim == 3)  # fmt: skip
        np.testing.assert_array_equal(cp.asnumpy(got[0]), cp.asnumpy(_cuda.rasterize_cuda(**s)))
    np.testing.assert_array_equal(cp.asnumpy(got[0]), first)


def test_empty_and_culled_give_background_only(cp):
    for n in (0, 30):
        scene = random_scene(n, 40, 24, None, seed=3, background="image")
        if n:
            scene["viewmat"] = np.eye(4, dtype=np.float32)
            scene["means"] = scene["means"] * 0.1 + np.array([0, 0, -5], np.float32)  # all behind the camera
        got = cp.asnumpy(_cuda.rasterize_cuda(**scene))
        np.testing.assert_array_equal(got, scene["background"])
    none_bg = random_scene(0, 40, 24, None, seed=3, background="none")
    assert not cp.asnumpy(_cuda.rasterize_cuda(**none_bg)).any()


def test_extreme_gaussians_stay_finite(cp):
    scene = extreme_scene()
    got = cp.asnumpy(_cuda.rasterize_cuda(**scene))
    assert np.isfinite(got).all()
    assert_gpu_images_close(got, rasterize_reference(**scene), "extreme vs reference")


def test_to_host_is_pinned_copy(cp, rasterizer):
    scene = random_scene(300, 48, 32, 0, seed=4, background="color")
    img = rasterizer.render(scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"],
                            scene["viewmat"], scene["K"], 48, 32, scene["background"], sh=True)  # fmt: skip
    host = rasterizer.to_host(img)
    assert isinstance(host, np.ndarray) and host.shape == (1, 32, 48, 3)
    np.testing.assert_array_equal(host, cp.asnumpy(img))


def test_inputs_from_another_stream(cp):
    scene = random_scene(1000, 64, 64, 3, seed=8, background="color")
    want = cp.asnumpy(_cuda.rasterize_cuda(**scene))
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        on_gpu = {k: (cp.asarray(v) * 1 if isinstance(v, np.ndarray) else v) for k, v in scene.items()}
        got = _cuda.rasterize_cuda(**on_gpu)
        host = cp.asnumpy(got)  # on s: must see the finished render
    np.testing.assert_array_equal(host, want)


def test_fast_math_build_is_close(cp):
    scene = random_scene(800, 64, 48, 2, seed=12, background="color")
    fast = _cuda.CudaRasterizer(fast_math=True)
    got = fast.render(scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"],
                      scene["viewmat"], scene["K"], 64, 48, scene["background"], sh=True)  # fmt: skip
    assert_images_close(cp.asnumpy(got[0]), rasterize_reference(**scene), "fast math vs reference",
                        atol=1e-3, outlier_fraction=1e-3)  # fmt: skip


def test_compile_error_carries_the_log(cp, monkeypatch):
    monkeypatch.setattr(_cuda, "load_source", lambda path=None: 'extern "C" __global__ void k() { this is not C++; }')
    with pytest.raises(_cuda.CudaCompileError) as info:
        _cuda._Module(cp, ("--std=c++17", "-DGT_TEST_BROKEN_SOURCE"))
    assert "error" in str(info.value).lower()


def test_matches_gsplat(cp):
    """gsplat.rasterization (antialiased=False). Opacities stay <= 0.35: then alpha < 0.99 (gsplat clamps
    at 0.999 since 1.0, gt at 0.99) and no pixel outside a 3-sigma ellipse reaches 1/255, so gsplat's
    tighter tile culling (opacity-aware radii, AccuTile) cannot change the image."""
    torch = pytest.importorskip("torch")
    gsplat = pytest.importorskip("gsplat")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    for n, W, H, deg, bg in [(500, 64, 48, None, "color"), (3000, 160, 96, 3, "none"), (2000, 97, 131, 1, "color")]:
        scene = random_scene(n, W, H, deg, seed=77 + n, background=bg)
        scene["opacities"] = (0.05 + 0.3 * np.random.default_rng(n).uniform(size=n)).astype(np.float32)
        got = cp.asnumpy(_cuda.rasterize_cuda(**scene))
        t = {k: torch.from_numpy(np.asarray(v)).cuda() for k, v in scene.items() if isinstance(v, np.ndarray)}
        kwargs = {}
        if scene["background"] is not None:
            kwargs["backgrounds"] = t["background"][None]
        if deg is not None:
            kwargs["sh_degree"] = deg
        img, _, _ = gsplat.rasterization(
            t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], t["viewmat"][None], t["K"][None],
            W, H, near_plane=0.01, eps2d=0.3, packed=False, rasterize_mode="classic", **kwargs,
        )  # fmt: skip
        assert_images_close(got, img[0].cpu().numpy(), f"cuda vs gsplat (n={n}, sh={deg})", atol=5e-4)
