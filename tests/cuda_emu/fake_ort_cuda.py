"""A strict stand-in for onnxruntime-gpu's CUDA execution provider, over the real (CPU) onnxruntime and
tests/cuda_emu/fake_cupy.py.

It has exactly what gt_runtime/engines/ort_engine.py's CUDA path uses, with onnxruntime's names and
signatures (an attribute that is not listed raises AttributeError):

    get_available_providers() -> [..., "CUDAExecutionProvider", "CPUExecutionProvider"];
    InferenceSession(path_or_bytes, sess_options=None, providers=None, provider_options=None):
        get_inputs(), get_outputs(), get_providers(), io_binding(), run_with_iobinding(iobinding, run_options=None);
    IOBinding: bind_input(name, device_type, device_id, element_type, shape, buffer_ptr),
        bind_output(name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None),
        synchronize_inputs(), synchronize_outputs();
    SessionOptions, ExecutionMode, GraphOptimizationLevel, __version__: the real ones.

A session whose providers list only "CPUExecutionProvider" is the real CPU session, untouched. A session
with "CUDAExecutionProvider" checks the provider options as onnxruntime does (the Python layer turns
every key and value into a string; the CUDA EP then parses them): a name that is not one of the CUDA EP's
documented options is refused ("Unknown provider option"), a value that does not parse as its type
(device_id an int of an existing device, user_compute_stream a stream address, the flags 0/1/true/false,
gpu_mem_limit a size, the enum options one of their names) is refused. user_compute_stream must be a
live fake-cupy stream. ("0", CuPy's null stream, is accepted as ORT accepts it; on a GPU it is a null
pointer, i.e. no user stream: the EP then uses its own stream. Not distinguished here: see Not emulated.)

IOBinding checks what onnxruntime checks, with its messages: an input or output name the graph does not
have, a device type onnxruntime does not know; and, for this engine, what would fault or silently read
garbage on a GPU: device_type other than "cuda" (a CuPy pointer read as host memory), a device id other
than the fake device's, a buffer_ptr that is not an int. run_with_iobinding checks, as onnxruntime does at
Run: every graph input bound, element types equal to the graph's, input shapes against the graph's
static dimensions, pre-allocated output shapes equal to the computed ones ("Shape mismatch attempting to
re-use buffer"); and, as a GPU would, that every bound address range lies inside a live fake-cupy device
array (else cudaErrorIllegalAddress). It then runs the real CPU session on the arrays behind the input
pointers and writes the results into the bound output memory: no host copy is logged by fake_cupy.

Streams, as fake_cupy models them: a session runs on its user_compute_stream, or (none, or "0", which
ONNX Runtime takes for none) on a non-blocking stream of its own; each run must be ordered after the
work the caller queued on its current stream (fake_cupy.check_caller_order), else RuntimeError.
`IOBinding.synchronize_inputs/outputs` synchronise the whole device, as the CUDA EP's Sync() does
(cudaDeviceSynchronize): logged in fake_cupy.LOG.device_syncs. A run ends with its stream synchronised
(ONNX Runtime's default).

The CUDA EP can fail to load, as it does where cuDNN or the CUDA libraries are missing
(`install(..., cuda_fails=...)`): it is still listed by get_available_providers(), and a session asked for
it is quietly the CPU session (get_providers() == ["CPUExecutionProvider"]) after a warning on stderr, as
onnxruntime#13414 describes. With `lib_dir`, a stand-in capi/libonnxruntime_providers_cuda.so is built that
links a library which is then removed, so loading it fails with the dynamic loader's own message.

Not emulated: the CUDA kernels and their precision, asynchrony (every run has finished when it returns),
ORT-allocated device outputs (outputs bound without a buffer are not written), memory arenas, CUDA graphs.

    fake = install(monkeypatch)        # sys.modules["onnxruntime"]; needs fake_cupy installed first
    fake.sessions, fake.runs, fake.streams  # CUDA sessions made, runs, user_compute_stream of each session
    fake.options                       # the parsed CUDA provider options of each session
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from dataclasses import dataclass, field

import numpy as np

from . import fake_cupy

# The CUDA EP's provider options (onnxruntime docs, execution-providers/CUDA-ExecutionProvider): name -> type.
_INT, _SIZE, _BOOL, _PTR = "int", "size_t", "bool", "pointer"
CUDA_OPTIONS = {
    "device_id": _INT,
    "user_compute_stream": _PTR,
    "has_user_compute_stream": _BOOL,
    "do_copy_in_default_stream": _BOOL,
    "use_ep_level_unified_stream": _BOOL,
    "gpu_mem_limit": _SIZE,
    "arena_extend_strategy": ("kNextPowerOfTwo", "kSameAsRequested"),
    "cudnn_conv_algo_search": ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),
    "cudnn_conv_use_max_workspace": _BOOL,
    "cudnn_conv1d_pad_to_nc1d": _BOOL,
    "enable_cuda_graph": _BOOL,
    "enable_skip_layer_norm_strict_mode": _BOOL,
    "use_tf32": _BOOL,
    "prefer_nhwc": _BOOL,
    "gpu_external_alloc": _PTR,
    "gpu_external_free": _PTR,
    "gpu_external_empty_cache": _PTR,
    "tunable_op_enable": _BOOL,
    "tunable_op_tuning_enable": _BOOL,
    "tunable_op_max_tuning_duration_ms": _INT,
    "sdpa_kernel": _INT,
    "fuse_conv_bias": _BOOL,
}

_ONNX_TYPES = {  # "tensor(...)" -> (numpy dtype, TensorProto enum)
    "tensor(float)": (np.float32, 1), "tensor(uint8)": (np.uint8, 2), "tensor(int8)": (np.int8, 3),
    "tensor(int32)": (np.int32, 6), "tensor(int64)": (np.int64, 7), "tensor(bool)": (np.bool_, 9),
    "tensor(float16)": (np.float16, 10), "tensor(double)": (np.float64, 11),
}  # fmt: skip


@dataclass
class FakeOrtCuda:
    module: types.ModuleType
    real: types.ModuleType
    sessions: int = 0
    runs: int = 0
    streams: list = field(default_factory=list)  # the user_compute_stream of each CUDA session (None: ORT's own)
    options: list = field(default_factory=list)  # the parsed CUDA provider options of each CUDA session
    cuda_fails: str | None = None  # why the CUDA EP does not load (None: it loads)


_STATE: FakeOrtCuda | None = None


def _state() -> FakeOrtCuda:
    if _STATE is None:
        raise RuntimeError("fake onnxruntime-gpu used after its test ended")
    return _STATE


def _fail(msg: str):
    """onnxruntime's Fail exception (what a failed ORT status becomes in Python)."""
    return _state().real.capi.onnxruntime_pybind11_state.Fail(msg)


