"""The `tensorrt` engine: the deform graph as a TensorRT engine (TensorRT 10+ Python API).

Build: the bundle's ONNX (`deform.onnx` for fp32, `deform.fp16.onnx` for fp16) is parsed
into a **strongly typed** network (precision comes from the ONNX, no builder flags),
with one optimisation profile over B (frames per batch) and N (Gaussians) and a
timing cache kept beside the engines, keyed like them
(``engines/timing-<gpu-name>-sm<cc>-trt<version>.cache``: TensorRT refuses a cache from
another device or version, and then the build starts from an empty one). The plan is stored as
``engines/<gpu-name>-sm<cc>-trt<version>-<precision>.plan`` plus a JSON with the same
key, the ONNX's SHA-256 and the plan's SHA-256, so a stale engine is never loaded on
another GPU or TensorRT version (one-line error) and a changed ONNX triggers a rebuild.

Run: `execute_async_v3` on the runner's own non-blocking CuPy stream (not the default
stream, on which TensorRT adds device-wide synchronisation), ordered after the caller's
current stream by an event before the run and before it by an event after; tensor
addresses are taken from CuPy arrays, copied when not 256-byte aligned (TensorRT's rule;
an offset view is not); inputs may be numpy (copied once) or CuPy.

`tensorrt` and `cupy` are imported inside the functions that need them, so this module
imports on a CPU-only machine; the key/metadata logic is testable there.
"""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path


from gt_runtime.bundle import sha256_file
from gt_runtime.contract import DEFORM_ONNX
from gt_runtime.engines.base import DEFORM_INPUTS, DEFORM_OUTPUTS, Runner
from gt_runtime.errors import InputError, require

TRT_PRECISIONS = ("fp32", "fp16")
DEFAULT_MAX_BATCH = 8
WORKSPACE_BYTES = 2 << 30
TENSOR_ALIGNMENT = 256  # bytes: IExecutionContext.set_tensor_address refuses other addresses


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'NVIDIA-H100-80GB-HBM3' (file-name safe)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def device_key(precision: str, gpu_name: str | None = None, sm: int | None = None, trt_version: str | None = None) -> dict:
    """The engine key of this machine: {"gpu", "sm", "trt", "precision"} (queries CuPy/TensorRT for what is not given)."""
    if gpu_name is None or sm is None:
        cp = require("cupy", "engine tensorrt")
        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        sm = int(props["major"]) * 10 + int(props["minor"])
    if trt_version is None:
        trt_version = require("tensorrt", "engine tensorrt").__version__
    return {"gpu": slug(gpu_name), "sm": int(sm), "trt": str(trt_version), "precision": precision}


def key_name(key: dict) -> str:
    """{"gpu","sm","trt","precision"} -> 'NVIDIA-H100-80GB-HBM3-sm90-trt10.3.0-fp16'."""
    return f"{key['gpu']}-sm{key['sm']}-trt{key['trt']}-{key['precision']}"


def timing_cache_name(key: dict) -> str:
    """The timing cache of this machine's engines: 'timing-<gpu>-sm<cc>-trt<version>.cache' (any precision)."""
    return f"timing-{key['gpu']}-sm{key['sm']}-trt{key['trt']}.cache"


def check_plan(plan_path: str | Path, key: dict, onnx_sha: str | None = None) -> dict:
    """Validate an engine plan against this machine's key -> its metadata, or raise a one-line InputError.

    Missing/unreadable JSON, another GPU / compute capability / TensorRT version /
    precision, a plan whose bytes do not match the JSON's hash: each is an InputError
    that names the plan and says to delete or rebuild it. A different ONNX hash
    returns metadata with "stale": True (the caller rebuilds).
    """
    plan_path = Path(plan_path)
    meta_path = plan_path.with_suffix(".json")
    fix = f"delete {plan_path.name} (and its .json) to rebuild it on this machine"
    if not plan_path.is_file():
        raise InputError(f"{plan_path}: no such TensorRT engine | build it with gt export --trt, or let gt play build it")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        raise InputError(f"{meta_path}: missing or unreadable engine metadata | {fix}") from None
    for field, label in (("gpu", "GPU"), ("sm", "compute capability"), ("trt", "TensorRT version"), ("precision", "precision")):
        if str(meta.get(field)) != str(key[field]):
            raise InputError(
                f"{plan_path}: engine built for {label} {meta.get(field)}, this machine has {key[field]} "
                f"(engines are keyed {key_name(key)}) | {fix}")
    if meta.get("plan_sha256") and sha256_file(plan_path) != meta["plan_sha256"]:
        raise InputError(f"{plan_path}: engine file does not match its metadata (truncated or modified) | {fix}")
    meta = dict(meta)
    meta["stale"] = bool(onnx_sha and meta.get("onnx_sha256") and meta["onnx_sha256"] != onnx_sha)
    return meta


