"""Timings (gt_runtime.playback.timings): per-stage records, the per-frame accessors the C host's bridge uses."""
import math

import pytest

from gt_runtime.playback.pipeline import Timings as PipelineTimings
from gt_runtime.playback.timings import Timings


def test_latest_and_mean():
    tm = Timings()
    assert tm.latest("deform") == 0.0 and tm.mean("deform") == 0.0
    tm.add("deform", 0.04, 4)       # a batch of 4: 10 ms per frame
    tm.add("deform", 0.006, 1)
    tm.frames = 5
    assert tm.latest("deform") == pytest.approx(0.006)
    assert tm.mean("deform") == pytest.approx(0.046 / 5)
    assert tm.latest("raster") == 0.0 and "raster" not in tm.total  # reading adds no stage


def test_model_fps_before_any_frame_leaves_summary_usable():
    tm = Timings()
    assert math.isnan(tm.model_fps())
    assert tm.summary()["stages"] == {}  # model_fps must not add empty stages (percentile of nothing)
    tm.add("raster", 0.02, 2)
    tm.frames = 2
    s = tm.summary()
    assert list(s["stages"]) == ["raster"] and s["stages"]["raster"]["ms_per_frame"] == pytest.approx(10.0)
    assert s["model_fps"] == pytest.approx(100.0)


def test_pipeline_still_exports_timings():
    assert PipelineTimings is Timings
