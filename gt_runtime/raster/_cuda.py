"""CUDA rasterizer: plugins/raster/raster_cuda.cu compiled at run time with CuPy (NVRTC).

Mirrors the CPU rasterizer (plugins/raster/raster_cpu.cpp) and gsplat's
``rasterization()`` (antialiased=False); both include ``gt_raster_math.h``.

Two entry points:

- ``rasterize_cuda(...)``: one frame, numpy or cupy inputs -> cupy ``[H, W, 3]``
  (called by ``gt_runtime.raster.rasterize(..., backend="cuda")``, which validates).
- ``CudaRasterizer``: batched frames for the runtime. It holds the compiled module, one
  CUDA stream and preallocated CuPy buffers sized by (B, N, H, W) and grown on demand;
  ``render(...)`` returns cupy ``[B, H, W, 3]``. The only host transfer per render is the
  8-byte number of tile intersections (the sort needs it); ``to_host`` copies a frame into
  pinned memory.

CuPy is imported inside functions: ``import gt_runtime`` never needs it (nor torch).
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path

import numpy as np

from gt_runtime.contract import TILE
from gt_runtime.errors import MissingDependencyError

# Kernel entry points in raster_cuda.cu (tests check that the PTX defines every one).
KERNEL_NAMES = (
    "gt_raster_project",
    "gt_raster_isect_keys",
    "gt_raster_tile_ranges",
    "gt_raster_blend",
)
CUDA_SOURCE = "raster_cuda.cu"
_THREADS = 256  # 1-D kernels' block size
_SH_DEGREE_OF_K = {1: 0, 4: 1, 9: 2, 16: 3}

_INSTALL_HINT = (
    "install a CuPy that matches your CUDA driver, with NVRTC and the CUDA headers: pip install 'gt[gpu]'"
    " (or 'cupy-cuda12x[ctk]' / 'cupy-cuda13x[ctk]')"
)


class CudaUnavailableError(MissingDependencyError, RuntimeError):
    """No CuPy or no usable CUDA device: the ``cuda`` raster backend cannot run."""


class CudaCompileError(RuntimeError):
    """NVRTC rejected raster_cuda.cu; the message holds the compiler log."""


###############################
# Availability
###############################


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True if CuPy imports and sees at least one CUDA device. Cheap after the first call, never raises."""
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:
        return False


def _require_cupy():
    """Import cupy, or raise a one-line CudaUnavailableError that says what to install."""
    try:
        import cupy
    except Exception as exc:
        raise CudaUnavailableError(f"raster backend 'cuda': CuPy is not importable ({exc}) | {_INSTALL_HINT}") from None
    if not cuda_available():
        raise CudaUnavailableError(
            "raster backend 'cuda': CuPy found no usable CUDA device (no GPU, or a driver older than CuPy's CUDA)"
            f" | use backend='cpu', or {_INSTALL_HINT}"
        )
    return cupy


###############################
# Source and module
###############################


def source_dir() -> Path:
    """Folder with raster_cuda.cu and its headers: the package copy (wheels), else the source tree."""
    here = Path(__file__).resolve().parent
    for d in (here / "csrc", here.parents[1] / "plugins" / "raster"):
        if (d / CUDA_SOURCE).is_file():
            return d
    raise FileNotFoundError(
        f"{CUDA_SOURCE} not found in {here / 'csrc'} nor in {here.parents[1] / 'plugins' / 'raster'}"
        " | reinstall gt (pip install .) so that the CUDA sources ship with gt_runtime"
    )


_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)


def load_source(path: Path | None = None) -> str:
    """raster_cuda.cu with its local ``#include "..."`` files inlined (each once, with #line marks).

    Inlining makes the text that NVRTC sees, and so CuPy's on-disk kernel cache key, cover the
    header too: a changed header can never reuse a stale cached binary.
    """
    path = Path(path) if path is not None else source_dir() / CUDA_SOURCE
    seen: set[Path] = set()

    def expand(p: Path) -> str:
        p = p.resolve()
        if p in seen:
            return f"// (already included: {p.name})\n"
        seen.add(p)
        text = p.read_text(encoding="utf-8")
        out, last = [], 0
        for m in _INCLUDE_RE.finditer(text):
            inc = p.parent / m.group(1)
            if not inc.is_file():
                continue  # a system header: NVRTC resolves it
            line_after = text.count("\n", 0, m.end()) + 2
            out.append(text[last : m.start()])
            out.append(f'#line 1 "{inc.name}"\n{expand(inc)}\n#line {line_after} "{p.name}"\n')
            last = m.end() + 1 if m.end() < len(text) and text[m.end()] == "\n" else m.end()
        out.append(text[last:])
        return "".join(out)

    return expand(path)


