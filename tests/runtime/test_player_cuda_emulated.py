"""The Player's GPU path (engine array-cupy, raster cuda) run whole on a CPU machine.

CuPy is replaced by tests/cuda_emu/fake_cupy.py (numpy under CuPy's host/device rules, transfers
logged) and NVRTC by raster_cuda.cu's real kernels compiled for CPU threads (tests/cuda_emu). So the
glue (pipeline.py's _render_cuda, select.py, array_engine.py on the cupy namespace, CudaRasterizer's
host code, Session batching) runs as on a GPU, and every frame is compared with the CPU path
(engine array, raster cpu). Only the final uint8 frames may come back to the host (docs/ARCHITECTURE.md section 7),
plus the rasterizer's one 8-byte read of the intersection count that sizes its sort.

The emulated blend runs 256 threads per 16x16 tile, one tile at a time: the bundles here are small.
What needs a real GPU (NVRTC, __expf, streams running asynchronously, speed) is in the gpu-marked tests.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from gt_runtime.playback.player import Player
from tests.cuda_emu import fake_cupy
from tests.support.frames import CPU_RASTER, ODD_SIZE, parity, play, stream_in_chunks
from tests.support.speech import speech

W, H = ODD_SIZE  # 3 x 2 tiles
PCM = speech(1.0)  # 25 frames: the 6-frame camera track ping-pongs
SHORT = speech(0.4, seed=1)  # 10 frames


@pytest.fixture(scope="module")
def bundle(random_bundle):
    return random_bundle(n_gaussians=600, sh_degree=2, num_layers=2, width=W, height=H, n_track_frames=6, seed=3, onnx=False)


@pytest.fixture(scope="module")
def cpu_frames(bundle):
    """The CPU path's frames (made before any fake is installed), per speech and batch."""
    p = Player(bundle, engine="array", raster=CPU_RASTER)
    return {"pcm": np.stack(list(p.play(PCM))), "short": np.stack(list(p.play(SHORT)))}