def _invalid(msg: str):
    return _state().real.capi.onnxruntime_pybind11_state.InvalidArgument(msg)


def _parse(name: str, kind, value: str):
    bad = _fail(f"[CUDAExecutionProvider] provider option {name!r}: cannot parse {value!r} as {kind}")
    if isinstance(kind, tuple):
        if value not in kind:
            raise bad
        return value
    if kind == _BOOL:
        v = value.lower()
        if v not in ("0", "1", "true", "false"):
            raise bad
        return v in ("1", "true")
    try:
        n = int(value, 10)
    except ValueError:
        raise bad from None
    if kind in (_SIZE, _PTR) and n < 0:
        raise bad
    return n


def _cuda_options(options: dict) -> dict:
    # onnxruntime_inference_collection.check_and_normalize_provider_args: {str(key): str(value)}
    opts = {str(k): str(v) for k, v in options.items()}
    parsed = {}
    for k, v in opts.items():
        if k not in CUDA_OPTIONS:
            raise _fail(f'[CUDAExecutionProvider] Unknown provider option: "{k}".')
        parsed[k] = _parse(k, CUDA_OPTIONS[k], v)
    dev = parsed.get("device_id", 0)
    if not 0 <= dev < fake_cupy._runtime().getDeviceCount():
        raise _fail(f"[CUDAExecutionProvider] Invalid device_id {dev}: the machine has "
                    f"{fake_cupy._runtime().getDeviceCount()} CUDA device(s)")  # fmt: skip
    if "user_compute_stream" in parsed:
        fake_cupy.Stream.check_handle(parsed["user_compute_stream"], "user_compute_stream")
    return parsed


