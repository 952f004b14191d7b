"""Shared fixtures, each built once per test session: identities, random bundles, the default bundle, the GPU emulation.

The code behind them lives in tests/support and tests/cuda_emu.
"""
import os

import pytest

os.environ.setdefault("GT_QUIET", "1")  # no progress bars in test logs
os.environ.setdefault("GT_AUTOTUNE", "0")  # --engine auto: the fixed order (tests/runtime/test_autotune.py measures)

if os.environ.get("GT_TEST_EXT_DIR"):
    # the compiled extensions come from there (tests/isa_emu: their AVX-512 kernels emulated)
    import gt_runtime

    gt_runtime.__path__.insert(0, os.environ["GT_TEST_EXT_DIR"])


@pytest.fixture(scope="session")
def tiny_identity(tmp_path_factory):
    """A 3 s, 64 px synthetic identity (read-only: copy it before changing files)."""
    from gt_train.data.synthetic import SyntheticConfig, make_synthetic_identity

    out = tmp_path_factory.mktemp("identity") / "tiny"
    return make_synthetic_identity(SyntheticConfig(out_dir=out, seconds=3.0, size=64, seed=0))


@pytest.fixture(scope="session")
def speech_identity(tmp_path_factory):
    """An 8 s, 64 px synthetic identity for the training tests (read-only)."""
    from gt_train.data.synthetic import SyntheticConfig, make_synthetic_identity

    out = tmp_path_factory.mktemp("identity") / "speech8s"
    return make_synthetic_identity(SyntheticConfig(out_dir=out, seconds=8.0, size=64, seed=0, progress=False))


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory):
    """random_bundle(**make_random_bundle keywords) -> path of that random bundle, built once per session
    (shared between modules: copy it before changing files)."""
    from tests.support.bundles import RandomBundles

    return RandomBundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def default_bundle():
    """The bundled default identity, gt_runtime/assets/default.gtb (256 px, 20k Gaussians; read-only)."""
    from gt_runtime.assets import default_bundle

    return default_bundle()


@pytest.fixture(scope="session")
def emulated_kernels(tmp_path_factory):
    """plugins/raster/raster_cuda.cu's kernels compiled for CPU threads (tests/cuda_emu), built once."""
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler to build the CPU emulation of the CUDA kernels")
    from tests.cuda_emu import _Kernels, build

    return _Kernels(build(tmp_path_factory.mktemp("cuda_emu")))


@pytest.fixture
def gpu(monkeypatch, emulated_kernels):
    """cupy / cupyx -> the numpy stand-ins, CUDA kernels -> the CPU-emulated ones; undone after the test."""
    from tests.cuda_emu import fake_cupy

    return fake_cupy.install(monkeypatch, emulated_kernels)
