"""gt's C++ extensions with their AVX-512 and AMX kernels emulated, for CPUs without them.

    ext_dir = build(tmp_dir)     # g++, about 25 s on 2 cores: _raster_cpu and _deform_cpu in ext_dir
    GT_TEST_EXT_DIR=ext_dir pytest tests/runtime/test_raster_cpu_isa.py ...   # tests/conftest.py loads them

The plugins' *_avx512.cpp are compiled with -mavx2 instead of -mavx512*, and simde_avx512.h
(force-included) maps every _mm512_* intrinsic to SIMDe's implementation over AVX2; the deform
kernel's *_amx.cpp gets that and amx_emu.h (the tile intrinsics on per-thread memory). With
GT_ISA_EMULATE_AVX512 (plugins/common/gt_cpu_isa.h) the extensions list and pick the amx / avx512
variants on any AVX2 CPU. The kernels' own source, layouts, lane order, masks, VNNI operand order and
saturation, tile shapes are what run; only each intrinsic's implementation is emulated. So the parity
tests check those kernels against the reference on every CI machine, not only where the CPU has them.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SHIM = HERE / "simde_avx512.h"
AMX_SHIM = HERE / "amx_emu.h"
SIMDE_HEADER = Path("/usr/include/simde/x86/avx512.h")
EXTENSIONS = {"_raster_cpu": ROOT / "plugins" / "raster", "_deform_cpu": ROOT / "plugins" / "deform"}

# setup.py's flags (_compile_args) with the portable default -march
BASE_FLAGS = ["-O3", "-std=c++17", "-fPIC", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
              "-DGT_ISA_EMULATE_AVX512", "-Wno-psabi"]  # fmt: skip
AVX2_FLAGS = ["-mavx2", "-mfma"]


def missing() -> str | None:
    """Why the emulated build cannot be made here, or None."""
    if shutil.which("g++") is None:
        return "no g++ on PATH"
    if not SIMDE_HEADER.exists():
        return "SIMDe is not installed (apt-get install libsimde-dev)"
    try:
        import pybind11  # noqa: F401
    except ImportError:
        return "pybind11 is not installed (pip install pybind11)"
    return None


def _flags(source: Path) -> list[str]:
    if source.name.endswith("_amx.cpp"):
        return AVX2_FLAGS + ["-include", str(SHIM), "-include", str(AMX_SHIM)]
    if source.name.endswith("_avx512.cpp"):
        return AVX2_FLAGS + ["-include", str(SHIM)]
    if source.name.endswith("_avx2.cpp"):
        return AVX2_FLAGS
    return []


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-4000:]}")


def build(out_dir: Path, jobs: int = 2) -> Path:
    """Compile both extensions (their avx512 and amx variants emulated) into out_dir -> out_dir."""
    import pybind11

    out_dir = Path(out_dir)
    includes = ["-I", pybind11.get_include(), "-I", sysconfig.get_paths()["include"]]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    compiles, links = [], []
    for name, src_dir in EXTENSIONS.items():
        objects = []
        for src in sorted(src_dir.glob("*.cpp")):
            obj = out_dir / f"{name}.{src.stem}.o"
            compiles.append(["g++", *BASE_FLAGS, *_flags(src), *includes, "-I", str(src_dir), "-c", str(src), "-o", str(obj)])
            objects.append(str(obj))
        links.append(["g++", "-shared", "-fopenmp", *objects, "-o", str(out_dir / f"{name}{suffix}")])
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(_run, compiles))
    for cmd in links:
        _run(cmd)
    return out_dir