class InferenceSession:
    """onnxruntime.InferenceSession: the real CPU session, or (CUDA EP) the emulated one below."""

    def __new__(cls, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
        st = _state()
        if kwargs:
            raise TypeError(f"InferenceSession: unexpected keyword arguments {sorted(kwargs)} (not used by ort_engine)")
        if provider_options is not None:
            raise TypeError("InferenceSession: provider_options= is not emulated (ort_engine passes (name, options) pairs)")
        if not isinstance(providers, (list, tuple)) or not providers:
            raise ValueError("'providers' should be a sequence.")  # ort_engine always names its providers
        names, options = [], {}
        for p in providers:
            if isinstance(p, str):
                name, opts = p, {}
            elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], dict):
                name, opts = p
            else:
                raise ValueError("'providers' values must be either strings or (string, dict) tuples.")
            if name not in ("CUDAExecutionProvider", "CPUExecutionProvider"):
                raise ValueError(f"Specified provider '{name}' is not in available provider names.")
            names.append(name)
            options[name] = opts
        if "CUDAExecutionProvider" not in names:
            return st.real.InferenceSession(path_or_bytes, sess_options=sess_options, providers=providers)
        if names[-1] != "CPUExecutionProvider" or names[0] != "CUDAExecutionProvider":
            raise ValueError(f"providers {names}: ort_engine's order is CUDA then the CPU fallback")
        cuda = _cuda_options(options["CUDAExecutionProvider"])
        if st.cuda_fails is not None:
            # onnxruntime_pybind_state.cc: a warning, then the session is built with the remaining providers
            print(f"[W:onnxruntime:Default] Failed to create CUDAExecutionProvider. {st.cuda_fails}. Require cuDNN 9.* "
                  "and CUDA 12.*. Please install all dependencies as mentioned in the GPU requirements page "
                  "(https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements), "
                  "make sure they're in the PATH, and that your GPU is supported.", file=sys.stderr)
            return st.real.InferenceSession(path_or_bytes, sess_options=sess_options, providers=["CPUExecutionProvider"])
        self = object.__new__(_CudaSession)
        self._sess = st.real.InferenceSession(path_or_bytes, sess_options=sess_options, providers=["CPUExecutionProvider"])
        self._device_id = cuda.get("device_id", 0)
        user = cuda.get("user_compute_stream") or None  # 0 is "no user stream" (ORT resets has_user_compute_stream)
        self._stream = fake_cupy.Stream.from_handle(user, "user_compute_stream") if user else fake_cupy.Stream(non_blocking=True)
        st.sessions += 1
        st.streams.append(user)
        st.options.append(cuda)
        return self


