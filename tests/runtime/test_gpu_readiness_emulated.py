"""What a review of the GPU engines against the real APIs found (issue 19), each checked under the emulation.

The stand-ins (tests/cuda_emu) model each failure the way the real library shows it:

1. ONNX Runtime lists the CUDA EP but, when CUDA or cuDNN fails to load, quietly builds a CPU session
   (fake_ort_cuda's `cuda_fails`): the runner must refuse it, naming what failed to load.
2. `do_copy_in_default_stream="0"` (documented as a data-race risk) must not be passed.
3. The ONNX Runtime runner runs on its own non-blocking stream, ordered with events (fake_cupy's
   stream-order model raises on a race) and never synchronises the whole device (IOBinding's
   synchronize_* do: logged).
4. The same for TensorRT (execute_async_v3 on the default stream synchronises the device: logged).
5. Timing caches are keyed like the engines; a cache TensorRT refuses (set_timing_cache -> False, and
   get_timing_cache() -> None) falls back to an empty one.
6. Tensor addresses handed to TensorRT are 256-byte aligned (set_tensor_address refuses others).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from gt_runtime.bundle import Bundle  # noqa: E402
from gt_runtime.engines.array_engine import ArrayDeformRunner  # noqa: E402
from gt_runtime.errors import InputError  # noqa: E402
from tests.cuda_emu import fake_cupy, fake_ort_cuda, fake_tensorrt  # noqa: E402

N = 300


@pytest.fixture(scope="module")
def bundle_path(random_bundle):
    return random_bundle(n_gaussians=N, sh_degree=1, num_layers=2, width=40, height=24, n_track_frames=4, seed=5,
                         onnx=True, fp16=True)  # fmt: skip


@pytest.fixture
def bundle(bundle_path, tmp_path):
    """A fresh copy per test (TensorRT plans and timing caches are written into its engines/)."""
    return Bundle.open(shutil.copytree(bundle_path, tmp_path / "t.gtb"))


def tokens(b=2, seed=0):
    return np.random.default_rng(seed).standard_normal((b, 4, 64)).astype(np.float32)


def reference(b, feed):
    return ArrayDeformRunner(b.weights, b.gaussians["queries"], b.num_layers, b.sh_degree, "cpu", fast=False).activate().infer(feed)


def close(got: dict, want: dict, atol=1e-4):
    for k, v in want.items():
        np.testing.assert_allclose(fake_cupy.asnumpy(got[k]), v, atol=atol, err_msg=k)


def run_on_caller_stream(runner, feed_host):
    """Write the inputs on a non-blocking caller stream and infer there -> (outputs, caller stream)."""
    import cupy as cp

    caller = cp.cuda.Stream(non_blocking=True)
    with caller:
        feed = {k: cp.asarray(v) for k, v in feed_host.items()}
        fake_cupy.LOG.clear()
        out = runner.infer(feed)
    return out, caller


# -- 1, 2, 3: ONNX Runtime's CUDA EP --------------------------------------------------------------


def test_ort_cuda_session_that_fell_back_to_cpu_is_refused(monkeypatch, gpu, bundle_path, tmp_path, capfd):
    from gt_runtime.engines import ort_engine, select

    fake_ort_cuda.install(monkeypatch, cuda_fails="libcudnn.so.9: cannot open shared object file", lib_dir=tmp_path / "ort")
    b = Bundle.open(bundle_path)
    for runner in (ort_engine.deform_runner(b, "fp32", "cuda", graph="bundle"), ort_engine.audio_runner(b, "cuda")):
        with pytest.raises(InputError) as exc:
            runner.activate()
        msg = str(exc.value)
        assert "\n" not in msg and "did not load" in msg and "CPUExecutionProvider" in msg, msg
        assert "libcudnn.so.9" in msg, msg  # what failed to load, from the dynamic loader itself
    assert "Failed to create CUDAExecutionProvider" in capfd.readouterr().err  # ONNX Runtime's warning, as on a GPU
    with pytest.raises(InputError, match="did not load"):
        select.select_engine(b, "onnxruntime-cuda").activate()


def test_ort_cuda_options_and_own_stream_without_device_syncs(monkeypatch, gpu, bundle_path):
    import cupy as cp

    from gt_runtime.engines import ort_engine

    ortc = fake_ort_cuda.install(monkeypatch)
    b = Bundle.open(bundle_path)
    feed = {"tokens": tokens(3)}
    with ort_engine.deform_runner(b, "fp32", "cuda", graph="bundle") as r:
        # 2: copies stay on the compute stream (the option keeps its default)
        assert ortc.options[-1].get("do_copy_in_default_stream", True) is True, ortc.options[-1]
        # 3: the runner's own stream, not the caller's and not the legacy null stream
        assert ortc.streams[-1] == r.stream.ptr != 0 and r.stream.non_blocking
        out, caller = run_on_caller_stream(r, feed)
        assert r.stream.ptr != caller.ptr
        assert fake_cupy.LOG.device_syncs == [], fake_cupy.LOG.device_syncs
        assert fake_cupy.ordered(caller, r.stream)  # the caller's next work sees the outputs
        close(out, reference(b, feed))
        # on the null stream too (the Player's case)
        out = r.infer({"tokens": cp.asarray(feed["tokens"])})
        assert fake_cupy.LOG.device_syncs == [] and fake_cupy.ordered(cp.cuda.get_current_stream(), r.stream)
        close(out, reference(b, feed))


def test_fake_ort_catches_an_unordered_run(monkeypatch, gpu, bundle_path):
    """The stand-in's order check itself: a session on another stream, run with no event, is a race."""
    import cupy as cp

    ort = fake_ort_cuda.install(monkeypatch).module
    b = Bundle.open(bundle_path)
    other = cp.cuda.Stream(non_blocking=True)
    sess = ort.InferenceSession(str(b.onnx_path("fp32")), providers=[("CUDAExecutionProvider", {"user_compute_stream": str(other.ptr)}),
                                                                      "CPUExecutionProvider"])  # fmt: skip
    caller = cp.cuda.Stream(non_blocking=True)
    with caller:
        t, q = cp.asarray(tokens(2)), cp.asarray(b.gaussians["queries"])
        outs = {o.name: cp.empty((2, N, int(o.shape[-1])), cp.float32) for o in sess.get_outputs()}
    io = sess.io_binding()
    io.bind_input("tokens", "cuda", 0, np.float32, t.shape, t.data.ptr)
    io.bind_input("queries", "cuda", 0, np.float32, q.shape, q.data.ptr)
    for name, y in outs.items():
        io.bind_output(name, "cuda", 0, np.float32, y.shape, y.data.ptr)
    with caller, pytest.raises(RuntimeError, match="race"):
        sess.run_with_iobinding(io)
    with caller:
        other.wait_event(caller.record())
        sess.run_with_iobinding(io)  # ordered now
    io.synchronize_inputs()
    assert len(fake_cupy.LOG.device_syncs) == 1  # what the CUDA EP's Sync() costs


