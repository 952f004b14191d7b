"""The pipeline measures sequential, overlapped and lanes on its first batches and keeps the fastest (OverlapChooser)."""
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


@pytest.mark.parametrize("faster", ["sequential", "overlapped", "lanes"])
def test_keeps_the_faster_mode_and_the_same_frames(bundle, faster):
    pcm = speech(3.6)  # 90 frames = 45 batches of 2 (the first call, before finish, ~41): 38 to measure (2 lanes)
    p = _player(bundle)
    ch = p.pipeline.overlap_chooser
    assert ch is not None and ch.modes == ("sequential", "overlapped", "lanes") and ch.batches_needed == 2 + 5 * 12
    ch.probe = 3   # 3 rounds instead of the default 5: a shorter test
    assert p.describe()["overlap"].startswith("auto (not decided yet), raster threads ")
    injected = {m: 0.010 if m == faster else 0.020 for m in ch.modes}
    ch.timing = lambda mode, measured_s: injected[mode]
    auto = _frames(p, pcm)
    assert ch.mode == faster
    assert all(len(ch.seconds[m]) == ch.probe for m in ch.modes)
    desc = p.describe()["overlap"]
    assert desc.startswith(f"auto: {faster}") and all(m in desc for m in ch.modes)
    # the same frames as the forced modes and as the lanes, on the same engines (lanes: a one-thread copy)
    assert np.array_equal(auto, _frames(p, pcm, overlap=False))
    assert np.array_equal(auto, _frames(p, pcm, overlap=True))
    lanes = p.session()
    lanes.state.mode = "lanes"
    assert np.array_equal(auto, np.stack(list(p.play(pcm, session=lanes))))
    # a later session reuses the decision without measuring
    n = len(ch.seconds["sequential"])
    s = p.session()
    assert s.state.mode == ch.mode
    list(p.play(pcm, session=s))
    assert len(ch.seconds["sequential"]) == n
    p.close()


def test_real_measurement_decides(bundle):
    p = _player(bundle)
    p.pipeline.overlap_chooser.probe = 3   # 38 batches instead of the default 62
    frames = _frames(p, speech(3.6))  # the first frames() call (before finish) has the 38 batches the choice needs
    assert len(frames) == 90 and p.pipeline.overlap_chooser.mode in ("sequential", "overlapped", "lanes")
    assert p.describe()["overlap"].startswith("auto: ")
    p.close()


def test_too_few_batches_leave_it_undecided(bundle):
    p = _player(bundle)
    ch = p.pipeline.overlap_chooser
    frames = _frames(p, speech(0.4))  # 10 frames = 5 batches < 38
    assert len(frames) == 10 and ch.mode is None and not ch.seconds["sequential"]
    p.close()


def test_explicit_overlap_forces(bundle):
    for overlap, word in ((True, "on"), (False, "off")):
        p = _player(bundle, overlap)
        assert p.pipeline.overlap_chooser is None and p.describe()["overlap"] == word
        assert p.session().state.mode == ("overlapped" if overlap else "sequential")
        p.close()


def test_chooser_decides_by_median():
    ch = OverlapChooser(probe=3)
    assert ch.modes == ("sequential", "overlapped")  # no lanes offered
    for s in (0.03, 0.01, 0.011):
        ch.record("sequential", s * 2, 2)
    for s in (0.012, 0.012, 0.5):
        ch.record("overlapped", s * 2, 2)
    assert ch.decide() == "sequential"  # medians: sequential 11 ms, overlapped 12 ms (one outlier each does not count)
    assert ch.describe() == "auto: sequential (measured ms/frame: sequential 11.0, overlapped 12.0)"
    ch = OverlapChooser(probe=1, lanes=4)
    assert ch.wave("lanes") == 4 and ch.batches_needed == 2 + 3 + 3 + 12
    for m, s in (("sequential", 0.02), ("overlapped", 0.02), ("lanes", 0.02)):
        ch.record(m, s, 1)
    assert ch.decide() == "sequential"  # a tie: the simpler mode


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
    assert len(frames) == 2 * ch.batches_needed and ch.mode in ch.modes and state.mode == ch.mode
    state.close()
    p.close()
