"""The cuda-fused engine (plugins/deform/deform_cuda.cu, gt_runtime/engines/fused_cuda.py).

- nvcc compiles the .cu to PTX for sm_80 and sm_90 with both kernels (skips without nvcc);
- under the CUDA emulation (the .cu on CPU threads, tests/cuda_emu; CuPy -> fake_cupy) the runner's
  offsets and its fused activations match `deform_plain` / `apply_offsets` within 1e-4 per output,
  B = 1 and 3, and a Player with engine cuda-fused + raster cuda gives the CPU path's frames, with
  no host copy but the final frames;
- the same parity on a real GPU (`gpu` mark).
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from gt_runtime.bundle.synthetic import random_gaussians, random_weights
from gt_runtime.contract import OFFSET_NAMES
from gt_runtime.engines import fused_cuda
from gt_runtime.model.reference import apply_offsets, deform_plain
from tests.cuda_emu import fake_cupy

CU = fused_cuda.source_path()
N = 1003  # not a multiple of the 128-thread block: the last block is partial
TOL = 1e-4


@pytest.fixture(scope="module")
def net():
    """Random weights (2 layers, sh degree 2), queries [N, 64], tokens [3, 4, 64], canonical Gaussians."""
    w = random_weights(2, 2, seed=5)
    g = random_gaussians(N, 2, seed=5)
    rng = np.random.default_rng(5)
    tokens = rng.standard_normal((3, 4, 64)).astype(np.float32)
    return w, g, tokens


def check_offsets(got: dict, ref: dict) -> None:
    for k in OFFSET_NAMES:
        assert got[k].shape == ref[k].shape, k
        err = float(np.abs(np.asarray(got[k]) - ref[k]).max())
        assert err <= TOL, f"{k}: max abs {err:.2e} > {TOL}"


# -- compiles ----------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH (CUDA toolkit not installed)")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_ptx_defines_both_kernels(arch, tmp_path):
    ptx = tmp_path / f"deform_cuda_{arch}.ptx"
    cmd = ["nvcc", "-ptx", f"-arch={arch}", "-std=c++17", str(CU), "-o", str(ptx)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr}"
    entries = set(re.findall(r"^\s*\.(?:visible\s+)?\.entry\s+(\w+)\s*\(", ptx.read_text(), re.MULTILINE))
    assert entries == set(fused_cuda.KERNEL_NAMES)


@pytest.mark.parametrize("arch", ["80", "90"])
def test_nvrtc_compiles_runtime_source(arch):
    """The text and options fused_cuda hands to CuPy's RawModule compile with NVRTC (no GPU needed)."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # no cupy, no NVRTC binding, or libnvrtc does not load
        pytest.skip(f"CuPy's NVRTC is not usable here ({exc.__class__.__name__}: {exc})")
    prog = nvrtc.createProgram(fused_cuda.load_source(), fused_cuda.CUDA_SOURCE, [], [])
    try:
        nvrtc.compileProgram(prog, ["--std=c++17", f"-arch=compute_{arch}", "-ftz=true"])  # CuPy adds the last two
    except Exception as exc:
        pytest.fail(f"NVRTC compute_{arch}: {exc}\n{nvrtc.getProgramLog(prog)}")
    finally:
        nvrtc.destroyProgram(prog)


def test_packed_layout_matches_the_source(net):
    """pack_weights' size is what the .cu's layout constants say (the kernel reads past nothing)."""
    w, _, _ = net
    packed = fused_cuda.pack_weights(w, 2, 2)
    layer = fused_cuda._define("GT_LAYER_FLOATS")
    assert layer == 4 * 64 * 64 + 8 * 64 + 128 * 129 + 64
    assert packed.size == 2 * layer + sum(128 * (64 + m + 1) + m for m in (3, 4, 3, 27, 1))
    # first unit record of layer 0's ffn: ffn1 row 0, ffn2 column 0, ffn1 bias 0
    off = fused_cuda._define("GT_OFF_FFN")
    rec = packed[off:off + 129]
    np.testing.assert_array_equal(rec[:64], w["deform.layers.0.ffn1.weight"][0])
    np.testing.assert_array_equal(rec[64:128], w["deform.layers.0.ffn2.weight"][:, 0])
    assert rec[128] == w["deform.layers.0.ffn1.bias"][0]


