"""Lazy loaders of ONNX Runtime sessions (Polygraphy's loader/runner split).

A loader is a callable that builds its object when called, not before:

    load = SessionFromOnnx("deform.onnx")          # nothing imported or read yet
    sess = load()                                  # onnxruntime.InferenceSession (CPU EP)
    cuda = CudaSessionFromOnnx("deform.onnx")      # CUDA EP, or a one-line error if it fell back
    sess = cuda(stream_ptr)                        # ... on the caller's CUDA stream

Runners (`OrtRunner`) are given a loader and call it in `activate()`; the audio front end
uses the same loader. This module imports only the contract, the errors and the standard
library, so anything may use it without pulling in an engine (or onnxruntime, before a
loader is called).
"""
from __future__ import annotations

from pathlib import Path

from gt_runtime.errors import InputError, require
from gt_runtime.util.cpu import usable_cores

CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"


def cpu_session_options(threads: int | None = None, what: str = "engine onnxruntime"):
    """SessionOptions of the CPU EP: `threads` intra-op threads (default: usable cores), one inter-op
    thread, spinning off (idle pool threads would steal the rasterizer's cores), errors-only log."""
    ort = require("onnxruntime", what)
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or usable_cores())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def _model_arg(model):
    """A path, serialized bytes or a ModelProto -> what InferenceSession takes (str or bytes)."""
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    return str(model)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class SessionFromOnnx:
    """Loader of a CPU session: `SessionFromOnnx(model, threads=None, where=None)()` -> InferenceSession.

    `model`: a path, serialized bytes or an onnx ModelProto. `options`: SessionOptions, or None for
    `cpu_session_options(threads)`. A graph ONNX Runtime cannot load is a one-line InputError naming
    `where` (default: the path) and `label` and saying `fix`; `what` names the user of onnxruntime when it is missing.
    """

    providers = (CPU_EP,)

    def __init__(self, model, threads: int | None = None, options=None, where: str | None = None,
                 fix: str = "re-export the bundle with gt export", what: str = "engine onnxruntime", label: str = "the graph"):
        self.model, self.threads, self.options, self.fix, self.what, self.label = model, threads, options, fix, what, label
        self.where = where or (str(model) if isinstance(model, (str, Path)) else "ONNX graph")

    def session_options(self):
        return self.options if self.options is not None else cpu_session_options(self.threads, self.what)

    def _create(self, providers):
        ort = require("onnxruntime", self.what)
        try:
            return ort.InferenceSession(_model_arg(self.model), sess_options=self.session_options(), providers=providers)
        except Exception as exc:
            raise InputError(f"{self.where}: ONNX Runtime cannot load {self.label} ({_first_line(exc)}) | {self.fix}") from None

    def __call__(self):
        return self._create(list(self.providers))


def cuda_provider_available() -> bool:
    """True when onnxruntime lists the CUDA EP (onnxruntime-gpu). A listed EP may still fail to load:
    CudaSessionFromOnnx checks the session it gets."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return CUDA_EP in ort.get_available_providers()


def cuda_load_failure(ort) -> str:
    """Why onnxruntime's CUDA EP library does not load here: the dynamic loader's message (it names the
    missing library, e.g. libcudnn.so.9), or '' when it loads (then ONNX Runtime's own log says why)."""
    import ctypes

    capi = Path(getattr(ort, "__file__", "") or ".").parent / "capi"
    lib = capi / "libonnxruntime_providers_cuda.so"
    if not lib.is_file():
        return f"{lib.name} is not in {capi} (a CPU-only onnxruntime build)"
    try:
        ctypes.CDLL(str(lib))
    except OSError as exc:
        return _first_line(exc)
    return ""


class CudaSessionFromOnnx(SessionFromOnnx):
    """Loader of a CUDA EP session on a given stream: `CudaSessionFromOnnx(model)(stream_ptr, device_id)`.

    ONNX Runtime lists the CUDA EP even when its libraries (CUDA, cuDNN) fail to load, and then quietly
    builds a CPU session (onnxruntime#13414): the session is refused unless CUDA is its first provider.
    `stream_ptr` (a CUDA stream address, not 0: ONNX Runtime takes 0 for "no user stream") becomes
    `user_compute_stream`, so the graph runs on that stream. Copies stay on the compute stream
    (`do_copy_in_default_stream` keeps its default, 1: ONNX Runtime documents 0 as a data-race risk).
    """

    providers = (CUDA_EP, CPU_EP)

    def session_options(self):
        if self.options is not None:
            return self.options
        ort = require("onnxruntime", self.what)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        return so

    def __call__(self, stream_ptr: int, device_id: int = 0):
        if not cuda_provider_available():
            raise InputError("onnxruntime has no CUDA execution provider | install onnxruntime-gpu, or use --engine array-cupy / tensorrt")
        if not stream_ptr:
            raise ValueError("CudaSessionFromOnnx: stream_ptr 0 (the null stream) | pass a created stream: ONNX Runtime ignores 0")
        opts = {"device_id": str(int(device_id)), "user_compute_stream": str(int(stream_ptr))}
        sess = self._create([(CUDA_EP, opts), CPU_EP])
        got = sess.get_providers()
        if not got or got[0] != CUDA_EP:
            ort = require("onnxruntime", self.what)
            why = cuda_load_failure(ort) or "see ONNX Runtime's warning above"
            raise InputError(f"{self.where}: onnxruntime's CUDA execution provider did not load ({why}); the session "
                             f"fell back to {', '.join(got) or 'no provider'} | install the CUDA and cuDNN libraries "
                             f"onnxruntime-gpu {getattr(ort, '__version__', '')} needs, or use --engine tensorrt / array-cupy")
        return sess


__all__ = ["CPU_EP", "CUDA_EP", "CudaSessionFromOnnx", "SessionFromOnnx", "cpu_session_options", "cuda_load_failure",
           "cuda_provider_available", "usable_cores"]
