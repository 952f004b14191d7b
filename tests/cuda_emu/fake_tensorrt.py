"""A strict stand-in for the `tensorrt` module (TensorRT 10 Python API), over tests/cuda_emu/fake_cupy.py.

It has exactly what gt_runtime/engines/trt_engine.py uses, with TensorRT 10's names, signatures, return
values and enum values (an attribute that is not listed raises AttributeError; an argument of the wrong type
raises TypeError, as pybind11 does):

    Logger(min_severity), Logger.WARNING / Logger.Severity;  Builder(logger): create_network(flags),
    create_builder_config(), create_optimization_profile(), build_serialized_network(network, config)
    -> IHostMemory | None;  NetworkDefinitionCreationFlag.STRONGLY_TYPED (1);  OnnxParser(network, logger):
    parse_from_file(model) -> bool, num_errors, get_error(index);  IBuilderConfig: set_memory_pool_limit(pool,
    pool_size), add_optimization_profile(profile) -> int, create_timing_cache(serialized_timing_cache),
    set_timing_cache(cache, ignore_mismatch) -> bool, get_timing_cache();  IOptimizationProfile.set_shape(input,
    min, opt, max);  ITimingCache.serialize();  Runtime(logger).deserialize_cuda_engine(serialized_engine)
    -> ICudaEngine | None;  ICudaEngine: num_io_tensors, get_tensor_name(index), get_tensor_mode(name),
    get_tensor_dtype(name), get_tensor_shape(name), create_execution_context();  IExecutionContext:
    set_input_shape(name, shape) -> bool, set_tensor_address(name, memory) -> bool, get_tensor_shape(name),
    execute_async_v3(stream_handle) -> bool;  TensorIOMode, DataType, MemoryPoolType.

Where TensorRT reports a failure by a False / None / -1 return and an error on the logger, so does this
(FakeTrt.errors keeps them): an input shape outside the optimisation profile, a dynamic input with no
profile, executing before every input shape and every I/O address is set, a plan made by another TensorRT
version or for another compute capability (a plan from another GPU model with the same compute
capability loads, with TensorRT's warning), a timing cache from another device with ignore_mismatch=False.
What a GPU would fault on raises RuntimeError: a tensor address that is not inside a live fake-cupy device
array large enough for the tensor (a host numpy pointer, a freed or too small buffer), or a stream handle
that is not a fake cupy stream.

Also as TensorRT 10 does: set_tensor_address refuses (False, an error on the logger, the previous address
kept) an address that is not 256-byte aligned; set_timing_cache returns False for a cache from another
device or TensorRT version (ignore_mismatch=False), and get_timing_cache() is None while no cache is set;
execute_async_v3 on the legacy default stream (handle 0) synchronises the whole device (TensorRT's docs:
"additional cudaDeviceSynchronize() calls"), logged in fake_cupy.LOG.device_syncs; a run must be ordered
after the work the caller queued on its current stream (fake_cupy.check_caller_order).

The "plan" is the ONNX bytes plus the profile, the TensorRT version and the device it was built on;
execution runs the ONNX with onnxruntime (CPU) on the bound device memory (fake-cupy arrays are numpy) and
writes the outputs to the bound output addresses. Not emulated: kernels, tactics, precision effects of
TensorRT's own fusions (the ONNX's arithmetic is what runs), asynchrony.

    fake = install(monkeypatch)        # sys.modules["tensorrt"]; needs fake_cupy installed first
    fake.builds, fake.errors, fake.device = {"name": ..., "sm": 90}, fake.version
"""

from __future__ import annotations

import enum
import hashlib
import json
import sys
import types
from dataclasses import dataclass, field

import numpy as np

from . import fake_cupy

_MAGIC = b"FAKETRT1"
DEFAULT_VERSION = "10.8.0.43"
TENSOR_ALIGNMENT = 256  # bytes: what IExecutionContext::setTensorAddress requires


# -- enums (TensorRT 10 values) ----------------------------------------------------------------


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0  # deprecated in TensorRT 10 (always on)
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4
    TACTIC_SHARED_MEMORY = 5


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


