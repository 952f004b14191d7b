"""`Timings`: per-stage wall time of one stream (the pipeline, the session and the apps record into it)."""
from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np

from gt_runtime.contract import MODEL_STAGES


class Timings:
    """Per-stage wall time (seconds) and frame counts; thread-safe. Model = audio_encoder + deform + raster."""

    def __init__(self):
        self.total = defaultdict(float)
        self.samples = defaultdict(list)   # per-call seconds per frame, for percentiles
        self.frames = 0
        self.wall = 0.0
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float, frames: int = 1) -> None:
        with self._lock:
            self.total[stage] += seconds
            self.samples[stage].append(seconds / max(frames, 1))

    def latest(self, stage: str) -> float:
        """Seconds per frame of `stage`'s most recent record (a frame's share of its batch); 0.0 before any."""
        with self._lock:
            v = self.samples.get(stage)
            return float(v[-1]) if v else 0.0

    def mean(self, stage: str) -> float:
        """Seconds per rendered frame of `stage` over the stream so far (total / frames); 0.0 before any."""
        with self._lock:
            return self.total.get(stage, 0.0) / max(self.frames, 1)

    def model_seconds(self) -> float:
        # .get: reading must not add empty stages, which summary() would then choke on
        return sum(self.total.get(s, 0.0) for s in MODEL_STAGES)  # composite, front end, encode excluded

    def model_fps(self) -> float:
        s = self.model_seconds()
        return self.frames / s if s > 0 else float("nan")

    def delivered_fps(self) -> float:
        return self.frames / self.wall if self.wall > 0 else float("nan")

    def summary(self) -> dict:
        """-> {"frames", "model_fps", "delivered_fps", "stages": {stage: {"ms_per_frame", "p50_ms", "p90_ms", "p99_ms"}}}."""
        st = {}
        for k, v in self.total.items():
            arr = np.asarray(self.samples[k]) * 1e3
            st[k] = {"ms_per_frame": 1e3 * v / max(self.frames, 1),
                     "p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)),
                     "p99_ms": float(np.percentile(arr, 99))}
        return {"frames": self.frames, "model_fps": self.model_fps(), "delivered_fps": self.delivered_fps(), "stages": st}
