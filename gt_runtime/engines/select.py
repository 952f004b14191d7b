"""`--engine`: pick the deform/audio runners for a bundle on this machine.

Names: ``auto``; ``tensorrt`` (``tensorrt-fp16`` / ``tensorrt-fp32``);
``onnxruntime-cuda``; ``array-cupy``; ``onnxruntime`` (CPU, ``-int8`` / ``-fp32`` /
``-fp16``); ``cpu-fused`` (the fused C++ kernel, ``-int8`` by default / ``-fp32``); ``cuda-fused``
(the fused CUDA kernels, FP32: ``cuda-fused-fp32``); ``array`` (numpy).

``auto`` (`gt_runtime.engines.autotune.choose_engine`) times the engines that pass parity on the bundle's first frames and
keeps the fastest (gt_runtime.engines.autotune, cached per machine and bundle). With
GT_AUTOTUNE=0, and in `resolve_engine_name`, it is the fixed order: on a GPU tensorrt >
onnxruntime-cuda > array-cupy; on a CPU cpu-fused (INT8 when the bundle has an INT8 graph, i.e. its
export passed the INT8 gates, else FP32) > onnxruntime (the same rule) > array. cpu-fused comes first
because it was the fastest on every CPU measured (tools/bench/RESULTS.md: 2.7-4.7x ORT INT8).
"""
from __future__ import annotations

import importlib.util

from gt_runtime.contract import AUDIO_ONNX
from gt_runtime.engines.base import EngineSet
from gt_runtime.errors import InputError

ENGINE_NAMES = ("auto", "tensorrt", "tensorrt-fp16", "tensorrt-fp32", "onnxruntime-cuda", "array-cupy",
                "onnxruntime", "onnxruntime-int8", "onnxruntime-fp32", "onnxruntime-fp16", "array", "array-plain",
                "cpu-fused", "cpu-fused-int8", "cpu-fused-fp32", "cuda-fused", "cuda-fused-fp32")


def gpu_available() -> bool:
    """True when CuPy imports and sees a CUDA device (never imports cupy if it is not installed)."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_engine_name(bundle, engine: str = "auto", gpu: bool | None = None) -> str:
    """'auto' (or a family name) -> a concrete engine name for this bundle and machine."""
    if engine not in ENGINE_NAMES:
        raise InputError(f"--engine {engine}: unknown engine | expected one of {', '.join(ENGINE_NAMES)}")
    gpu = gpu_available() if gpu is None else gpu
    requested = engine
    if engine == "auto":
        if gpu:
            from gt_runtime.engines import ort_engine

            if _has("tensorrt"):
                engine = "tensorrt"
            elif ort_engine.cuda_available():
                engine = "onnxruntime-cuda"
            else:
                engine = "array-cupy"
        else:
            from gt_runtime.engines import fused_cpu

            engine = "cpu-fused" if fused_cpu.available() else "onnxruntime" if _has("onnxruntime") else "array"
    if engine == "tensorrt":
        engine = "tensorrt-fp16" if "fp16" in bundle.precisions else "tensorrt-fp32"
    if engine == "onnxruntime":
        engine = "onnxruntime-int8" if "int8" in bundle.precisions else "onnxruntime-fp32"
    if engine == "cpu-fused":  # INT8 weights are quantised from the FP32 ones: every bundle allows it ...
        # ... but auto's fixed order takes INT8 only where the export's INT8 gates passed
        engine = "cpu-fused-int8" if requested != "auto" or "int8" in bundle.precisions else "cpu-fused-fp32"
    if engine == "cuda-fused":  # FP32 only on the GPU
        engine = "cuda-fused-fp32"
    if engine in ("tensorrt-fp16", "tensorrt-fp32", "onnxruntime-cuda", "array-cupy", "cuda-fused-fp32") and not gpu:
        raise InputError(f"--engine {engine}: needs a CUDA GPU with CuPy, none found | use --engine auto, onnxruntime or array")
    return engine


def select_engine(bundle, engine: str = "auto", gpu: bool | None = None, threads: int | None = None,
                  max_batch: int = 8) -> EngineSet:
    """-> EngineSet (not yet activated) for `engine` on this machine."""
    from gt_runtime.engines.array_engine import ArrayAudioRunner, ArrayDeformRunner

    name = resolve_engine_name(bundle, engine, gpu)
    w, q, layers, deg = bundle.weights, bundle.gaussians["queries"], bundle.num_layers, bundle.sh_degree
    if name in ("array", "array-plain"):
        return EngineSet(name, "cpu", ArrayAudioRunner(w), ArrayDeformRunner(w, q, layers, deg, "cpu", fast=name == "array", threads=threads))
    if name == "array-cupy":
        import cupy

        return EngineSet(name, "cuda", ArrayAudioRunner(w, "cuda"), ArrayDeformRunner(w, q, layers, deg, "cuda"), cupy)
    if name.startswith("onnxruntime"):
        if not _has("onnxruntime"):
            raise InputError(f"--engine {name}: onnxruntime is not installed | pip install onnxruntime (or onnxruntime-gpu), or use --engine array")
        from gt_runtime.engines import ort_engine

        if name == "onnxruntime-cuda":
            if not ort_engine.cuda_available():
                raise InputError("--engine onnxruntime-cuda: onnxruntime has no CUDA provider | pip install onnxruntime-gpu, or use --engine tensorrt / array-cupy")
            import cupy

            prec = "fp16" if "fp16" in bundle.precisions else "fp32"
            audio = (ort_engine.audio_runner(bundle, "cuda") if bundle.has(AUDIO_ONNX) else ArrayAudioRunner(w, "cuda"))
            return EngineSet(f"onnxruntime-cuda-{prec}", "cuda", audio,
                             ort_engine.deform_runner(bundle, prec, "cuda", graph="bundle"), cupy)
        prec = name.rsplit("-", 1)[1]
        if prec not in bundle.precisions and not (prec == "fp32" and _has("onnx")):
            raise InputError(f"--engine {name}: the bundle has no {prec} deform graph | re-export with gt export --{prec}, or use --engine onnxruntime")
        audio = ort_engine.audio_runner(bundle, "cpu") if bundle.has(AUDIO_ONNX) else ArrayAudioRunner(w)
        return EngineSet(name, "cpu", audio, ort_engine.deform_runner(bundle, prec, "cpu", threads=threads))
    if name.startswith("cpu-fused"):
        from gt_runtime.engines import fused_cpu

        fused_cpu.load()  # a missing extension fails here, in one line naming the fix
        if _has("onnxruntime") and bundle.has(AUDIO_ONNX):
            from gt_runtime.engines import ort_engine

            audio = ort_engine.audio_runner(bundle, "cpu")
        else:
            audio = ArrayAudioRunner(w)
        return EngineSet(name, "cpu", audio, fused_cpu.FusedDeformRunner(w, q, layers, deg, int8=name.endswith("int8"),
                                                                         threads=threads))
    if name == "cuda-fused-fp32":
        import cupy

        from gt_runtime.engines.fused_cuda import FusedCudaDeformRunner

        return EngineSet(name, "cuda", ArrayAudioRunner(w, "cuda"), FusedCudaDeformRunner(w, q, layers, deg), cupy)
    if name.startswith("tensorrt"):
        import cupy

        from gt_runtime.engines.trt_engine import TrtDeformRunner

        prec = name.rsplit("-", 1)[1]
        return EngineSet(name, "cuda", ArrayAudioRunner(w, "cuda"), TrtDeformRunner(bundle, prec, max_batch=max_batch), cupy)
    raise AssertionError(name)  # pragma: no cover

