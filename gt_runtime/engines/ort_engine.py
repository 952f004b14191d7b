"""The `onnxruntime` engine: deform and audio encoder graphs through ONNX Runtime.

CPU EP: intra-op threads = usable cores, one inter-op thread, spinning off
(`session.intra_op.allow_spinning = 0`, so idle pool threads do not steal the
rasterizer's cores). The deform graph is the bundle's (`deform.onnx`,
`deform.int8.onnx`, ...) or, with `graph="fast"`, the CPU-tuned graph built from
`weights.npz` with the algebraic savings and the queries baked in
(`gt_runtime.engines.onnx_graphs`).

CUDA EP (onnxruntime-gpu): inputs and outputs are CuPy device buffers bound with
IOBinding (no host copies). Each runner runs its graph on its own non-blocking CuPy
stream (`user_compute_stream`), ordered after the caller's current stream by an event
before the run and before the caller's stream by an event after it: no device-wide
synchronisation. A session that ONNX Runtime quietly built on the CPU (CUDA or cuDNN
failed to load) is refused at activate().

Sessions come from loaders (gt_runtime.engines.loaders), created in activate().
"""
from __future__ import annotations

import numpy as np

from gt_runtime.engines.base import AUDIO_INPUTS, AUDIO_OUTPUTS, DEFORM_INPUTS, DEFORM_OUTPUTS, Runner
from gt_runtime.engines.loaders import (CudaSessionFromOnnx, SessionFromOnnx, cpu_session_options,  # noqa: F401 (re-exported)
                                        cuda_provider_available, usable_cores)
from gt_runtime.errors import InputError, require


CPU_CHUNK_ROWS = 4096


def cuda_available() -> bool:
    """True when onnxruntime lists the CUDA execution provider (onnxruntime-gpu)."""
    return cuda_provider_available()


class OrtRunner(Runner):
    """One ONNX graph through ONNX Runtime.

    `session`: a loader called in activate() (`SessionFromOnnx` on the CPU, `CudaSessionFromOnnx` on
    CUDA, called with the runner's stream), or a model (a path, serialized bytes or a ModelProto) that
    the runner wraps in the loader of its device.
    """

    def __init__(self, session, name: str, input_ranks: dict, output_names: tuple, device: str = "cpu",
                 threads: int | None = None, optional_inputs: tuple = (), constant_feed: dict | None = None,
                 chunk_rows: int = 0, derive: dict | None = None):
        super().__init__(name)
        if not callable(session):
            where = str(session) if isinstance(session, str) or hasattr(session, "__fspath__") else name
            session = (SessionFromOnnx(session, threads=threads, where=where) if device == "cpu" else
                       CudaSessionFromOnnx(session, where=where, what="engine onnxruntime-cuda"))
        self._load = session
        self.input_ranks = dict(input_ranks)
        self.optional_inputs = tuple(optional_inputs)
        self.output_names = tuple(output_names)
        self.device = device
        self.threads = threads
        self._constant = dict(constant_feed or {})  # fed when absent from infer's feed
        # CPU: run the Gaussians (rows of the [N, 64] inputs) in chunks so activations stay in cache.
        self.chunk_rows = int(chunk_rows)
        self._derive = dict(derive or {})  # input name -> (source input, fn) when the source is fed

    def activate_impl(self):
        if self.device == "cpu":
            self.sess = self._load()
        else:
            if not cuda_available():
                raise InputError("onnxruntime has no CUDA execution provider | install onnxruntime-gpu, or use --engine array-cupy / tensorrt")
            cp = require("cupy", "engine onnxruntime-cuda")
            self.cp = cp
            # The runner's own stream: not the legacy null stream, which would serialise with every other one.
            self.stream = cp.cuda.Stream(non_blocking=True)
            self.sess = self._load(self.stream.ptr, cp.cuda.Device().id)
        self._inputs = [i.name for i in self.sess.get_inputs()]
        self._outputs = [o.name for o in self.sess.get_outputs()]
        missing = set(self.output_names) - set(self._outputs)
        if missing:
            raise InputError(f"{self.name}: the ONNX graph lacks outputs {sorted(missing)} | re-export the bundle with gt export")
        if self.device != "cpu":
            with self.stream:
                self._constant = {k: self.cp.asarray(v, dtype=self.cp.float32) for k, v in self._constant.items()}

    def _full_feed(self, feed):
        full = {k: v for k, v in feed.items() if k in self._inputs}
        for name, (src, fn) in self._derive.items():
            if src in feed and feed[src] is not self._constant.get(src) and name in self._inputs:
                full[name] = fn(feed[src])  # e.g. q0 of queries other than the bundle's
        for k, v in self._constant.items():
            if k in self._inputs and k not in full:
                full[k] = v
        return full

    def infer_impl(self, feed):
        full = self._full_feed(feed)
        if self.device == "cpu":
            full = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in full.items()}
            n = full["queries"].shape[0] if "queries" in full else 0
            if not self.chunk_rows or n <= self.chunk_rows:
                return dict(zip(self._outputs, self.sess.run(self._outputs, full)))
            rows = [k for k in ("queries", "q0") if k in full]
            parts = []
            for i in range(0, n, self.chunk_rows):
                sub = dict(full, **{k: full[k][i:i + self.chunk_rows] for k in rows})
                parts.append(self.sess.run(self._outputs, sub))
            return {name: np.concatenate([p[j] for p in parts], axis=1) for j, name in enumerate(self._outputs)}
        return self._infer_cuda(full)

    def _infer_cuda(self, full):
        cp, stream = self.cp, self.stream
        caller = cp.cuda.get_current_stream()
        stream.wait_event(caller.record())  # the inputs the caller queued are written before the graph reads them
        dev = cp.cuda.Device().id
        with stream:
            io = self.sess.io_binding()
            keep = []
            for k, v in full.items():
                v = cp.ascontiguousarray(cp.asarray(v, dtype=cp.float32))
                keep.append(v)
                io.bind_input(name=k, device_type="cuda", device_id=dev, element_type=np.float32,
                              shape=tuple(v.shape), buffer_ptr=v.data.ptr)
            outs = {}
            for name, shape in self._output_shapes(full).items():
                y = cp.empty(shape, cp.float32)
                outs[name] = y
                io.bind_output(name=name, device_type="cuda", device_id=dev, element_type=np.float32,
                               shape=tuple(shape), buffer_ptr=y.data.ptr)
            # No io.synchronize_inputs/outputs: on the CUDA EP they synchronise the whole device.
            self.sess.run_with_iobinding(io)
        caller.wait_event(stream.record())  # the caller's later work sees the outputs
        self._alive = keep  # inputs stay allocated until the next call (the stream may still read them)
        return outs

    def _output_shapes(self, full) -> dict:
        """Output shapes of the gt graphs from the input shapes (needed to preallocate device outputs)."""
        if "audio_window" in full:
            return {"audio_token": (full["audio_window"].shape[0], 64)}
        bsz = full["tokens"].shape[0]
        n = full["queries"].shape[0] if "queries" in full else self._n_const()
        shapes = {}
        for o in self.sess.get_outputs():
            shapes[o.name] = (bsz, n, int(o.shape[-1]))
        return shapes

    def _n_const(self):
        o = self.sess.get_outputs()[0]
        return int(o.shape[1])

    def synchronize(self):
        if self.device != "cpu":
            self.stream.synchronize()


