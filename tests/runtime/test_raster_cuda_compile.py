"""The CUDA rasterizer's sources compile without a GPU (the "null backend" check).

- nvcc -ptx for sm_80 and sm_90 (when nvcc is on PATH): every kernel that
  gt_runtime/raster/_cuda.py looks up is defined, and no kernel is left unregistered;
- NVRTC on the exact text the runtime compiles (when CuPy's NVRTC binding and
  libnvrtc load; no device needed);
- gt_raster_math.h is plain C++ on the host path (g++ -fsyntax-only);
- the Python side: source assembly, cheap availability check, one-line errors,
  and no cupy / torch import at module import.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gt_runtime.raster import _cuda

ROOT = Path(__file__).resolve().parents[2]
RASTER = ROOT / "plugins" / "raster"
CU = RASTER / "raster_cuda.cu"
HEADER = RASTER / "gt_raster_math.h"

_ENTRY_RE = re.compile(r"^\s*\.(?:visible\s+)?\.entry\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(", re.MULTILINE)


def _entries(ptx: str) -> set[str]:
    return set(_ENTRY_RE.findall(ptx))


def _check_entries(ptx: str, where: str):
    found = _entries(ptx)
    missing = set(_cuda.KERNEL_NAMES) - found
    extra = found - set(_cuda.KERNEL_NAMES)
    assert not missing, f"{where}: kernels looked up by _cuda.py but not in the PTX: {sorted(missing)}"
    assert not extra, f"{where}: kernels in the PTX that _cuda.KERNEL_NAMES does not list: {sorted(extra)}"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH (CUDA toolkit not installed)")
@pytest.mark.skipif(not HEADER.exists(), reason="plugins/raster/gt_raster_math.h is not there yet")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_ptx_defines_every_kernel(arch, tmp_path):
    ptx_path = tmp_path / f"raster_cuda_{arch}.ptx"
    cmd = ["nvcc", "-ptx", f"-arch={arch}", "-std=c++17", "-I", str(RASTER), str(CU), "-o", str(ptx_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr}"
    _check_entries(ptx_path.read_text(), f"nvcc {arch}")


def _nvrtc():
    """CuPy's NVRTC binding with a loadable libnvrtc, or skip."""
    try:
        from cupy_backends.cuda.libs import nvrtc
    except Exception as exc:  # no cupy, or cupy without its NVRTC binding
        pytest.skip(f"CuPy's NVRTC binding is not importable ({exc.__class__.__name__}: {exc})")
    try:
        nvrtc.getVersion()
    except Exception as exc:
        pytest.skip(f"libnvrtc does not load ({exc.__class__.__name__}: {exc}); pip install nvidia-cuda-nvrtc")
    return nvrtc


