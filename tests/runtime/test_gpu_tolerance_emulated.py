"""The `gpu` raster tests' tolerances (tests/support/gpu_tolerance.py) against the worst the device's exp may do.

On a GPU the blend evaluates exp with __expf (error up to 2 + floor(|1.16 x|) ulp) in code CuPy compiles
with -ftz=true; the emulation and the CPU use an exact expf. Here the reference rasterizer runs with
`worst_case_expf` (every exp moved by the full error bound, subnormals flushed): the image must move
(the model bites) and stay within the GPU tolerances, which test_raster_cuda.py applies on a real GPU.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from gt_runtime.raster import _reference
from gt_runtime.raster._reference import rasterize_reference
from tests.support import gpu_tolerance as tol
from tests.support.raster_scenes import random_scene


def _with_device_exp(monkeypatch):
    """_reference's numpy, with exp replaced by the worst-case __expf model."""
    fake_np = types.ModuleType("numpy_with_device_exp")
    fake_np.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    fake_np.exp = lambda x, *a, **k: tol.worst_case_expf(x)
    monkeypatch.setattr(_reference, "np", fake_np)


def test_worst_case_expf_is_the_documented_bound():
    x = np.linspace(-5.6, 0, 20001, dtype=np.float32)
    exact = np.exp(x.astype(np.float64))
    got = tol.worst_case_expf(x).astype(np.float64)
    ulps = np.abs(got - exact) / np.spacing(np.exp(x)).astype(np.float64)
    assert ulps.max() <= tol.EXPF_MAX_ULP + 0.5 and ulps.min() >= 1.5  # moved by the bound, never within it
    assert (np.sign(got - exact) > 0).mean() == pytest.approx(0.5, abs=0.05)  # both ways
    assert tol.worst_case_expf(np.float32(-100.0)) == 0  # exp(-100) ~ 3.7e-44 is subnormal: flushed (-ftz=true)
    assert float(tol.DELTA * 3) < tol.ATOL / 10  # the dense bound (DELTA * CMAX) leaves the documented margin


@pytest.mark.parametrize("n,width,height,sh_degree,background", [(300, 48, 40, None, "color"), (600, 64, 48, 2, "image"),
                                                                 (900, 40, 56, 3, "none")])
def test_gpu_tolerance_holds_the_worst_case_exp(monkeypatch, n, width, height, sh_degree, background):
    scene = random_scene(n, width, height, sh_degree, seed=n + width, background=background)
    exact = rasterize_reference(**scene)
    _with_device_exp(monkeypatch)
    device = rasterize_reference(**scene)
    err = np.abs(device.astype(np.float64) - exact)
    assert err.max() > 0, "the worst-case exp changed nothing: the model is not applied"
    tol.assert_gpu_images_close(device, exact, f"worst-case __expf vs exact exp ({n} Gaussians)")
