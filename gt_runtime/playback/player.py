"""`Player`: a bundle ready to play (docs/ARCHITECTURE.md: "Playback and sessions").

    p = Player(Bundle.open("may.gtb"), engine="auto", raster="auto")
    for frame in p.play("speech.wav"): ...      # [H, W, 3] uint8 at 25 fps
    s = p.session()                              # streaming, see gt_runtime.playback.session

A Player holds only immutable, shareable data (bundle arrays, activated engines, the
scene, precomputed tokens): many sessions can share one. Every per-stream thing lives in
the `Session` that `play` and `session()` create.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from gt_runtime.audio import SAMPLE_RATE, check_pcm, load_audio
from gt_runtime.bundle import Bundle
from gt_runtime.playback.pipeline import FramePipeline
from gt_runtime.playback.session import Session
from gt_runtime.util.cpu import usable_cores


class Player:
    """Bundle + engines + rasterizer. `engine`: see gt_runtime.engines.select; `raster`: auto | cpu | cuda | reference."""

    def __init__(self, bundle: Bundle | str | Path, engine: str = "auto", raster: str = "auto",
                 batch: int = 1, threads: int | None = None, overlap: bool | None = None):
        from gt_runtime.engines.autotune import choose_engine
        from gt_runtime.engines.select import gpu_available, resolve_engine_name
        from gt_runtime.playback.pipeline import resolve_raster

        if not isinstance(bundle, Bundle):
            bundle = Bundle.open(bundle)
        self.bundle = bundle
        self.batch = int(batch)
        gpu = gpu_available()
        if engine == "auto":  # every candidate of auto runs where the fixed order's choice would
            device = "cuda" if gpu else "cpu"
        else:
            name = resolve_engine_name(bundle, engine, gpu)
            device = "cuda" if name in ("array-cupy", "onnxruntime-cuda") or name.startswith(("tensorrt", "cuda-")) else "cpu"
        raster = resolve_raster(raster, device)
        # CPU threads: forced overlap splits the cores between deform (worker thread) and raster (caller's
        # thread) so that neither library's pool oversubscribes the machine; sequential stages and the
        # measured choice (overlap=None) give the engine every core, and the rasterizer every core when it
        # runs alone, half of them beside the deformation.
        cores = usable_cores()
        half = max(1, cores // 2)
        engine_threads = threads or (half if overlap else cores)
        raster_threads = max(1, cores - engine_threads) if overlap else cores
        overlap_raster_threads = raster_threads if overlap else half
        self.engines, self.engine_choice = choose_engine(bundle, engine, gpu, threads=engine_threads,
                                                         max_batch=max(8, self.batch), batch=self.batch)
        self.pipeline = FramePipeline(bundle, self.engines, raster, overlap, raster_threads=raster_threads,
                                      overlap_raster_threads=overlap_raster_threads)
        self.width, self.height, self.fps = bundle.width, bundle.height, bundle.fps

    def describe(self) -> dict:
        """{"engine", "raster", "device", "gaussians", "width", "height", "overlap", "engine_choice"}.

        engine_choice: the measured choice of `--engine auto` as one line (gt_runtime.engines.autotune), or "".
        """
        return dict(self.pipeline.describe(), engine_choice=self.engine_choice.line() if self.engine_choice else "")

    def session(self, batch: int | None = None, overlap: bool | None = None) -> Session:
        """A new streaming session (all per-stream state)."""
        return Session(self.pipeline, self.batch if batch is None else batch, overlap)

    def play(self, speech, sample_rate: int = SAMPLE_RATE, session: Session | None = None) -> Iterator[np.ndarray]:
        """speech: a file path, or pcm [S] / [S, C] float32 at sample_rate -> frames uint8 [H, W, 3] at 25 fps.

        ceil(S16k / 640) frames for S16k samples at 16 kHz. Bad audio (unreadable, empty,
        NaN) raises a one-line InputError before any frame is made; silence is valid (the avatar at rest).
        """
        if isinstance(speech, (str, Path)):
            pcm, sample_rate = load_audio(speech, allow_silent=True)
        else:
            pcm = np.asarray(speech, np.float32)
            check_pcm(pcm.reshape(-1), "audio", allow_silent=True)
        s = session or self.session()
        return self._run(s, pcm, sample_rate)

    @staticmethod
    def _run(s: Session, pcm, sample_rate) -> Iterator[np.ndarray]:
        try:
            s.push_audio(pcm, sample_rate)
            yield from s.frames()
            s.finish()
            yield from s.frames()
        finally:
            s.close()

    def close(self) -> None:
        self.pipeline.close_lanes()
        self.engines.deactivate()