def compile_options(fast_math: bool = False) -> tuple[str, ...]:
    """NVRTC options. No fast math by default: the CPU rasterizer is the parity reference.

    CuPy appends ``-ftz=true`` to every compilation (cupy/cuda/compiler.py), and the blend uses
    ``__expf`` (GT_EXPF, as gsplat): device images are close to the CPU's, not bit-identical
    (tests/runtime/test_raster_cuda.py sets its tolerances from these two).
    """
    opts = ("--std=c++17",)
    if fast_math:
        opts += ("--use_fast_math",)
    return opts


class _Module:
    """The compiled RawModule of one device and its kernels, looked up by name."""

    def __init__(self, cupy, options: tuple[str, ...]):
        code = load_source()
        try:
            self.module = cupy.RawModule(code=code, options=options, backend="nvrtc")
            self.kernels = {name: self.module.get_function(name) for name in KERNEL_NAMES}
        except cupy.cuda.compiler.CompileException as exc:
            log = exc.get_message() if hasattr(exc, "get_message") else str(exc)
            raise CudaCompileError(
                f"{CUDA_SOURCE}: NVRTC compilation failed (options {' '.join(options)}) | compiler log:\n{log}"
            ) from None
        except (RuntimeError, OSError) as exc:  # no NVRTC library, no CUDA headers, ...
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise CudaUnavailableError(f"{CUDA_SOURCE}: CuPy cannot compile kernels ({first}) | {_INSTALL_HINT}") from None

    def __getitem__(self, name: str):
        return self.kernels[name]


_MODULES: dict[tuple[int, tuple[str, ...]], _Module] = {}
_MODULES_LOCK = threading.Lock()


def get_module(fast_math: bool = False) -> _Module:
    """Compiled kernels for the current device (module-level cache; CuPy also caches binaries on disk)."""
    cupy = _require_cupy()
    key = (cupy.cuda.Device().id, compile_options(fast_math))
    with _MODULES_LOCK:
        mod = _MODULES.get(key)
        if mod is None:
            mod = _MODULES[key] = _Module(cupy, key[1])
    return mod


###############################
# Batched rasterizer
###############################


