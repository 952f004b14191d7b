"""An `Avatar`: one bundle loaded once, shared by every stream that plays it.

It holds a Player (engines, scene, precomputed tokens: immutable), the render thread that
batches frames across streams, the audio window of silence that drives idle frames, and a
cache of idle frames (JPEG) by track frame: an idle frame depends only on its track frame,
so a stream at rest costs one render per track frame, once for all streams.
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np

from gt_runtime.contract import SAMPLE_RATE, WINDOW
from gt_serve.renderer import Job, Renderer


def render_lanes() -> int:
    """CPU render lanes: the usable cores, capped by OMP_NUM_THREADS when set (a Ray replica's CPUs)."""
    import os

    from gt_runtime.util.cpu import usable_cores

    cores = usable_cores()
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(omp))) if omp.isdigit() and int(omp) > 0 else cores


class IdleFrames:
    """Track frame -> idle frame JPEG (the avatar at rest), rendered on demand and cached (up to max_bytes)."""

    def __init__(self, avatar: "Avatar", max_bytes: int = 64 << 20):
        self.avatar = avatar
        self._cache: dict[int, bytes] = {}
        self._bytes = 0
        self._max = max_bytes
        self._lock = threading.Lock()   # the render thread stores, the event loop reads
        self._pending: dict[int, asyncio.Future] = {}
        self._urgent: set[int] = set()
        self._loop = None

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, ti: int) -> bytes | None:
        return self._cache.get(ti)

    def prewarm(self) -> None:
        """Queue every track frame not cached yet as background work (call on the event loop)."""
        for ti in range(self.avatar.track_frames):
            if ti not in self._cache:
                self.request(ti, urgent=False)

    def request(self, ti: int, urgent: bool = True) -> asyncio.Future:
        """A future of the JPEG of track frame ti (call on the event loop)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:   # a new server on this avatar: futures of the old loop are gone with it
            self._loop, self._pending, self._urgent = loop, {}, set()
        fut = loop.create_future()
        hit = self._cache.get(ti)
        if hit is not None:
            fut.set_result(hit)
            return fut
        if ti in self._pending and (not urgent or ti in self._urgent):
            return self._pending[ti]
        fut = self._pending.setdefault(ti, fut)   # a background request made urgent: a second job, one future
        if urgent:
            self._urgent.add(ti)

        def done(jpeg, err):
            if err is None:
                self._store(ti, jpeg)   # cached on the render thread, whether or not this loop still runs
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._done, ti, fut, jpeg, err)

        self.avatar.renderer.submit([Job(ti, self.avatar.idle_window, done, urgent)])
        return fut

    def _store(self, ti: int, jpeg: bytes) -> None:
        with self._lock:
            if ti not in self._cache and self._bytes + len(jpeg) <= self._max:
                self._cache[ti] = jpeg
                self._bytes += len(jpeg)

    def _done(self, ti, fut, jpeg, err):
        if self._pending.get(ti) is fut:
            del self._pending[ti]
            self._urgent.discard(ti)
        if fut.done():
            return
        if err is not None:
            fut.set_exception(err)
            fut.exception()  # mark retrieved: a prefetch nobody awaits must not log
            return
        fut.set_result(jpeg)


class Avatar:
    """A loaded bundle: name, Player, render thread, idle frames. `info()` -> the ready message's fields."""

    def __init__(self, name: str, bundle: Path, engine: str = "auto", raster: str = "auto", max_batch: int = 8,
                 jpeg_quality: int = 85):
        from gt_runtime.playback.player import Player

        self.name = name
        # On the CPU: one render lane per core, every stage of a lane on one thread (engine threads=1, raster 1).
        probe = Player(bundle, engine=engine, raster=raster, batch=max_batch, threads=1)
        cpu = probe.pipeline.device == "cpu" and probe.pipeline.raster != "cuda"
        self.player = probe if cpu else Player(bundle, engine=engine, raster=raster, batch=max_batch)
        if not cpu:
            probe.close()
        self.lanes = render_lanes() if cpu else 1
        self.pipeline = self.player.pipeline
        self.width, self.height, self.fps = self.player.width, self.player.height, self.player.fps
        s = self.player.session()
        self.lookahead_ms = s.lookahead_ms
        s.close()
        self.track_frames = self.pipeline.scene.num_frames
        self.idle_window = self._silence_window()
        self.renderer = Renderer(self.pipeline, max_batch, jpeg_quality, name, self.lanes, raster_threads=1 if cpu else None)
        self.idle = IdleFrames(self)

    def _silence_window(self) -> np.ndarray:
        """The audio window [15, 2, D] of silence, from the bundle's own front end (a middle window of 4 s of zeros)."""
        feats = self.pipeline.frontend.features(np.zeros(4 * SAMPLE_RATE, np.float32), SAMPLE_RATE, num_frames=100)
        mid = len(feats) // 2
        return np.ascontiguousarray(feats[mid - WINDOW // 2: mid - WINDOW // 2 + WINDOW], np.float32)

    def info(self) -> dict:
        d = self.player.describe()
        return {"name": self.name, "width": self.width, "height": self.height, "fps": self.fps,
                "lookahead_ms": self.lookahead_ms, "engine": d["engine"], "raster": d["raster"],
                "gaussians": d["gaussians"], "track_frames": self.track_frames}

    def close(self) -> None:
        self.renderer.close()
        self.player.close()
