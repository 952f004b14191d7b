"""Engines: runners of the deform and audio-encoder graphs behind one interface (docs/ARCHITECTURE.md: "Engines").

`select_engine(bundle, "auto")` picks the best available; `compare_runners` checks
runners against each other. Heavy modules (onnxruntime, tensorrt, cupy) are imported
only when a runner is activated.
"""
from gt_runtime.engines.base import EngineSet, Runner
from gt_runtime.engines.comparator import compare_outputs, compare_runners, psnr
from gt_runtime.engines.select import ENGINE_NAMES, gpu_available, resolve_engine_name, select_engine

__all__ = ["ENGINE_NAMES", "EngineSet", "Runner", "compare_outputs", "compare_runners", "gpu_available",
           "psnr", "resolve_engine_name", "select_engine"]