# ONNX TensorProto elem_type -> (DataType, numpy dtype)
_ONNX_TYPES = {1: (DataType.FLOAT, np.float32), 10: (DataType.HALF, np.float16), 6: (DataType.INT32, np.int32),
               7: (DataType.INT64, np.int64), 9: (DataType.BOOL, np.bool_), 2: (DataType.UINT8, np.uint8),
               3: (DataType.INT8, np.int8)}  # fmt: skip


def _type(value, types_, fn: str, arg: str):
    """pybind11's argument check: TypeError for an argument of the wrong type."""
    if not isinstance(value, types_):
        raise TypeError(f"{fn}(): incompatible function arguments: {arg} got {type(value).__name__}")
    return value


def _dims(shape, fn: str) -> tuple:
    if not isinstance(shape, (tuple, list, Dims)) or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in shape):
        raise TypeError(f"{fn}(): incompatible function arguments: shape must be a tuple/list of ints (Dims), got {shape!r}")
    return tuple(int(d) for d in shape)


class Dims(tuple):
    """tensorrt.Dims: a tuple of ints here (-1 for a dimension not known yet)."""


# -- the emulated machine -----------------------------------------------------------------------


@dataclass
class FakeTrt:
    module: types.ModuleType
    version: str
    device: dict  # {"name": str, "sm": int}: the GPU this "TensorRT" runs on (change it to move the plans)
    builds: int = 0
    executions: int = 0
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


_STATE: FakeTrt | None = None


def _state() -> FakeTrt:
    if _STATE is None:
        raise RuntimeError("fake tensorrt used after its test ended")
    return _STATE


def _device_tag() -> dict:
    d = _state().device
    return {"name": str(d["name"]), "sm": int(d["sm"])}


class Logger:
    """tensorrt.Logger(min_severity=Logger.WARNING): prints what is at or above min_severity to stderr."""

    Severity = Severity
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (Severity.INTERNAL_ERROR, Severity.ERROR, Severity.WARNING,
                                                     Severity.INFO, Severity.VERBOSE)  # fmt: skip
    __slots__ = ("min_severity",)

    def __init__(self, min_severity=Severity.WARNING):
        self.min_severity = Severity(_type(min_severity, (Severity, int), "Logger.__init__", "min_severity"))

    def log(self, severity, msg: str) -> None:
        if severity <= Severity.ERROR:
            _state().errors.append(msg)
        elif severity == Severity.WARNING:
            _state().warnings.append(msg)
        if severity <= self.min_severity:
            print(f"[TRT] [{Severity(severity).name[0]}] {msg}", file=sys.stderr)


def _logger(logger, fn: str) -> Logger:
    return _type(logger, Logger, fn, "logger")


# -- build ---------------------------------------------------------------------------------------


class INetworkDefinition:
    __slots__ = ("_flags", "_onnx", "_io")

    def __init__(self, flags: int):
        self._flags, self._onnx, self._io = flags, None, None


class ParserError:
    __slots__ = ("_desc",)

    def __init__(self, desc: str):
        self._desc = desc

    def desc(self) -> str:
        return self._desc

    def __str__(self):
        return self._desc


class OnnxParser:
    """tensorrt.OnnxParser(network, logger): parse_from_file(model) -> bool; num_errors; get_error(index)."""

    __slots__ = ("_network", "_logger", "_errors")

    def __init__(self, network, logger):
        self._network = _type(network, INetworkDefinition, "OnnxParser.__init__", "network")
        self._logger = _logger(logger, "OnnxParser.__init__")
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        _type(index, int, "OnnxParser.get_error", "index")
        if not 0 <= index < len(self._errors):
            raise IndexError(f"OnnxParser.get_error: index {index} out of range")
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse_from_file(self, model: str) -> bool:
        _type(model, str, "OnnxParser.parse_from_file", "model")
        import onnx

        try:
            raw = open(model, "rb").read()
            proto = onnx.load_from_string(raw)
            onnx.checker.check_model(proto)
        except Exception as exc:  # noqa: BLE001 - TensorRT reports any failure as a parser error
            self._errors.append(ParserError(f"ModelImporter: failed to parse {model}: {type(exc).__name__}: {exc}"))
            self._logger.log(Severity.ERROR, str(self._errors[-1]))
            return False
        if self._network._onnx is not None:
            self._errors.append(ParserError("the network already holds a parsed model"))
            return False
        io = {}
        for mode, vals in ((TensorIOMode.INPUT, proto.graph.input), (TensorIOMode.OUTPUT, proto.graph.output)):
            for v in vals:
                tt = v.type.tensor_type
                if tt.elem_type not in _ONNX_TYPES:
                    self._errors.append(ParserError(f"{v.name}: unsupported ONNX element type {tt.elem_type}"))
                    return False
                dims = tuple(d.dim_param if d.dim_param or not d.HasField("dim_value") else int(d.dim_value) for d in tt.shape.dim)
                io[v.name] = (mode, _ONNX_TYPES[tt.elem_type][0], dims)
        if not self._network._flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED):
            # A weakly typed network: the builder may pick precisions; the stand-in has no such freedom.
            self._logger.log(Severity.WARNING, "network is not strongly typed (the fake runs the ONNX as typed)")
        self._network._onnx, self._network._io = raw, io
        return True


