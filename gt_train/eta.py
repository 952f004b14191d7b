"""Time left of a two-stage training run, from each stage's own recent speed.

A deformation iteration costs 2-3x a canonical one (the deformation network runs on every
Gaussian), so the whole run's average rate under-estimates what is left once the second
stage starts. `StageEta` keeps a window of recent iteration times per stage and prices the
remaining iterations of each stage at that stage's rate. Before any deformation iteration
has been timed, deformation iterations cost `deform_cost` x a canonical one.

    eta = StageEta(iterations_canonical=8000, total=16000)
    eta.record(it, time.perf_counter())   # it = iterations done
    eta.remaining(it)                     # seconds, or None while a stage left to run has no rate yet
"""
from __future__ import annotations

from collections import deque

# Prior cost of a deformation iteration over a canonical one, used only until the deformation
# stage has been timed: the 2-3x reported for gt train (issue 15: 1.4 min shown, 2.5 left).
DEFORM_COST = 2.5


class StageEta:
    """Per-stage recent seconds per iteration -> seconds left. Iterations 0..C-1 are canonical, C..total-1 deform."""

    def __init__(self, iterations_canonical: int, total: int, window: int = 50, deform_cost: float = DEFORM_COST):
        self.canonical, self.total, self.deform_cost = int(iterations_canonical), int(total), float(deform_cost)
        self._recent = {"canonical": deque(maxlen=window + 1), "deform": deque(maxlen=window + 1)}

    def stage_of(self, done: int) -> str:
        """The stage of the iteration that completed `done` iterations (done >= 1)."""
        return "canonical" if done <= self.canonical else "deform"

    def record(self, done: int, t: float) -> None:
        """`done` iterations completed at time t (seconds). Call it after every iteration, or at least regularly."""
        stage = self.stage_of(done)
        q = self._recent[stage]
        if stage == "deform" and not q and self._recent["canonical"] and self._recent["canonical"][-1][0] == self.canonical:
            q.append(self._recent["canonical"][-1])  # time the first deformation iteration from the stage boundary
        q.append((done, t))

    def seconds_per_iteration(self, stage: str) -> float | None:
        """Recent seconds per iteration of `stage`, or None before it has two samples."""
        q = self._recent[stage]
        if len(q) < 2 or q[-1][0] == q[0][0]:
            return None
        return (q[-1][1] - q[0][1]) / (q[-1][0] - q[0][0])

    def rate(self, done: int) -> float | None:
        """Iterations per second of the current stage, recently (None before it has been timed)."""
        s = self.seconds_per_iteration(self.stage_of(max(done, 1)))
        return None if not s else 1.0 / s

    def remaining(self, done: int) -> float | None:
        """Seconds left after `done` iterations: canonical iterations at the canonical rate, deformation
        iterations at the deformation rate (or deform_cost x the canonical one before it is measured)."""
        left_c = max(0, self.canonical - done)
        left_d = self.total - max(done, self.canonical)
        s_c = self.seconds_per_iteration("canonical")
        s_d = self.seconds_per_iteration("deform")
        if s_d is None and s_c is not None:
            s_d = s_c * self.deform_cost
        if (left_c and s_c is None) or (left_d and s_d is None):
            return None
        return left_c * (s_c or 0.0) + left_d * (s_d or 0.0)
