"""Engines agree: array (algebraic savings) == plain reference; ONNX Runtime == array; FP16 render PSNR."""
import numpy as np
import pytest

from gt_runtime.model import reference
from gt_runtime.bundle import Bundle
from gt_runtime.engines import compare_runners, psnr, resolve_engine_name, select_engine
from gt_runtime.engines.array_engine import ArrayAudioRunner, ArrayDeformRunner
from gt_runtime.errors import InputError
from tests.support.speech import speech

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def bundle(random_bundle):
    p = random_bundle(n_gaussians=1500, sh_degree=3, num_layers=2, width=48, height=48, n_track_frames=6, seed=1,
                      fp16=True, int8=True)
    return Bundle.open(p)


def _feeds(seed=0, batches=(1, 3)):
    rng = np.random.default_rng(seed)
    return [{"tokens": rng.standard_normal((b, 4, 64)).astype(np.float32)} for b in batches]


def _array(b, fast=True):
    return ArrayDeformRunner(b.weights, b.gaussians["queries"], b.num_layers, b.sh_degree, "cpu", fast=fast)


def test_fast_equals_plain(bundle):
    (cmp,) = compare_runners([_array(bundle, fast=False), _array(bundle)], _feeds(), atol=1e-5)
    assert cmp.passed, str(cmp)
    assert set(cmp.outputs) == {"dmu", "drot", "dscale", "dsh", "dopacity"}


def test_fast_equals_plain_one_layer(random_bundle):
    b = Bundle.open(random_bundle(n_gaussians=300, sh_degree=1, num_layers=1, width=16, height=16, n_track_frames=2, onnx=False))
    (cmp,) = compare_runners([_array(b, fast=False), _array(b)], _feeds(1), atol=1e-5)
    assert cmp.passed, str(cmp)
    out = _array(b).activate().infer(_feeds(2, (2,))[0])
    assert out["dsh"].shape == (2, 300, 12) and out["dopacity"].shape == (2, 300, 1)


def test_onnxruntime_fp32_matches_array(bundle):
    from gt_runtime.engines import ort_engine

    runners = [_array(bundle, fast=False), ort_engine.deform_runner(bundle, "fp32", graph="bundle"),
               ort_engine.deform_runner(bundle, "fp32", graph="fast")]
    feeds = [dict(f, queries=bundle.gaussians["queries"]) for f in _feeds(3)]
    for cmp in compare_runners(runners, feeds, atol=1e-4):
        assert cmp.passed, str(cmp)


def test_audio_encoder_onnx_matches_array(bundle):
    from gt_runtime.engines import ort_engine

    rng = np.random.default_rng(4)
    feed = {"audio_window": rng.standard_normal((5, 15, 2, 80)).astype(np.float32)}
    (cmp,) = compare_runners([ArrayAudioRunner(bundle.weights), ort_engine.audio_runner(bundle)], feed, atol=1e-5)
    assert cmp.passed, str(cmp)


def test_int8_close(bundle):
    from gt_runtime.engines import ort_engine

    (cmp,) = compare_runners([_array(bundle), ort_engine.deform_runner(bundle, "int8")], _feeds(5), atol=0.05)
    assert cmp.passed, str(cmp)


def test_fp16_render_psnr(bundle):
    """Mixed-precision deform graph (LayerNorm/Softmax/Add FP32): render PSNR >= 40 dB vs FP32."""
    from gt_runtime.playback.player import Player

    pcm = speech(1.0)
    a = list(Player(bundle, engine="onnxruntime-fp32", raster="auto").play(pcm))[:6]
    b = list(Player(bundle, engine="onnxruntime-fp16", raster="auto").play(pcm))[:6]
    assert psnr(np.stack(a), np.stack(b), 255.0) >= 40.0


def test_runner_checks(bundle):
    r = _array(bundle)
    with pytest.raises(RuntimeError, match="activate"):
        r.infer(_feeds()[0])
    with r:
        with pytest.raises(ValueError, match="float32"):
            r.infer({"tokens": np.zeros((1, 4, 64), np.float64)})
        with pytest.raises(ValueError, match=r"\[B, 4, 64\]"):
            r.infer({"tokens": np.zeros((1, 3, 64), np.float32)})
        with pytest.raises(ValueError, match="not an input"):
            r.infer({"tokens": np.zeros((1, 4, 64), np.float32), "bogus": np.zeros(1, np.float32)})
        r.infer(_feeds()[0])
        assert r.last_inference_time > 0 and r.calls == 1
    assert not r.is_active


def test_select_cpu(bundle):
    assert resolve_engine_name(bundle, "auto", gpu=False) == "cpu-fused-int8"   # the fixed order: cpu-fused first
    assert resolve_engine_name(bundle, "onnxruntime", gpu=False) == "onnxruntime-int8"
    assert resolve_engine_name(bundle, "array", gpu=False) == "array"
    assert resolve_engine_name(bundle, "auto", gpu=True) in ("tensorrt-fp16", "onnxruntime-cuda", "array-cupy")
    with pytest.raises(InputError, match="unknown engine"):
        resolve_engine_name(bundle, "magic", gpu=False)
    with pytest.raises(InputError, match="GPU"):
        resolve_engine_name(bundle, "tensorrt", gpu=False)
    es = select_engine(bundle, "onnxruntime-fp32", gpu=False)
    assert es.device == "cpu" and es.name == "onnxruntime-fp32"