class _CudaSession:
    __slots__ = ("_sess", "_device_id", "_stream")

    def get_inputs(self):
        return self._sess.get_inputs()

    def get_outputs(self):
        return self._sess.get_outputs()

    def get_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def io_binding(self):
        return IOBinding(self)

    def run_with_iobinding(self, iobinding, run_options=None):
        if not isinstance(iobinding, IOBinding) or iobinding._session is not self:
            raise TypeError("run_with_iobinding: the IOBinding of another session")
        if run_options is not None:
            raise TypeError("run_with_iobinding: run_options are not emulated (not used by ort_engine)")
        st = _state()
        fake_cupy.check_caller_order(self._stream, "InferenceSession.run_with_iobinding")
        graph_in = {i.name: i for i in self._sess.get_inputs()}
        missing = [n for n in graph_in if n not in iobinding._inputs]
        if missing:
            raise _invalid(f"Missing Input: {missing[0]}")
        feed = {}
        for name, (etype, shape, ptr) in iobinding._inputs.items():
            arg = graph_in[name]
            want = _ONNX_TYPES[arg.type][0]
            if etype != np.dtype(want):
                raise _invalid(f"Unexpected input data type. Actual: ({_type_name(etype)}) , expected: ({arg.type})")
            if len(shape) != len(arg.shape):
                raise _invalid(f"Invalid rank for input: {name} Got: {len(shape)} Expected: {len(arg.shape)} "
                               "Please fix either the inputs/outputs or the model.")  # fmt: skip
            bad = [i for i, (g, e) in enumerate(zip(shape, arg.shape)) if isinstance(e, int) and g != e]
            if bad:
                raise _invalid(f"Got invalid dimensions for input: {name} for the following indices\n index: {bad[0]} "
                               f"Got: {shape[bad[0]]} Expected: {arg.shape[bad[0]]}\n Please fix either the inputs/outputs or the model.")  # fmt: skip
            mem = fake_cupy.device_memory(ptr, int(np.prod(shape, dtype=np.int64)) * etype.itemsize)
            feed[name] = np.array(mem.view(etype).reshape(shape))  # a host copy inside the "device"
        names = [o.name for o in self._sess.get_outputs()]
        results = dict(zip(names, self._sess.run(names, feed)))
        for name, (etype, shape, ptr) in iobinding._outputs.items():
            y = results[name]
            if etype != y.dtype:
                raise _invalid(f"Unexpected output data type. Actual: ({_type_name(etype)}) , expected: ({_type_name(y.dtype)})")
            if tuple(shape) != y.shape:
                raise _fail(f"Shape mismatch attempting to re-use buffer. {{{','.join(map(str, shape))}}} != "
                            f"{{{','.join(map(str, y.shape))}}}. Validate usage of dim_value (values should be > 0) and "
                            "dim_param (all values with the same string should equate to the same size) in shapes in the model.")  # fmt: skip
            mem = fake_cupy.device_memory(ptr, y.nbytes)
            mem[:] = np.ascontiguousarray(y).reshape(-1).view(np.uint8)
        fake_cupy._work(self._stream)
        self._stream.synchronize()  # Run() ends by synchronising its stream
        st.runs += 1


def _type_name(dtype) -> str:
    for k, (d, _) in _ONNX_TYPES.items():
        if np.dtype(d) == np.dtype(dtype):
            return k
    return str(dtype)


def _element_type(etype) -> np.dtype:
    """A numpy type or an ONNX TensorProto enum value, as the Python binding takes them."""
    if isinstance(etype, (int, np.integer)) and not isinstance(etype, bool):
        for d, code in _ONNX_TYPES.values():
            if code == int(etype):
                return np.dtype(d)
        raise RuntimeError(f"Unsupported element type {etype}")
    try:
        return np.dtype(etype)
    except TypeError:
        raise TypeError(f"element_type {etype!r}: expected a numpy type or an ONNX element type enum") from None


class IOBinding:
    __slots__ = ("_session", "_inputs", "_outputs")

    def __init__(self, session: _CudaSession):
        self._session, self._inputs, self._outputs = session, {}, {}

    def _check(self, what, device_type, device_id, element_type, shape, buffer_ptr):
        if device_type not in ("cuda", "cann", "cpu", "dml", "webgpu", "gpu"):
            raise Exception(f"Unsupported device type: {device_type}")  # noqa: TRY002 - onnxruntime's own
        if device_type != "cuda":
            raise RuntimeError(f"{what}: device_type {device_type!r} on the CUDA EP with a CuPy pointer "
                               "(onnxruntime would read device memory as host memory)")  # fmt: skip
        if type(device_id) is not int:
            raise TypeError(f"{what}: device_id must be an int, got {type(device_id).__name__}")
        if device_id != self._session._device_id:
            raise RuntimeError(f"{what}: device_id {device_id} but the session's CUDA EP is on device {self._session._device_id}")
        if not isinstance(shape, (tuple, list)) or not all(type(d) is int and d >= 0 for d in shape):
            raise TypeError(f"{what}: shape must be a sequence of non-negative ints, got {shape!r}")
        if type(buffer_ptr) is not int:
            raise TypeError(f"{what}: buffer_ptr must be an int address, got {type(buffer_ptr).__name__}")
        return _element_type(element_type), tuple(shape), buffer_ptr

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        if name not in [i.name for i in self._session.get_inputs()]:
            raise RuntimeError(f"Error when binding input: Failed to find input name in the mapping: {name}")
        self._inputs[name] = self._check(f"bind_input({name})", device_type, device_id, element_type, shape, buffer_ptr)

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None):
        if buffer_ptr is None:
            raise TypeError("bind_output without a buffer (ORT-allocated device output) is not emulated")
        if element_type is None or shape is None:
            raise ValueError("`element_type` and `shape` are to be provided if pre-allocated memory is provided")
        if name not in [o.name for o in self._session.get_outputs()]:
            raise RuntimeError(f"Failed to find NodeArg with name: {name} in the def list")
        self._outputs[name] = self._check(f"bind_output({name})", device_type, device_id, element_type, shape, buffer_ptr)

    def synchronize_inputs(self):
        fake_cupy.device_synchronize("IOBinding.synchronize_inputs (the CUDA EP's Sync: cudaDeviceSynchronize)")

    def synchronize_outputs(self):
        fake_cupy.device_synchronize("IOBinding.synchronize_outputs (the CUDA EP's Sync: cudaDeviceSynchronize)")


