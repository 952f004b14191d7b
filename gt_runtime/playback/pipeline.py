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

On CPU the deformation of batch k+1 runs on a worker thread while batch k is
rasterized (`overlap=True`); both release the GIL (BLAS / ONNX Runtime / the C++
rasterizer), so on 2 cores the two stages share the machine instead of alternating.
Whether that is faster depends on the machine and the bundle, so with `overlap=None`
(auto, CPU engine + C++ rasterizer, >= 2 cores) the first batches are run both ways and
the faster mode is kept for the pipeline (`OverlapChooser`; `describe()["overlap"]`).
The frames are the same either way: only the order in which the stages run changes.
"""
from __future__ import annotations

import time
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
    """Sequential or overlapped stages, by the wall time per frame of the first batches each way.

    The first `warmup` batches run sequentially, untimed (caches, the encoder starting). Then
    `probe` rounds, each of three sequential batches (the rasterizer on `raster_threads`) and
    three overlapped ones (the rasterizer on `overlap_raster_threads`), of which only the middle
    one of each mode counts: the first overlapped batch fills the worker, and the last is
    rasterized with no deformation beside it, which steady overlap never does; the first of
    either mode also carries the other mode's tail (gt play encodes on its own thread, a few
    frames behind: a single sequential batch after three overlapped ones was charged their
    encoding, 50-70 ms/frame at 512² x 20k against 30 steady). Interleaved, so a machine whose load changes, or a
    pipeline still warming up, favours neither mode. A batch's time runs from the end of the previous one to the end
    of its own, the consumer's time (encoding) included, as delivered.
    `timing(mode, measured_s) -> s` replaces the measured seconds (tests and benchmarks inject it).
    """

    def __init__(self, probe: int = 3, timing=None, warmup: int = 2):
        self.probe, self.warmup = int(probe), int(warmup)
        self.timing = timing
        self.seconds = {"sequential": [], "overlapped": []}   # seconds per frame of each timed batch
        self.overlap: bool | None = None                      # the decision, once made

    @property
    def batches_needed(self) -> int:
        return self.warmup + 6 * self.probe

    def record(self, mode: str, seconds: float, frames: int) -> None:
        s = self.timing(mode, seconds) if self.timing else seconds
        self.seconds[mode].append(s / max(1, frames))

    def decide(self) -> bool:
        """Keep the mode with the lower median time per frame (ties: sequential, the simpler one)."""
        seq, ovl = (float(np.median(self.seconds[m])) for m in ("sequential", "overlapped"))
        self.overlap = bool(ovl < seq)
        return self.overlap

    def describe(self) -> str:
        if self.overlap is None:
            return "auto (not decided yet)"
        seq, ovl = (1e3 * float(np.median(self.seconds[m])) for m in ("sequential", "overlapped"))
        return (f"auto: {'overlapped' if self.overlap else 'sequential'} (measured ms/frame: sequential {seq:.1f}, "
                f"overlapped {ovl:.1f})")


class RenderState:
    """Per-stream mutable state: timings, the CUDA rasterizer (buffers, stream), the overlap worker."""

    def __init__(self, pipeline: "FramePipeline", overlap: bool | None = None):
        self.timings = Timings()
        if overlap is None:
            overlap = pipeline.default_overlap
            if overlap is None:  # the pipeline's measured choice; still None: run_batches measures
                overlap = pipeline.overlap_chooser.overlap
        self.overlap = overlap
        self._executor = None
        self._cuda = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gt-deform")
        return self._executor

    def cuda_rasterizer(self):
        if self._cuda is None:
            from gt_runtime.raster._cuda import CudaRasterizer

            self._cuda = CudaRasterizer()
        return self._cuda

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


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
        # Overlap can pay off on the CPU (GIL released by BLAS / ORT / C++ raster): measured when not forced.
        # The GPU path batches instead.
        self.overlap_chooser = None
        if overlap is None and self.device == "cpu" and self.raster == "cpu" and usable_cores() >= 2:
            self.overlap_chooser = OverlapChooser()
        self.default_overlap = overlap if overlap is not None else None if self.overlap_chooser else False

    def overlap_mode(self) -> str:
        """How sessions that do not force it run the stages: "on", "off" or the measured choice."""
        if self.overlap_chooser is not None:
            return (f"{self.overlap_chooser.describe()}, raster threads {self.raster_threads or 'default'} alone / "
                    f"{self.overlap_raster_threads or 'default'} beside the deformation")
        return "on" if self.default_overlap else "off"

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

    def new_state(self, overlap: bool | None = None) -> RenderState:
        return RenderState(self, overlap)

    # -- stage A: tokens + deform --------------------------------------------------------
    def deform(self, frames: np.ndarray, windows: np.ndarray) -> tuple[dict, dict]:
        """frames [B] (speech frame indices), windows [B, 15, 2, D] -> (offsets dict, stage seconds).

        The dict holds the offsets {dmu [B,N,3], ...}, or {"_gaussians": the activated Gaussians [B, N, ...]}
        when the engine fuses the activation; "_backgrounds" holds the B composited backgrounds.
        """
        t0 = time.perf_counter()
        atok = self.engines.audio.infer({"audio_window": np.ascontiguousarray(windows, np.float32)})["audio_token"]
        t1 = time.perf_counter()
        ti = self.scene.track_index(np.asarray(frames))
        xp = self.xp
        # the only per-frame uploads (4 x [B, 64]); the Gaussians stay on the device
        dev = [xp.asarray(a, dtype=xp.float32) for a in (atok, self.eye_tokens[ti], self.view_tokens[ti], self.null)]
        tokens = reference.stack_tokens(*dev, xp)
        tokens = xp.ascontiguousarray(tokens)
        fused = getattr(self.engines.deform, "activated", None)
        if fused is not None:
            # fused engines (cpu-fused, cuda-fused) write the activated Gaussians themselves: no offsets pass
            off = {"_gaussians": fused(tokens, self._dev if self.raster == "cuda" else self.canon)}
        else:
            off = self.engines.deform.infer({"tokens": tokens})
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

        With state.overlap the deformation of the next batch runs on the worker thread
        while this batch is rasterized. With state.overlap None (auto) the first batches are
        measured both ways (OverlapChooser) and the rest run the faster way; a call with too
        few batches to measure runs sequentially and leaves the choice to a later call.
        """
        batches = list(batches)
        if not batches:
            return
        if state.overlap is None:
            ch = self.overlap_chooser
            if ch.overlap is None and len(batches) >= ch.batches_needed:
                yield from self._choose_overlap(state, batches)
                return
            state.overlap = ch.overlap  # decided by this or another session; still None: sequential this call
        yield from self._run(state, batches, bool(state.overlap))

    def _run(self, state: RenderState, batches: list, overlap: bool, on_batch=None):
        """Run the batches sequentially or overlapped; on_batch(i) after batch i's frames are consumed."""
        tm = state.timings
        if not batches:
            return
        if not overlap or len(batches) == 1:
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

    def _choose_overlap(self, state: RenderState, batches: list):
        """Warm-up batches sequential, probe rounds of (3 sequential, 3 overlapped), the rest the faster way."""
        ch = self.overlap_chooser

        def timer(mode, part):
            last = [time.perf_counter()]

            def on_batch(i):
                now = time.perf_counter()
                if 0 < i < len(part) - 1:  # the middle batch of each mode: see OverlapChooser
                    ch.record(mode, now - last[0], len(part[i][0]))
                last[0] = now
            return on_batch

        yield from self._run(state, batches[:ch.warmup], False)
        for i in range(ch.warmup, ch.batches_needed, 6):
            seq, ovl = batches[i:i + 3], batches[i + 3:i + 6]
            yield from self._run(state, seq, False, timer("sequential", seq))
            yield from self._run(state, ovl, True, timer("overlapped", ovl))
        rest = batches[ch.batches_needed:]
        if ch.overlap is None:
            ch.decide()
        state.overlap = ch.overlap
        yield from self._run(state, rest, state.overlap)

    @staticmethod
    def _account(tm: Timings, nframes: int, ta: dict, tb: dict) -> None:
        for k, v in {**ta, **tb}.items():
            tm.add(k, v, nframes)
        with tm._lock:
            tm.frames += nframes
