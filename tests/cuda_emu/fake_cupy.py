"""A numpy stand-in for the `cupy` and `cupyx` modules: the runtime's GPU path on a machine with no GPU.

It stands for CuPy on one CUDA device (id 0), with only what the GPU path of gt_runtime touches
(pipeline.py, player.py, session.py, engines/select.py, engines/array_engine.py, engines/trt_engine.py, reference.py,
raster/_cuda.py, profile.py's CUDA-event clock). An attribute that is not listed here raises
AttributeError: new GPU code that needs more of CuPy must add it here, explicitly.

    fake = install(monkeypatch, kernels)      # sys.modules["cupy"/"cupyx"] + gt_runtime's CUDA hooks
    ...Player(bundle, engine="array-cupy", raster="cuda")...
    fake.log.d2h                              # every device -> host copy, with where it came from

Device memory is `ndarray`, a numpy subclass (so the CPU-emulated kernels of tests/cuda_emu take it
as is). What CuPy forbids, it forbids too, with a TypeError:

- host numpy arrays (other than 0-d) mixed into device operations: operators, ufuncs, numpy
  functions on device arrays, this module's functions, indexing and item assignment. Only
  `asarray` (host -> device) takes them. Where CuPy would quietly do host work or an implicit
  copy instead (cupy.clip, cupy.take and cupy.argsort run numpy's own method on a numpy argument),
  this is stricter: the GPU path must not depend on that either.
- kernel arguments must be device arrays (`DeviceKernels`), launched on a cupy.cuda.Stream.

Transfers are logged (`Log`): host -> device copies (`asarray` of a host array), device -> host
copies (`ndarray.get`, `asnumpy`) and scalar reads (`int()` / `float()` / `bool()` / `item()` of a
device array, which synchronise on a GPU). Reductions and integer indexing give 0-d device arrays,
as in CuPy, so a scalar read is always seen.

Stream order is modelled (not asynchrony: every call has finished when it returns). Each stream
counts the work queued on it (allocations, copies, array functions, kernels, engine runs) and keeps a
vector clock of the work it is ordered after: `Stream.wait_event` merges the clock an `Event` recorded,
`Stream.synchronize` and `Device.synchronize` order the host (so work queued afterwards on any stream)
after it, and the legacy null stream (ptr 0) is ordered with every blocking stream, as in CUDA.
`ordered(after, before)` answers; `check_caller_order(stream, what)` is what the TensorRT and ONNX
Runtime stand-ins call when they run on a raw stream handle: the work the caller queued on its own
stream must be ordered before, else RuntimeError (a race on a GPU). Whole-device synchronisations
are logged (`LOG.device_syncs`) so tests can require none.

Fresh device arrays are 512-byte aligned, as CuPy's allocator gives them; a view at an offset is not
(TensorRT needs 256-byte-aligned tensor addresses).

Not emulated: separate memory spaces beyond the checks above (`np.asarray(dev)` gives a host view here
where CuPy raises), NVRTC, __expf and device speed.
"""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import time
import traceback
import types
import weakref
from dataclasses import dataclass, field

import numpy as np

_HERE = __file__


# -- transfer log ------------------------------------------------------------------------------


@dataclass
class Transfer:
    kind: str  # "h2d", "d2h" (a whole array: get / asnumpy) or "scalar" (int(), float(), bool(), item())
    nbytes: int
    shape: tuple
    dtype: str
    where: str  # "file:line in function" of the first caller outside this module and numpy


@dataclass
class Log:
    transfers: list[Transfer] = field(default_factory=list)
    device_syncs: list[str] = field(default_factory=list)  # where each whole-device synchronisation came from

    def add(self, kind: str, a) -> None:
        self.transfers.append(Transfer(kind, int(a.nbytes), tuple(a.shape), str(a.dtype), _caller()))

    @property
    def h2d(self) -> list[Transfer]:
        return [t for t in self.transfers if t.kind == "h2d"]

    @property
    def d2h(self) -> list[Transfer]:
        return [t for t in self.transfers if t.kind == "d2h"]

    @property
    def scalar_reads(self) -> list[Transfer]:
        return [t for t in self.transfers if t.kind == "scalar"]

    def clear(self) -> None:
        self.transfers.clear()
        self.device_syncs.clear()


LOG = Log()


def _caller() -> str:
    for fr in reversed(traceback.extract_stack(limit=16)[:-2]):
        if fr.filename != _HERE and "/numpy/" not in fr.filename:
            return f"{fr.filename.rsplit('/', 2)[-1] if '/' in fr.filename else fr.filename}:{fr.lineno} in {fr.name}"
    return "?"