class IOptimizationProfile:
    """set_shape(input, min, opt, max): RuntimeError unless min <= opt <= max, element-wise, same rank."""

    __slots__ = ("_shapes",)

    def __init__(self):
        self._shapes: dict[str, tuple] = {}

    def set_shape(self, input: str, min, opt, max) -> None:  # noqa: A002 - TensorRT's argument names
        _type(input, str, "IOptimizationProfile.set_shape", "input")
        lo, mid, hi = (_dims(s, "IOptimizationProfile.set_shape") for s in (min, opt, max))
        if not (len(lo) == len(mid) == len(hi)) or any(not (a <= b <= c) or a < 0 for a, b, c in zip(lo, mid, hi)):
            raise RuntimeError(f"IOptimizationProfile.set_shape({input!r}): need min <= opt <= max, got {lo} {mid} {hi}")
        self._shapes[input] = (lo, mid, hi)

    def get_shape(self, input: str) -> list:  # noqa: A002
        return [Dims(s) for s in self._shapes[_type(input, str, "IOptimizationProfile.get_shape", "input")]]


class IHostMemory(bytes):
    """tensorrt.IHostMemory: a buffer (memoryview(host_memory) works), with nbytes."""

    @property
    def nbytes(self) -> int:
        return len(self)


class ITimingCache:
    __slots__ = ("_device", "_version", "_entries")

    def __init__(self, device: dict, version: str, entries: list):
        self._device, self._version, self._entries = device, version, entries

    def serialize(self) -> IHostMemory:
        return IHostMemory(b"FAKETRTCACHE" + json.dumps({"device": self._device, "trt": self._version,
                                                          "entries": self._entries}).encode())  # fmt: skip


class IBuilderConfig:
    __slots__ = ("_pools", "_profiles", "_cache")

    def __init__(self):
        self._pools: dict = {}
        self._profiles: list = []
        self._cache: ITimingCache | None = None  # getTimingCache() is null until a cache is set

    def set_memory_pool_limit(self, pool, pool_size: int) -> None:
        _type(pool, MemoryPoolType, "IBuilderConfig.set_memory_pool_limit", "pool")
        _type(pool_size, int, "IBuilderConfig.set_memory_pool_limit", "pool_size")
        self._pools[pool] = pool_size

    def get_memory_pool_limit(self, pool) -> int:
        return self._pools[_type(pool, MemoryPoolType, "IBuilderConfig.get_memory_pool_limit", "pool")]

    def add_optimization_profile(self, profile) -> int:
        _type(profile, IOptimizationProfile, "IBuilderConfig.add_optimization_profile", "profile")
        if not profile._shapes:
            return -1
        self._profiles.append({k: v for k, v in profile._shapes.items()})
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def create_timing_cache(self, serialized_timing_cache) -> ITimingCache:
        blob = bytes(memoryview(serialized_timing_cache))  # TypeError for a non-buffer, as pybind11
        if not blob:
            return ITimingCache(_device_tag(), _state().version, [])
        if not blob.startswith(b"FAKETRTCACHE"):
            raise RuntimeError("createTimingCache: the blob is not a TensorRT timing cache")
        d = json.loads(blob[len(b"FAKETRTCACHE") :])
        return ITimingCache(d["device"], d["trt"], list(d["entries"]))

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        _type(cache, ITimingCache, "IBuilderConfig.set_timing_cache", "cache")
        _type(ignore_mismatch, bool, "IBuilderConfig.set_timing_cache", "ignore_mismatch")
        if cache._version != _state().version or (cache._device != _device_tag() and not ignore_mismatch):
            _state().errors.append(f"setTimingCache: the cache was made by TensorRT {cache._version} on {cache._device}")
            return False  # the config keeps the cache it had (none, at first)
        self._cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._cache


