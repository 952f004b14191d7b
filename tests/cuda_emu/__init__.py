"""raster_cuda.cu's kernels on CPU threads (cuda_emu.h), called like CuPy's RawKernel.

    kernels = _Kernels(build(tmp_dir))        # compiles the kernels with g++ (about 2 s)
    gpu = fake_cupy.install(monkeypatch, kernels)
    imgs = CudaRasterizer().render(...)       # its own host code, over the numpy stand-in for CuPy

This checks the kernels' logic (indexing, tile keys and ranges, shared-memory batches, barriers,
early stop, batching and strides) where there is no GPU; the `gpu`-marked tests check the real
device (NVRTC, __expf, speed).
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
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


# CuPy passes kernel arguments by position with no type check, so a swapped or mistyped argument
# would corrupt memory silently on a GPU. Every emulated launch is checked against the parameter
# list parsed from raster_cuda.cu: count, pointer dtype, scalar type.
_KERNEL_RE = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\((.*?)\)\s*\{', re.DOTALL
)
_PTR_DTYPES = {"float": np.float32, "int": np.int32, "long long": np.int64, "unsigned long long": np.uint64}
_SCALARS = {"int": (np.int32, ctypes.c_int32), "long long": (np.int64, ctypes.c_int64)}


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


class _Kernel:
    """One emulated kernel, called like cupy.RawKernel: kernel(grid, block, args, stream=None)."""

    def __init__(self, lib, name: str, params):
        self._lib, self.name, self.params, self.calls = lib, name, params, 0

    def __call__(self, grid, block, args, stream=None):
        assert len(args) == len(self.params), f"{self.name}: {len(args)} args for {len(self.params)} parameters"
        keep, ptrs = [], []
        for (ctype, is_ptr, pname), a in zip(self.params, args):
            where = f"{self.name}({pname})"
            if is_ptr:
                assert isinstance(a, np.ndarray), f"{where}: expected an array, got {type(a).__name__}"
                assert a.dtype == _PTR_DTYPES[ctype], f"{where}: {ctype}* given {a.dtype}"
                assert a.flags.c_contiguous, f"{where}: not C-contiguous"
                v = ctypes.c_void_p(a.ctypes.data)
            else:
                np_type, c_type = _SCALARS[ctype]
                assert type(a) is np_type, f"{where}: {ctype} given {type(a).__name__}"
                v = c_type(int(a))
            keep.append(v)
            ptrs.append(ctypes.cast(ctypes.pointer(v), ctypes.c_void_p))
        assert len(grid) == 3 and len(block) == 3 and all(int(d) >= 1 for d in tuple(grid) + tuple(block))
        dims = lambda d: (ctypes.c_uint * 3)(*(int(v) for v in d))  # noqa: E731
        argv = (ctypes.c_void_p * max(1, len(ptrs)))(*ptrs)
        rc = self._lib.gt_emu_launch(self.name.encode(), dims(grid), dims(block), argv)
        assert rc == 0, f"unknown kernel {self.name!r}"
        self.calls += 1


class _Kernels(dict):
    def __init__(self, lib_path: Path):
        from gt_runtime.raster._cuda import KERNEL_NAMES

        lib = ctypes.CDLL(str(lib_path))
        lib.gt_emu_launch.restype = ctypes.c_int
        lib.gt_emu_launch.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        params = parse_kernel_params((RASTER_SRC / "raster_cuda.cu").read_text())
        assert set(params) == set(KERNEL_NAMES), f"kernels in raster_cuda.cu {sorted(params)} != {KERNEL_NAMES}"
        super().__init__({name: _Kernel(lib, name, params[name]) for name in KERNEL_NAMES})
