"""The render threads of one avatar: frames that concurrent streams need together go through the
engine and the rasterizer as one batch.

Streams submit `Job`s (one frame: its track-frame index and its audio window [15, 2, D]); a
render thread (a "lane") takes queued jobs, whatever stream they come from, runs
FramePipeline.deform on them as one batch [B] and FramePipeline.render on the result, encodes
each image as JPEG and hands it to the job's `deliver` callback (called on that lane).

On the CPU there is one lane per core, each running every stage of its batch on one thread
(engine, rasterizer and JPEG all release the GIL), and each lane takes its share (1 / lanes) of
the queue. On the CPU the deformation costs about the same per frame at any batch size, so what
pays is keeping every core busy without OpenMP teams: measured on a 2-core AVX2 EPYC with
cpu-fused, two one-thread lanes delivered ~2x the frames of one lane whose deformation and
rasterizer each ran on both cores (a team's barrier stalls whenever a core is taken by other
work). On a GPU there is one lane and the batch is what pays.
"""
from __future__ import annotations

import io
import threading
import time
from collections import deque

import numpy as np


class Job:
    """One frame to render. frame: index whose ping-pong track frame gives pose and blink; window [15, 2, D]."""

    __slots__ = ("frame", "window", "deliver", "cancelled", "urgent")

    def __init__(self, frame: int, window: np.ndarray, deliver, urgent: bool = True):
        self.urgent = urgent          # False: background work (idle-frame prewarm), taken after every urgent job
        self.frame = int(frame)
        self.window = window
        self.deliver = deliver        # deliver(jpeg: bytes | None, error: BaseException | None), on the render thread
        self.cancelled = False        # set by the stream (interrupt, disconnect): skipped if not yet rendered


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """img uint8 [H, W, 3] -> JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class Renderer:
    """`lanes` render threads per avatar, each rendering up to max_batch queued jobs per batch.

    raster_threads: the C++ rasterizer's OpenMP threads in each lane (None: the pipeline's own).
    """

    def __init__(self, pipeline, max_batch: int = 8, jpeg_quality: int = 85, name: str = "avatar", lanes: int = 1,
                 raster_threads: int | None = None):
        self.pipe = pipeline
        self.max_batch = int(max_batch)
        self.quality = int(jpeg_quality)
        self.lanes = max(1, int(lanes))
        self.raster_threads = raster_threads
        self._q: deque[Job] = deque()        # urgent jobs, first come first served
        self._bg: deque[Job] = deque()       # background jobs
        self._cv = threading.Condition()
        self._stop = False
        self._stats_lock = threading.Lock()
        self.batches = 0
        self.frames = 0
        self.batch_hist: dict[int, int] = {}
        self._stage_s: dict[str, float] = {}   # seconds per stage, summed over lanes (not per call: a server runs for days)
        self._threads = [threading.Thread(target=self._lane, name=f"gt-serve-render-{name}-{k}", daemon=True)
                         for k in range(self.lanes)]
        for t in self._threads:
            t.start()

    def submit(self, jobs) -> None:
        with self._cv:
            n = 0
            for j in jobs:
                (self._q if j.urgent else self._bg).append(j)
                n += 1
            self._cv.notify(n)   # one lane per new job at most (a lane woken for nothing costs a GIL round trip)

    def queued(self) -> int:
        return len(self._q) + len(self._bg)

    def stats(self) -> dict:
        """{"lanes", "batches", "frames", "mean_batch", "batch_sizes": {B: count}, "ms_per_frame": {stage: ms}} since start.

        ms_per_frame: each stage's thread time per rendered frame (lanes run side by side, so the wall time per
        frame is about their sum / lanes).
        """
        with self._stats_lock:
            return {"lanes": self.lanes, "batches": self.batches, "frames": self.frames,
                    "mean_batch": self.frames / max(self.batches, 1), "batch_sizes": dict(sorted(self.batch_hist.items())),
                    "ms_per_frame": {k: 1e3 * v / max(self.frames, 1) for k, v in self._stage_s.items()}}

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=10)

    # -- the lanes ---------------------------------------------------------------------------
    def _take(self) -> list[Job]:
        """Wait for jobs -> this lane's share of the urgent queue (1 / lanes of it, at most max_batch; + one
        background job), else of the background queue; [] once stopped."""
        with self._cv:
            while not self._q and not self._bg and not self._stop:
                self._cv.wait()
            jobs = []
            if self._stop:
                return jobs   # queued jobs are dropped: their streams are gone with the server
            q = self._q or self._bg
            size = min(self.max_batch, max(1, -(-len(q) // self.lanes)))
            while q and len(jobs) < size:
                j = q.popleft()
                if not j.cancelled:
                    jobs.append(j)
            if q is self._q and self._bg and jobs and len(jobs) < self.max_batch:
                jobs.append(self._bg.popleft())   # one background job rides along: the prewarm goes on under load
            return jobs

    def _lane(self) -> None:
        state = self.pipe.new_state(False)   # this lane's raster state (CUDA buffers); stages run in turn here
        try:
            while True:
                jobs = self._take()
                if not jobs:
                    if self._stop:
                        return
                    continue   # every job taken was cancelled
                self._render(state, jobs)
        finally:
            state.close()

    def _render(self, state, jobs: list[Job]) -> None:
        times = {}
        try:
            frames = np.fromiter((j.frame for j in jobs), np.int64, len(jobs))
            off, ta = self.pipe.deform(frames, np.stack([j.window for j in jobs]))
            imgs, tb = self.pipe.render(state, frames, off, threads=self.raster_threads)
            times = {**ta, **tb}
            t0 = time.perf_counter()
            for j, img in zip(jobs, imgs):
                if not j.cancelled:
                    j.deliver(encode_jpeg(img, self.quality), None)
            times["encode"] = time.perf_counter() - t0
        except BaseException as exc:  # a failed batch fails its jobs' streams, not the lane
            for j in jobs:
                j.deliver(None, exc)
        with self._stats_lock:
            for k, v in times.items():
                self._stage_s[k] = self._stage_s.get(k, 0.0) + v
            self.batches += 1
            self.frames += len(jobs)
            self.batch_hist[len(jobs)] = self.batch_hist.get(len(jobs), 0) + 1