class Builder:
    __slots__ = ("_logger",)

    def __init__(self, logger):
        self._logger = _logger(logger, "Builder.__init__")

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        _type(flags, int, "Builder.create_network", "flags")
        if flags & ~0b11:
            raise ValueError(f"Builder.create_network: unknown NetworkDefinitionCreationFlag bits in {flags:#x}")
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        _type(network, INetworkDefinition, "Builder.build_serialized_network", "network")
        _type(config, IBuilderConfig, "Builder.build_serialized_network", "config")

        def fail(msg):
            self._logger.log(Severity.ERROR, msg)
            return None

        if network._onnx is None:
            return fail("Network must have at least one output")
        inputs = {n: dims for n, (mode, _, dims) in network._io.items() if mode == TensorIOMode.INPUT}
        for prof in config._profiles:
            for name, shapes in prof.items():
                if name not in inputs:
                    return fail(f"optimization profile: {name!r} is not an input of the network")
                for s in shapes:
                    if len(s) != len(inputs[name]) or any(isinstance(d, int) and d != v for d, v in zip(inputs[name], s)):
                        return fail(f"optimization profile: {name!r} shape {s} does not fit the network's {inputs[name]}")
        for name, dims in inputs.items():
            if any(not isinstance(d, int) for d in dims) and not all(name in p for p in config._profiles or [{}]):
                return fail(f"{name}: dynamic input with no shape in an optimization profile")
        try:
            import onnxruntime as ort

            ort.InferenceSession(network._onnx, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - an unsupported graph fails the build
            return fail(f"could not build the engine: {exc}")
        st = _state()
        st.builds += 1
        if config._cache is not None:
            config._cache._entries.append(hashlib.sha256(network._onnx).hexdigest()[:16])
        io = {n: [int(m), int(t), list(d)] for n, (m, t, d) in network._io.items()}
        header = {"trt": st.version, "device": _device_tag(), "io": io, "profiles": config._profiles,
                  "strongly_typed": bool(network._flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED))}  # fmt: skip
        h = json.dumps(header).encode()
        return IHostMemory(_MAGIC + len(h).to_bytes(8, "little") + h + network._onnx)


# -- run ---------------------------------------------------------------------------------------


class Runtime:
    __slots__ = ("_logger",)

    def __init__(self, logger):
        self._logger = _logger(logger, "Runtime.__init__")

    def deserialize_cuda_engine(self, serialized_engine):
        blob = bytes(memoryview(serialized_engine))  # TypeError for a non-buffer, as pybind11
        st = _state()
        if not blob.startswith(_MAGIC):
            self._logger.log(Severity.ERROR, "IRuntime::deserializeCudaEngine: Magic tag does not match")
            return None
        n = int.from_bytes(blob[8:16], "little")
        header, onnx_bytes = json.loads(blob[16 : 16 + n]), blob[16 + n :]
        if header["trt"] != st.version:
            self._logger.log(Severity.ERROR, f"The engine plan file is not compatible with this version of TensorRT, "
                                             f"expecting library version {st.version} got {header['trt']}")  # fmt: skip
            return None
        if header["device"]["sm"] != _device_tag()["sm"]:
            self._logger.log(Severity.ERROR, f"The engine plan file is generated on an incompatible device, expecting "
                                             f"compute {_device_tag()['sm']} got compute {header['device']['sm']}")  # fmt: skip
            return None
        if header["device"]["name"] != _device_tag()["name"]:
            self._logger.log(Severity.WARNING, "Using an engine plan file across different models of devices is not "
                                               "recommended and is likely to affect performance or even cause errors.")  # fmt: skip
        return ICudaEngine(header, onnx_bytes)