# -- 4, 5, 6: TensorRT ---------------------------------------------------------------------------------


def test_trt_runs_on_its_own_stream_without_device_syncs(monkeypatch, gpu, bundle):
    import cupy as cp

    from gt_runtime.engines.trt_engine import TrtDeformRunner

    trt = fake_tensorrt.install(monkeypatch)
    feed = {"tokens": tokens(3, seed=1)}
    with TrtDeformRunner(bundle, "fp32") as r:
        assert r.stream.ptr != 0 and r.stream.non_blocking
        out, caller = run_on_caller_stream(r, feed)
        assert fake_cupy.LOG.device_syncs == [], fake_cupy.LOG.device_syncs
        assert fake_cupy.ordered(caller, r.stream)
        close(out, reference(bundle, feed))
        out = r.infer({"tokens": cp.asarray(feed["tokens"])})  # from the null stream
        assert fake_cupy.LOG.device_syncs == []
        close(out, reference(bundle, feed))
    assert not trt.errors, trt.errors
    # the stand-in: the default stream costs a device synchronisation, as TensorRT warns
    with TrtDeformRunner(bundle, "fp32") as r:
        r.stream = cp.cuda.Stream.null
        r.infer({"tokens": cp.asarray(feed["tokens"])})
    assert len(fake_cupy.LOG.device_syncs) == 1 and "default stream" in fake_cupy.LOG.device_syncs[0]


