"""The TensorRT engine (gt_runtime/engines/trt_engine.py) run on a CPU machine, under stand-ins.

CuPy is tests/cuda_emu/fake_cupy.py and `tensorrt` is tests/cuda_emu/fake_tensorrt.py: TensorRT 10's
Python API, strict about types and call order, whose "engine" runs the parsed ONNX with onnxruntime on
the bound fake-device memory. So build_plan / ensure_plan (plan + JSON key, reuse, refusal of plans keyed
for another GPU or TensorRT version, rebuild on a new ONNX), TrtDeformRunner (shapes, addresses,
execute_async_v3 on CuPy's stream) and a Player on the tensorrt engine with the CUDA rasterizer all run.
What needs real TensorRT and a GPU (the real parser and builder, kernels, speed) is in the trt-marked tests.
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
from gt_runtime.engines.comparator import compare_runners  # noqa: E402
from gt_runtime.errors import InputError  # noqa: E402
from gt_runtime.playback.player import Player  # noqa: E402
from tests.cuda_emu import fake_cupy, fake_tensorrt  # noqa: E402
from tests.support.frames import CPU_RASTER, ODD_SIZE, parity, play  # noqa: E402
from tests.support.speech import speech  # noqa: E402

W, H = ODD_SIZE
SHORT = speech(0.4, seed=1)  # 10 frames
N = 300


@pytest.fixture(scope="module")
def bundle_path(random_bundle):
    return random_bundle(n_gaussians=N, sh_degree=1, num_layers=2, width=W, height=H, n_track_frames=4, seed=5,
                         onnx=True, fp16=True)  # fmt: skip


@pytest.fixture
def bundle(bundle_path, tmp_path):
    """A fresh copy per test (plans are written into its engines/)."""
    return Bundle.open(shutil.copytree(bundle_path, tmp_path / "t.gtb"))


@pytest.fixture
def trt(monkeypatch, gpu):
    return fake_tensorrt.install(monkeypatch)


def feeds(k, b=2, seed=0):
    rng = np.random.default_rng(seed)
    return [{"tokens": rng.standard_normal((b, 4, 64)).astype(np.float32)} for _ in range(k)]


def array_runner(b):
    return ArrayDeformRunner(b.weights, b.gaussians["queries"], b.num_layers, b.sh_degree, "cpu", fast=False)


def test_ensure_plan_builds_keys_and_reuses(trt, bundle):
    from gt_runtime.engines.trt_engine import check_plan, device_key, ensure_plan, key_name, slug, timing_cache_name

    for prec in ("fp32", "fp16"):
        key = device_key(prec)
        assert key == {"gpu": slug(fake_cupy.DEVICE_NAME), "sm": 90, "trt": fake_tensorrt.DEFAULT_VERSION, "precision": prec}
        plan = ensure_plan(bundle, prec)
        assert plan == bundle.engines_dir / f"{key_name(key)}.plan" and trt.builds == (1 if prec == "fp32" else 2)
        meta = json.loads(plan.with_suffix(".json").read_text())
        assert {k: meta[k] for k in key} == key and meta["onnx_sha256"] == bundle.manifest["files"][meta["onnx"]]
        assert meta["profile"] == {"batch": [1, 1, 8], "n": [1, N, N]}
        assert check_plan(plan, key, meta["onnx_sha256"])["stale"] is False
        assert ensure_plan(bundle, prec) == plan and trt.builds == (1 if prec == "fp32" else 2)  # reused
    assert (bundle.engines_dir / timing_cache_name(device_key("fp32"))).is_file()
    # a larger max batch than the plan's profile -> rebuilt
    ensure_plan(bundle, "fp32", max_batch=16)
    assert trt.builds == 3 and json.loads((bundle.engines_dir / f"{key_name(device_key('fp32'))}.json").read_text())["profile"]["batch"][2] == 16
    assert not trt.errors, trt.errors


def test_plans_keyed_for_another_machine_are_refused(trt, bundle):
    from gt_runtime.engines.trt_engine import TrtDeformRunner, device_key, ensure_plan

    key = device_key("fp32")
    plan = ensure_plan(bundle, "fp32")
    for field, other in (("gpu", "NVIDIA-A100-SXM4-80GB"), ("sm", 80), ("trt", "10.0.1")):
        meta = json.loads(plan.with_suffix(".json").read_text())
        meta[field] = other
        plan.with_suffix(".json").write_text(json.dumps(meta))
        for attempt in (lambda: ensure_plan(bundle, "fp32"), lambda: TrtDeformRunner(bundle, "fp32", plan_path=plan).activate()):
            with pytest.raises(InputError, match="delete") as exc:
                attempt()
            assert "\n" not in str(exc.value) and str(other) in str(exc.value)
        meta[field] = key[field]
        plan.with_suffix(".json").write_text(json.dumps(meta))
    # the bytes: a modified plan is refused; a plan whose JSON lies about where it was built is refused by TensorRT
    good = plan.read_bytes()
    plan.write_bytes(good + b"x")
    with pytest.raises(InputError, match="does not match its metadata"):
        ensure_plan(bundle, "fp32")
    plan.write_bytes(good)
    # a plan whose JSON says "this machine" but that TensorRT built for another compute capability
    plan.unlink()
    trt.device = {"name": "another GPU", "sm": 86}
    ensure_plan(bundle, "fp32")
    trt.device = {"name": fake_cupy.DEVICE_NAME, "sm": 90}
    with pytest.raises(InputError, match="cannot deserialize"):
        TrtDeformRunner(bundle, "fp32").activate()
    assert "compute 90 got compute 86" in trt.errors[-1]
    trt.errors.clear()
    # a changed ONNX -> rebuilt
    builds = trt.builds
    meta = json.loads(plan.with_suffix(".json").read_text())
    meta["onnx_sha256"] = "0" * 64
    plan.with_suffix(".json").write_text(json.dumps(meta))
    ensure_plan(bundle, "fp32")
    assert trt.builds == builds + 1


def test_runner_matches_array_engine(trt, bundle):
    from gt_runtime.engines.trt_engine import TrtDeformRunner

    with TrtDeformRunner(bundle, "fp32") as r:
        assert r.inputs == ["tokens", "queries"] and len(r.outputs) == 5
        (cmp,) = compare_runners([array_runner(bundle), r], feeds(3, b=3), atol=1e-4)
        assert cmp.passed, str(cmp)
        out = r.infer(feeds(1, b=1)[0])
        assert all(isinstance(v, fake_cupy.ndarray) and v.shape[:2] == (1, N) for v in out.values())
        # other queries (fewer Gaussians, inside the profile)
        q = np.random.default_rng(1).uniform(-0.3, 0.7, (N // 2, 64)).astype(np.float32)
        ref = ArrayDeformRunner(bundle.weights, q, bundle.num_layers, bundle.sh_degree, "cpu", fast=False)
        (cmp,) = compare_runners([ref, r], [dict(f, queries=q) for f in feeds(2, b=2, seed=3)], atol=1e-4)
        assert cmp.passed, str(cmp)
        with pytest.raises(ValueError, match="at most 8"):
            r.infer(feeds(1, b=9)[0])
        # more Gaussians than the profile's N: refused (TensorRT keeps the previous shape; outputs were N rows)
        q = np.zeros((N + 50, 64), np.float32)
        with pytest.raises(ValueError, match=r"'queries' \| shape \(350, 64\) \| expected batch 1..8 and N 1..300"):
            r.infer(dict(feeds(1, b=2)[0], queries=q))
        trt.errors.clear()
    with TrtDeformRunner(bundle, "fp16") as r16:
        (cmp,) = compare_runners([array_runner(bundle), r16], feeds(2, b=2, seed=4), atol=2e-2)
        assert cmp.passed, str(cmp)
    assert not trt.errors, trt.errors


def test_player_on_tensorrt_matches_cpu_path(trt, bundle, bundle_path):
    ref = np.stack(list(Player(Bundle.open(bundle_path), engine="array", raster=CPU_RASTER).play(SHORT)))
    p = Player(bundle, engine="tensorrt-fp32", raster="cuda", batch=3)
    info = p.describe()
    assert (info["engine"], info["raster"]) == ("tensorrt-fp32", "cuda")
    got = play(p, SHORT, batch=3)
    parity(got, ref)
    assert trt.executions >= len(got) // 3 and trt.builds == 1 and not trt.errors
    # auto on a machine with TensorRT: the fp16 engine
    assert Player(bundle, raster="cuda").describe()["engine"] == "tensorrt-fp16"


# -- the stand-in itself ------------------------------------------------------------------------


def test_fake_tensorrt_is_strict(trt, bundle):
    import cupy as cp
    import tensorrt

    from gt_runtime.engines.trt_engine import ensure_plan

    assert tensorrt is trt.module
    with pytest.raises(AttributeError):
        tensorrt.BuilderFlag  # noqa: B018 - not used by trt_engine.py, so not emulated
    logger = tensorrt.Logger(tensorrt.Logger.WARNING)
    engine = tensorrt.Runtime(logger).deserialize_cuda_engine(ensure_plan(bundle, "fp32").read_bytes())
    ctx = engine.create_execution_context()
    with pytest.raises(AttributeError):
        ctx.execute_v2  # noqa: B018
    tokens = cp.asarray(np.zeros((2, 4, 64), np.float32))
    q = cp.asarray(bundle.gaussians["queries"])
    outs = {engine.get_tensor_name(i): None for i in range(engine.num_io_tensors)}
    assert engine.get_tensor_shape("dmu") == (-1, -1, 3) and engine.get_tensor_name(99) is None
    # before shapes and addresses are set: execute fails, output shapes unknown
    assert ctx.get_tensor_shape("dmu") == (-1, -1, 3)
    assert ctx.execute_async_v3(0) is False and "shapes" in trt.errors[-1]
    # shapes outside the profile / wrong static dims / not an input
    assert ctx.set_input_shape("tokens", (9, 4, 64)) is False and "profile" in trt.errors[-1]
    assert ctx.set_input_shape("queries", (N + 1, 64)) is False
    assert ctx.set_input_shape("tokens", (2, 5, 64)) is False
    assert ctx.set_input_shape("dmu", (2, N, 3)) is False
    with pytest.raises(TypeError):
        ctx.set_input_shape("tokens", "2,4,64")
    assert ctx.set_input_shape("tokens", (2, 4, 64)) and ctx.set_input_shape("queries", (N, 64))
    assert ctx.get_tensor_shape("dsh") == (2, N, 12)
    ctx.set_tensor_address("tokens", tokens.data.ptr)
    ctx.set_tensor_address("queries", q.data.ptr)
    with pytest.raises(TypeError):
        ctx.set_tensor_address("queries", q)  # an array, not an address
    assert ctx.execute_async_v3(0) is False and "addresses" in trt.errors[-1]
    for name in [n for n in outs if engine.get_tensor_mode(n) == tensorrt.TensorIOMode.OUTPUT]:
        outs[name] = cp.empty(tuple(ctx.get_tensor_shape(name)), cp.float32)
        ctx.set_tensor_address(name, outs[name].data.ptr)
    assert ctx.execute_async_v3(cp.cuda.get_current_stream().ptr) is True
    with pytest.raises(RuntimeError, match="stream"):
        ctx.execute_async_v3(12345678)
    # a host numpy pointer, or a device buffer too small for the tensor: an illegal address
    host = fake_cupy._aligned_empty((2, 4, 64), np.float32)  # plain numpy memory, at an address TensorRT takes
    assert ctx.set_tensor_address("tokens", host.__array_interface__["data"][0])
    with pytest.raises(RuntimeError, match="IllegalAddress"):
        ctx.execute_async_v3(0)
    small = cp.empty((1, 4, 64), cp.float32)
    ctx.set_tensor_address("tokens", small.data.ptr)
    with pytest.raises(RuntimeError, match="IllegalAddress"):
        ctx.execute_async_v3(0)
    # plans made elsewhere
    plan = ensure_plan(bundle, "fp32").read_bytes()
    trt.version = "10.0.1"
    assert tensorrt.Runtime(logger).deserialize_cuda_engine(plan) is None and "version" in trt.errors[-1]
    trt.version = fake_tensorrt.DEFAULT_VERSION
    trt.device = {"name": "another GPU", "sm": 86}
    assert tensorrt.Runtime(logger).deserialize_cuda_engine(plan) is None and "compute 86" in trt.errors[-1]
    trt.device = {"name": "another GPU", "sm": 90}
    assert tensorrt.Runtime(logger).deserialize_cuda_engine(plan) is not None and "different models" in trt.warnings[-1]
    assert tensorrt.Runtime(logger).deserialize_cuda_engine(b"garbage") is None