def _broken_provider_library(lib_dir, missing: str) -> str:
    """Build <lib_dir>/capi/libonnxruntime_providers_cuda.so linked against `missing` (a stub built, linked, then
    removed) -> the directory to use as the fake module's location. Loading it then fails as on a machine without
    that library."""
    import shutil
    import subprocess
    from pathlib import Path

    cc = shutil.which("gcc") or shutil.which("cc") or shutil.which("g++")
    if cc is None:
        raise FileNotFoundError("no C compiler to build the stand-in CUDA provider library")
    capi = Path(lib_dir) / "capi"
    capi.mkdir(parents=True, exist_ok=True)
    src = Path(lib_dir) / "stub.c"
    src.write_text("int gt_fake_provider(void) { return 0; }\n")
    dep = Path(lib_dir) / missing
    subprocess.run([cc, "-shared", "-fPIC", f"-Wl,-soname,{missing}", "-o", str(dep), str(src)], check=True, capture_output=True)
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,--no-as-needed", "-o", str(capi / "libonnxruntime_providers_cuda.so"),
                    str(src), str(dep)], check=True, capture_output=True)  # fmt: skip
    dep.unlink()
    return str(Path(lib_dir) / "__init__.py")


def install(monkeypatch, cuda_fails: str | None = None, lib_dir=None, missing_lib: str = "libcudnn.so.9") -> FakeOrtCuda:
    """sys.modules["onnxruntime"] -> a module with the CUDA EP (fake_cupy.install must come first); undone by monkeypatch.

    cuda_fails: the CUDA EP is listed but does not load (the reason ONNX Runtime's warning gives); with lib_dir,
    the module's capi/libonnxruntime_providers_cuda.so needs `missing_lib`, which is absent.
    """
    import onnxruntime as real

    real = sys.modules.get("onnxruntime", real)
    if isinstance(getattr(real, "__fake_ort_cuda__", None), FakeOrtCuda):
        real = real.__fake_ort_cuda__.real
    m = types.ModuleType("onnxruntime", "onnxruntime with an emulated CUDA EP (tests/cuda_emu/fake_ort_cuda.py)")
    m.__spec__ = importlib.machinery.ModuleSpec("onnxruntime", loader=None)  # importlib.util.find_spec needs one
    m.__file__ = __file__ if lib_dir is None else _broken_provider_library(lib_dir, missing_lib)
    providers = [p for p in real.get_available_providers() if p != "CPUExecutionProvider"]
    for k, v in dict(__version__=real.__version__, InferenceSession=InferenceSession,
                     get_available_providers=lambda: [*providers, "CUDAExecutionProvider", "CPUExecutionProvider"],
                     SessionOptions=real.SessionOptions, ExecutionMode=real.ExecutionMode,
                     GraphOptimizationLevel=real.GraphOptimizationLevel).items():  # fmt: skip
        setattr(m, k, v)
    state = FakeOrtCuda(m, real, cuda_fails=cuda_fails)
    m.__fake_ort_cuda__ = state
    monkeypatch.setitem(sys.modules, "onnxruntime", m)
    monkeypatch.setattr(sys.modules[__name__], "_STATE", state)
    return state