# -- emulated ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def deform_kernels(tmp_path_factory):
    """deform_cuda.cu's kernels compiled for CPU threads, built once."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler to build the CPU emulation of the CUDA kernels")
    from tests.cuda_emu import deform

    return deform.Kernels(deform.build(tmp_path_factory.mktemp("deform_cuda_emu")))


@pytest.fixture
def fused_gpu(gpu, monkeypatch, deform_kernels):
    """The fake CuPy of `gpu` plus the emulated deform kernels in place of NVRTC's."""
    kernels = fake_cupy.DeviceKernels(deform_kernels)
    monkeypatch.setattr(fused_cuda, "get_module", lambda: kernels)
    return gpu


@pytest.mark.parametrize("b", [1, 3])
def test_emulated_offsets_match_reference(fused_gpu, net, b):
    w, g, tokens = net
    ref = deform_plain(tokens[:b], g["queries"], w, 2, 2)
    with fused_cuda.FusedCudaDeformRunner(w, g["queries"], 2, 2) as r:
        tok = fused_gpu.cupy.asarray(tokens[:b])
        fused_gpu.log.clear()
        out = r.infer({"tokens": tok})
        assert all(isinstance(v, fused_gpu.cupy.ndarray) for v in out.values())
        assert not fused_gpu.log.transfers, fused_gpu.log.transfers  # device tokens in, device offsets out
    check_offsets(out, ref)


def test_emulated_other_queries_and_host_tokens(fused_gpu, net):
    """A feed with its own queries (uploaded once per call) and numpy tokens (one upload)."""
    w, g, tokens = net
    q = np.ascontiguousarray(g["queries"][:200] * 0.5)
    ref = deform_plain(tokens[:2], q, w, 2, 2)
    with fused_cuda.FusedCudaDeformRunner(w, g["queries"], 2, 2) as r:
        check_offsets(r.infer({"tokens": tokens[:2], "queries": q}), ref)


def test_emulated_activated_matches_apply_offsets(fused_gpu, net):
    w, g, tokens = net
    cp = fused_gpu.cupy
    ref = apply_offsets(g, deform_plain(tokens, g["queries"], w, 2, 2))
    canon = {k: cp.asarray(g[k]) for k in ("means", "quats", "log_scales", "opacity_logits", "sh")}
    with fused_cuda.FusedCudaDeformRunner(w, g["queries"], 2, 2) as r:
        out = r.activated(cp.asarray(tokens), canon)
        fused_gpu.log.clear()
        again = r.activated(cp.asarray(tokens[::-1].copy()), canon, out=out)  # into the same buffers
        assert all(again[k] is out[k] for k in out) and len(fused_gpu.log.h2d) == 1  # the tokens only
    ref_rev = apply_offsets(g, deform_plain(tokens[::-1], g["queries"], w, 2, 2))
    for key in ("means", "quats", "scales", "opacities", "sh"):
        assert out[key].shape == ref[key].shape, key
        err = float(np.abs(np.asarray(again[key]) - ref_rev[key]).max())
        assert err <= TOL, f"{key}: max abs {err:.2e} > {TOL}"