class ICudaEngine:
    __slots__ = ("_io", "_names", "_profile", "_onnx", "_session")

    def __init__(self, header: dict, onnx_bytes: bytes):
        import onnxruntime as ort

        self._io = {n: (TensorIOMode(m), DataType(t), tuple(d)) for n, (m, t, d) in header["io"].items()}
        self._names = list(self._io)
        self._profile = {k: tuple(tuple(s) for s in v) for k, v in header["profiles"][0].items()} if header["profiles"] else {}
        self._onnx = onnx_bytes
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        self._session = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    @property
    def num_optimization_profiles(self) -> int:
        return 1 if self._profile else 0

    def get_tensor_name(self, index: int):
        _type(index, int, "ICudaEngine.get_tensor_name", "index")
        return self._names[index] if 0 <= index < len(self._names) else None

    def _tensor(self, name, fn):
        _type(name, str, fn, "name")
        if name not in self._io:
            raise ValueError(f"{fn}: no tensor named {name!r} in the engine")
        return self._io[name]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        _type(name, str, "ICudaEngine.get_tensor_mode", "name")
        return self._io[name][0] if name in self._io else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._tensor(name, "ICudaEngine.get_tensor_dtype")[1]

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(d if isinstance(d, int) else -1 for d in self._tensor(name, "ICudaEngine.get_tensor_shape")[2])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
        _type(profile_index, int, "ICudaEngine.get_tensor_profile_shape", "profile_index")
        self._tensor(name, "ICudaEngine.get_tensor_profile_shape")
        return [Dims(s) for s in self._profile[name]]

    def create_execution_context(self) -> "IExecutionContext":
        return IExecutionContext(self)


