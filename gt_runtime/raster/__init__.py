"""Gaussian rasterizers behind one function (docs/ARCHITECTURE.md: "Rasterizers").

    from gt_runtime import raster
    img = raster.rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height,
                           background=None, backend="auto")   # -> [H, W, 3] float32

Backends: "cuda" (CuPy/NVRTC kernels, returns a cupy array), "cpu" (the C++/OpenMP
extension), "reference" (readable numpy, the test oracle). "auto" picks cuda when CuPy
and a GPU are present, else cpu when the extension is built, else reference.
Conventions follow gsplat's rasterization() (antialiased=False); see _reference.py.
Inputs are checked here, once, with one-line errors; backends trust them.
"""

from __future__ import annotations

import numpy as np

BACKENDS = ("auto", "cpu", "cuda", "reference")

__all__ = ["rasterize", "BACKENDS", "available_backends", "validate_inputs"]


def available_backends() -> list[str]:
    """Concrete backends usable in this process, best first."""
    from gt_runtime.raster import _cpu, _cuda

    out = ["cuda"] if _cuda.cuda_available() else []
    if _cpu.available():
        out.append("cpu")
    return out + ["reference"]


def _shape(a) -> tuple:
    return tuple(int(d) for d in getattr(a, "shape", np.shape(a)))


def _is_real(dtype) -> bool:
    """numpy/cupy dtypes by kind; other array types (torch) by name."""
    try:
        return np.dtype(dtype).kind in "fiu"
    except TypeError:
        return any(k in str(dtype) for k in ("float", "int")) and "complex" not in str(dtype)


def _fail(name: str, got, expected: str):
    raise ValueError(f"rasterize: argument '{name}' | received {got} | expected {expected}")


def validate_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, background=None) -> int:
    """Check shapes and dtypes; return N. Raises a one-line ValueError naming the argument."""
    if not isinstance(width, (int, np.integer)) or isinstance(width, bool) or int(width) <= 0:
        _fail("width", repr(width), "a positive int")
    if not isinstance(height, (int, np.integer)) or isinstance(height, bool) or int(height) <= 0:
        _fail("height", repr(height), "a positive int")
    ms = _shape(means)
    if len(ms) != 2 or ms[1] != 3:
        _fail("means", f"shape {ms}", "shape [N, 3]")
    N = ms[0]
    for name, arr, tail in (("quats", quats, (4,)), ("scales", scales, (3,)), ("opacities", opacities, ())):
        s = _shape(arr)
        if s != (N,) + tail:
            _fail(name, f"shape {s}", f"shape {[N, *tail]} (N = {N} from means)")
    cs = _shape(colors)
    if not (cs == (N, 3) or (len(cs) == 3 and cs[0] == N and cs[2] == 3 and cs[1] in (1, 4, 9, 16))):
        _fail("colors", f"shape {cs}", f"RGB [{N}, 3] or SH [{N}, K, 3] with K in (1, 4, 9, 16)")
    if _shape(viewmat) != (4, 4):
        _fail("viewmat", f"shape {_shape(viewmat)}", "shape [4, 4] (world -> camera)")
    if _shape(K) != (3, 3):
        _fail("K", f"shape {_shape(K)}", "shape [3, 3] (pinhole intrinsics)")
    if background is not None:
        bs = _shape(background)
        if bs not in ((3,), (int(height), int(width), 3)):
            _fail("background", f"shape {bs}", f"None, [3] or [{int(height)}, {int(width)}, 3]")
    for name, arr in (("means", means), ("quats", quats), ("scales", scales), ("opacities", opacities),
                      ("colors", colors), ("viewmat", viewmat), ("K", K), ("background", background)):
        dt = getattr(arr, "dtype", None)
        if dt is not None and not _is_real(dt):
            _fail(name, f"dtype {dt}", "a real (float32) array")
    return N


def rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height, background=None,
              backend: str = "auto"):
    """Render 3D Gaussians -> [H, W, 3] float32 (numpy; a cupy array for backend "cuda").

    Args:
        means: [N, 3] world positions.
        quats: [N, 4] rotations, wxyz, need not be normalised.
        scales: [N, 3] linear scales (already exp-activated).
        opacities: [N] in [0, 1] (already sigmoid-activated).
        colors: [N, 3] RGB, or SH coefficients [N, K, 3], K = (deg + 1)^2, deg 0..3.
        viewmat: [4, 4] world -> camera (OpenCV: x right, y down, z forward).
        K: [3, 3] pinhole intrinsics in pixels.
        width, height: image size in pixels.
        background: None (black), [3] or [H, W, 3] in [0, 1].
        backend: "auto" | "cpu" | "cuda" | "reference".
    """
    if backend not in BACKENDS:
        raise ValueError(f"rasterize: argument 'backend' | received {backend!r} | expected one of {BACKENDS}")
    validate_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, background)
    args = (means, quats, scales, opacities, colors, viewmat, K, int(width), int(height), background)
    if backend == "auto":
        backend = available_backends()[0]
    if backend == "cuda":
        from gt_runtime.raster import _cuda

        return _cuda.rasterize_cuda(*args)
    if backend == "cpu":
        from gt_runtime.raster import _cpu

        return _cpu.forward(*args)
    from gt_runtime.raster._reference import rasterize_reference

    def f32(a):
        return None if a is None else np.asarray(a, np.float32)

    return rasterize_reference(*(f32(a) for a in args[:7]), args[7], args[8], f32(args[9]))
