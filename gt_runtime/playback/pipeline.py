"""Frames from audio windows: tokens -> deform -> activations -> raster -> RGB uint8.

`FramePipeline` holds only immutable, shareable data (the activated engines, the
canonical Gaussians, the scene, the eye/view tokens of every track frame), so many
sessions can share one. Per-stream state (timings, the CUDA rasterizer's buffers, the
overlap thread) lives in a `RenderState` that each session owns.

Frame t: audio token from its feature window, eye token of blink[pp(t)], view token of
c2w[pp(t)], null; viewmat = inv(c2w[pp(t)]); Gaussians means + dmu, quats + drot,
exp(log_scales + dscale), sigmoid(opacity_logits + dopacity), sh + dsh
(`gt_runtime.model.reference.apply_offsets`, on numpy or CuPy); background = plate +
torso of pp(t); output round(clip(rgb, 0, 1) * 255) as uint8 [H, W, 3].

On CPU the stages of a batch can run three ways: "sequential" (each stage on every core in
turn), "overlapped" (the deformation of batch k+1 on a worker thread while batch k is
rasterized, `overlap=True`) and "lanes" (one batch per core at once, every stage of a
batch on one thread, with a one-thread copy of the engine: no OpenMP team waits at a
barrier for a core that the encoder or anything else took). All release the GIL (BLAS /
ONNX Runtime / the C++ kernels). Which is fastest depends on the machine and the bundle,
so with `overlap=None` (auto, CPU engine + C++ rasterizer, >= 2 cores) the first batches
are run every way and the fastest mode is kept for the pipeline (`OverlapChooser`;
`describe()["overlap"]`). The frames are the same every way: only where and in which
order the stages run changes.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gt_runtime.model import reference
from gt_runtime.errors import InputError
from gt_runtime.playback.timings import Timings
from gt_runtime.util.cpu import cpu_name, usable_cores

RASTER_NAMES = ("auto", "cpu", "cuda", "reference")


def to_uint8(img: np.ndarray, out: np.ndarray) -> np.ndarray:
    """img [H, W, 3] float32 (overwritten) -> out uint8 = round(clip(img, 0, 1) * 255)."""
    np.multiply(img, np.float32(255.0), out=img)
    np.clip(img, 0.0, 255.0, out=img)
    np.rint(img, out=img)
    out[...] = img
    return out


def cpu_raster_available() -> bool:
    try:
        import gt_runtime._raster_cpu  # noqa: F401
        return True
    except ImportError:
        return False


def resolve_raster(raster: str, device: str) -> str:
    """'auto' -> 'cuda' (engine on GPU and CuPy works), else 'cpu' (C++ extension built), else 'reference'."""
    if raster not in RASTER_NAMES:
        raise InputError(f"--raster {raster}: unknown rasterizer | expected one of {', '.join(RASTER_NAMES)}")
    if raster == "auto":
        if device == "cuda":
            return "cuda"
        return "cpu" if cpu_raster_available() else "reference"
    if raster == "cpu" and not cpu_raster_available():
        raise InputError("--raster cpu: the C++ rasterizer is not built | run: python setup.py build_ext --inplace (or pip install .), or use --raster reference")
    if raster == "cuda":
        from gt_runtime.engines.select import gpu_available

        if not gpu_available():
            raise InputError("--raster cuda: needs a CUDA GPU with CuPy, none found | use --raster auto or cpu")
    return raster


class OverlapChooser:
    """Sequential, overlapped or lanes, by the wall time per frame of the first batches each way.

    The first `warmup` batches run sequentially, untimed (caches, the encoder starting). Then
    `probe` rounds, each running every mode on three "waves" of batches (a wave: one batch, or
    one batch per lane for "lanes"), of which only the middle wave counts: the first fills the
    overlap worker or the lanes and carries the previous mode's tail (gt play encodes on its own
    thread, a few frames behind: a single sequential batch after three overlapped ones was charged
    their encoding, 50-70 ms/frame at 512² x 20k against 30 steady), and the last runs with
    nothing beside it, which steady running never does. Interleaved, so a machine whose load
    changes, or a pipeline still warming up, favours no mode. A wave's time runs from the end of
    the previous wave to the end of its own, the consumer's time (encoding) included, as delivered.
    lanes: the pipeline's lanes (>= 2 offers the "lanes" mode), else 0.
    `timing(mode, measured_s) -> s` replaces the measured seconds (tests and benchmarks inject it).
    """

    def __init__(self, probe: int = 5, timing=None, warmup: int = 2, lanes: int = 0):
        self.probe, self.warmup, self.lanes = int(probe), int(warmup), int(lanes)
        self.timing = timing
        self.modes = ("sequential", "overlapped") + (("lanes",) if self.lanes >= 2 else ())
        self.seconds = {m: [] for m in self.modes}   # seconds per frame of each timed wave
        self.mode: str | None = None                  # the decision, once made

    def wave(self, mode: str) -> int:
        """Batches that run at once in `mode`."""
        return self.lanes if mode == "lanes" else 1

    @property
    def batches_needed(self) -> int:
        return self.warmup + self.probe * sum(3 * self.wave(m) for m in self.modes)

    def record(self, mode: str, seconds: float, frames: int) -> None:
        s = self.timing(mode, seconds) if self.timing else seconds
        self.seconds[mode].append(s / max(1, frames))

    def decide(self) -> str:
        """Keep the mode with the lowest median time per frame (ties: the simpler one, sequential first)."""
        med = {m: float(np.median(self.seconds[m])) for m in self.modes}
        self.mode = min(self.modes, key=lambda m: (med[m], self.modes.index(m)))
        return self.mode

    def describe(self) -> str:
        if self.mode is None:
            return "auto (not decided yet)"
        ms = ", ".join(f"{m} {1e3 * float(np.median(self.seconds[m])):.1f}" for m in self.modes)
        return f"auto: {self.mode} (measured ms/frame: {ms})"


MODE_OF_OVERLAP = {True: "overlapped", False: "sequential"}


class RenderState:
    """Per-stream mutable state: timings, the CUDA rasterizer (buffers, stream), the overlap worker, the lanes.

    mode: "sequential", "overlapped" or "lanes"; None: the pipeline measures it on this stream's first batches.
    """

    def __init__(self, pipeline: "FramePipeline", overlap: bool | None = None):
        self.timings = Timings()
        if overlap is not None:
            self.mode = MODE_OF_OVERLAP[bool(overlap)]
        else:  # the pipeline's default or measured choice; still None: run_batches measures
            self.mode = pipeline.default_mode or (pipeline.overlap_chooser.mode if pipeline.overlap_chooser else None)
        self._executor = None
        self._lanes = None
        self._cuda = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gt-deform")
        return self._executor

    def lanes(self, n: int) -> ThreadPoolExecutor:
        if self._lanes is None:
            self._lanes = ThreadPoolExecutor(max_workers=n, thread_name_prefix="gt-lane")
        return self._lanes

    def cuda_rasterizer(self):
        if self._cuda is None:
            from gt_runtime.raster._cuda import CudaRasterizer

            self._cuda = CudaRasterizer()
        return self._cuda

    def close(self) -> None:
        for ex in (self._executor, self._lanes):
            if ex is not None:
                ex.shutdown(wait=True)
        self._executor = self._lanes = None


class FramePipeline:
    """Immutable per-bundle render pipeline (share it; keep per-stream state in RenderState)."""

    def __init__(self, bundle, engines, raster: str = "auto", overlap: bool | None = None, raster_threads: int | None = None,
                 overlap_raster_threads: int | None = None):
        self.bundle = bundle
        self.engines = engines.activate()
        self.device = engines.device
        self.raster = resolve_raster(raster, self.device)
        self.raster_threads = raster_threads  # OpenMP threads of the C++ rasterizer (None: its default)
        # ... while the deformation runs beside it on the worker (None: raster_threads)
        self.overlap_raster_threads = overlap_raster_threads or raster_threads
        self.width, self.height = bundle.width, bundle.height
        self.K = bundle.K
        self.sh_degree = bundle.sh_degree
        from gt_runtime.playback.scene import Scene

        self.scene = Scene(bundle)
        g = bundle.gaussians
        self.n = bundle.num_gaussians
        self.canon = {k: np.ascontiguousarray(g[k], np.float32) for k in reference.CANONICAL_KEYS}  # raw, [N, ...]
        enc = reference.TokenEncoder(bundle.weights, np)
        self.eye_tokens = enc.eye(self.scene.blink).astype(np.float32)     # [T_track, 64]
        self.view_tokens = enc.view(self.scene.c2w).astype(np.float32)     # [T_track, 64]
        self.null = np.asarray(bundle.weights["null"], np.float32)
        from gt_runtime.audio.frontend import for_bundle

        # The bundle's audio front end (mel, or the hubert / wav2vec2 graph on ONNX Runtime's CPU EP): shared,
        # stateless; each Session streams through its own `frontend.stream()`.
        self.frontend = for_bundle(bundle).activate()
        self.audio_dim = bundle.audio_dim
        self.xp = engines.xp
        if self.device == "cuda" or self.raster == "cuda":
            import cupy

            self._dev = {k: cupy.asarray(v) for k, v in self.canon.items()}
            self._dev["K"] = cupy.asarray(self.K)
        # Overlap or lanes can pay off on the CPU (GIL released by BLAS / ORT / C++ kernels): measured when not
        # forced. The GPU path batches instead.
        self.overlap_chooser = None
        cpu = self.device == "cpu" and self.raster == "cpu" and usable_cores() >= 2
        self.lanes = usable_cores() if cpu else 0  # lanes of the "lanes" mode: one per core
        self._lane_engines = None
        self._lane_lock = threading.Lock()
        if overlap is None and cpu:
            self.overlap_chooser = OverlapChooser(lanes=self.lanes)
        self.default_mode = MODE_OF_OVERLAP[bool(overlap)] if overlap is not None else None if self.overlap_chooser else "sequential"

    def overlap_mode(self) -> str:
        """How sessions that do not force it run the stages: "on", "off" or the measured choice."""
        if self.overlap_chooser is not None:
            return (f"{self.overlap_chooser.describe()}, raster threads {self.raster_threads or 'default'} alone / "
                    f"{self.overlap_raster_threads or 'default'} beside the deformation / 1 in each of {self.lanes} lanes")
        return "on" if self.default_mode == "overlapped" else "off"

    def lane_engines(self):
        """A one-thread copy of the engines for the lanes (each lane runs every stage on its own thread)."""
        with self._lane_lock:
            if self._lane_engines is None:
                from gt_runtime.engines.select import select_engine

                self._lane_engines = select_engine(self.bundle, self.engines.name, gpu=False, threads=1).activate()
            return self._lane_engines

    def describe(self) -> dict:
        dev = "cpu"
        if self.device == "cuda" or self.raster == "cuda":
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props["name"]
            dev = "cuda: " + (name.decode() if isinstance(name, bytes) else str(name))
        else:

            dev = f"cpu: {cpu_name()}, {usable_cores()} cores"
        return {"engine": self.engines.name, "raster": self.raster, "device": dev,
                "gaussians": self.n, "width": self.width, "height": self.height, "overlap": self.overlap_mode()}

    def close_lanes(self) -> None:
        """Release the lanes' engine copy (Player.close)."""
        with self._lane_lock:
            if self._lane_engines is not None:
                self._lane_engines.deactivate()
                self._lane_engines = None

    def new_state(self, overlap: bool | None = None) -> RenderState:
        return RenderState(self, overlap)

    # -- stage A: tokens + deform --------------------------------------------------------
    def deform(self, frames: np.ndarray, windows: np.ndarray, engines=None) -> tuple[dict, dict]:
        """frames [B] (speech frame indices), windows [B, 15, 2, D] -> (offsets dict, stage seconds).
        engines: the EngineSet to run (default: the pipeline's; the lanes pass their one-thread copy).

        The dict holds the offsets {dmu [B,N,3], ...}, or {"_gaussians": the activated Gaussians [B, N, ...]}
        when the engine fuses the activation; "_backgrounds" holds the B composited backgrounds.
        """
        engines = engines or self.engines
        t0 = time.perf_counter()
        atok = engines.audio.infer({"audio_window": np.ascontiguousarray(windows, np.float32)})["audio_token"]
        t1 = time.perf_counter()
        ti = self.scene.track_index(np.asarray(frames))
        xp = self.xp
        # the only per-frame uploads (4 x [B, 64]); the Gaussians stay on the device
        dev = [xp.asarray(a, dtype=xp.float32) for a in (atok, self.eye_tokens[ti], self.view_tokens[ti], self.null)]
        tokens = reference.stack_tokens(*dev, xp)
        tokens = xp.ascontiguousarray(tokens)
        fused = getattr(engines.deform, "activated", None)
        if fused is not None:
            # fused engines (cpu-fused, cuda-fused) write the activated Gaussians themselves: no offsets pass
            off = {"_gaussians": fused(tokens, self._dev if self.raster == "cuda" else self.canon)}
        else:
            off = engines.deform.infer({"tokens": tokens})
        t2 = time.perf_counter()
        # Backgrounds (torso PNG decode + composite) are fetched here, on the overlap worker, not in the raster stage.
        off["_backgrounds"] = [self.scene.background_of_track(int(i)) for i in np.atleast_1d(ti)]
        t3 = time.perf_counter()
        return off, {"audio_encoder": t1 - t0, "deform": t2 - t1, "composite": t3 - t2}

    # -- stage B: activations + raster ------------------------------------------------------
    def render(self, state: RenderState, frames: np.ndarray, off: dict, overlapped: bool = False,
               threads: int | None = None) -> tuple[np.ndarray, dict]:
        """frames [B], offsets -> (frames uint8 [B, H, W, 3] numpy, stage seconds).

        overlapped: the deformation runs beside it (the C++ rasterizer then takes overlap_raster_threads).
        threads: the C++ rasterizer's threads for this call instead (a caller running its own threads side by side).
        """
        t0 = time.perf_counter()
        if self.raster == "cuda":
            out = self._render_cuda(state, frames, off)
        else:
            out = self._render_cpu(frames, off, threads or (self.overlap_raster_threads if overlapped else self.raster_threads))
        return out, {"raster": time.perf_counter() - t0}

    def _render_cpu(self, frames, off, threads=None):
        from gt_runtime import raster as rast

        bgs = off["_backgrounds"]
        fused = off.get("_gaussians")
        off = {k: (v.get() if hasattr(v, "get") else np.asarray(v)) for k, v in off.items() if not k.startswith("_")}
        if self.raster == "cpu" and threads:
            from gt_runtime.util.cpu import set_omp_threads
            from gt_runtime.raster import _cpu

            _cpu.load()  # libgomp must be loaded before its thread count can be set
            set_omp_threads(threads)  # this thread's parallel regions only
        out = np.empty((len(frames), self.height, self.width, 3), np.uint8)
        for b, t in enumerate(frames):
            ti = int(self.scene.track_index(int(t)))
            # frame by frame: one frame's activated Gaussians in cache for the rasterizer
            if fused is not None:
                g = {k: v[b] for k, v in fused.items()}
            else:
                g = reference.apply_offsets(self.canon, {k: v[b] for k, v in off.items()}, np)
            img = rast.rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["sh"], self.scene.viewmats[ti], self.K,
                                 self.width, self.height, background=bgs[b], backend=self.raster)
            to_uint8(img, out[b])
        return out

    def _render_cuda(self, state, frames, off):
        import cupy as cp

        d = self._dev
        bsz = len(frames)
        bg = cp.asarray(np.stack(off["_backgrounds"]))
        ti = self.scene.track_index(np.asarray(frames))
        if "_gaussians" in off:
            g = off["_gaussians"]                                  # written by a fused engine on the device
        else:
            off = {k: cp.asarray(v) for k, v in off.items() if not k.startswith("_")}
            g = reference.apply_offsets(d, off, cp)                # the whole batch: [B, N, ...]
        viewmats = cp.asarray(self.scene.viewmats[ti])
        r = state.cuda_rasterizer()
        img = r.render(g["means"], g["quats"], g["scales"], g["opacities"], g["sh"], viewmats, cp.broadcast_to(d["K"], (bsz, 3, 3)),
                       self.width, self.height, bg, sh=True)
        u8 = cp.rint(cp.clip(img, 0.0, 1.0) * 255.0).astype(cp.uint8)
        return r.to_host(u8).copy()

    # -- both --------------------------------------------------------------------------
    def run_batches(self, state: RenderState, batches):
        """Iterate (frames [B], windows [B, 15, 2, D]) batches -> yields frames uint8 [H, W, 3] in order.

        state.mode runs them sequentially, overlapped (the deformation of the next batch on the worker
        thread while this batch is rasterized) or in lanes (one batch per core at once). With state.mode
        None (auto) the first batches are measured every way (OverlapChooser) and the rest run the fastest
        way; a call with too few batches to measure runs sequentially and leaves the choice to a later call.
        """
        batches = list(batches)
        if not batches:
            return
        if state.mode is None:
            ch = self.overlap_chooser
            if ch.mode is None and len(batches) >= ch.batches_needed:
                yield from self._choose_mode(state, batches)
                return
            state.mode = ch.mode  # decided by this or another session; still None: sequential this call
        yield from self._run(state, batches, state.mode or "sequential")

    def _run(self, state: RenderState, batches: list, mode: str, on_batch=None):
        """Run the batches in `mode`; on_batch(i) after batch i's frames are consumed."""
        tm = state.timings
        if not batches:
            return
        if mode == "lanes" and len(batches) > 1 and self.lanes > 1:
            yield from self._run_lanes(state, batches, on_batch)
            return
        if mode != "overlapped" or len(batches) == 1:
            for i, (frames, windows) in enumerate(batches):
                off, ta = self.deform(frames, windows)
                imgs, tb = self.render(state, frames, off)
                self._account(tm, len(frames), ta, tb)
                yield from imgs
                if on_batch:
                    on_batch(i)
            return
        ex = state.executor
        fut = ex.submit(self.deform, *batches[0])
        for i, (frames, _) in enumerate(batches):
            off, ta = fut.result()
            if i + 1 < len(batches):
                fut = ex.submit(self.deform, *batches[i + 1])
            imgs, tb = self.render(state, frames, off, overlapped=True)
            self._account(tm, len(frames), ta, tb)
            yield from imgs
            if on_batch:
                on_batch(i)

    def _run_lanes(self, state: RenderState, batches: list, on_batch=None):
        """Every stage of a batch on one lane thread (the one-thread engines, the rasterizer on 1 thread),
        `self.lanes` batches at once, one more queued; frames come out in order."""
        engines = self.lane_engines()
        ex = state.lanes(self.lanes)

        def lane(frames, windows):
            off, ta = self.deform(frames, windows, engines)
            imgs, tb = self.render(state, frames, off, threads=1)
            return imgs, ta, tb

        pending = deque(ex.submit(lane, *b) for b in batches[:self.lanes + 1])
        for i, (frames, _) in enumerate(batches):
            imgs, ta, tb = pending.popleft().result()
            if i + self.lanes + 1 < len(batches):
                pending.append(ex.submit(lane, *batches[i + self.lanes + 1]))
            self._account(state.timings, len(frames), ta, tb)
            yield from imgs
            if on_batch:
                on_batch(i)

    def _choose_mode(self, state: RenderState, batches: list):
        """Warm-up batches sequential, probe rounds of three waves in each mode, the rest the fastest way."""
        ch = self.overlap_chooser

        def timer(mode, part):
            w = ch.wave(mode)
            start = [0.0]

            def on_batch(i):
                if i == w - 1:          # the first wave is out: the middle one starts
                    start[0] = time.perf_counter()
                elif i == 2 * w - 1:    # the middle wave is out
                    ch.record(mode, time.perf_counter() - start[0], sum(len(f) for f, _ in part[w:2 * w]))
            return on_batch

        yield from self._run(state, batches[:ch.warmup], "sequential")
        i = ch.warmup
        for _ in range(ch.probe):
            for mode in ch.modes:
                part = batches[i:i + 3 * ch.wave(mode)]
                i += len(part)
                yield from self._run(state, part, mode, timer(mode, part))
        if ch.mode is None:
            ch.decide()
        state.mode = ch.mode
        yield from self._run(state, batches[i:], state.mode)

    @staticmethod
    def _account(tm: Timings, nframes: int, ta: dict, tb: dict) -> None:
        for k, v in {**ta, **tb}.items():
            tm.add(k, v, nframes)
        with tm._lock:
            tm.frames += nframes