def deform_runner(bundle, precision: str = "fp32", device: str = "cpu", graph: str = "auto", threads: int | None = None) -> OrtRunner:
    """The deform runner of a bundle: graph "bundle" (the exported ONNX of `precision`),
    "fast" (built from weights.npz with the algebraic savings; CPU FP32 only) or "auto"
    (fast when it applies and the onnx package is present, else bundle)."""
    queries = bundle.gaussians["queries"]
    if graph == "auto":
        import importlib.util

        graph = "fast" if (precision == "fp32" and device == "cpu" and importlib.util.find_spec("onnx")) else "bundle"
    constant = {"queries": queries}
    if graph == "fast":
        from gt_runtime.engines.onnx_graphs import build_deform_onnx, layer0_query

        # Separate head fc1 GEMMs measured ~15% faster than the bundle graph in ORT (fused 640 + Split was not).
        model = build_deform_onnx(bundle.weights, bundle.num_layers, bundle.sh_degree, fast=True, fuse_heads=False)
        constant["q0"] = layer0_query(bundle.weights, queries)
        derive = {"q0": ("queries", lambda q: layer0_query(bundle.weights, q))}
    else:
        derive = None
        model = bundle.onnx_path(precision)
    name = f"onnxruntime-{device}-{precision}{'-fast' if graph == 'fast' else ''}"
    where = str(model) if graph != "fast" else name
    session = (SessionFromOnnx(model, threads=threads, where=where) if device == "cpu" else
               CudaSessionFromOnnx(model, where=where, what="engine onnxruntime-cuda"))
    return OrtRunner(session, name, DEFORM_INPUTS, DEFORM_OUTPUTS, device=device, threads=threads,
                     optional_inputs=("queries",), constant_feed=constant,
                     chunk_rows=CPU_CHUNK_ROWS if device == "cpu" else 0, derive=derive)


def audio_runner(bundle, device: str = "cpu", threads: int | None = None) -> OrtRunner:
    from gt_runtime.contract import AUDIO_ONNX

    # A tiny graph: one thread, so that its pool never competes with the deform engine's.
    path, threads = bundle.file(AUDIO_ONNX), threads or 1
    session = (SessionFromOnnx(path, threads=threads) if device == "cpu" else
               CudaSessionFromOnnx(path, what="engine onnxruntime-cuda"))
    runner = OrtRunner(session, f"onnxruntime-audio-{device}", AUDIO_INPUTS, AUDIO_OUTPUTS, device=device, threads=threads)
    runner.audio_dim = bundle.audio_dim
    return runner