def _grid1d(n: int) -> tuple[int, int, int]:
    return (max(1, (n + _THREADS - 1) // _THREADS), 1, 1)


class CudaRasterizer:
    """Batched CUDA rasterizer with preallocated buffers and one stream.

    >>> r = CudaRasterizer()
    >>> imgs = r.render(means, quats, scales, opacities, colors, viewmats, Ks, 512, 512)  # [B, 512, 512, 3]

    ``render`` orders itself after the work already queued on the caller's current stream,
    and the caller's current stream after it, so CuPy code around it needs no extra sync.
    The returned array is an internal buffer, overwritten by the next ``render`` of the same
    rasterizer: copy it (or pass ``out=``) to keep it.
    """

    def __init__(self, *, fast_math: bool = False, stream=None):
        cupy = _require_cupy()
        self._cp = cupy
        self._module = get_module(fast_math)
        self.stream = stream if stream is not None else cupy.cuda.Stream(non_blocking=True)
        self._buffers: dict[str, object] = {}
        with self.stream:
            self._dummy = cupy.zeros(4, dtype=cupy.float32)
        self._pinned = None
        self.last_n_isects = 0  # tile intersections of the last render
        self.last_radii = None  # cupy int32 [B * N] of the last render (0 = culled), for tests

    # -- buffers ------------------------------------------------------------------------

    def _buffer(self, name: str, shape: tuple[int, ...], dtype):
        """View of the named flat buffer with `shape`, reallocated (x1.5 headroom) when too small."""
        cp = self._cp
        size = int(np.prod(shape, dtype=np.int64))
        buf = self._buffers.get(name)
        if buf is None or buf.size < max(size, 1) or buf.dtype != np.dtype(dtype):
            with self.stream:
                buf = cp.empty(max(1, size + size // 2), dtype=dtype)
            self._buffers[name] = buf
        return buf[:size].reshape(shape)

    def _input(self, x, name: str, shapes: list[tuple[int, ...]]):
        """x as a C-contiguous float32 cupy array whose shape is one of `shapes`."""
        cp = self._cp
        arr = cp.asarray(x, dtype=cp.float32)
        if tuple(arr.shape) not in [tuple(s) for s in shapes]:
            want = " or ".join(str(list(s)) for s in shapes)
            raise ValueError(f"CudaRasterizer.render: {name} | received shape {list(arr.shape)}\nNote: expected {want}")
        return cp.ascontiguousarray(arr)

    # -- render -------------------------------------------------------------------------

    def render(
        self,
        means,  # [B, N, 3] or [N, 3] (shared by all frames)
        quats,  # [B, N, 4] or [N, 4] wxyz, any norm
        scales,  # [B, N, 3] or [N, 3] linear
        opacities,  # [B, N] or [N] in [0, 1]
        colors,  # RGB [B, N, 3] / [N, 3], or SH [B, N, K, 3] / [N, K, 3]
        viewmats,  # [B, 4, 4] (or [4, 4] for every frame) world -> camera, OpenCV
        Ks,  # [B, 3, 3] (or [3, 3])
        width: int,
        height: int,
        background=None,  # None (black), [3], [B, 3], [H, W, 3] or [B, H, W, 3]
        *,
        sh: bool | None = None,  # colors are SH coefficients; None: infer from the shape
        out=None,  # optional cupy float32 [B, H, W, 3] to write into
    ):
        """Render B frames; returns cupy float32 [B, H, W, 3] (an internal buffer unless `out`)."""
        cp = self._cp
        W, H = int(width), int(height)
        if W <= 0 or H <= 0:
            raise ValueError(f"CudaRasterizer.render: width, height | received {W}, {H}\nNote: expected > 0")
        stream = self.stream
        caller = cp.cuda.get_current_stream()
        if caller.ptr != stream.ptr:
            stream.wait_event(caller.record())
        with stream:
            viewmats = cp.asarray(viewmats, dtype=cp.float32)
            means = cp.asarray(means, dtype=cp.float32)
            # B: from the cameras, else from per-frame means (one camera for every frame), else 1
            B = int(viewmats.shape[0]) if viewmats.ndim == 3 else (int(means.shape[0]) if means.ndim == 3 else 1)
            Ks = cp.asarray(Ks, dtype=cp.float32)
            for name, m, d in (("viewmats", viewmats, 4), ("Ks", Ks, 3)):
                if tuple(m.shape) not in ((d, d), (B, d, d)):
                    raise ValueError(
                        f"CudaRasterizer.render: {name} | received shape {list(m.shape)}\nNote: expected {[B, d, d]} or {[d, d]}"
                    )
            viewmats = cp.ascontiguousarray(cp.broadcast_to(viewmats, (B, 4, 4)))
            Ks = cp.ascontiguousarray(cp.broadcast_to(Ks, (B, 3, 3)))
            if means.ndim not in (2, 3) or means.shape[-1] != 3:
                raise ValueError(
                    f"CudaRasterizer.render: means | received shape {list(means.shape)}\nNote: expected [B, N, 3] or [N, 3]"
                )
            N = int(means.shape[-2])
            if B * N >= 2**31:
                raise ValueError(f"CudaRasterizer.render: B * N = {B * N} | expected < 2^31 Gaussians per render")
            means = self._input(means, "means", [(B, N, 3), (N, 3)])
            quats = self._input(quats, "quats", [(B, N, 4), (N, 4)])
            scales = self._input(scales, "scales", [(B, N, 3), (N, 3)])
            opacities = self._input(opacities, "opacities", [(B, N), (N,)])
            colors, sh_degree = self._colors(colors, B, N, sh)
            bg, has_bg, bg_fs, bg_ps = self._background(background, B, H, W)
            if out is None:
                out = self._buffer("out", (B, H, W, 3), cp.float32)
            elif out.shape != (B, H, W, 3) or out.dtype != cp.float32 or not out.flags.c_contiguous:
                raise ValueError(
                    f"CudaRasterizer.render: out | received {out.dtype} {list(out.shape)}"
                    f"\nNote: expected a C-contiguous float32 array of shape {[B, H, W, 3]}"
                )
            self._render(
                B, N, W, H, means, quats, scales, opacities, colors, sh_degree, viewmats, Ks,
                bg, has_bg, bg_fs, bg_ps, out,
            )  # fmt: skip
        if caller.ptr != stream.ptr:
            caller.wait_event(stream.record())
        return out

    def _colors(self, colors, B: int, N: int, sh: bool | None):
        """(colors as cupy, sh_degree): -1 for RGB, else the SH degree of K bases."""
        cp = self._cp
        c = cp.asarray(colors, dtype=cp.float32)
        shape = tuple(c.shape)
        rgb_ok = shape in ((B, N, 3), (N, 3))
        sh_ok = (len(shape) == 4 and shape[:2] == (B, N) and shape[3] == 3 and shape[2] in _SH_DEGREE_OF_K) or (
            len(shape) == 3 and shape[0] == N and shape[2] == 3 and shape[1] in _SH_DEGREE_OF_K
        )
        if sh is None:
            if rgb_ok and sh_ok:
                raise ValueError(
                    f"CudaRasterizer.render: colors | shape {list(shape)} is both per-frame RGB and shared SH"
                    "\nNote: pass sh=True or sh=False"
                )
            sh = sh_ok
        if sh and not sh_ok or not sh and not rgb_ok:
            want = "SH [B, N, K, 3] or [N, K, 3], K in 1, 4, 9, 16" if sh else "RGB [B, N, 3] or [N, 3]"
            raise ValueError(f"CudaRasterizer.render: colors | received shape {list(shape)}\nNote: expected {want}")
        return cp.ascontiguousarray(c), (_SH_DEGREE_OF_K[shape[-2]] if sh else -1)

    def _background(self, background, B: int, H: int, W: int):
        """(array, has_bg, frame stride, pixel stride) for gt_raster_blend."""
        cp = self._cp
        if background is None:
            return self._dummy, 0, 0, 0
        bg = cp.ascontiguousarray(cp.asarray(background, dtype=cp.float32))
        layouts = {(3,): (0, 0), (B, 3): (3, 0), (H, W, 3): (0, 3), (B, H, W, 3): (H * W * 3, 3)}
        if tuple(bg.shape) not in layouts:
            raise ValueError(
                f"CudaRasterizer.render: background | received shape {list(bg.shape)}"
                f"\nNote: expected None, [3], [B, 3], [H, W, 3] or [B, H, W, 3] with B={B}, H={H}, W={W}"
            )
        fs, ps = layouts[tuple(bg.shape)]
        return bg, 1, fs, ps

    def _render(self, B, N, W, H, means, quats, scales, opacities, colors, sh_degree, viewmats, Ks,
                bg, has_bg, bg_fs, bg_ps, out):  # fmt: skip
        cp, k, s = self._cp, self._module, self.stream
        i32, i64 = np.int32, np.int64
        tiles_x, tiles_y = (W + TILE - 1) // TILE, (H + TILE - 1) // TILE
        num_tiles = tiles_x * tiles_y
        BN = B * N

        # Per-Gaussian buffers (views of zero length when BN == 0 still point at valid memory).
        means2d = self._buffer("means2d", (BN, 2), cp.float32)
        conics = self._buffer("conics", (BN, 3), cp.float32)
        depths = self._buffer("depths", (BN,), cp.float32)
        radii = self._buffer("radii", (BN,), cp.int32)
        rgbs = self._buffer("rgbs", (BN, 3), cp.float32)
        opac = self._buffer("opac", (BN,), cp.float32)
        rects = self._buffer("tile_rects", (BN, 4), cp.int32)
        counts = self._buffer("tiles_touched", (BN,), cp.int32)
        cum = self._buffer("cum_tiles", (BN,), cp.int64)
        self.last_radii = radii

        n_isects = 0
        if BN > 0:
            K_bases = 1 if sh_degree < 0 else (sh_degree + 1) ** 2
            colors_batched = colors.ndim == (3 if sh_degree < 0 else 4)
            k["gt_raster_project"](
                _grid1d(BN), (_THREADS, 1, 1),
                (
                    i32(B), i32(N),
                    means, i64(N * 3 if means.ndim == 3 else 0),
                    quats, i64(N * 4 if quats.ndim == 3 else 0),
                    scales, i64(N * 3 if scales.ndim == 3 else 0),
                    opacities, i64(N if opacities.ndim == 2 else 0),
                    colors, i64(N * K_bases * 3 if colors_batched else 0), i32(sh_degree),
                    viewmats, Ks, i32(W), i32(H), i32(tiles_x), i32(tiles_y),
                    means2d, conics, depths, radii, rgbs, opac, rects, counts,
                ),
                stream=s,
            )  # fmt: skip
            cp.cumsum(counts, dtype=cp.int64, out=cum)
            n_isects = int(cum[BN - 1])  # the one host read (8 bytes, on this stream): sizes the sort
        self.last_n_isects = n_isects
        if n_isects >= 2**31:
            raise ValueError(
                f"CudaRasterizer.render: {n_isects} tile intersections | expected < 2^31: render fewer frames at once"
            )

        keys = self._buffer("isect_keys", (n_isects,), cp.uint64)
        ids = self._buffer("isect_ids", (n_isects,), cp.int32)
        sorted_keys = self._buffer("sorted_keys", (n_isects,), cp.uint64)
        sorted_ids = self._buffer("sorted_ids", (n_isects,), cp.int32)
        if n_isects > 0:
            k["gt_raster_isect_keys"](
                _grid1d(BN), (_THREADS, 1, 1),
                (i32(B), i32(N), i32(tiles_x), i32(num_tiles), depths, rects, counts, cum, keys, ids),
                stream=s,
            )  # fmt: skip
            # Stable radix sort (thrust stable_sort_by_key on uint64 keys -> cub): depth ties keep
            # Gaussian order, as the CPU rasterizer's stable depth sort does.
            order = cp.argsort(keys, kind="stable")
            cp.take(keys, order, out=sorted_keys)
            cp.take(ids, order, out=sorted_ids)
            del order

        ranges = self._buffer("tile_ranges", (B * num_tiles, 2), cp.int32)
        k["gt_raster_tile_ranges"](
            _grid1d(B * num_tiles), (_THREADS, 1, 1),
            (i64(n_isects), i32(B * num_tiles), sorted_keys, ranges),
            stream=s,
        )  # fmt: skip
        k["gt_raster_blend"](
            (tiles_x, tiles_y, B), (TILE, TILE, 1),
            (
                i32(W), i32(H), i32(tiles_x), i32(num_tiles), ranges, sorted_ids,
                means2d, conics, opac, rgbs, bg, i32(has_bg), i64(bg_fs), i64(bg_ps), out,
            ),
            stream=s,
        )  # fmt: skip

    # -- host copy ----------------------------------------------------------------------

    def to_host(self, images):
        """Copy cupy images (e.g. render's output) into a reused pinned numpy array; waits for the copy.

        The returned array is overwritten by the next ``to_host`` call: copy it to keep it.
        """
        import cupyx

        cp = self._cp
        shape = tuple(images.shape)
        if self._pinned is None or self._pinned.size < images.size or self._pinned.dtype != images.dtype:
            self._pinned = cupyx.empty_pinned((images.size,), dtype=images.dtype)
        host = self._pinned[: images.size].reshape(shape)
        caller = cp.cuda.get_current_stream()
        if caller.ptr != self.stream.ptr:
            self.stream.wait_event(caller.record())
        with self.stream:
            cp.ascontiguousarray(images).get(stream=self.stream, out=host)
        self.stream.synchronize()
        return host


###############################
# One frame (public backend entry)
###############################

_DEFAULT: dict[int, CudaRasterizer] = {}


def _default_rasterizer() -> CudaRasterizer:
    cupy = _require_cupy()
    dev = cupy.cuda.Device().id
    r = _DEFAULT.get(dev)
    if r is None:
        r = _DEFAULT[dev] = CudaRasterizer()
    return r


def rasterize_cuda(means, quats, scales, opacities, colors, viewmat, K, width, height, background=None):
    """Render one frame on the GPU: numpy or cupy float32 inputs -> cupy float32 [H, W, 3].

    means [N, 3], quats [N, 4] wxyz, scales [N, 3], opacities [N], colors RGB [N, 3] or SH [N, K, 3],
    viewmat [4, 4], K [3, 3], background None, [3] or [H, W, 3]. Same rules as the CPU backend.
    """
    cupy = _require_cupy()
    r = _default_rasterizer()
    colors_shape = tuple(np.shape(colors)) if not isinstance(colors, cupy.ndarray) else tuple(colors.shape)
    sh = len(colors_shape) == 3
    bg = background
    if bg is not None:
        bg = cupy.asarray(bg, dtype=cupy.float32)  # [3] or [H, W, 3]: both shared by the one frame
    out = cupy.empty((1, int(height), int(width), 3), dtype=cupy.float32)
    r.render(
        means, quats, scales, opacities, colors, cupy.asarray(viewmat, dtype=cupy.float32)[None],
        cupy.asarray(K, dtype=cupy.float32)[None], width, height, bg, sh=sh, out=out,
    )  # fmt: skip
    return out[0]
