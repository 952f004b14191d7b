"""How close a CUDA raster on a real GPU must be to the CPU one, and why (issue 19, item 7).

The emulation (tests/cuda_emu) compiles raster_cuda.cu for the CPU with libm's expf and no flush to
zero, so it agrees with the CPU rasterizer almost bit for bit: its agreement says nothing about a GPU.
On the device two things differ, and the `gpu` tests' tolerances come from them:

- **`__expf`** (GT_EXPF in gt_raster_math.h, as gsplat): maximum error 2 + floor(|1.16 x|) ulp
  (CUDA C++ Programming Guide, intrinsic functions). A pixel blends a Gaussian only when
  alpha = o exp(-sigma) >= 1/255, so -sigma >= -ln(255) ~ -5.54 and the error is at most
  EXPF_MAX_ULP = 8 ulp: a relative error DELTA = 8 * 2^-23 ~ 9.5e-7 per alpha.
- **`-ftz=true`**, which CuPy appends to every NVRTC compilation (cupy/cuda/compiler.py), and NVRTC's
  default FMA contraction: subnormal intermediates become 0 and products fuse, a few ulp per
  operation of the projection (conic, depth), i.e. a relative error of the same order in sigma.

Dense error. The colour is C = sum_i c_i a_i T_i with T_i = prod_{j<i} (1 - a_j); dC/da_j = T_j (c_j - X_j)
with X_j the colour behind j, so |dC| <= sum_j T_j a_j DELTA * CMAX <= DELTA * CMAX (sum_j a_j T_j <= 1).
With colours up to CMAX ~ 3 (SH) and the projection's share, the bound is ~1e-5: ATOL = 1e-4 keeps a
10x margin.

Outliers. A Gaussian whose alpha is within DELTA of 1/255 at a pixel can be blended on one side and
skipped on the other, moving that pixel by at most a T CMAX / 255 <= ~1.2e-2; the 1e-4 transmittance
stop can flip likewise, moving it by at most 1e-4 CMAX. So OUTLIER_ATOL = 2e-2. How many: a flip needs
ln(alpha) within DELTA of ln(1/255), out of a ~5.5 wide range: ~2 DELTA / 5.5 ~ 3.5e-7 per blended
(pixel, Gaussian) pair, ~1e-5 per pixel at the scenes' depth complexity (tens of Gaussians per pixel);
OUTLIER_FRACTION = 2e-4 keeps a 20x margin.

`worst_case_expf` models the device's exp at its error bound, so the emulation can check that these
tolerances hold the worst the device may do (tests/runtime/test_gpu_tolerance_emulated.py).
"""

from __future__ import annotations

import numpy as np

EXPF_MAX_ULP = 8  # __expf's bound, 2 + floor(1.16 * 5.54), over the exponents a blended alpha can have
DELTA = EXPF_MAX_ULP * 2.0**-23  # relative error of one alpha
ATOL = 1e-4
OUTLIER_ATOL = 2e-2
OUTLIER_FRACTION = 2e-4


def expf_ulp_bound(x: np.ndarray) -> np.ndarray:
    """__expf's documented maximum error in ulp at x: 2 + floor(|1.16 x|)."""
    return 2.0 + np.floor(np.abs(1.16 * np.asarray(x, np.float64)))


def worst_case_expf(x) -> np.ndarray:
    """exp(x) in float32 moved by __expf's full error bound, up or down (a fixed pseudo-random sign per input), then
    flushed to zero below the smallest normal float32 (-ftz=true)."""
    x32 = np.asarray(x, np.float32)
    exact = np.exp(x32.astype(np.float64))
    bits = x32.view(np.uint32).astype(np.uint64)
    sign = np.where(((bits * np.uint64(2654435761)) >> np.uint64(7)) & np.uint64(1), 1.0, -1.0)
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    out = (exact + sign * expf_ulp_bound(x32) * ulp).astype(np.float32)
    return np.where(np.abs(out) < np.finfo(np.float32).tiny, np.float32(0), out)


def assert_gpu_images_close(got, want, what: str) -> None:
    """A GPU image `got` [..., 3] against a CPU image `want`: within the tolerances above; the message says by how much."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    n_out = int((err > ATOL).sum())
    stats = (f"max {err.max() if err.size else 0:.3g}, mean {err.mean() if err.size else 0:.3g}, "
             f"{n_out} of {err.size} above {ATOL} (GPU tolerances: tests/support/gpu_tolerance.py)")
    assert n_out <= OUTLIER_FRACTION * err.size, f"{what}: {stats}"
    assert err.size == 0 or err.max() <= OUTLIER_ATOL, f"{what}: {stats}"
