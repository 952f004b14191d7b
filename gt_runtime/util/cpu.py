"""This machine's CPU (name, usable cores) and the thread pools of the native libraries already loaded in this process (best effort, no new deps).

On a 2-core machine the deformation (BLAS or ONNX Runtime) and the C++ rasterizer
(OpenMP) must not both start a pool per core while they overlap: spinning pool threads
then fight for the cores and both stages slow down several times. The pipeline gives
each stage its share: `set_blas_threads` (OpenBLAS of numpy, process-wide) for the array
engine, and `set_omp_threads` (libgomp; applies to the calling thread's later parallel
regions) for the rasterizer. ONNX Runtime takes its count in its session options.
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def _loaded_libs(fragment: str) -> tuple[str, ...]:
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if fragment in line and "/" in line}
    except OSError:  # pragma: no cover - not Linux
        return ()
    return tuple(sorted(p for p in paths if ".so" in p))


_FNS: dict = {}


def _call(fragment: str, symbols: tuple[str, ...], n: int) -> bool:
    fn = _FNS.get(fragment)
    if fn is False:
        return False
    if fn is None:
        _loaded_libs.cache_clear()
        for path in _loaded_libs(fragment):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            fn = next((getattr(lib, s) for s in symbols if hasattr(lib, s)), None)
            if fn is not None:
                _FNS[fragment] = fn
                break
    if fn is None:
        _FNS[fragment] = False  # not loaded (yet): callers fall back to the library default
        return False
    fn(ctypes.c_int(int(n)))
    return True


def set_blas_threads(n: int) -> bool:
    """Threads of numpy's OpenBLAS (process-wide) -> True if set."""
    import numpy  # noqa: F401  (loads the BLAS)

    return _call("openblas", ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                              "openblas_set_num_threads64_", "openblas_set_num_threads"), n)


def set_omp_threads(n: int) -> bool:
    """omp_set_num_threads(n) for the calling thread's later parallel regions (libgomp loaded) -> True if set."""
    return _call("libgomp", ("omp_set_num_threads",), n)
