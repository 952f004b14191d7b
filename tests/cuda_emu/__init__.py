"""raster_cuda.cu's kernels on CPU threads (cuda_emu.h), driven by CudaRasterizer's own host code.

    r = emulated_rasterizer(tmp_dir)          # compiles the kernels with g++ (about 2 s)
    imgs = r.render(means, quats, ...)        # numpy [B, H, W, 3]

This checks the kernels' logic (indexing, tile keys and ranges, shared-memory batches, barriers,
early stop, batching and strides) where there is no GPU; the `gpu`-marked tests check the real
device (NVRTC, __expf, speed).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RASTER_SRC = ROOT / "plugins" / "raster"


def build(out_dir: Path) -> Path:
    """Compile tests/cuda_emu/raster_cuda_emu.cpp (+ plugins/raster/raster_cuda.cu) -> shared library."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise FileNotFoundError("no C++ compiler (g++) on PATH")
    lib = Path(out_dir) / "raster_cuda_emu.so"
    cmd = [cxx, "-std=c++17", "-O2", "-pthread", "-shared", "-fPIC", "-Wall", "-ffp-contract=off",
           "-I", str(RASTER_SRC), str(HERE / "raster_cuda_emu.cpp"), "-o", str(lib)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return lib


class _Stream:
    """Stands in for a cupy Stream: a no-op context, events and waits (everything runs synchronously)."""

    ptr = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def record(self):
        return None

    def wait_event(self, event):
        return None

    def synchronize(self):
        return None


def numpy_as_cupy():
    """numpy under cupy's names, plus the stream calls CudaRasterizer.render makes."""
    ns = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    ns.cuda = types.SimpleNamespace(get_current_stream=_Stream)
    return ns


class _Kernel:
    """One emulated kernel, called like cupy.RawKernel: kernel(grid, block, args, stream=None)."""

    def __init__(self, lib, name: str):
        self._lib, self._name = lib, name.encode()

    def __call__(self, grid, block, args, stream=None):
        keep, ptrs = [], []
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous, f"{self._name!r}: argument arrays must be C-contiguous"
                v = ctypes.c_void_p(a.ctypes.data)
            elif isinstance(a, np.int32):
                v = ctypes.c_int32(int(a))
            elif isinstance(a, np.int64):
                v = ctypes.c_int64(int(a))
            else:
                raise TypeError(f"{self._name!r}: unsupported kernel argument {type(a).__name__}")
            keep.append(v)
            ptrs.append(ctypes.cast(ctypes.pointer(v), ctypes.c_void_p))
        dims = lambda d: (ctypes.c_uint * 3)(*(tuple(d) + (1, 1, 1))[:3])  # noqa: E731
        argv = (ctypes.c_void_p * max(1, len(ptrs)))(*ptrs)
        rc = self._lib.gt_emu_launch(self._name, dims(grid), dims(block), argv)
        assert rc == 0, f"unknown kernel {self._name!r}"


class _Kernels(dict):
    def __init__(self, lib_path: Path):
        lib = ctypes.CDLL(str(lib_path))
        lib.gt_emu_launch.restype = ctypes.c_int
        lib.gt_emu_launch.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        from gt_runtime.raster._cuda import KERNEL_NAMES

        super().__init__({name: _Kernel(lib, name) for name in KERNEL_NAMES})


def emulated_rasterizer(lib_path: Path):
    """A CudaRasterizer whose arrays are numpy and whose kernels run on CPU threads."""
    from gt_runtime.raster._cuda import CudaRasterizer

    return CudaRasterizer.with_backend(numpy_as_cupy(), _Kernels(lib_path), _Stream())