def engines_dir(bundle) -> Path:
    """The bundle's engines/ directory, or a per-user cache when the bundle is read-only."""
    import os

    d = bundle.engines_dir
    try:
        d.mkdir(exist_ok=True)
        if os.access(d, os.W_OK):
            return d
    except OSError:
        pass
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gt" / "engines" / bundle.manifest["files"]["weights.npz"][:16]
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def build_plan(onnx_path: str | Path, plan_path: str | Path, key: dict, n: int, max_batch: int = DEFAULT_MAX_BATCH,
               opt_batch: int = 1, timing_cache: str | Path | None = None) -> dict:
    """Build a strongly typed TensorRT engine from an ONNX deform graph -> its metadata (plan + JSON written)."""
    trt = require("tensorrt", "engine tensorrt")
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"{onnx_path}: TensorRT cannot parse the ONNX ({errs[:300]}) | re-export the bundle, or use --engine onnxruntime")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    profile.set_shape("tokens", (1, 4, 64), (max(1, min(opt_batch, max_batch)), 4, 64), (max_batch, 4, 64))
    profile.set_shape("queries", (1, 64), (n, 64), (n, 64))
    config.add_optimization_profile(profile)
    _use_timing_cache(config, timing_cache)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan_path.with_name(plan_path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(memoryview(plan))
    tmp.replace(plan_path)
    cache = config.get_timing_cache() if timing_cache is not None else None
    if cache is not None:  # None: no cache was set (TensorRT refused every one)
        tmp = Path(timing_cache).with_name(Path(timing_cache).name + ".partial")
        tmp.write_bytes(memoryview(cache.serialize()))
        tmp.replace(timing_cache)
    meta = dict(key)
    meta.update({"onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path), "plan_sha256": sha256_file(plan_path),
                 "profile": {"batch": [1, opt_batch, max_batch], "n": [1, n, n]},
                 "build_s": round(time.perf_counter() - t0, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    plan_path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _use_timing_cache(config, path) -> bool:
    """Set the timing cache read from `path` on the builder config, or an empty one when there is none or TensorRT
    refuses it (set_timing_cache -> False: made on another device or TensorRT version) -> True if `path` was used."""
    if path is not None and Path(path).is_file():
        try:
            cache = config.create_timing_cache(Path(path).read_bytes())
        except Exception:  # not a timing cache (truncated, or another TensorRT's format)
            cache = None
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return True
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return False


def ensure_plan(bundle, precision: str = "fp16", max_batch: int = DEFAULT_MAX_BATCH, key: dict | None = None) -> Path:
    """The engine plan for this machine (built if absent or stale) -> its path."""
    if precision not in TRT_PRECISIONS:
        raise InputError(f"tensorrt precision {precision!r} | expected one of {', '.join(TRT_PRECISIONS)}")
    onnx_path = bundle.onnx_path(precision)
    key = key or device_key(precision)
    d = engines_dir(bundle)
    plan = d / f"{key_name(key)}.plan"
    onnx_sha = bundle.manifest["files"][DEFORM_ONNX[precision]]
    if plan.is_file():
        meta = check_plan(plan, key, onnx_sha)
        if not meta["stale"] and meta.get("profile", {}).get("batch", [0, 0, 0])[2] >= max_batch:
            return plan
    build_plan(onnx_path, plan, key, bundle.num_gaussians, max_batch=max_batch, timing_cache=d / timing_cache_name(key))
    return plan


class TrtDeformRunner(Runner):
    """deform graph through a TensorRT engine: execute_async_v3, CuPy buffers, the runner's own stream."""

    input_ranks = DEFORM_INPUTS
    optional_inputs = ("queries",)
    output_names = DEFORM_OUTPUTS
    device = "cuda"

    def __init__(self, bundle=None, precision: str = "fp16", plan_path: str | Path | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, queries=None):
        super().__init__(f"tensorrt-{precision}")
        self.bundle, self.precision, self.plan_path, self.max_batch = bundle, precision, plan_path, max_batch
        self._queries_host = queries if queries is not None else (bundle.gaussians["queries"] if bundle is not None else None)
        self._run_lock = threading.Lock()

    def activate_impl(self):
        trt = require("tensorrt", "engine tensorrt")
        cp = require("cupy", "engine tensorrt")
        self.trt, self.cp = trt, cp
        key = device_key(self.precision)
        if self.plan_path is not None:
            check_plan(self.plan_path, key)
            plan = Path(self.plan_path)
        else:
            plan = ensure_plan(self.bundle, self.precision, self.max_batch, key)
        self.meta = json.loads(plan.with_suffix(".json").read_text())
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise InputError(f"{plan}: TensorRT cannot deserialize this engine | delete {plan.name} to rebuild it")
        self.context = self.engine.create_execution_context()
        self.stream = cp.cuda.Stream(non_blocking=True)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        for n in names:
            if self.engine.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise InputError(f"{plan}: engine tensor {n} is {self.engine.get_tensor_dtype(n)} | expected FP32 I/O (export with keep_io_types)")
        with self.stream:
            self.queries = self._device_input(self._queries_host)

    def _device_input(self, x):
        """x (numpy or CuPy) -> a C-contiguous float32 CuPy array at a 256-byte-aligned address (copied if needed)."""
        cp = self.cp
        x = cp.ascontiguousarray(cp.asarray(x, dtype=cp.float32))
        if x.data.ptr % TENSOR_ALIGNMENT:  # e.g. a view at an offset into a larger array
            x = x.copy()
        return x

    def infer_impl(self, feed):
        cp, stream = self.cp, self.stream
        bsz = feed["tokens"].shape[0]
        if bsz > self.meta["profile"]["batch"][2]:
            raise ValueError(f"{self.name}: input tensor 'tokens' | batch {bsz} | expected at most {self.meta['profile']['batch'][2]} (rebuild with a larger max batch)")
        caller = cp.cuda.get_current_stream()
        with self._run_lock, stream:
            stream.wait_event(caller.record())  # what the caller queued (the inputs) comes first
            tokens = self._device_input(feed["tokens"])
            queries = self.queries if feed.get("queries") is None else self._device_input(feed["queries"])
            ctx = self.context
            for name, x in (("tokens", tokens), ("queries", queries)):
                # False (shape outside the profile) would leave the previous shape in force: outputs of the wrong size
                if not ctx.set_input_shape(name, tuple(x.shape)):
                    prof = self.meta["profile"]
                    raise ValueError(f"{self.name}: input tensor {name!r} | shape {tuple(x.shape)} | expected batch "
                                     f"1..{prof['batch'][2]} and N 1..{prof['n'][2]} (the engine's profile)")
            outs = {name: cp.empty(tuple(ctx.get_tensor_shape(name)), cp.float32) for name in self.outputs}
            for name, x in (("tokens", tokens), ("queries", queries), *outs.items()):
                # False (e.g. a misaligned address) keeps the previous address: the run would use stale memory
                if not ctx.set_tensor_address(name, x.data.ptr):
                    raise RuntimeError(f"{self.name}: TensorRT refused the address of tensor {name!r} (see the TensorRT log)")
            if not ctx.execute_async_v3(stream.ptr):
                raise RuntimeError(f"{self.name}: execute_async_v3 failed (see the TensorRT log)")
            # Keep the inputs alive until the stream has consumed them.
            self._alive = (tokens, queries)
        caller.wait_event(stream.record())  # the caller's later work sees the outputs
        return outs

    def synchronize(self):
        self.stream.synchronize()

    def deactivate_impl(self):
        self.context = self.engine = self.runtime = None


def available() -> bool:
    """True when tensorrt and cupy import and a CUDA device is visible."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


__all__ = ["TrtDeformRunner", "build_plan", "check_plan", "device_key", "ensure_plan", "key_name", "timing_cache_name",
           "available"]
