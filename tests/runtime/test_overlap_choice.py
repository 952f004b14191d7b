"""The pipeline measures sequential vs overlapped stages on its first batches and keeps the faster (OverlapChooser)."""
import numpy as np
import pytest

from gt_runtime.bundle import Bundle
from gt_runtime.playback import pipeline as pipeline_mod
from gt_runtime.playback.pipeline import OverlapChooser, cpu_raster_available
from gt_runtime.playback.player import Player
from tests.support.speech import speech

pytestmark = pytest.mark.skipif(not cpu_raster_available(), reason="the C++ rasterizer is not built")


@pytest.fixture(scope="module")
def bundle(random_bundle):
    return Bundle.open(random_bundle(n_gaussians=500, sh_degree=1, num_layers=1, width=24, height=20, n_track_frames=5))


@pytest.fixture(autouse=True)
def two_cores(monkeypatch):
    """The choice is measured only with >= 2 usable cores: make this machine count as 2."""
    monkeypatch.setattr(pipeline_mod, "usable_cores", lambda: 2)


def _player(bundle, overlap=None):
    return Player(bundle, engine="array", raster="cpu", batch=2, overlap=overlap, threads=1)


def _frames(p, pcm, overlap=None):
    return np.stack(list(p.play(pcm, session=p.session(overlap=overlap))))


@pytest.mark.parametrize("faster", ["sequential", "overlapped"])
def test_keeps_the_faster_mode_and_the_same_frames(bundle, faster):
    pcm = speech(2.0)  # 50 frames = 25 batches of 2: 20 to measure, 5 after the choice
    p = _player(bundle)
    ch = p.pipeline.overlap_chooser
    assert ch is not None and p.describe()["overlap"].startswith("auto (not decided yet), raster threads ")
    injected = {"sequential": 0.020, "overlapped": 0.010} if faster == "overlapped" else {"sequential": 0.010, "overlapped": 0.020}
    ch.timing = lambda mode, measured_s: injected[mode]
    auto = _frames(p, pcm)
    assert ch.overlap is (faster == "overlapped")
    assert len(ch.seconds["sequential"]) == ch.probe and len(ch.seconds["overlapped"]) == ch.probe
    desc = p.describe()["overlap"]
    assert desc.startswith(f"auto: {faster}") and "sequential" in desc and "overlapped" in desc
    # the same frames as either forced mode, on the same engines
    assert np.array_equal(auto, _frames(p, pcm, overlap=False))
    assert np.array_equal(auto, _frames(p, pcm, overlap=True))
    # a later session reuses the decision without measuring
    n = len(ch.seconds["sequential"])
    s = p.session()
    assert s.state.overlap is ch.overlap
    list(p.play(pcm, session=s))
    assert len(ch.seconds["sequential"]) == n
    p.close()


def test_real_measurement_decides(bundle):
    p = _player(bundle)
    frames = _frames(p, speech(2.0))  # the first frames() call (before finish) has the 20 batches the choice needs
    assert len(frames) == 50 and p.pipeline.overlap_chooser.overlap in (True, False)
    assert p.describe()["overlap"].startswith("auto: ")
    p.close()


def test_too_few_batches_leave_it_undecided(bundle):
    p = _player(bundle)
    ch = p.pipeline.overlap_chooser
    frames = _frames(p, speech(0.4))  # 10 frames = 5 batches < 20
    assert len(frames) == 10 and ch.overlap is None and not ch.seconds["sequential"]
    p.close()


def test_explicit_overlap_forces(bundle):
    for overlap, word in ((True, "on"), (False, "off")):
        p = _player(bundle, overlap)
        assert p.pipeline.overlap_chooser is None and p.describe()["overlap"] == word
        assert p.session().state.overlap is overlap
        p.close()


def test_chooser_decides_by_median():
    ch = OverlapChooser(probe=3)
    for s in (0.03, 0.01, 0.011):
        ch.record("sequential", s * 2, 2)
    for s in (0.012, 0.012, 0.5):
        ch.record("overlapped", s * 2, 2)
    assert ch.decide() is False  # medians: sequential 11 ms, overlapped 12 ms (one outlier each does not count)
    assert ch.describe() == "auto: sequential (measured ms/frame: sequential 11.0, overlapped 12.0)"


def test_exactly_the_measured_batches(bundle):
    """A call with just the batches the measurement needs: all of them measure, none is left after the choice."""
    p = _player(bundle)
    pipe = p.pipeline
    ch = pipe.overlap_chooser
    rng = np.random.default_rng(0)
    batches = [(np.arange(2 * i, 2 * i + 2), rng.standard_normal((2, 15, 2, bundle.audio_dim)).astype(np.float32))
               for i in range(ch.batches_needed)]
    state = pipe.new_state()
    frames = list(pipe.run_batches(state, batches))
    assert len(frames) == 2 * ch.batches_needed and ch.overlap in (True, False) and state.overlap is ch.overlap
    state.close()
    p.close()
