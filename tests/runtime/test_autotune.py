"""`--engine auto` by measurement (gt_runtime.engines.autotune): fastest passing engine, parity gate, the cache, GT_AUTOTUNE."""
import json

import numpy as np
import pytest

from gt_runtime.bundle import Bundle
from gt_runtime.engines import autotune
from gt_runtime.engines.array_engine import ArrayAudioRunner, ArrayDeformRunner
from gt_runtime.engines.base import EngineSet, Runner
from gt_runtime.engines.autotune import choose_engine
from gt_runtime.engines.select import resolve_engine_name


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test measures into its own cache dir, with measurement on."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GT_AUTOTUNE", "1")
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def bundle(random_bundle):
    return Bundle.open(random_bundle(n_gaussians=400, sh_degree=1, num_layers=1, width=24, height=20, n_track_frames=4))


class Shifted(Runner):
    """A deform runner that adds `shift` to one output of the array engine (a candidate that fails parity)."""

    input_ranks = ArrayDeformRunner.input_ranks
    optional_inputs = ArrayDeformRunner.optional_inputs

    def __init__(self, inner, name, shift, output="dmu"):
        super().__init__(name)
        self.inner, self.shift, self.output = inner, shift, output

    def activate_impl(self):
        self.inner.activate()

    def infer_impl(self, feed):
        out = dict(self.inner.infer(feed))
        out[self.output] = out[self.output] + np.float32(self.shift)
        return out


class Fakes:
    """Candidates built from the array engine, with injected per-frame times; counts builds and timings."""

    def __init__(self, bundle, seconds: dict, shifts: dict | None = None):
        self.bundle, self.seconds, self.shifts = bundle, seconds, shifts or {}
        self.built, self.timed = [], []

    def build(self, name):
        self.built.append(name)
        b = self.bundle
        deform = ArrayDeformRunner(b.weights, b.gaussians["queries"], b.num_layers, b.sh_degree, "cpu", threads=1)
        if name in self.shifts:
            deform = Shifted(deform, name, self.shifts[name])
        return EngineSet(name, "cpu", ArrayAudioRunner(b.weights), deform)

    def timer(self, name, es, inp, batch):
        self.timed.append(name)
        return self.seconds[name]

    def choose(self, names=None):
        names = list(names or self.seconds)
        return autotune.choose(self.bundle, False, threads=1, names=names, build=self.build, timer=self.timer)


def test_picks_the_faster_candidate(bundle, monkeypatch):
    monkeypatch.setenv("GT_AUTOTUNE", "refresh")  # the second call measures too
    choice, es = Fakes(bundle, {"fake-a": 2.0, "fake-b": 1.0}).choose()
    assert choice.name == "fake-b" and es.name == "fake-b" and es.deform.is_active
    assert choice.times_ms == {"fake-a": 2000.0, "fake-b": 1000.0} and not choice.cached
    line = choice.line()
    assert line.startswith("auto chose fake-b (measured in") and "fake-b 1000.00, fake-a 2000.00" in line
    es.deactivate()
    choice, es = Fakes(bundle, {"fake-a": 1.0, "fake-b": 2.0}).choose()
    assert choice.name == "fake-a"
    es.deactivate()


def test_a_candidate_failing_parity_is_never_chosen(bundle):
    # fp32-named: offsets beyond 1e-4; int8-named: render PSNR (C++ raster) or offsets beyond 0.05
    fakes = Fakes(bundle, {"fast-but-wrong": 0.1, "fake-int8": 0.1, "slow": 5.0}, {"fast-but-wrong": 1e-2, "fake-int8": 0.5})
    choice, es = fakes.choose()
    assert choice.name == "slow"
    assert set(choice.rejected) == {"fast-but-wrong", "fake-int8"}
    assert all("failed parity" in why for why in choice.rejected.values())
    assert "fast-but-wrong" not in fakes.timed and "fake-int8" not in fakes.timed
    es.deactivate()


def test_no_candidate_passes(bundle):
    with pytest.raises(RuntimeError, match="no engine passed parity"):
        Fakes(bundle, {"wrong": 1.0}, {"wrong": 1.0}).choose()


def test_cache_is_keyed_and_reused(bundle, cache_dir):
    first = Fakes(bundle, {"fake-a": 2.0, "fake-b": 1.0})
    choice, es = first.choose()
    es.deactivate()
    path = cache_dir / "gt" / "autotune.json"
    data = json.loads(path.read_text())
    assert data["schema"] == autotune.CACHE_SCHEMA and len(data["entries"]) == 1
    (entry,) = data["entries"].values()
    assert entry["name"] == "fake-b"
    assert set(entry["key"]) == {"bundle", "machine", "gt", "threads", "batch", "candidates"}
    assert entry["key"]["machine"]["cores"] >= 1 and entry["key"]["candidates"] == ["fake-a", "fake-b"]

    second = Fakes(bundle, {"fake-a": 1.0, "fake-b": 2.0})  # would pick fake-a if it measured
    choice, es = second.choose()
    assert choice.cached and es is None and choice.name == "fake-b" and second.built == [] and second.timed == []
    assert "cached" in choice.line() and "fake-b 1000.00" in choice.line()

    # another candidate set is another key: measured again, both entries kept
    third = Fakes(bundle, {"fake-a": 1.0, "fake-b": 2.0, "fake-c": 3.0})
    choice, es = third.choose()
    assert not choice.cached and choice.name == "fake-a" and third.timed
    es.deactivate()
    assert len(json.loads(path.read_text())["entries"]) == 2


