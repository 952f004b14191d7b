"""C++ CPU rasterizer (gt_runtime._raster_cpu) against the numpy reference, edge cases,
input validation of the public wrapper, and the torch-free import."""

import os
import subprocess
import sys

import numpy as np
import pytest

from gt_runtime.errors import MissingDependencyError

from gt_runtime import raster
from gt_runtime.raster import _cpu
from gt_runtime.raster._reference import rasterize_reference
from tests.support.raster_scenes import random_scene


needs_ext = pytest.mark.skipif(not _cpu.available(), reason="gt_runtime._raster_cpu not built (pip install .)")

CASES = [  # (n, width, height, sh_degree, background)
    (0, 33, 21, None, "none"), (0, 33, 21, 2, "image"),
    (1, 40, 30, None, "color"), (1, 40, 30, 3, "none"),
    (50, 61, 45, None, "image"), (50, 61, 45, 0, "color"), (50, 45, 61, 1, "none"),
    (500, 64, 48, 2, "color"), (500, 37, 70, 3, "image"), (500, 80, 32, None, "none"),
    (5000, 64, 48, 3, "none"), (5000, 48, 40, 1, "image"), (5000, 40, 52, None, "color"),
]


@needs_ext
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n,width,height,sh,bg", CASES)
def test_cpu_matches_reference(n, width, height, sh, bg, seed):
    scene = random_scene(n, width, height, sh, seed=seed + 7 * n, background=bg)
    got = raster.rasterize(**scene, backend="cpu")
    want = rasterize_reference(**scene)
    assert got.shape == (height, width, 3) and got.dtype == np.float32
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= 1e-4
    if n >= 50:  # the scene actually draws something
        bg_img = rasterize_reference(**{**scene, "opacities": np.zeros_like(scene["opacities"])})
        assert np.abs(want - bg_img).max() > 0.05


@needs_ext
@pytest.mark.parametrize("sh", [None, 3])
def test_image_only_forward_equals_training_forward(sh):
    """forward() skips the last-contributor bookkeeping that only backward reads; the image is the same."""
    scene = random_scene(3000, 70, 52, sh, seed=3, background="image")
    img = _cpu.forward(**scene)
    img_state, _ = _cpu.forward_with_state(**scene)
    assert np.array_equal(img, img_state)


def _edge_scene():
    """Gaussians behind the camera, off-screen, degenerate, huge, transparent, at the camera centre."""
    scene = random_scene(60, 50, 34, 3, seed=5, background="color")
    m, s, o, q = scene["means"], scene["scales"], scene["opacities"], scene["quats"]
    V = scene["viewmat"].astype(np.float64)
    cam = (-V[:3, :3].T @ V[:3, 3]).astype(np.float32)
    fwd = V[2, :3].astype(np.float32)
    m[0] = cam - 2 * fwd           # behind the camera
    m[1] = cam + 0.001 * fwd       # closer than the near plane
    m[2] = cam                      # at the camera centre (SH direction undefined)
    m[3] = cam + 1e5 * V[0, :3]    # far off-screen
    s[4] = 0.0                      # degenerate: zero scale
    s[5] = [1e-8, 1e-8, 1e-8]
    s[6] = [1e6, 1e6, 1e6]          # huge
    s[7] = [1e20, 1e20, 1e20]       # overflowing covariance
    s[8] = [1e6, 1e-6, 1e-6]        # needle
    o[9] = 0.0                      # transparent
    o[10] = 1.0
    q[11] = [1e-20, 0, 0, 0]        # tiny quaternion norm
    return scene


@needs_ext
def test_edge_cases_are_finite():
    scene = _edge_scene()
    got = raster.rasterize(**scene, backend="cpu")
    assert np.isfinite(got).all()
    want = rasterize_reference(**scene)
    assert np.isfinite(want).all()
    assert np.abs(got - want).max() <= 1e-4
    img, state = _cpu.forward_with_state(**scene)
    grads = _cpu.backward(state, np.ones_like(img))
    for g in grads:
        assert g is None or np.isfinite(g).all()


@needs_ext
@pytest.mark.parametrize("width,height", [(1, 1), (17, 3), (3, 40), (100, 16)])
def test_odd_sizes(width, height):
    scene = random_scene(200, width, height, 1, seed=width, background="image")
    got = raster.rasterize(**scene, backend="cpu")
    assert got.shape == (height, width, 3)
    assert np.abs(got - rasterize_reference(**scene)).max() <= 1e-4


@needs_ext
def test_all_gaussians_culled_gives_background():
    scene = random_scene(20, 30, 20, None, seed=1, background="color")
    scene["means"] = scene["means"] + 1000 * scene["viewmat"][2, :3] * -1  # all behind the camera
    got = raster.rasterize(**scene, backend="cpu")
    np.testing.assert_allclose(got, np.broadcast_to(scene["background"], got.shape), atol=1e-7)


def test_auto_and_reference_backends_agree():
    scene = random_scene(30, 24, 20, 1, seed=2, background="color")
    a = np.asarray(raster.rasterize(**scene, backend="reference"))
    if "cuda" in raster.available_backends():
        pytest.skip("auto picks cuda here (tested in test_raster_cuda.py)")
    b = raster.rasterize(**scene)
    assert np.abs(a - b).max() <= 1e-4


@pytest.mark.parametrize("name,value", [
    ("means", np.zeros((5, 2), np.float32)),
    ("quats", np.zeros((4, 4), np.float32)),
    ("scales", np.zeros((5,), np.float32)),
    ("opacities", np.zeros((5, 1), np.float32)),
    ("colors", np.zeros((5, 5, 3), np.float32)),
    ("viewmat", np.eye(3, dtype=np.float32)),
    ("K", np.eye(4, dtype=np.float32)),
    ("background", np.zeros((4,), np.float32)),
    ("width", 0),
    ("height", -3),
    ("backend", "vulkan"),
])
def test_validation_errors_are_one_line(name, value):
    scene = {**random_scene(5, 20, 10, None, seed=0), "backend": "reference"}
    scene[name] = value
    with pytest.raises(ValueError) as exc:
        raster.rasterize(**scene)
    msg = str(exc.value)
    assert "\n" not in msg and f"'{name}'" in msg and "expected" in msg


def test_background_image_shape_must_match():
    scene = random_scene(5, 20, 10, None, seed=0, background="image")
    scene["background"] = np.zeros((20, 10, 3), np.float32)  # transposed
    with pytest.raises(ValueError, match="'background'"):
        raster.rasterize(**scene, backend="reference")


def test_missing_extension_message(monkeypatch):
    """Without the extension, load() raises one line naming the build command."""
    monkeypatch.setattr(_cpu._EXT, "_module", None)
    monkeypatch.setitem(sys.modules, "gt_runtime._raster_cpu", None)  # the import fails
    with pytest.raises(MissingDependencyError) as exc:
        _cpu.load()
    msg = str(exc.value)
    assert "\n" not in msg and "pip install ." in msg and "build_ext --inplace" in msg
    assert not _cpu.available()


def test_import_does_not_pull_torch():
    code = "import sys, gt_runtime.raster, gt_runtime.raster._reference, gt_runtime.raster._cpu; " \
           "sys.exit(1 if 'torch' in sys.modules else 0)"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
