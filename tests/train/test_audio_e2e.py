"""A hubert front end end to end: tiny identity with D = 32 features -> gt train (test-tiny, a few iterations)
-> gt export (audio_frontend.onnx in the bundle) -> gt play, whole file and streaming."""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("gt_runtime._raster_cpu", reason="the C++ rasterizer is not built (python setup.py build_ext --inplace)")

from tests.support.audio_models import SMALL, tiny_checkpoint  # noqa: E402
from tests.support.frames import stream_in_chunks  # noqa: E402
from tests.support.speech import speech  # noqa: E402

ITERS = (12, 12)


@pytest.fixture(scope="module")
def chain(tiny_identity, tmp_path_factory):
    """(dataset, run, bundle, checkpoint dir) of the whole chain."""
    from gt_export import ExportConfig, export
    from gt_runtime.audio import load_audio
    from gt_train.config import TrainConfig
    from gt_train.data.format import load_identity
    from gt_train.preprocess.audio_model import AudioModelConfig, write_audio_features
    from gt_train.trainer import train

    root = tmp_path_factory.mktemp("audio_e2e")
    ckpt = tiny_checkpoint(root / "hubert")
    data = root / "identity"
    shutil.copytree(tiny_identity, data)
    pcm, _ = load_audio(data / "audio.wav")
    T = load_identity(data).num_frames
    write_audio_features(data, pcm, T, AudioModelConfig(ckpt, **SMALL))  # what gt preprocess --audio-model writes
    run = root / "run"
    cfg = TrainConfig.from_preset("test-tiny", data=data, out=run, iterations_canonical=ITERS[0], iterations_deform=ITERS[1],
                                  max_init_points=600, checkpoint_every=1000, val_every=1000)
    train(cfg)
    bundle = export(ExportConfig(run=run, out=root / "h.gtb", trt=False, parity_frames=2))
    return data, run, bundle, ckpt


def test_train_reads_the_feature_width_and_records_the_front_end(chain):
    from gt_train.checkpoint import latest_checkpoint, load_checkpoint, load_model

    data, run, _, _ = chain
    assert json.loads((run / "config.json").read_text())["model"]["audio_dim"] == 32
    ck = load_checkpoint(latest_checkpoint(run))
    assert ck["audio_frontend"]["name"] == "hubert" and ck["audio_frontend"]["dim"] == 32
    assert ck["audio_frontend"]["onnx_sha256"] == json.loads((data / "audio_frontend.json").read_text())["onnx_sha256"]
    model, cfg = load_model(run)
    assert cfg.model.audio_dim == 32 and model.audio.net.conv[0].in_channels == 32


def test_bundle_carries_the_front_end(chain):
    from gt_runtime import Bundle
    from gt_runtime.bundle import sha256_file

    data, _, bundle, _ = chain
    b = Bundle.open(bundle)
    m = b.manifest
    assert (b.audio_frontend, b.audio_dim, m["audio_dim"], m["model"]["audio_dim"]) == ("hubert", 32, 32, 32)
    assert m["files"]["audio_frontend.onnx"] == sha256_file(data / "audio_frontend.onnx")
    assert b.weights["audio.net.conv.0.weight"].shape == (32, 32, 3)
    checks = m["audio"]["checks"]
    assert checks["onnx_vs_torch"]["max_abs"] < 1e-4
    assert checks["bundle_vs_dataset"]["max_abs"] < 1e-5 and checks["bundle_vs_dataset"]["frames"] == b.track["c2w"].shape[0]
    assert m["parity"]["audio_frontend"]["name"] == "hubert"
    assert m["audio"]["source"]["path"] == "hubert"  # the name only, not the exporting machine's path
    assert m["parity"]["audio_encoder"]["onnxruntime-fp32"]["max_abs"] < 1e-4


def test_play_whole_file_and_streaming(chain, tmp_path):
    from gt_runtime import Player
    from gt_runtime.apps.play import PlayConfig, play

    _, _, bundle, _ = chain
    p = Player(bundle, engine="onnxruntime", raster="cpu")
    assert p.pipeline.frontend.name == "hubert"
    pcm = speech(2.0, seed=7)
    whole = np.stack(list(p.play(pcm)))
    assert whole.shape == (50, 64, 64, 3)
    rng = np.random.default_rng(0)
    s = p.session()
    assert s.lookahead_ms == pytest.approx((6 * 640 + 640 * 9 + 320 * 5 + 40) / 16)  # 702.5 ms with 0.4 s blocks
    np.testing.assert_array_equal(stream_in_chunks(s, pcm, lambda: rng.integers(100, 9000)), whole)
    p.close()
    wav = tmp_path / "speech.wav"
    import soundfile as sf

    sf.write(wav, pcm, 16000)
    res = play(PlayConfig(speech=wav, bundle=bundle, out=str(tmp_path / "o.mp4"), quiet=True))
    assert res.frames == 50 and (tmp_path / "o.mp4").stat().st_size > 0


def test_export_refuses_a_dataset_with_another_front_end(chain, tmp_path, tiny_identity):
    from gt_export import ExportConfig, export
    from gt_runtime.errors import InputError

    _, run, _, _ = chain
    with pytest.raises(InputError, match="not the one") as exc:
        export(ExportConfig(run=run, out=tmp_path / "x.gtb", trt=False, dataset=tiny_identity))  # mel features
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "x.gtb").exists() and not list(tmp_path.glob(".x.gtb.partial-*"))
