"""plugins/deform/deform_cuda.cu's kernels on CPU threads (cuda_emu.h), called like CuPy's RawKernel.

    kernels = deform.Kernels(deform.build(tmp_dir))    # g++, a few seconds
    monkeypatch.setattr(fused_cuda, "get_module", lambda: fake_cupy.DeviceKernels(kernels))

Each launch is checked against the parameter lists parsed from the .cu (tests/cuda_emu._Kernel).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

from tests.cuda_emu import HERE, ROOT, _Kernel, parse_kernel_params

DEFORM_SRC = ROOT / "plugins" / "deform"


def build(out_dir: Path) -> Path:
    """Compile tests/cuda_emu/deform_cuda_emu.cpp (+ plugins/deform/deform_cuda.cu) -> shared library."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise FileNotFoundError("no C++ compiler (g++) on PATH")
    lib = Path(out_dir) / "deform_cuda_emu.so"
    # -ffp-contract=off: only the kernel's explicit fmaf are fused, as nvcc's device code with its FMAs kept
    cmd = [cxx, "-std=c++17", "-O2", "-pthread", "-shared", "-fPIC", "-Wall", "-Wno-unknown-pragmas", "-ffp-contract=off",
           "-I", str(DEFORM_SRC), str(HERE / "deform_cuda_emu.cpp"), "-o", str(lib)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return lib


class Kernels(dict):
    """{name: emulated kernel} for fused_cuda.KERNEL_NAMES (each counts its launches in `.calls`)."""

    def __init__(self, lib_path: Path):
        from gt_runtime.engines.fused_cuda import KERNEL_NAMES

        lib = ctypes.CDLL(str(lib_path))
        lib.gt_emu_launch.restype = ctypes.c_int
        lib.gt_emu_launch.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        params = parse_kernel_params((DEFORM_SRC / "deform_cuda.cu").read_text())
        assert set(params) == set(KERNEL_NAMES), f"kernels in deform_cuda.cu {sorted(params)} != {KERNEL_NAMES}"
        super().__init__({name: _Kernel(lib, name, params[name]) for name in KERNEL_NAMES})