# -- device arrays -----------------------------------------------------------------------------


def _is_host(x) -> bool:
    return isinstance(x, np.ndarray) and not isinstance(x, ndarray) and x.ndim > 0


def _check(x, what: str) -> None:
    """Raise CuPy's TypeError if x (or anything inside a list / tuple / dict) is a host array."""
    if _is_host(x):
        raise TypeError(
            f"Unsupported type {type(x)}: {what} got a host numpy array {x.dtype}{list(x.shape)}"
            " | copy it to the device first (cupy.asarray)"
        )
    if isinstance(x, (list, tuple)):
        for v in x:
            _check(v, what)
    elif isinstance(x, dict):
        for v in x.values():
            _check(v, what)


def _base(x):
    """Device arrays -> plain numpy views (recursively), for calling numpy itself."""
    if isinstance(x, ndarray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_base(v) for v in x)
    if isinstance(x, dict):
        return {k: _base(v) for k, v in x.items()}
    return x


ALIGNMENT = 512  # CuPy's memory pool hands out 512-byte-aligned blocks


def _aligned_empty(shape, dtype, order="C") -> np.ndarray:
    """A host numpy array whose data starts on an ALIGNMENT boundary (device memory stands in for it)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    off = (-raw.ctypes.data) % ALIGNMENT
    flat = raw[off : off + nbytes].view(dtype)
    return flat.reshape(shape, order=order) if order in ("C", "F") else flat.reshape(shape)


def _rehome(a: np.ndarray) -> np.ndarray:
    """A freshly allocated numpy result -> the same values in aligned memory (views are kept as they are)."""
    if a.base is not None or a.ctypes.data % ALIGNMENT == 0:
        return a
    out = _aligned_empty(a.shape, a.dtype, "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C")
    np.copyto(out, a)
    return out


def _device(r):
    """numpy results -> device arrays (scalars -> 0-d arrays, as CuPy returns); new memory is aligned."""
    if isinstance(r, np.ndarray):
        return _rehome(r).view(ndarray)
    if isinstance(r, np.generic):
        return _rehome(np.asarray(r)).view(ndarray)
    if isinstance(r, tuple):
        return tuple(_device(v) for v in r)
    return r


def _call(fn, what: str, args, kwargs):
    _check(args, what)
    _check(kwargs, what)
    _work(get_current_stream())
    out = kwargs.get("out")
    r = _device(fn(*_base(args), **_base(kwargs)))
    return out if out is not None and not isinstance(out, tuple) else r


class ndarray(np.ndarray):  # noqa: N801 - cupy's name
    """An array in (emulated) device memory: numpy memory under CuPy's rules (see the module docstring)."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        what = f"cupy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        _check(inputs, what)
        _work(get_current_stream())
        if out is not None:
            _check(out, what)
            kwargs["out"] = _base(out)
        r = _device(getattr(ufunc, method)(*_base(inputs), **kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return r

    def __array_function__(self, func, types, args, kwargs):
        return _call(func, f"numpy.{func.__name__} on device arrays", args, kwargs)

    def __getitem__(self, key):
        _check(key, "device array indexing")
        return _device(super().__getitem__(_base(key)))

    def __setitem__(self, key, value):
        _check(key, "device array indexing")
        _check(value, "device array assignment")
        _work(get_current_stream())
        super().__setitem__(_base(key), _base(value))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # scalar reads synchronise with the device on a GPU: logged
    def _scalar(self):
        LOG.add("scalar", self)
        return self.view(np.ndarray)

    def __int__(self):
        return int(self._scalar())

    def __float__(self):
        return float(self._scalar())

    def __bool__(self):
        return bool(self._scalar())

    def __index__(self):
        return self._scalar().__index__()

    def item(self, *args):
        return self._scalar().item(*args)

    def tolist(self):
        return self._scalar().tolist()

    def get(self, stream=None, order="C", out=None, blocking=True):
        """Device -> host copy (logged): a new numpy array, or into `out` (a host array of the same shape and dtype)."""
        LOG.add("d2h", self)
        src = self.view(np.ndarray)
        if out is None:
            return np.array(src, order=order)
        if isinstance(out, ndarray) or not isinstance(out, np.ndarray):
            raise TypeError(f"ndarray.get: out must be a host numpy.ndarray, got {type(out)}")
        if out.shape != src.shape or out.dtype != src.dtype:
            raise ValueError(f"ndarray.get: out {out.dtype}{list(out.shape)} != array {src.dtype}{list(src.shape)}")
        np.copyto(out, src)
        return out

    def copy(self, order="C"):
        """A new device array (fresh, so aligned, as CuPy's allocator gives it)."""
        _work(get_current_stream())
        out = _aligned_empty(self.shape, self.dtype, "F" if order == "F" else "C")
        np.copyto(out, self.view(np.ndarray))
        return out.view(ndarray)

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and self.dtype == np.dtype(dtype):
            return self
        _work(get_current_stream())
        out = _aligned_empty(self.shape, dtype, "F" if order == "F" or (order in ("K", "A") and self.flags.f_contiguous
                                                                         and not self.flags.c_contiguous) else "C")  # fmt: skip
        np.copyto(out, self.view(np.ndarray), casting="unsafe")
        return out.view(ndarray)

    @property
    def data(self):
        """cupy.cuda.MemoryPointer of the array's first element (`.ptr`: its device address, an int)."""
        return MemoryPointer(self)

    def __repr__(self):
        return "fake_cupy." + super().__repr__()


class MemoryPointer:
    """cupy.cuda.MemoryPointer: `.ptr` is the address (here the numpy buffer's); the array is registered so that
    `device_memory` (what the TensorRT stand-in reads and writes through) can find it by address."""

    __slots__ = ("ptr", "_owner")

    def __init__(self, owner: ndarray):
        self.ptr = int(owner.__array_interface__["data"][0])
        self._owner = owner
        _ALLOCATIONS.append(weakref.ref(owner))


_ALLOCATIONS: list = []  # weak references to the arrays whose .data was taken


def device_memory(ptr: int, nbytes: int) -> np.ndarray:
    """The `nbytes` bytes of device memory at address `ptr` -> a writable uint8 numpy view.

    Raises RuntimeError (what a kernel reading a bad address gives on a GPU: an illegal address) unless the
    range lies inside one C-contiguous device array whose `.data.ptr` was taken and that is still alive.
    """
    alive = [r for r in _ALLOCATIONS if r() is not None]
    _ALLOCATIONS[:] = alive
    for ref in alive:
        a = ref()
        start = int(a.__array_interface__["data"][0])
        if a.flags.c_contiguous and start <= ptr and ptr + nbytes <= start + a.nbytes:
            return a.view(np.ndarray).reshape(-1).view(np.uint8)[ptr - start : ptr - start + nbytes]
    raise RuntimeError(
        f"cudaErrorIllegalAddress: {nbytes} bytes at 0x{ptr:x} are not inside a live, contiguous device array"
        " (a host pointer, a freed array, or too small a buffer)"
    )


# -- module functions --------------------------------------------------------------------------


def asarray(a, dtype=None, order=None, *, blocking=False):
    """Host -> device copy (logged); a device array is returned as is (or cast)."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == np.dtype(dtype) else a.astype(dtype)
    h = np.array(a, dtype=dtype, order=order or "K", copy=True)
    LOG.add("h2d", h)
    _work(get_current_stream())
    return _rehome(h).view(ndarray)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return np.asarray(a, order=order)  # CuPy: a host array is returned as is


def _device_fn(name: str):
    fn = getattr(np, name)

    def op(*args, **kwargs):
        return _call(fn, f"cupy.{name}", args, kwargs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"numpy.{name} on device arrays (host arrays raise TypeError, as in CuPy)"
    return op


def _alloc(fill):
    def alloc(shape, dtype=float, order="C"):
        _work(get_current_stream())
        a = _aligned_empty(shape, dtype, order)
        if fill is not None:
            a.fill(fill)
        return a.view(ndarray)

    alloc.__name__ = "empty" if fill is None else "zeros"
    return alloc


def argsort(a, axis=-1, kind=None):
    if kind not in (None, "stable"):
        raise ValueError(f"cupy.argsort: kind={kind!r} | CuPy accepts only None or 'stable'")
    return _call(np.argsort, "cupy.argsort", (a,), {"axis": axis, "kind": "stable"})


# Only what the GPU path uses (an unknown name raises AttributeError).
_FUNCTIONS = ("ascontiguousarray", "broadcast_to", "stack", "concatenate", "take", "cumsum", "clip",
              "exp", "rint", "maximum", "sqrt", "sin", "cos", "matmul")  # fmt: skip
_DTYPES = ("float32", "int32", "int64", "uint8", "uint64")


# -- cuda: device, streams, events ---------------------------------------------------------------

DEVICE_NAME = "emulated CUDA device (numpy + CPU threads)"


_HOST: dict[int, int] = {}  # the vector clock the host has waited for (stream ptr -> work count)


def _merge(into: dict, clock: dict) -> None:
    for k, v in clock.items():
        if into.get(k, 0) < v:
            into[k] = v


def _work(stream: "Stream") -> None:
    """One piece of work queued on `stream`: it comes after everything the host has waited for."""
    _merge(stream.seen, _HOST)
    stream.ops += 1


class Event:
    """cupy.cuda.Event: records the wall time and the recording stream's vector clock."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.time = None
        self.clock: dict[int, int] = {}

    def record(self, stream=None):
        stream = stream if stream is not None else get_current_stream()
        self.time = time.perf_counter()
        self.clock = dict(stream.seen)
        self.clock[stream.ptr] = stream.ops

    def synchronize(self):
        _merge(_HOST, self.clock)

    @property
    def done(self):
        return True


class Stream:
    """cupy.cuda.Stream: `with stream:` makes it the thread's current stream; ptr 0 is the (legacy) null stream.

    ops: work queued on it; seen: stream ptr -> the work of that stream this one is ordered after.
    """

    _next_ptr = 1
    _tls = threading.local()
    _all: "weakref.WeakValueDictionary[int, Stream]" = weakref.WeakValueDictionary()
    null: "Stream"

    def __init__(self, null=False, non_blocking=False, ptds=False):
        if null:
            self.ptr = 0
        else:
            self.ptr = Stream._next_ptr
            Stream._next_ptr += 1
        self.non_blocking = bool(non_blocking)
        self.ops = 0
        self.seen: dict[int, int] = {}
        Stream._all[self.ptr] = self

    @staticmethod
    def check_handle(handle: int, what: str) -> None:
        """A raw stream handle (TensorRT, ONNX Runtime) must be one this fake made (0 = the null stream)."""
        if not 0 <= handle < Stream._next_ptr:
            raise RuntimeError(f"cudaErrorInvalidResourceHandle: {what} 0x{handle:x} is not a CUDA stream")

    @staticmethod
    def from_handle(handle: int, what: str) -> "Stream":
        Stream.check_handle(handle, what)
        s = Stream._all.get(handle)
        if s is None:
            raise RuntimeError(f"cudaErrorInvalidResourceHandle: {what} 0x{handle:x} was destroyed")
        return s

    @classmethod
    def _stack(cls) -> list:
        if not hasattr(cls._tls, "stack"):
            cls._tls.stack = []
        return cls._tls.stack

    def __enter__(self):
        self._stack().append(self)
        return self

    def __exit__(self, *exc):
        self._stack().pop()
        return False

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        if event.time is None:
            raise RuntimeError("Stream.wait_event: the event was never recorded")
        _merge(self.seen, event.clock)

    def synchronize(self):
        _merge(_HOST, self.seen)
        _merge(_HOST, {self.ptr: self.ops})

    def __repr__(self):
        kind = "null" if self.ptr == 0 else ("non-blocking" if self.non_blocking else "blocking")
        return f"<fake cupy Stream {self.ptr} ({kind})>"


Stream.null = Stream(null=True)


def get_current_stream(device_id=-1):
    st = Stream._stack()
    return st[-1] if st else Stream.null


def ordered(after: Stream, before: Stream) -> bool:
    """True when all the work queued so far on `before` comes before new work on `after`."""
    if after is before or max(after.seen.get(before.ptr, 0), _HOST.get(before.ptr, 0)) >= before.ops:
        return True
    # the legacy null stream waits for, and is waited for by, every blocking stream
    return (after.ptr == 0 and not before.non_blocking) or (before.ptr == 0 and not after.non_blocking)


def check_caller_order(stream: Stream, what: str) -> None:
    """`stream` is about to run work that reads what the caller queued on its current stream (the one below
    `stream` on this thread's stack when the caller entered `with stream:`): RuntimeError unless ordered."""
    st = Stream._stack()
    if st and st[-1] is stream:
        caller = st[-2] if len(st) > 1 else Stream.null
    else:
        caller = get_current_stream()
    if not ordered(stream, caller):
        raise RuntimeError(f"{what}: runs on {stream!r} unordered with the caller's {caller!r}: it may read inputs "
                           "before they are written (a race on a GPU) | record an event on the caller's stream "
                           "and wait_event it on the running stream")


def device_synchronize(where: str) -> None:
    """A whole-device synchronisation (cudaDeviceSynchronize): logged, and the host is after every stream."""
    LOG.device_syncs.append(where)
    for s in list(Stream._all.values()):
        s.synchronize()


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events."""
    return (end_event.time - start_event.time) * 1e3


class Device:
    def __init__(self, device=None):
        if device not in (None, 0):
            raise RuntimeError(f"cupy.cuda.Device({device}): only device 0 exists here")
        self.id = 0

    def synchronize(self):
        device_synchronize(f"cupy.cuda.Device.synchronize ({_caller()})")


def _runtime():
    def getDeviceCount():  # noqa: N802 - CUDA's name
        return 1

    def getDeviceProperties(device):  # noqa: N802
        if device != 0:
            raise RuntimeError(f"cudaErrorInvalidDevice: device {device}")
        return {"name": DEVICE_NAME.encode(), "major": 9, "minor": 0, "multiProcessorCount": 1,
                "totalGlobalMem": 1 << 34}  # fmt: skip

    return types.SimpleNamespace(getDeviceCount=getDeviceCount, getDeviceProperties=getDeviceProperties)


# -- modules -----------------------------------------------------------------------------------


def _module(name: str, doc: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name, doc)
    m.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)  # importlib.util.find_spec needs one
    m.__file__ = _HERE
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


def make_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """-> (cupy, cupyx) stand-ins sharing LOG."""
    cuda = types.SimpleNamespace(
        is_available=lambda: True, runtime=_runtime(), Device=Device, Stream=Stream, Event=Event,
        get_current_stream=get_current_stream, get_elapsed_time=get_elapsed_time,
    )  # fmt: skip
    cupy = _module(
        "cupy", "numpy stand-in for CuPy (tests/cuda_emu/fake_cupy.py)",
        __version__="0.0-fake", ndarray=ndarray, cuda=cuda, asarray=asarray, asnumpy=asnumpy, argsort=argsort,
        empty=_alloc(None), zeros=_alloc(0),
        **{n: _device_fn(n) for n in _FUNCTIONS}, **{n: getattr(np, n) for n in _DTYPES},
    )  # fmt: skip
    cupyx = _module("cupyx", "numpy stand-in for cupyx (tests/cuda_emu/fake_cupy.py)",
                    empty_pinned=lambda shape, dtype=float, order="C": np.empty(shape, dtype=dtype, order=order))  # fmt: skip
    return cupy, cupyx


# -- kernels -----------------------------------------------------------------------------------


class DeviceKernels(dict):
    """Wraps the CPU-emulated kernels (tests/cuda_emu._Kernels): every array argument must be device memory."""

    def __init__(self, kernels):
        super().__init__({name: self._wrap(name, k) for name, k in kernels.items()})
        self.inner = kernels

    @staticmethod
    def _wrap(name, kernel):
        def launch(grid, block, args, stream=None):
            for i, a in enumerate(args):
                if isinstance(a, np.ndarray) and not isinstance(a, ndarray):
                    raise TypeError(
                        f"{name}: argument {i} is host memory ({a.dtype}{list(a.shape)}) | kernels take device arrays"
                    )
            if stream is not None and not isinstance(stream, Stream):
                raise TypeError(f"{name}: stream= {type(stream)} is not a cupy.cuda.Stream")
            _work(stream if stream is not None else get_current_stream())
            return kernel(grid, block, args, stream=stream)

        return launch


# -- installation -----------------------------------------------------------------------------


@dataclass
class FakeGpu:
    cupy: types.ModuleType
    cupyx: types.ModuleType
    kernels: DeviceKernels
    log: Log


def install(monkeypatch, kernels) -> FakeGpu:
    """Make `import cupy` / `import cupyx` give the stand-ins and gt_runtime's CUDA rasterizer use `kernels`.

    `kernels`: tests/cuda_emu's emulated kernel table (cuda_emu._Kernels). Everything is undone by
    monkeypatch at the end of the test: the real modules (if any were imported) come back, and so do
    gt_runtime.raster._cuda's caches.
    """
    import functools

    from gt_runtime.raster import _cuda

    cupy, cupyx = make_modules()
    for name in [n for n in sys.modules if n == "cupy" or n.startswith(("cupy.", "cupyx"))]:
        monkeypatch.delitem(sys.modules, name)  # no real CuPy submodule is reachable while the fake is in
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    device_kernels = DeviceKernels(kernels)
    # A fresh availability cache (the real one may hold the answer of the real CuPy: no device).
    monkeypatch.setattr(_cuda, "cuda_available", functools.lru_cache(maxsize=1)(_cuda.cuda_available.__wrapped__))
    monkeypatch.setattr(_cuda, "_MODULES", {})
    monkeypatch.setattr(_cuda, "_DEFAULT", {})

    def get_module(fast_math: bool = False):  # NVRTC is replaced by the CPU-compiled kernels
        _cuda._require_cupy()
        return device_kernels

    monkeypatch.setattr(_cuda, "get_module", get_module)
    LOG.clear()
    return FakeGpu(cupy, cupyx, device_kernels, LOG)