def test_select_without_int8(random_bundle):
    b = Bundle.open(random_bundle(n_gaussians=100, sh_degree=0, num_layers=1, width=8, height=8, n_track_frames=1))
    assert resolve_engine_name(b, "auto", gpu=False) == "cpu-fused-fp32"   # INT8 only where the export's gates passed
    assert resolve_engine_name(b, "cpu-fused", gpu=False) == "cpu-fused-int8"  # asked for by name: INT8
    assert resolve_engine_name(b, "onnxruntime", gpu=False) == "onnxruntime-fp32"
    with pytest.raises(InputError, match="no int8"):
        select_engine(b, "onnxruntime-int8", gpu=False)


def test_token_encodings():
    enc = reference.eye_encoding(np.array([0.25], np.float32))[0]
    expect = [0.25] + [f(2 ** k * np.pi * 0.25) for k in range(4) for f in (np.sin, np.cos)]
    np.testing.assert_allclose(enc, expect, atol=1e-6)
    c2w = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    np.testing.assert_array_equal(reference.view_encoding(c2w)[0], [0, 1, 2, 4, 5, 6, 8, 9, 10, 3, 7, 11])


def test_audio_windows_clamped():
    feats = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 80), np.float32)
    w = reference.audio_windows(feats, np.array([0, 9]), total=10)
    assert w.shape == (2, 15, 2, 80)
    np.testing.assert_array_equal(w[0, :, 0, 0], [0] * 9 + [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(w[1, :, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9] + [9] * 6)


# -- GPU -----------------------------------------------------------------------------------
def _cupy():
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception:
        pytest.skip("no CUDA device")
    return cp


@pytest.mark.gpu
def test_array_cupy_matches_numpy(bundle):
    _cupy()
    gpu = ArrayDeformRunner(bundle.weights, bundle.gaussians["queries"], 2, 3, "cuda")
    (cmp,) = compare_runners([_array(bundle), gpu], _feeds(6), atol=1e-4)
    assert cmp.passed, str(cmp)
    (cmp,) = compare_runners([ArrayAudioRunner(bundle.weights), ArrayAudioRunner(bundle.weights, "cuda")],
                             {"audio_window": np.random.default_rng(0).standard_normal((3, 15, 2, 80)).astype(np.float32)}, atol=1e-4)
    assert cmp.passed, str(cmp)


@pytest.mark.gpu
def test_cuda_raster_matches_cpu_whole_frame(bundle):
    _cupy()
    from gt_runtime.playback.player import Player
    from gt_runtime.playback.pipeline import cpu_raster_available

    pcm = speech(0.5)
    ref = np.stack(list(Player(bundle, engine="array", raster="cpu" if cpu_raster_available() else "reference").play(pcm)))
    gpu = np.stack(list(Player(bundle, engine="array-cupy", raster="cuda").play(pcm)))
    assert gpu.shape == ref.shape
    assert np.abs(gpu.astype(int) - ref.astype(int)).max() <= 2
    assert psnr(gpu, ref, 255.0) >= 45.0


@pytest.mark.gpu
@pytest.mark.trt
def test_tensorrt_matches_array(bundle, tmp_path):
    _cupy()
    pytest.importorskip("tensorrt")
    import shutil

    from gt_runtime.engines.trt_engine import TrtDeformRunner, device_key, ensure_plan, key_name

    b = Bundle.open(shutil.copytree(bundle.path, tmp_path / "t.gtb"))
    runners = [_array(b), TrtDeformRunner(b, "fp32")]
    (cmp,) = compare_runners(runners, _feeds(7), atol=1e-3)
    assert cmp.passed, str(cmp)
    plan = ensure_plan(b, "fp32")
    assert plan.name == key_name(device_key("fp32")) + ".plan" and plan.with_suffix(".json").is_file()
    (cmp,) = compare_runners([_array(b), TrtDeformRunner(b, "fp16")], _feeds(8), atol=2e-2)
    assert cmp.passed, str(cmp)


def test_onnxruntime_chunked_and_other_queries(bundle):
    """Row chunking gives the same offsets; the fast graph derives q0 for queries other than the bundle's."""
    from gt_runtime.engines import ort_engine

    rng = np.random.default_rng(9)
    q = rng.uniform(-0.3, 0.7, (700, 64)).astype(np.float32)
    feeds = [dict(f, queries=q) for f in _feeds(10)]
    fast = ort_engine.deform_runner(bundle, "fp32", graph="fast")
    fast.chunk_rows = 256
    plain = ort_engine.deform_runner(bundle, "fp32", graph="bundle")
    plain.chunk_rows = 300
    for cmp in compare_runners([_array(bundle, fast=False), fast, plain], feeds, atol=1e-4):
        assert cmp.passed, str(cmp)
    from gt_runtime.engines.array_deform import DeformNet

    small = DeformNet(bundle.weights, q, 2, 3, chunk=128)
    ref = reference.deform_plain(feeds[1]["tokens"], q, bundle.weights, 2, 3)
    out = small(feeds[1]["tokens"])
    assert max(float(np.abs(out[k] - ref[k]).max()) for k in ref) <= 1e-5