def test_key_changes_with_bundle_threads_and_batch(bundle, random_bundle):
    other = Bundle.open(random_bundle(n_gaussians=400, sh_degree=1, num_layers=1, width=24, height=20, n_track_frames=4, seed=7))
    k = autotune.cache_key(bundle, ["a"], False, 1, 1)[0]
    assert k == autotune.cache_key(bundle, ["a"], False, 1, 1)[0]
    assert len({k, autotune.cache_key(other, ["a"], False, 1, 1)[0], autotune.cache_key(bundle, ["a"], False, 2, 1)[0],
                autotune.cache_key(bundle, ["a"], False, 1, 8)[0], autotune.cache_key(bundle, ["a", "b"], False, 1, 1)[0]}) == 5


def test_refresh_measures_again(bundle, monkeypatch):
    choice, es = Fakes(bundle, {"fake-a": 2.0, "fake-b": 1.0}).choose()
    es.deactivate()
    monkeypatch.setenv("GT_AUTOTUNE", "refresh")
    again = Fakes(bundle, {"fake-a": 1.0, "fake-b": 2.0})
    choice, es = again.choose()
    assert not choice.cached and choice.name == "fake-a" and again.timed
    es.deactivate()
    monkeypatch.setenv("GT_AUTOTUNE", "1")
    choice, es = Fakes(bundle, {"fake-a": 2.0, "fake-b": 1.0}).choose()
    assert choice.cached and choice.name == "fake-a"  # the refreshed entry


def test_disabled_is_the_fixed_order(bundle, monkeypatch, cache_dir):
    monkeypatch.setenv("GT_AUTOTUNE", "0")
    assert autotune.mode() == "off"
    es, choice = choose_engine(bundle, "auto", gpu=False, threads=1)
    assert choice is None and es.name == resolve_engine_name(bundle, "auto", gpu=False)
    assert not (cache_dir / "gt" / "autotune.json").exists()
    # a named engine is never measured
    monkeypatch.setenv("GT_AUTOTUNE", "1")
    es, choice = choose_engine(bundle, "array", gpu=False, threads=1)
    assert choice is None and es.name == "array"


def test_corrupt_cache_is_ignored_with_a_warning(bundle, cache_dir):
    path = cache_dir / "gt" / "autotune.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    fakes = Fakes(bundle, {"fake-a": 2.0, "fake-b": 1.0})
    with pytest.warns(RuntimeWarning, match="autotune cache ignored"):
        choice, es = fakes.choose()
    assert choice.name == "fake-b" and fakes.timed
    es.deactivate()
    assert json.loads(path.read_text())["schema"] == autotune.CACHE_SCHEMA  # rewritten, valid
    path.write_text(json.dumps({"schema": "something-else", "entries": {}}))
    with pytest.warns(RuntimeWarning, match="not a gt-autotune"):
        assert autotune.read_cache(path) == {}


def test_real_candidates_and_the_player(bundle, cache_dir):
    """The engines of this machine: every candidate is timed or rejected, the winner plays, the line is printed."""
    from gt_runtime.playback.player import Player
    from tests.support.speech import speech

    names = autotune.candidates(bundle, gpu=False)
    assert names[-1] == "array"
    p = Player(bundle, raster="auto")
    choice = p.engine_choice
    assert choice is not None and choice.name in names and p.engines.name == choice.name
    assert set(choice.times_ms) | set(choice.rejected) == set(names)
    assert p.describe()["engine_choice"] == choice.line()
    frames = list(p.play(speech(0.4)))
    assert len(frames) == 10 and frames[0].shape == (20, 24, 3)
    p.close()
    q = Player(bundle, raster="auto")  # second player: from the cache
    assert q.engine_choice.cached and q.engines.name == choice.name
    q.close()


def test_gt_play_prints_the_choice(bundle, tmp_path, capsys):
    from gt_runtime.apps.play import PlayConfig, play
    from tests.support.speech import speech
    import soundfile as sf

    sf.write(tmp_path / "s.wav", speech(0.4), 16000)
    r = play(PlayConfig(speech=tmp_path / "s.wav", bundle=bundle.path, out=str(tmp_path / "f"), fps=True, quiet=True))
    err = capsys.readouterr().err
    assert f"gt play: auto chose {r.engine} (measured in" in err and r.engine_choice in err
    assert f"overlap {r.overlap} |" in err and r.overlap


def test_ort_fp32_stand_in_before_onnx_is_imported(random_bundle, monkeypatch):
    """Without `onnx` imported, ORT FP32 is timed on the bundle's graph and, if it wins, the caller builds the real engine."""
    pytest.importorskip("onnxruntime")
    b = Bundle.open(random_bundle(n_gaussians=400, sh_degree=1, num_layers=1, width=24, height=20, n_track_frames=4))
    monkeypatch.setattr(autotune, "_onnx_imported", lambda: False)
    es = autotune._builder(b, False, 1, 8)("onnxruntime-fp32")
    assert es.stand_in and es.deform.name == "onnxruntime-cpu-fp32"  # the bundle's graph, not "-fast"
    monkeypatch.setattr(autotune, "candidates", lambda bundle, gpu: ["onnxruntime-fp32"])
    choice, es = autotune.choose(b, False, threads=1)
    assert choice.name == "onnxruntime-fp32" and es is None
    es, choice = choose_engine(b, "auto", gpu=False, threads=1)  # the real engine is built
    assert choice.cached and es.name == "onnxruntime-fp32" and not getattr(es, "stand_in", False)
