"""The render thread of one avatar: frames that concurrent streams need together go through the
engine and the rasterizer as one batch.

Streams submit `Job`s (one frame: its track-frame index and its audio window [15, 2, D]); the
thread takes up to `max_batch` queued jobs, whatever stream they come from, runs
FramePipeline.deform on them as one batch [B] and FramePipeline.render on the result, encodes
each image as JPEG and hands it to the job's `deliver` callback (called on this thread). On the
CPU the deformation runs on `workers` threads (one per core, each engine call on one thread:
the deformation network costs the same per frame whatever the batch, so the cores are used by
deforming several batches at once), while this thread rasterizes the batches in order; all
release the GIL. On a GPU there is one deform worker and the batch is what pays.
"""
from __future__ import annotations

import io
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

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
    """One thread per avatar that renders queued jobs in batches of up to max_batch frames."""

    def __init__(self, pipeline, max_batch: int = 8, jpeg_quality: int = 85, name: str = "avatar", workers: int = 1):
        self.pipe = pipeline
        self.max_batch = int(max_batch)
        self.quality = int(jpeg_quality)
        self.state = pipeline.new_state(False)       # this thread's raster state; the overlap is done here
        self.workers = max(1, int(workers)) if pipeline.default_overlap else 1
        self._ex = (ThreadPoolExecutor(self.workers, thread_name_prefix=f"gt-serve-deform-{name}")
                    if pipeline.default_overlap else None)
        self._q: deque[Job] = deque()        # urgent jobs, first come first served
        self._bg: deque[Job] = deque()       # background jobs
        self._cv = threading.Condition()
        self._stop = False
        self.batches = 0
        self.frames = 0
        self.batch_hist: dict[int, int] = {}
        self._thread = threading.Thread(target=self._loop, name=f"gt-serve-render-{name}", daemon=True)
        self._thread.start()

    def submit(self, jobs) -> None:
        with self._cv:
            for j in jobs:
                (self._q if j.urgent else self._bg).append(j)
            self._cv.notify()

    def queued(self) -> int:
        return len(self._q) + len(self._bg)

    def stats(self) -> dict:
        """{"batches", "frames", "mean_batch", "batch_sizes": {B: count}} since start."""
        return {"batches": self.batches, "frames": self.frames, "mean_batch": self.frames / max(self.batches, 1),
                "batch_sizes": dict(sorted(self.batch_hist.items()))}

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)
        if self._ex is not None:
            self._ex.shutdown(wait=True)
        self.state.close()

    # -- the thread ------------------------------------------------------------------------
    def _take(self, block: bool, share: int = 1) -> list[Job]:
        """Up to max_batch urgent jobs (+ one background job), else background ones; with `share` > 1 deform workers
        free, a 1/share part of the queue."""
        with self._cv:
            while block and not self._q and not self._bg and not self._stop:
                self._cv.wait()
            jobs = []
            if self._stop:
                return jobs   # queued jobs are dropped: their streams are gone with the server
            q = self._q or self._bg
            size = min(self.max_batch, max(1, -(-len(q) // max(1, share))))
            while q and len(jobs) < size:
                j = q.popleft()
                if not j.cancelled:
                    jobs.append(j)
            if q is self._q and self._bg and jobs and len(jobs) < self.max_batch:
                jobs.append(self._bg.popleft())   # one background job rides along: the prewarm goes on under load
            return jobs

    def _deform(self, jobs):
        frames = np.fromiter((j.frame for j in jobs), np.int64, len(jobs))
        windows = np.stack([j.window for j in jobs])
        return frames, self.pipe.deform(frames, windows)

    def _loop(self) -> None:
        inflight: deque = deque()   # (jobs, future of the deformation), in submission order
        while True:
            jobs = self._take(block=not inflight, share=self.workers - len(inflight))
            if self._stop and not jobs and not inflight:
                return
            if jobs and self._ex is None:
                self._finish(jobs, None)
                continue
            if jobs:
                inflight.append((jobs, self._ex.submit(self._deform, jobs)))
            # Rasterize the oldest batch when every worker is busy, or when nothing new came in.
            if inflight and (len(inflight) >= self.workers or not jobs):
                self._finish(*inflight.popleft())

    def _finish(self, jobs, fut) -> None:
        try:
            frames, (off, ta) = fut.result() if fut is not None else self._deform(jobs)
            imgs, tb = self.pipe.render(self.state, frames, off)
            tm = self.state.timings
            for k, v in {**ta, **tb}.items():
                tm.add(k, v, len(jobs))
            t0 = time.perf_counter()
            for j, img in zip(jobs, imgs):
                if not j.cancelled:
                    j.deliver(encode_jpeg(img, self.quality), None)
            tm.add("encode", time.perf_counter() - t0, len(jobs))
            with tm._lock:
                tm.frames += len(jobs)
        except BaseException as exc:  # a failed batch fails its jobs' streams, not the thread
            for j in jobs:
                j.deliver(None, exc)
        self.batches += 1
        self.frames += len(jobs)
        self.batch_hist[len(jobs)] = self.batch_hist.get(len(jobs), 0) + 1