@pytest.mark.skipif(not HEADER.exists(), reason="plugins/raster/gt_raster_math.h is not there yet")
@pytest.mark.parametrize("arch", ["80", "90"])
def test_nvrtc_compiles_runtime_source(arch):
    """The text and options the runtime hands to CuPy's RawModule compile with NVRTC (no GPU needed)."""
    nvrtc = _nvrtc()
    src = _cuda.load_source()
    prog = nvrtc.createProgram(src, _cuda.CUDA_SOURCE, [], [])
    # CuPy adds -arch and -ftz=true itself; the rest are ours.
    opts = list(_cuda.compile_options()) + [f"-arch=compute_{arch}", "-ftz=true"]
    try:
        nvrtc.compileProgram(prog, opts)
    except Exception as exc:
        pytest.fail(f"NVRTC compute_{arch} failed ({exc}):\n{nvrtc.getProgramLog(prog)}")
    ptx = nvrtc.getPTX(prog)
    _check_entries(ptx.decode() if isinstance(ptx, bytes) else ptx, f"nvrtc compute_{arch}")


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not on PATH")
@pytest.mark.skipif(not HEADER.exists(), reason="plugins/raster/gt_raster_math.h is not there yet")
def test_header_is_plain_cpp_on_the_host():
    tu = '#include "gt_raster_math.h"\nint main() { float R[9]; const float q[4] = {1, 0, 0, 0}; gt_quat_to_rotmat(q, R); return 0; }\n'
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-I", str(RASTER), "-x", "c++", "-"]
    res = subprocess.run(cmd, input=tu, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"gt_raster_math.h does not compile as host C++:\n{res.stderr}"


@pytest.mark.skipif(not HEADER.exists(), reason="plugins/raster/gt_raster_math.h is not there yet")
def test_load_source_inlines_the_header_once():
    src = _cuda.load_source()
    assert '#include "gt_raster_math.h"' not in src
    assert src.count('#line 1 "gt_raster_math.h"') == 1
    assert "gt_project_ewa" in src and "gt_raster_blend" in src
    # after the header, line numbers point back into raster_cuda.cu
    cu_lines = CU.read_text().splitlines()
    inc_line = next(i for i, line in enumerate(cu_lines, 1) if line.strip() == '#include "gt_raster_math.h"')
    assert f'#line {inc_line + 1} "raster_cuda.cu"' in src


def test_source_dir_finds_the_sources():
    d = _cuda.source_dir()
    assert (d / _cuda.CUDA_SOURCE).is_file()


def test_cuda_available_is_a_cached_bool():
    a = _cuda.cuda_available()
    assert isinstance(a, bool)
    assert _cuda.cuda_available() is a


def test_without_gpu_the_error_says_what_to_install():
    if _cuda.cuda_available():
        pytest.skip("a CUDA device is available: the no-GPU error path does not apply")
    import numpy as np

    with pytest.raises(RuntimeError) as info:
        _cuda.rasterize_cuda(
            np.zeros((1, 3), np.float32), np.array([[1, 0, 0, 0]], np.float32), np.ones((1, 3), np.float32),
            np.ones(1, np.float32), np.ones((1, 3), np.float32), np.eye(4, dtype=np.float32),
            np.eye(3, dtype=np.float32), 8, 8, None,
        )  # fmt: skip
    msg = str(info.value)
    assert "\n" not in msg and "pip install" in msg, msg
    assert isinstance(info.value, _cuda.CudaUnavailableError)


def test_importing_the_cuda_backend_imports_neither_cupy_nor_torch():
    code = (
        "import sys, gt_runtime.raster._cuda as c; c.cuda_available.__wrapped__; "
        "bad = [m for m in ('cupy', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr


###############################
# Emulated device: the host glue of _cuda.py against numpy stand-ins of the kernels
###############################
# CuPy passes kernel arguments by position with no type check, so a swapped or mistyped
# argument would corrupt memory silently on the GPU. Here every launch is checked against
# the parameter list parsed from raster_cuda.cu (count, pointer dtype, scalar type), and the
# kernels are emulated in numpy by parameter *name*, so a swap of two same-typed arguments
# changes the image and fails the comparison with the reference.

import numpy as np  # noqa: E402

from gt_runtime.raster import _reference as ref  # noqa: E402

_KERNEL_RE = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\((.*?)\)\s*\{', re.DOTALL
)
_PTR_DTYPES = {"float": np.float32, "int": np.int32, "long long": np.int64, "unsigned long long": np.uint64}
_SCALAR_TYPES = {"int": np.int32, "long long": np.int64, "float": np.float32}


def parse_kernel_params(text: str) -> dict[str, list[tuple[str, bool, str]]]:
    """{kernel: [(base C type, is pointer, name)]} of the extern "C" kernels in a .cu text."""
    text = re.sub(r"//[^\n]*", "", text)
    kernels = {}
    for name, params in _KERNEL_RE.findall(text):
        out = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", " ").replace("const", " ").split())
            is_ptr = "*" in p
            ctype, pname = p.replace("*", " ").rsplit(None, 1)
            out.append((" ".join(ctype.split()), is_ptr, pname))
        kernels[name] = out
    return kernels


class _EmuStream:
    ptr = 12345

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def record(self, event=None):
        return object()

    def wait_event(self, event):
        pass


class _EmuCuda:
    """The bits of cupy.cuda that _cuda.py touches."""

    class _Null:
        ptr = 0

        def record(self, event=None):
            return object()

        def wait_event(self, event):
            pass

    @staticmethod
    def Stream(non_blocking=False):
        return _EmuStream()

    @staticmethod
    def get_current_stream():
        return _EmuCuda._Null()

    class Device:
        id = 0

    @staticmethod
    def is_available():
        return True


class _EmuCupy:
    """numpy dressed as the subset of cupy that _cuda.py uses."""

    ndarray = np.ndarray
    float32, int32, int64, uint64 = np.float32, np.int32, np.int64, np.uint64
    cuda = _EmuCuda
    asarray = staticmethod(np.asarray)
    ascontiguousarray = staticmethod(np.ascontiguousarray)
    broadcast_to = staticmethod(np.broadcast_to)
    empty = staticmethod(np.empty)
    zeros = staticmethod(np.zeros)
    take = staticmethod(np.take)

    @staticmethod
    def cumsum(a, dtype=None, out=None):
        return np.cumsum(a, dtype=dtype, out=out)

    @staticmethod
    def argsort(a):
        return np.argsort(a, kind="stable")


def _flat(a):
    v = a.reshape(-1)
    assert np.shares_memory(v, a) or a.size == 0
    return v


def _emu_project(grid, block, *, B, N, means, means_fs, quats, quats_fs, scales, scales_fs, opacities,
                 opacities_fs, colors, colors_fs, sh_degree, viewmats, Ks, width, height, tiles_x, tiles_y,
                 means2d, conics, depths, radii, rgbs, opac, tile_rects, tiles_touched):  # fmt: skip
    assert grid[0] * block[0] >= B * N
    B, N, W, H, deg = int(B), int(N), int(width), int(height), int(sh_degree)
    Kb = 1 if deg < 0 else (deg + 1) ** 2
    assert int(tiles_x) == (W + 15) // 16 and int(tiles_y) == (H + 15) // 16

    def frame(a, fs, b, row):
        return _flat(a)[b * int(fs) : b * int(fs) + N * row]

    for b in range(B):
        m = frame(means, means_fs, b, 3).reshape(N, 3)
        q = frame(quats, quats_fs, b, 4).reshape(N, 4)
        s = frame(scales, scales_fs, b, 3).reshape(N, 3)
        o = frame(opacities, opacities_fs, b, 1)
        c = frame(colors, colors_fs, b, Kb * 3).reshape((N, 3) if deg < 0 else (N, Kb, 3))
        V, K = viewmats.reshape(B, 4, 4)[b], Ks.reshape(B, 3, 3)[b]
        m2, con, dep, rad = ref.project(m, q, s, V, K, W, H)
        rects = ref.tile_bounds(m2, rad, W, H)
        count = np.where(rad > 0, (rects[:, 2] - rects[:, 0]) * (rects[:, 3] - rects[:, 1]), 0)
        sl = slice(b * N, (b + 1) * N)
        means2d.reshape(B * N, 2)[sl] = m2
        conics.reshape(B * N, 3)[sl] = con
        depths.reshape(B * N)[sl] = dep
        radii.reshape(B * N)[sl] = np.where(count > 0, rad, 0)
        rgbs.reshape(B * N, 3)[sl] = np.where((count > 0)[:, None], ref.colors_for(m, c, V), 0)
        opac.reshape(B * N)[sl] = o
        tile_rects.reshape(B * N, 4)[sl] = rects
        tiles_touched.reshape(B * N)[sl] = count


def _emu_isect_keys(grid, block, *, B, N, tiles_x, num_tiles, depths, tile_rects, tiles_touched, cum_tiles,
                    isect_keys, isect_ids):  # fmt: skip
    assert grid[0] * block[0] >= B * N
    keys, ids = _flat(isect_keys), _flat(isect_ids)
    rects = tile_rects.reshape(-1, 4)
    for g in range(int(B) * int(N)):
        count = int(tiles_touched.reshape(-1)[g])
        if count <= 0:
            continue
        cur = int(cum_tiles.reshape(-1)[g]) - count
        depth_bits = int(depths.reshape(-1)[g : g + 1].view(np.uint32)[0])
        b = g // int(N)
        x0, y0, x1, y1 = (int(v) for v in rects[g])
        for ty in range(y0, y1):
            for tx in range(x0, x1):
                tile = b * int(num_tiles) + ty * int(tiles_x) + tx
                keys[cur] = np.uint64((tile << 32) | depth_bits)
                ids[cur] = g
                cur += 1


def _emu_tile_ranges(grid, block, *, n_isects, num_frame_tiles, sorted_keys, tile_ranges):
    assert grid[0] * block[0] >= num_frame_tiles
    keys = _flat(sorted_keys)[: int(n_isects)].astype(np.uint64) if int(n_isects) else np.zeros(0, np.uint64)
    t = np.arange(int(num_frame_tiles), dtype=np.uint64)
    r = tile_ranges.reshape(-1, 2)
    r[:, 0] = np.searchsorted(keys, t << np.uint64(32), side="left")
    r[:, 1] = np.searchsorted(keys, (t + np.uint64(1)) << np.uint64(32), side="left")


def _emu_blend(grid, block, *, width, height, tiles_x, num_tiles, tile_ranges, isect_ids, means2d, conics, opac,
               rgbs, background, has_bg, bg_fs, bg_ps, out):  # fmt: skip
    W, H, TX = int(width), int(height), int(tiles_x)
    assert tuple(block) == (16, 16, 1) and grid[0] == TX and grid[1] == (H + 15) // 16
    B = int(grid[2])
    ranges, ids = tile_ranges.reshape(-1, 2), _flat(isect_ids)
    m2, con, op, rgb = means2d.reshape(-1, 2), conics.reshape(-1, 3), _flat(opac), rgbs.reshape(-1, 3)
    img = out.reshape(B, H, W, 3)
    f = np.float32
    for b in range(B):
        for tile in range(int(num_tiles)):
            x0, y0 = (tile % TX) * 16, (tile // TX) * 16
            x1, y1 = min(x0 + 16, W), min(y0 + 16, H)
            px = np.arange(x0, x1, dtype=f)[None, :] + f(0.5)
            py = np.arange(y0, y1, dtype=f)[:, None] + f(0.5)
            T = np.ones((y1 - y0, x1 - x0), f)
            C = np.zeros((y1 - y0, x1 - x0, 3), f)
            done = np.zeros(T.shape, bool)
            start, end = ranges[b * int(num_tiles) + tile]
            for i in range(int(start), int(end)):
                g = int(ids[i])
                dx, dy = m2[g, 0] - px, m2[g, 1] - py
                a, bb, c = con[g]
                sigma = f(0.5) * (a * dx * dx + c * dy * dy) + bb * dx * dy
                with np.errstate(over="ignore"):
                    alpha = np.minimum(f(0.99), op[g] * np.exp(-sigma))
                valid = ~((sigma < 0) | (alpha < f(1.0 / 255.0))) & ~done
                next_T = T * (f(1) - alpha)
                stop = valid & (next_T <= f(1e-4))
                add = valid & ~stop
                C += rgb[g][None, None, :] * np.where(add, alpha * T, f(0))[..., None]
                T = np.where(add, next_T, T)
                done |= stop
            bg = np.zeros((y1 - y0, x1 - x0, 3), f)
            if int(has_bg):
                flat_bg = _flat(background)
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        at = b * int(bg_fs) + (yy * W + xx) * int(bg_ps)
                        bg[yy - y0, xx - x0] = flat_bg[at : at + 3]
            img[b, y0:y1, x0:x1] = C + T[..., None] * bg


_EMU_FUNCS = {
    "gt_raster_project": _emu_project,
    "gt_raster_isect_keys": _emu_isect_keys,
    "gt_raster_tile_ranges": _emu_tile_ranges,
    "gt_raster_blend": _emu_blend,
}


class _EmuKernel:
    def __init__(self, name, params):
        self.name, self.params, self.calls = name, params, 0

    def __call__(self, grid, block, args, stream=None, shared_mem=0):
        assert len(args) == len(self.params), f"{self.name}: {len(args)} args for {len(self.params)} parameters"
        bound = {}
        for (ctype, is_ptr, pname), a in zip(self.params, args):
            if is_ptr:
                assert isinstance(a, np.ndarray), f"{self.name}({pname}): expected an array, got {type(a)}"
                assert a.dtype == _PTR_DTYPES[ctype], f"{self.name}({pname}): {ctype}* given {a.dtype}"
                assert a.flags.c_contiguous, f"{self.name}({pname}): not C-contiguous"
            else:
                assert type(a) is _SCALAR_TYPES[ctype], f"{self.name}({pname}): {ctype} given {type(a).__name__}"
            bound[pname] = a
        assert len(grid) == 3 and len(block) == 3 and all(int(v) >= 1 for v in grid + block)
        self.calls += 1
        _EMU_FUNCS[self.name](grid, block, **bound)


@pytest.fixture
def emulated(monkeypatch):
    """_cuda with its CuPy and its compiled module replaced by numpy and the emulated kernels."""
    if not HEADER.exists():
        pytest.skip("plugins/raster/gt_raster_math.h is not there yet")
    params = parse_kernel_params(CU.read_text())
    assert set(params) == set(_cuda.KERNEL_NAMES)
    kernels = {name: _EmuKernel(name, p) for name, p in params.items()}
    monkeypatch.setattr(_cuda, "_require_cupy", lambda: _EmuCupy)
    monkeypatch.setattr(_cuda, "get_module", lambda fast_math=False: kernels)
    monkeypatch.setattr(_cuda, "_DEFAULT", {})
    return kernels


def _scene(n, W, H, deg, seed, bg):
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from raster_scenes import random_scene
    finally:
        sys.path.pop(0)
    return random_scene(n=n, width=W, height=H, sh_degree=deg, seed=seed, background=bg)


@pytest.mark.parametrize(
    "n,W,H,deg,bg",
    [(0, 20, 12, None, "color"), (1, 16, 16, None, "none"), (40, 37, 21, None, "image"), (40, 33, 18, 2, "color"),
     (60, 24, 40, 3, "none"), (30, 18, 17, 0, "image"), (30, 20, 20, 1, "color")],
)  # fmt: skip
def test_emulated_single_frame_matches_reference(emulated, n, W, H, deg, bg):
    scene = _scene(n, W, H, deg, seed=n + W, bg=bg)
    want = ref.rasterize_reference(**scene)
    got = _cuda.rasterize_cuda(**scene)
    assert got.shape == (H, W, 3) and got.dtype == np.float32
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert emulated["gt_raster_blend"].calls == 1


def test_emulated_batch_with_per_frame_and_shared_attributes(emulated):
    B, W, H = 3, 35, 19
    scenes = [_scene(30, W, H, 2, seed=100 + b, bg="image") for b in range(B)]
    r = _cuda.CudaRasterizer()
    stack = {k: np.stack([s[k] for s in scenes]) for k in ("means", "quats", "scales", "opacities", "colors")}
    views, Ks = np.stack([s["viewmat"] for s in scenes]), np.stack([s["K"] for s in scenes])
    # per-frame everything, per-frame background images
    got = r.render(**stack, viewmats=views, Ks=Ks, width=W, height=H,
                   background=np.stack([s["background"] for s in scenes])).copy()  # fmt: skip
    for b, s in enumerate(scenes):
        np.testing.assert_allclose(got[b], ref.rasterize_reference(**s), atol=1e-5, rtol=0)
    # shared Gaussians (frame 0's) seen by every camera, one colour background for all
    base = scenes[0]
    shared = {k: base[k] for k in ("means", "quats", "scales", "opacities", "colors")}
    color = np.array([0.1, 0.5, 0.9], np.float32)
    got = r.render(**shared, viewmats=views, Ks=Ks, width=W, height=H, background=color).copy()
    for b, s in enumerate(scenes):
        want = ref.rasterize_reference(**shared, viewmat=s["viewmat"], K=s["K"], width=W, height=H, background=color)
        np.testing.assert_allclose(got[b], want, atol=1e-5, rtol=0)
    # mixed: per-frame means, shared rest; per-frame colour backgrounds [B, 3]
    mixed = dict(shared, means=stack["means"])
    bgs = np.random.default_rng(0).uniform(size=(B, 3)).astype(np.float32)
    got = r.render(**mixed, viewmats=views, Ks=Ks, width=W, height=H, background=bgs).copy()
    for b, s in enumerate(scenes):
        want = ref.rasterize_reference(**dict(shared, means=stack["means"][b]), viewmat=s["viewmat"], K=s["K"],
                                       width=W, height=H, background=bgs[b])  # fmt: skip
        np.testing.assert_allclose(got[b], want, atol=1e-5, rtol=0)


def test_emulated_all_culled_gives_background(emulated):
    scene = _scene(20, 24, 16, None, seed=3, bg="color")
    scene["means"] = scene["means"] * 0 + np.array([0, 0, -100], np.float32)  # behind every camera below
    scene["viewmat"] = np.eye(4, dtype=np.float32)
    got = _cuda.rasterize_cuda(**scene)
    np.testing.assert_array_equal(got, np.broadcast_to(scene["background"], got.shape))


def test_emulated_render_checks_shapes(emulated):
    r = _cuda.CudaRasterizer()
    scene = _scene(5, 16, 16, None, seed=0, bg="none")
    with pytest.raises(ValueError, match="quats"):
        r.render(scene["means"], scene["quats"][:, :3], scene["scales"], scene["opacities"], scene["colors"],
                 scene["viewmat"], scene["K"], 16, 16)  # fmt: skip
    with pytest.raises(ValueError, match="background"):
        r.render(scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"],
                 scene["viewmat"], scene["K"], 16, 16, background=np.zeros((4, 4, 3), np.float32))  # fmt: skip
