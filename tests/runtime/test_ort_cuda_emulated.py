"""The onnxruntime-cuda engine (gt_runtime/engines/ort_engine.py's CUDA EP path) run on a CPU machine, under stand-ins.

CuPy is tests/cuda_emu/fake_cupy.py and onnxruntime is tests/cuda_emu/fake_ort_cuda.py: the real CPU
onnxruntime dressed as onnxruntime-gpu (CUDA provider options checked by name and type, IOBinding on
fake-CuPy device pointers checked like ONNX Runtime and a GPU would, the graph run by the CPU session on
the memory behind the pointers). So OrtRunner's CUDA path (session creation with user_compute_stream,
IOBinding, preallocated device outputs), select.py's choice and a Player on onnxruntime-cuda + the CUDA
rasterizer all run. What needs onnxruntime-gpu on a GPU (the CUDA kernels, the FP16 graph's precision on
the device, asynchrony on the user stream, speed) is not checked here.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from gt_runtime.bundle import Bundle  # noqa: E402
from gt_runtime.engines.array_engine import ArrayAudioRunner, ArrayDeformRunner  # noqa: E402
from gt_runtime.engines.comparator import compare_runners  # noqa: E402
from gt_runtime.errors import InputError  # noqa: E402
from gt_runtime.playback.player import Player  # noqa: E402
from tests.cuda_emu import fake_ort_cuda  # noqa: E402
from tests.support.frames import CPU_RASTER, ODD_SIZE, parity, play  # noqa: E402
from tests.support.speech import speech  # noqa: E402

W, H = ODD_SIZE
SHORT = speech(0.4, seed=1)  # 10 frames
N = 300


@pytest.fixture(scope="module")
def bundle_path(random_bundle):
    return random_bundle(n_gaussians=N, sh_degree=1, num_layers=2, width=W, height=H, n_track_frames=4, seed=5, onnx=True)


@pytest.fixture
def ortc(monkeypatch, gpu):
    return fake_ort_cuda.install(monkeypatch)


def deform_feeds(k, b=2, seed=0):
    rng = np.random.default_rng(seed)
    return [{"tokens": rng.standard_normal((b, 4, 64)).astype(np.float32)} for _ in range(k)]


def audio_feeds(k, dim, b=2, seed=0):
    rng = np.random.default_rng(seed)
    return [{"audio_window": rng.standard_normal((b, 15, 2, dim)).astype(np.float32)} for _ in range(k)]


def test_runners_match_array_engine_without_host_copies(ortc, gpu, bundle_path):
    import cupy as cp

    from gt_runtime.engines import ort_engine

    b = Bundle.open(bundle_path)
    ref = ArrayDeformRunner(b.weights, b.gaussians["queries"], b.num_layers, b.sh_degree, "cpu", fast=False)
    with ort_engine.deform_runner(b, "fp32", "cuda", graph="bundle") as r:
        assert r.sess.get_providers()[0] == "CUDAExecutionProvider" and ortc.sessions == 1
        assert ortc.streams == [r.stream.ptr] and r.stream.ptr != 0 and r.stream.non_blocking  # the runner's own stream
        (cmp,) = compare_runners([ref, r], deform_feeds(3, b=3), atol=1e-4)
        assert cmp.passed, str(cmp)
        # other queries (derived inputs are CPU-only; the bundle graph takes queries as is)
        q = np.random.default_rng(1).uniform(-0.3, 0.7, (N // 2, 64)).astype(np.float32)
        ref2 = ArrayDeformRunner(b.weights, q, b.num_layers, b.sh_degree, "cpu", fast=False)
        (cmp,) = compare_runners([ref2, r], [dict(f, queries=q) for f in deform_feeds(2, seed=3)], atol=1e-4)
        assert cmp.passed, str(cmp)
        # per inference on device inputs: no transfer either way, outputs are device arrays
        tokens = cp.asarray(deform_feeds(1, b=2, seed=9)[0]["tokens"])
        gpu.log.clear()
        runs = ortc.runs
        out = r.infer({"tokens": tokens})
        assert not gpu.log.transfers, gpu.log.transfers
        assert ortc.runs == runs + 1
        assert set(out) == set(r.output_names) and all(isinstance(v, cp.ndarray) and v.shape[:2] == (2, N) for v in out.values())
    with ort_engine.audio_runner(b, "cuda") as a:
        (cmp,) = compare_runners([ArrayAudioRunner(b.weights), a], audio_feeds(2, b.audio_dim, b=3), atol=1e-4)
        assert cmp.passed, str(cmp)
        w = cp.asarray(audio_feeds(1, b.audio_dim, b=1)[0]["audio_window"])
        gpu.log.clear()
        tok = a.infer({"audio_window": w})["audio_token"]
        assert not gpu.log.transfers and isinstance(tok, cp.ndarray) and tok.shape == (1, 64)


def test_player_on_onnxruntime_cuda_matches_cpu_path(ortc, gpu, bundle_path):
    ref = np.stack(list(Player(Bundle.open(bundle_path), engine="array", raster=CPU_RASTER).play(SHORT)))
    p = Player(Bundle.open(bundle_path), engine="onnxruntime-cuda", raster="cuda", batch=3)
    info = p.describe()
    assert (info["engine"], info["raster"]) == ("onnxruntime-cuda-fp32", "cuda")
    gpu.log.clear()
    runs = ortc.runs
    got = play(p, SHORT, batch=3)
    parity(got, ref)
    assert ortc.runs - runs >= 2 * (len(got) // 3)  # deform and audio encoder through the CUDA EP
    # device -> host: only the final uint8 frames (and the rasterizer's intersection counts)
    assert {t.where.split(":")[0] for t in gpu.log.d2h} == {"_cuda.py"}, gpu.log.d2h
    assert all(t.dtype == "uint8" for t in gpu.log.d2h)


def test_auto_picks_onnxruntime_cuda_without_tensorrt(ortc, gpu, bundle_path, monkeypatch):
    from gt_runtime.engines import select

    real_has = select._has
    monkeypatch.setattr(select, "_has", lambda m: False if m == "tensorrt" else real_has(m))
    b = Bundle.open(bundle_path)
    assert select.resolve_engine_name(b, "auto") == "onnxruntime-cuda"
    assert Player(b, raster="cuda").describe()["engine"] == "onnxruntime-cuda-fp32"


def test_without_the_cuda_provider_auto_falls_back_and_cuda_is_refused(gpu, bundle_path, monkeypatch):
    from gt_runtime.engines import select

    real_has = select._has
    monkeypatch.setattr(select, "_has", lambda m: False if m == "tensorrt" else real_has(m))
    b = Bundle.open(bundle_path)
    assert select.resolve_engine_name(b, "auto") == "array-cupy"  # the real (CPU) onnxruntime
    with pytest.raises(InputError, match="onnxruntime-gpu"):
        select.select_engine(b, "onnxruntime-cuda")


# -- the stand-in itself ------------------------------------------------------------------------


def test_fake_ort_cuda_is_strict(ortc, gpu, bundle_path):
    import cupy as cp
    import onnxruntime as ort

    b = Bundle.open(bundle_path)
    model = str(b.onnx_path("fp32"))
    assert ort is ortc.module and "CUDAExecutionProvider" in ort.get_available_providers()
    with pytest.raises(AttributeError):
        ort.OrtValue  # noqa: B018 - not used by ort_engine.py, so not emulated
    # the CPU provider alone: the real session
    assert type(ort.InferenceSession(model, providers=["CPUExecutionProvider"])) is ortc.real.InferenceSession
    stream = cp.cuda.Stream()
    good = {"device_id": 0, "user_compute_stream": str(stream.ptr), "do_copy_in_default_stream": "0"}
    for bad, match in (({"device_idx": 0}, "Unknown provider option"), ({"device_id": "0.5"}, "device_id"),
                       ({"device_id": 1}, "Invalid device_id"), ({"do_copy_in_default_stream": "maybe"}, "do_copy"),
                       ({"user_compute_stream": "0x10"}, "user_compute_stream"),
                       ({"user_compute_stream": "999999"}, "InvalidResourceHandle"),
                       ({"cudnn_conv_algo_search": "FAST"}, "cudnn_conv_algo_search")):  # fmt: skip
        with pytest.raises(Exception, match=match):
            ort.InferenceSession(model, providers=[("CUDAExecutionProvider", dict(good, **bad)), "CPUExecutionProvider"])
    sess = ort.InferenceSession(model, providers=[("CUDAExecutionProvider", good), "CPUExecutionProvider"])
    with pytest.raises(AttributeError):
        sess.run  # noqa: B018 - host feeds on the CUDA session: not used, not emulated
    io = sess.io_binding()
    tokens = cp.asarray(np.zeros((2, 4, 64), np.float32))
    q = cp.asarray(b.gaussians["queries"])
    with pytest.raises(RuntimeError, match="Failed to find input name"):
        io.bind_input("token", "cuda", 0, np.float32, (2, 4, 64), tokens.data.ptr)
    with pytest.raises(Exception, match="Unsupported device type"):
        io.bind_input("tokens", "cudaa", 0, np.float32, (2, 4, 64), tokens.data.ptr)
    with pytest.raises(RuntimeError, match="host memory"):
        io.bind_input("tokens", "cpu", 0, np.float32, (2, 4, 64), tokens.data.ptr)
    with pytest.raises(TypeError, match="buffer_ptr"):
        io.bind_input("tokens", "cuda", 0, np.float32, (2, 4, 64), tokens)
    with pytest.raises(RuntimeError, match="device"):
        io.bind_input("tokens", "cuda", 1, np.float32, (2, 4, 64), tokens.data.ptr)
    with pytest.raises(RuntimeError, match="Failed to find NodeArg"):
        io.bind_output("dmuu", "cuda", 0, np.float32, (2, N, 3), tokens.data.ptr)
    io.bind_input("tokens", "cuda", 0, np.float32, (2, 4, 64), tokens.data.ptr)
    outs = {o.name: cp.empty((2, N, int(o.shape[-1])), cp.float32) for o in sess.get_outputs()}
    for name, y in outs.items():
        io.bind_output(name, "cuda", 0, np.float32, y.shape, y.data.ptr)
    with pytest.raises(Exception, match="Missing Input: queries"):
        sess.run_with_iobinding(io)
    io.bind_input("queries", "cuda", 0, np.float64, q.shape, q.data.ptr)
    with pytest.raises(Exception, match="Unexpected input data type"):
        sess.run_with_iobinding(io)
    io.bind_input("queries", "cuda", 0, 1, q.shape, q.data.ptr)  # ONNX TensorProto.FLOAT
    sess.run_with_iobinding(io)
    assert ortc.runs == 1
    # a host pointer, or a device buffer too small: an illegal address on a GPU
    host = np.zeros((2, 4, 64), np.float32)
    io.bind_input("tokens", "cuda", 0, np.float32, (2, 4, 64), host.__array_interface__["data"][0])
    with pytest.raises(RuntimeError, match="IllegalAddress"):
        sess.run_with_iobinding(io)
    small = cp.empty((1, 4, 64), cp.float32)
    io.bind_input("tokens", "cuda", 0, np.float32, (2, 4, 64), small.data.ptr)
    with pytest.raises(RuntimeError, match="IllegalAddress"):
        sess.run_with_iobinding(io)
    # inputs of another batch than the bound outputs
    io.bind_input("tokens", "cuda", 0, np.float32, (1, 4, 64), small.data.ptr)
    with pytest.raises(Exception, match="Shape mismatch attempting to re-use buffer"):
        sess.run_with_iobinding(io)
    with pytest.raises(Exception, match="invalid dimensions"):
        io.bind_input("tokens", "cuda", 0, np.float32, (1, 5, 64), tokens.data.ptr)
        sess.run_with_iobinding(io)