class IExecutionContext:
    __slots__ = ("_engine", "_shapes", "_addresses")

    def __init__(self, engine: ICudaEngine):
        self._engine = engine
        self._shapes: dict[str, tuple] = {}
        self._addresses: dict[str, int] = {}

    @property
    def engine(self) -> ICudaEngine:
        return self._engine

    def _error(self, msg: str) -> bool:
        _state().errors.append(msg)
        print(f"[TRT] [E] {msg}", file=sys.stderr)
        return False

    def set_input_shape(self, name: str, shape) -> bool:
        _type(name, str, "IExecutionContext.set_input_shape", "name")
        shape = _dims(shape, "IExecutionContext.set_input_shape")
        e = self._engine
        if e.get_tensor_mode(name) != TensorIOMode.INPUT:
            return self._error(f"IExecutionContext::setInputShape: {name!r} is not an input tensor")
        dims = e._io[name][2]
        if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape)):
            return self._error(f"IExecutionContext::setInputShape: {name} {shape} does not match the engine's {dims}")
        if name in e._profile:
            lo, _, hi = e._profile[name]
            if any(not (a <= s <= b) for a, s, b in zip(lo, shape, hi)):
                return self._error(f"IExecutionContext::setInputShape: {name} {shape} is outside the optimization "
                                   f"profile [{lo}, {hi}]")  # fmt: skip
        self._shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        _type(name, str, "IExecutionContext.set_tensor_address", "name")
        _type(memory, int, "IExecutionContext.set_tensor_address", "memory")
        if self._engine.get_tensor_mode(name) == TensorIOMode.NONE:
            return self._error(f"IExecutionContext::setTensorAddress: no tensor named {name!r}")
        if memory == 0:
            return self._error(f"IExecutionContext::setTensorAddress: {name}: null address")
        if memory % TENSOR_ALIGNMENT:
            return self._error(f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (address 0x{memory:x} "
                               f"of tensor {name} is not aligned to {TENSOR_ALIGNMENT} bytes)")  # fmt: skip
        self._addresses[name] = memory
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(_type(name, str, "IExecutionContext.get_tensor_address", "name"), 0)

    def _symbols(self) -> dict:
        sym = {}
        for n, shape in self._shapes.items():
            for d, s in zip(self._engine._io[n][2], shape):
                if not isinstance(d, int):
                    sym[d] = s
        return sym

    def get_tensor_shape(self, name: str) -> Dims:
        mode, _, dims = self._engine._tensor(name, "IExecutionContext.get_tensor_shape")
        if mode == TensorIOMode.INPUT and name in self._shapes:
            return Dims(self._shapes[name])
        sym = self._symbols()
        return Dims(d if isinstance(d, int) else sym.get(d, -1) for d in dims)

    def execute_async_v3(self, stream_handle: int) -> bool:
        _type(stream_handle, int, "IExecutionContext.execute_async_v3", "stream_handle")
        stream = fake_cupy.Stream.from_handle(stream_handle, "stream")
        e = self._engine
        inputs = [n for n in e._names if e._io[n][0] == TensorIOMode.INPUT]
        missing = [n for n in inputs if n not in self._shapes]
        if missing:
            return self._error(f"IExecutionContext::enqueueV3: input shapes not specified for {missing}")
        unbound = [n for n in e._names if n not in self._addresses]
        if unbound:
            return self._error(f"IExecutionContext::enqueueV3: tensor addresses not set for {unbound}")
        if stream_handle == 0:
            fake_cupy.device_synchronize("execute_async_v3 on the default stream (TensorRT adds cudaDeviceSynchronize)")
        fake_cupy.check_caller_order(stream, "IExecutionContext.execute_async_v3")
        feed = {}
        for n in inputs:
            dt = np.dtype(_np_type(e._io[n][1]))
            nbytes = int(np.prod(self._shapes[n], dtype=np.int64)) * dt.itemsize
            feed[n] = fake_cupy.device_memory(self._addresses[n], nbytes).view(dt).reshape(self._shapes[n]).copy()
        outs = e._session.run(None, feed)
        for n, y in zip([o.name for o in e._session.get_outputs()], outs):
            want = tuple(self.get_tensor_shape(n))
            dt = np.dtype(_np_type(e._io[n][1]))
            y = np.ascontiguousarray(y, dtype=dt)
            if y.shape != want:
                raise RuntimeError(f"fake tensorrt: output {n} came out {y.shape}, the context says {want}")
            fake_cupy.device_memory(self._addresses[n], y.nbytes)[:] = y.reshape(-1).view(np.uint8)
        fake_cupy._work(stream)
        _state().executions += 1
        return True


def _np_type(t: DataType):
    for dt, npt in _ONNX_TYPES.values():
        if dt == t:
            return npt
    raise TypeError(t)


# -- installation -----------------------------------------------------------------------------


def install(monkeypatch, version: str = DEFAULT_VERSION, device: dict | None = None) -> FakeTrt:
    """sys.modules["tensorrt"] -> the stand-in, on the fake cupy's device (fake_cupy.install must come first).

    device: {"name", "sm"} of the emulated GPU (default: the fake cupy's device properties).
    """
    if device is None:
        props = fake_cupy._runtime().getDeviceProperties(0)
        device = {"name": props["name"].decode(), "sm": props["major"] * 10 + props["minor"]}
    m = types.ModuleType("tensorrt", "stand-in for TensorRT 10 (tests/cuda_emu/fake_tensorrt.py)")
    import importlib.machinery

    m.__spec__ = importlib.machinery.ModuleSpec("tensorrt", loader=None)  # importlib.util.find_spec needs one
    m.__file__ = __file__
    for k, v in dict(__version__=version, Logger=Logger, ILogger=Logger, Builder=Builder, Runtime=Runtime,
                     OnnxParser=OnnxParser, NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
                     MemoryPoolType=MemoryPoolType, TensorIOMode=TensorIOMode, DataType=DataType, Dims=Dims,
                     IBuilderConfig=IBuilderConfig, IOptimizationProfile=IOptimizationProfile,
                     INetworkDefinition=INetworkDefinition, ITimingCache=ITimingCache, IHostMemory=IHostMemory,
                     ICudaEngine=ICudaEngine, IExecutionContext=IExecutionContext).items():  # fmt: skip
        setattr(m, k, v)
    state = FakeTrt(m, version, dict(device))
    for name in [n for n in sys.modules if n == "tensorrt" or n.startswith("tensorrt.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorrt", m)
    monkeypatch.setattr(sys.modules[__name__], "_STATE", state)
    return state