def batches(n_frames: int, b: int) -> list[int]:
    return [b] * (n_frames // b) + ([n_frames % b] if n_frames % b else [])


def assert_only_final_frames_copied(log, sizes: list[int], h: int = H, w: int = W) -> None:
    """Device -> host: each batch's uint8 frames once (CudaRasterizer.to_host), and the 8-byte intersection count."""
    d2h = [(t.shape, t.dtype, t.where.split(":")[0]) for t in log.d2h]
    assert d2h == [((b, h, w, 3), "uint8", "_cuda.py") for b in sizes], log.d2h
    assert all("to_host" in t.where for t in log.d2h)
    reads = [(t.nbytes, t.where.split(":")[0], t.where.rsplit(" ", 1)[-1]) for t in log.scalar_reads]
    assert reads == [(8, "_cuda.py", "_render")] * len(sizes), log.scalar_reads


def stream(player, pcm, batch, seed, max_ms=300):
    """Push pcm in random chunks (1 sample .. max_ms) -> frames, pulled after every push."""
    rng = np.random.default_rng(seed)
    return stream_in_chunks(player.session(batch=batch), pcm, lambda: rng.integers(0, max_ms + 1) * 16)


def test_player_gpu_path_matches_cpu_path(gpu, bundle, cpu_frames, emulated_kernels):
    p = Player(bundle, engine="array-cupy", raster="cuda")
    info = p.describe()
    assert (info["engine"], info["raster"]) == ("array-cupy", "cuda")
    assert info["device"] == "cuda: " + fake_cupy.DEVICE_NAME
    assert p.pipeline.xp is gpu.cupy and isinstance(p.pipeline._dev["means"], gpu.cupy.ndarray)
    gpu.log.clear()
    blends = emulated_kernels["gt_raster_blend"].calls
    got = play(p, PCM)
    parity(got, cpu_frames["pcm"])
    assert_only_final_frames_copied(gpu.log, batches(len(got), 1))
    assert emulated_kernels["gt_raster_blend"].calls - blends == len(got)
    # host -> device while playing: per-frame inputs only (audio window, tokens, camera, background);
    # the Gaussians (canonical and deformed) stay on the device
    assert gpu.log.h2d and not [t for t in gpu.log.h2d if 600 in t.shape], gpu.log.h2d
    # ... and nothing but them: the networks upload no index arrays or weights per frame
    assert {t.where.split(":")[0] for t in gpu.log.h2d} <= {"pipeline.py", "array_engine.py"}, gpu.log.h2d
    assert len(gpu.log.h2d) <= 6 * len(got), gpu.log.h2d


def test_batched_gpu_path_matches_cpu_path(gpu, bundle, cpu_frames):
    p = Player(bundle, engine="array-cupy", raster="cuda", batch=4)
    gpu.log.clear()
    got = play(p, PCM, batch=4)
    parity(got, cpu_frames["pcm"])
    assert_only_final_frames_copied(gpu.log, batches(len(got), 4))  # 6 x 4 + 1: buffers shrink for the last


def test_streaming_equals_whole_file_on_gpu_path(gpu, bundle, cpu_frames):
    p = Player(bundle, engine="array-cupy", raster="cuda", batch=3)
    whole = play(p, SHORT, batch=3)
    gpu.log.clear()
    chunked = stream(p, SHORT, batch=3, seed=7)
    np.testing.assert_array_equal(chunked, whole)
    assert_only_final_frames_copied(gpu.log, batches(len(whole), 3))
    parity(whole, cpu_frames["short"])


def test_mixed_placements(gpu, bundle, cpu_frames):
    """Deform on the GPU with the CPU rasterizer, and the CPU deform with the CUDA rasterizer."""
    gpu_deform = Player(bundle, engine="array-cupy", raster=CPU_RASTER)
    assert gpu_deform.describe()["device"].startswith("cuda: ")
    parity(play(gpu_deform, SHORT), cpu_frames["short"])
    pcm = SHORT[: 4 * 640]  # 4 frames
    ref = np.stack(list(Player(bundle, engine="array", raster=CPU_RASTER).play(pcm)))
    gpu.log.clear()
    parity(play(Player(bundle, engine="array", raster="cuda"), pcm), ref)
    assert_only_final_frames_copied(gpu.log, batches(4, 1))


def test_auto_picks_the_gpu_and_rasterize_cuda(gpu, bundle):
    """With a GPU (and neither TensorRT nor ONNX Runtime's CUDA provider), auto -> array-cupy + cuda."""
    from gt_runtime import raster
    from gt_runtime.bundle import Bundle
    from gt_runtime.raster import _cpu

    info = Player(bundle).describe()
    assert (info["engine"], info["raster"]) == ("array-cupy", "cuda")
    assert raster.available_backends()[0] == "cuda"
    # the public one-frame entry (rasterize(..., backend="cuda")) on the bundle's canonical Gaussians
    b = Bundle.open(bundle)
    g = b.gaussians
    opac = (1 / (1 + np.exp(-g["opacity_logits"]))).astype(np.float32)
    args = (g["means"], g["quats"], np.exp(g["log_scales"]).astype(np.float32), opac, g["sh"],
            np.eye(4, dtype=np.float32), b.K, W, H, np.full(3, 0.25, np.float32))  # fmt: skip
    args[5][2, 3] = 2.5  # the head in front of the camera
    img = raster.rasterize(*args, backend="cuda")
    assert isinstance(img, gpu.cupy.ndarray) and img.shape == (H, W, 3)
    ref = _cpu.forward(*args) if _cpu.available() else raster.rasterize(*args, backend="reference")
    np.testing.assert_allclose(img.get(), ref, atol=1e-4)
    assert np.abs(ref - 0.25).max() > 0.1  # something was drawn


def test_gt_play_auto_on_the_gpu(gpu, bundle, tmp_path):
    """`gt play` (PlayConfig) with engine / raster auto picks the GPU path; its PNG frames are the CPU path's."""
    import soundfile as sf
    from PIL import Image

    from gt_runtime.apps.play import PlayConfig, play

    wav = tmp_path / "s.wav"
    sf.write(wav, SHORT[: 5 * 640], 16000, subtype="FLOAT")
    res = play(PlayConfig(speech=wav, bundle=bundle, out=str(tmp_path / "png"), fps=True, quiet=True))
    assert (res.engine, res.raster, res.frames) == ("array-cupy", "cuda", 5)
    got = np.stack([np.asarray(Image.open(f)) for f in sorted((tmp_path / "png").glob("*.png"))])
    assert_only_final_frames_copied(gpu.log, batches(5, 1))
    parity(got, np.stack(list(Player(bundle, engine="array", raster=CPU_RASTER).play(SHORT[: 5 * 640]))))


def test_default_bundle_two_frames(gpu, default_bundle):
    """The bundled identity (256 px, 20k Gaussians, SH degree 2, torso): two frames."""
    pcm = speech(0.08, seed=2)  # 2 frames
    got = play(Player(default_bundle, engine="array-cupy", raster="cuda", batch=2), pcm, batch=2)
    assert_only_final_frames_copied(gpu.log, [2], 256, 256)
    ref = np.stack(list(Player(default_bundle, engine="array", raster=CPU_RASTER).play(pcm)))
    parity(got, ref)


def test_profile_uses_cuda_events(gpu, bundle):
    from gt_runtime.apps.profile import ProfileConfig, profile

    rep = profile(ProfileConfig(bundle=bundle, engine="array-cupy", raster="cuda", batch=(2,), frames=2, warmup=0,
                                encode="none", overlapped=False, quiet=True))  # fmt: skip
    assert rep["timer"] == "cuda-events" and rep["machine"]["gpu"] == fake_cupy.DEVICE_NAME
    run = rep["runs"][0]
    assert run["frames"] >= 2 and run["total"]["mean_ms"] > 0 and run["stages"]["raster"]["mean_ms"] > 0


# -- the stand-in itself ----------------------------------------------------------------------


def test_fake_enforces_cupy_rules_and_is_undone(emulated_kernels):
    import gt_runtime.raster._cuda as cuda_mod
    from gt_runtime.engines.select import gpu_available

    before = sys.modules.get("cupy")
    mp = pytest.MonkeyPatch()
    fake = fake_cupy.install(mp, emulated_kernels)
    try:
        import cupy as cp

        assert cp is fake.cupy and gpu_available() and cuda_mod.cuda_available()
        host = np.ones(4, np.float32)
        dev = cp.asarray(host)
        assert isinstance(dev, cp.ndarray) and [t.kind for t in fake.log.transfers] == ["h2d"]
        for bad in (lambda: dev + host, lambda: host * dev, lambda: cp.exp(host), lambda: np.stack([dev, host]),
                    lambda: cp.broadcast_to(host, (2, 4)), lambda: dev.__setitem__(slice(None), host),
                    lambda: dev[np.array([0, 1])]):  # fmt: skip
            with pytest.raises(TypeError, match="host numpy array"):
                bad()
        assert isinstance(np.exp(dev) * np.float32(2) + 1.0, cp.ndarray)  # numpy on device arrays stays on the device
        s = dev.sum()
        assert isinstance(s, cp.ndarray) and s.ndim == 0 and not fake.log.scalar_reads
        assert float(s) == 4.0 and int(dev[1]) == 1 and len(fake.log.scalar_reads) == 2
        assert type(dev.get()) is np.ndarray and type(cp.asnumpy(dev)) is np.ndarray and len(fake.log.d2h) == 2
        with pytest.raises(TypeError, match="host memory"):
            args = (np.int64(0), np.int32(1), np.zeros(1, np.uint64), np.zeros(2, np.int32))
            fake.kernels["gt_raster_tile_ranges"]((1, 1, 1), (1, 1, 1), args)
        with pytest.raises(AttributeError):
            cp.linalg  # noqa: B018 - not used by the GPU path, so not emulated
    finally:
        mp.undo()
    assert sys.modules.get("cupy") is before
    assert cuda_mod.get_module.__module__ == "gt_runtime.raster._cuda"