def test_emulated_player_matches_cpu_path(fused_gpu, random_bundle, deform_kernels, emulated_kernels):
    from gt_runtime.playback.player import Player
    from tests.support.frames import CPU_RASTER, ODD_SIZE, parity, play
    from tests.support.speech import speech

    w_, h_ = ODD_SIZE
    bundle = random_bundle(n_gaussians=600, sh_degree=2, num_layers=2, width=w_, height=h_, n_track_frames=6, seed=3,
                           onnx=False)
    pcm = speech(0.4, seed=1)
    ref = play(Player(bundle, engine="array", raster=CPU_RASTER), pcm)  # the CPU path (numpy only)
    p = Player(bundle, engine="cuda-fused", raster="cuda")
    assert p.describe()["engine"] == "cuda-fused-fp32"
    fused_gpu.log.clear()
    calls = deform_kernels["gt_deform_fused"].calls
    got = play(p, pcm, batch=3)
    worst, _, _ = parity(got, ref)
    assert worst <= 1
    assert deform_kernels["gt_deform_fused"].calls - calls == -(-len(got) // 3)
    # device -> host: only each batch's uint8 frames (and the rasterizer's 8-byte sort size)
    assert {(t.dtype, t.where.split(":")[0]) for t in fused_gpu.log.d2h} == {("uint8", "_cuda.py")}, fused_gpu.log.d2h
    assert all(t.nbytes == 8 for t in fused_gpu.log.scalar_reads), fused_gpu.log.scalar_reads
    # host -> device: per-frame inputs only, never Gaussians or weights
    assert not [t for t in fused_gpu.log.h2d if 600 in t.shape or t.nbytes > 64 * 1024], fused_gpu.log.h2d
    assert "fused_cuda.py" not in {t.where.split(":")[0] for t in fused_gpu.log.h2d}


def test_select_needs_a_gpu(random_bundle):
    from gt_runtime.engines import resolve_engine_name
    from gt_runtime.errors import InputError

    bundle = random_bundle(n_gaussians=100, sh_degree=1, num_layers=2, width=32, height=32, n_track_frames=2, seed=1,
                           onnx=False)
    with pytest.raises(InputError, match="cuda-fused"):
        resolve_engine_name(bundle, "cuda-fused", gpu=False)
    assert resolve_engine_name(bundle, "cuda-fused", gpu=True) == "cuda-fused-fp32"


# -- real GPU ----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("b", [1, 3])
def test_gpu_offsets_and_activations_match_reference(net, b):
    if not __import__("gt_runtime.raster._cuda", fromlist=["x"]).cuda_available():
        pytest.skip("no CUDA device")
    import cupy as cp

    w, g, tokens = net
    ref = deform_plain(tokens[:b], g["queries"], w, 2, 2)
    canon = {k: cp.asarray(g[k]) for k in ("means", "quats", "log_scales", "opacity_logits", "sh")}
    with fused_cuda.FusedCudaDeformRunner(w, g["queries"], 2, 2) as r:
        out = r.infer({"tokens": cp.asarray(tokens[:b])})
        check_offsets({k: cp.asnumpy(v) for k, v in out.items()}, ref)
        act = r.activated(cp.asarray(tokens[:b]), canon)
    ref_act = apply_offsets(g, ref)
    for key, v in act.items():
        err = float(np.abs(cp.asnumpy(v) - ref_act[key]).max())
        assert err <= TOL, f"{key}: max abs {err:.2e} > {TOL}"


@pytest.mark.gpu
def test_gpu_player_matches_array_cupy(random_bundle):
    """Player on a real GPU: cuda-fused + raster cuda gives array-cupy + raster cuda's frames within 1 step."""
    if not __import__("gt_runtime.raster._cuda", fromlist=["x"]).cuda_available():
        pytest.skip("no CUDA device")
    from gt_runtime.playback.player import Player
    from tests.support.frames import play
    from tests.support.speech import speech

    bundle = random_bundle(n_gaussians=5000, sh_degree=2, num_layers=2, width=96, height=64, n_track_frames=6, seed=3,
                           onnx=False)
    pcm = speech(0.4, seed=1)
    ref = play(Player(bundle, engine="array-cupy", raster="cuda"), pcm, batch=3)
    got = play(Player(bundle, engine="cuda-fused", raster="cuda"), pcm, batch=3)
    assert int(np.abs(got.astype(np.int16) - ref).max()) <= 1