def test_trt_tensor_addresses_are_aligned(monkeypatch, gpu, bundle):
    import cupy as cp

    from gt_runtime.engines.trt_engine import TENSOR_ALIGNMENT, TrtDeformRunner

    trt = fake_tensorrt.install(monkeypatch)
    feed = {"tokens": tokens(2, seed=2)}
    flat = cp.asarray(np.concatenate([[0.0], feed["tokens"].ravel()]).astype(np.float32))
    view = flat[1:].reshape(2, 4, 64)  # 4 bytes into its allocation
    assert view.data.ptr % TENSOR_ALIGNMENT != 0 and view.flags.c_contiguous
    q_off = cp.asarray(np.concatenate([[0.0], bundle.gaussians["queries"].ravel()]).astype(np.float32))[1:].reshape(N, 64)
    with TrtDeformRunner(bundle, "fp32") as r:
        close(r.infer({"tokens": view}), reference(bundle, feed))
        close(r.infer({"tokens": view, "queries": q_off}), reference(bundle, feed))
        assert all(a.data.ptr % TENSOR_ALIGNMENT == 0 for a in r._alive)
    assert not trt.errors, trt.errors
    # the stand-in refuses a misaligned address and keeps the previous one, as TensorRT does
    plan = next(bundle.engines_dir.glob("*.plan"))
    ctx = fake_tensorrt.Runtime(fake_tensorrt.Logger()).deserialize_cuda_engine(plan.read_bytes()).create_execution_context()
    assert ctx.set_tensor_address("tokens", flat.data.ptr) is True
    assert ctx.set_tensor_address("tokens", view.data.ptr) is False and "aligned" in trt.errors[-1]
    assert ctx.get_tensor_address("tokens") == flat.data.ptr


def test_timing_cache_keyed_and_refused_caches_fall_back(monkeypatch, gpu, bundle):
    from gt_runtime.engines.trt_engine import device_key, ensure_plan, timing_cache_name

    trt = fake_tensorrt.install(monkeypatch)
    here = device_key("fp32")
    ensure_plan(bundle, "fp32")
    mine = bundle.engines_dir / timing_cache_name(here)
    assert mine.is_file() and not (bundle.engines_dir / "timing.cache").exists()
    # another GPU (another compute capability): its own plan and its own cache, side by side
    trt.device = {"name": "NVIDIA A100-SXM4-80GB", "sm": 80}
    other = device_key("fp32", gpu_name=trt.device["name"], sm=80)
    ensure_plan(bundle, "fp32", key=other)
    theirs = bundle.engines_dir / timing_cache_name(other)
    assert theirs.is_file() and theirs != mine and not trt.errors
    # a cache from that GPU where this machine's should be (copied bundle, or the old shared name): TensorRT
    # refuses it (False, and get_timing_cache() stays None); the build goes on from an empty cache
    trt.device = {"name": fake_cupy.DEVICE_NAME, "sm": 90}
    shutil.copy(theirs, mine)
    for p in bundle.engines_dir.glob(f"*{here['gpu']}*-fp32.*"):
        p.unlink()
    builds = trt.builds
    ensure_plan(bundle, "fp32")
    assert trt.builds == builds + 1 and "setTimingCache" in trt.errors[-1]
    blob = mine.read_bytes()
    assert json.loads(blob[len(b"FAKETRTCACHE"):])["device"]["sm"] == 90  # rewritten with this machine's timings
    # a file that is not a timing cache at all: same
    trt.errors.clear()
    mine.write_bytes(b"not a cache")
    for p in bundle.engines_dir.glob(f"*{here['gpu']}*-fp32.*"):
        p.unlink()
    ensure_plan(bundle, "fp32")
    assert mine.read_bytes().startswith(b"FAKETRTCACHE") and trt.builds == builds + 2
