"""The CUDA rasterizer's sources compile without a GPU (the "null backend" check).

- nvcc -ptx for sm_80 and sm_90 (when nvcc is on PATH): every kernel that
  gt_runtime/raster/_cuda.py looks up is defined, and no kernel is left unregistered;
- NVRTC on the exact text the runtime compiles (when CuPy's NVRTC binding and
  libnvrtc load; no device needed);
- gt_raster_math.h is plain C++ on the host path (g++ -fsyntax-only);
- the Python side: source assembly, cheap availability check, one-line errors,
  and no cupy / torch import at module import.
The kernels themselves run on CPU threads in test_raster_cuda_emulated.py.
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
