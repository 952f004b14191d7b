"""Native parts of the gt package.

`pip install .` compiles the C++ CPU rasterizer (plugins/raster) into
`gt_runtime._raster_cpu`, the fused deformation network (plugins/deform) into
`gt_runtime._deform_cpu`, and ships the CUDA sources beside gt_runtime, where the
runtime compiles them with NVRTC on first use. The Python packages import
without the extension; only the `cpu` raster backend needs it.
"""
import platform
import shutil
import sys
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
RASTER_SRC = ROOT / "plugins" / "raster"
DEFORM_SRC = ROOT / "plugins" / "deform"
# CUDA sources travel inside the package so that installed wheels can compile them.
CUDA_SOURCES = ("*.h", "*.cuh", "*.cu")


def _contract():
    """gt_runtime/contract.py, loaded by path: the build environment has no gt_runtime installed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_gt_contract", ROOT / "gt_runtime" / "contract.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _compile_args():
    # -ffp-contract=off: no FMA contraction, so the CPU kernels round like the numpy reference.
    # -fno-trapping-math: the projection loop may compute both sides of a branch (vectorised); no
    # value changes, only FP exception flags, which nothing reads.
    args = ["-O3", "-std=c++17", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
    if sys.platform.startswith("linux"):
        args.append("-fopenmp")
    # GT_MARCH=native tunes for the build machine; the default stays portable x86-64-v2.
    march = _contract().MARCH.get()
    if march:
        args.append(f"-march={march}")
    return args


# Per-file instruction sets: raster_cpu_<isa>.cpp holds one variant of the blend kernels and is
# compiled alone with these flags; the extension picks the best one the CPU runs at import time
# (raster_cpu.cpp), so the default build stays portable. Elsewhere (non-x86, MSVC) the files build
# without the flags and provide nothing.
ISA_FLAGS = {
    "_amx.cpp": ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni",
                 "-mamx-tile", "-mamx-int8"],
    "_avx512.cpp": ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl"],
    "_avx2.cpp": ["-mavx2", "-mfma"],
}
# The fused deformation kernels' AVX-512 variant also needs VNNI (its runtime check asks for it).
ISA_FLAGS_EXTRA = {"deform_cpu_avx512.cpp": ["-mavx512vnni"]}


def _isa_flags(source):
    if not (sys.platform.startswith(("linux", "darwin")) and platform.machine().lower() in ("x86_64", "amd64")):
        return None
    for suffix, flags in ISA_FLAGS.items():
        if source.endswith(suffix):
            return flags + ISA_FLAGS_EXTRA.get(Path(source).name, [])
    return None


class BuildExtPerFileFlags(build_ext):
    """build_ext that compiles the ISA_FLAGS sources separately, with their extra flags."""

    def build_extension(self, ext):
        special = [s for s in ext.sources if _isa_flags(s)]
        if special:
            # rebuild when any source or header changes (they leave ext.sources below)
            src_dir = ROOT / Path(special[0]).parent
            headers = list(src_dir.glob("*.h")) + list((ROOT / "plugins" / "common").glob("*.h"))
            ext.depends = sorted(set(ext.depends) | set(special) | {str(p.relative_to(ROOT)) for p in headers})
            ext.sources = [s for s in ext.sources if s not in special]
            objects = []
            for src in special:
                # a compiler without one of the flags (e.g. -mamx-int8 before GCC 11) builds the file
                # without them: it then provides only a null getter, and the variant is not offered
                flags = _isa_flags(src)
                if not all(self._has_flag(f) for f in flags):
                    flags = []
                objects += self.compiler.compile(
                    [src], output_dir=self.build_temp, macros=ext.define_macros, include_dirs=ext.include_dirs,
                    debug=self.debug, extra_postargs=list(ext.extra_compile_args) + flags, depends=ext.depends)
            ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)

    def _has_flag(self, flag):
        from pybind11.setup_helpers import has_flag

        cache = self.__dict__.setdefault("_flag_cache", {})
        if flag not in cache:
            cache[flag] = has_flag(self.compiler, flag)
        return cache[flag]


class BuildPyWithKernels(build_py):
    def run(self):
        super().run()
        dst = Path(self.build_lib) / "gt_runtime" / "raster" / "csrc"
        dst.mkdir(parents=True, exist_ok=True)
        for pattern in CUDA_SOURCES:
            for f in RASTER_SRC.glob(pattern):
                shutil.copy2(f, dst / f.name)
        # the cuda-fused deformation kernel (gt_runtime/engines/fused_cuda.py compiles it with NVRTC)
        dst = Path(self.build_lib) / "gt_runtime" / "engines" / "csrc"
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "plugins" / "deform" / "deform_cuda.cu", dst / "deform_cuda.cu")


ext_modules = [
    Pybind11Extension(
        "gt_runtime._raster_cpu",
        sorted(str(p.relative_to(ROOT)) for p in RASTER_SRC.glob("*.cpp")),
        include_dirs=[str(RASTER_SRC.relative_to(ROOT))],
        extra_compile_args=_compile_args(),
        extra_link_args=["-fopenmp"] if sys.platform.startswith("linux") else [],
        cxx_std=17,
    ),
    Pybind11Extension(
        "gt_runtime._deform_cpu",
        sorted(str(p.relative_to(ROOT)) for p in DEFORM_SRC.glob("*.cpp")),
        include_dirs=[str(DEFORM_SRC.relative_to(ROOT))],
        extra_compile_args=_compile_args(),
        extra_link_args=["-fopenmp"] if sys.platform.startswith("linux") else [],
        cxx_std=17,
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExtPerFileFlags, "build_py": BuildPyWithKernels})
