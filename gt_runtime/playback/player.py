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
        from gt_runtime.engines.select import resolve_engine_name, select_engine
        from gt_runtime.playback.pipeline import resolve_raster

        if not isinstance(bundle, Bundle):
            bundle = Bundle.open(bundle)
        self.bundle = bundle
        self.batch = int(batch)
        name = resolve_engine_name(bundle, engine)
        device = "cuda" if name in ("array-cupy", "onnxruntime-cuda") or name.startswith("tensorrt") else "cpu"
        raster = resolve_raster(raster, device)
        # CPU: overlap deform (worker thread) with raster (caller's thread), each on its share of the cores,
        # so that neither library's thread pool oversubscribes the machine.
        cores = usable_cores()
        if overlap is None:
            overlap = device == "cpu" and raster == "cpu" and cores >= 2
        engine_threads = threads or (max(1, cores // 2) if overlap else cores)
        raster_threads = max(1, cores - engine_threads) if overlap else cores
        self.engines = select_engine(bundle, name, threads=engine_threads, max_batch=max(8, self.batch))
        self.pipeline = FramePipeline(bundle, self.engines, raster, overlap, raster_threads=raster_threads)
        self.width, self.height, self.fps = bundle.width, bundle.height, bundle.fps

    def describe(self) -> dict:
        """{"engine", "raster", "device", "gaussians", "width", "height"}."""
        return self.pipeline.describe()

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
        self.engines.deactivate()
