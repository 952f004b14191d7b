"""Gradients of the C++ CPU rasterizer (gt_train.raster.rasterize_torch) against torch
autograd through the pure-torch reference (gt_train.raster._torch_impl, float64), plus
central finite differences on a tiny scene."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gt_runtime.raster import _cpu  # noqa: E402
from tests.support.raster_scenes import random_scene  # noqa: E402

pytestmark = pytest.mark.skipif(not _cpu.available(), reason="gt_runtime._raster_cpu not built (pip install .)")

NAMES = ["means", "quats", "scales", "opacities", "colors", "background"]


def _run(fn, scene, v, dtype):
    ts = {k: torch.tensor(scene[k], dtype=dtype, requires_grad=True) for k in NAMES if scene.get(k) is not None}
    img = fn(ts["means"], ts["quats"], ts["scales"], ts["opacities"], ts["colors"],
             torch.tensor(scene["viewmat"], dtype=dtype), torch.tensor(scene["K"], dtype=dtype),
             scene["width"], scene["height"], ts.get("background"))
    (img * v.to(dtype)).sum().backward()
    return img.detach(), {k: t.grad for k, t in ts.items()}


@pytest.mark.parametrize("sh", [None, 0, 1, 2, 3])
@pytest.mark.parametrize("bg", ["none", "color", "image"])
def test_grads_match_torch_reference(sh, bg):
    from gt_train.raster import rasterize_torch, rasterize_torch_impl

    scene = random_scene(40, 37, 29, sh, seed=11 + (sh or 0), background=bg)
    v = torch.from_numpy(np.random.default_rng(0).normal(size=(29, 37, 3)).astype(np.float32))
    img, got = _run(rasterize_torch, scene, v, torch.float32)
    ref_img, want = _run(rasterize_torch_impl, scene, v, torch.float64)
    assert float((img.double() - ref_img).abs().max()) <= 1e-4
    assert set(got) == set(want)
    for k in want:
        a, b = got[k].double(), want[k]
        assert torch.isfinite(a).all(), k
        rel = float((a - b).norm() / max(float(b.norm()), 1e-12))
        assert rel <= 1e-3, f"{k}: relative error {rel:.2e}"
        big = b.abs() > 0.1 * float(b.abs().max())  # elementwise on the large entries
        if big.any():
            el = float(((a - b).abs()[big] / b.abs()[big]).max())
            assert el <= 1e-2, f"{k}: elementwise relative error {el:.2e}"


def test_grads_sum_over_more_gaussians():
    from gt_train.raster import rasterize_torch, rasterize_torch_impl

    scene = random_scene(150, 48, 40, 3, seed=4, background="image")
    v = torch.ones(40, 48, 3)
    _, got = _run(rasterize_torch, scene, v, torch.float32)
    _, want = _run(rasterize_torch_impl, scene, v, torch.float64)
    for k in want:
        rel = float((got[k].double() - want[k]).norm() / max(float(want[k].norm()), 1e-12))
        assert rel <= 1e-3, f"{k}: relative error {rel:.2e}"


@pytest.mark.parametrize("name,index", [("means", (0, 0)), ("means", (1, 2)), ("scales", (0, 1)),
                                        ("quats", (1, 3)), ("opacities", (0,)), ("colors", (1, 2, 0))])
def test_finite_differences(name, index):
    """Central differences in float64 through the torch reference vs the C++ gradient."""
    from gt_train.raster import rasterize_torch, rasterize_torch_impl

    scene = random_scene(3, 20, 16, 1, seed=2, background="color")
    scene["scales"] = scene["scales"] * 0 + 0.15  # a few px wide: smooth in the parameters
    scene["opacities"] = scene["opacities"] * 0 + 0.6
    scene["means"][:, :] = np.array([[0.0, 0.0, 0.0], [0.1, -0.05, 0.1], [-0.1, 0.05, -0.05]], np.float32)
    v = torch.from_numpy(np.random.default_rng(1).normal(size=(16, 20, 3)).astype(np.float32))
    _, got = _run(rasterize_torch, scene, v, torch.float32)

    def loss(delta):
        s = {k: (None if val is None else np.array(val, np.float64)) if isinstance(val, np.ndarray) or val is None
             else val for k, val in scene.items()}
        s[name][index] += delta
        t = {k: torch.tensor(s[k], dtype=torch.float64) for k in NAMES if s.get(k) is not None}
        img = rasterize_torch_impl(t["means"], t["quats"], t["scales"], t["opacities"], t["colors"],
                                   torch.tensor(s["viewmat"]), torch.tensor(s["K"]), s["width"], s["height"],
                                   t.get("background"))
        return float((img * v.double()).sum())

    h = 1e-4
    fd = (loss(h) - loss(-h)) / (2 * h)
    g = float(got[name][index])
    assert abs(g - fd) <= 2e-3 * max(abs(fd), 1e-2), (g, fd)


def test_zero_gaussians_and_culled_have_zero_grads():
    from gt_train.raster import rasterize_torch

    scene = random_scene(10, 20, 16, 2, seed=3, background="color")
    scene["means"][:5] -= 50 * scene["viewmat"][2, :3]  # behind the camera
    v = torch.ones(16, 20, 3)
    _, got = _run(rasterize_torch, scene, v, torch.float32)
    for k in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.isfinite(got[k]).all()
        assert float(got[k][:5].abs().max()) == 0.0
    empty = random_scene(0, 20, 16, None, seed=0, background="image")
    img, got = _run(rasterize_torch, empty, v, torch.float32)
    assert img.shape == (16, 20, 3) and got["means"].shape == (0, 3)
    assert torch.allclose(got["background"], v)  # T_final = 1 everywhere


def test_import_gt_train_is_light():
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = "import sys, gt_train; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
