"""`hubert` / `wav2vec2` front ends from a local checkpoint: a tiny randomly initialised model saved by the
test itself (hidden 32, 2 layers, the standard 50 Hz conv strides and kernels). Features [T, 2, D] at 50 Hz,
ONNX vs torch, chunked == whole file, and one-line refusals of bad checkpoints."""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from gt_runtime.audio import BlockStream  # noqa: E402
from gt_runtime.errors import InputError  # noqa: E402
from gt_train.preprocess.audio_model import AudioModelConfig, torch_runner, write_audio_features  # noqa: E402
from tests.support.audio_models import SMALL, tiny_checkpoint  # noqa: E402
from tests.support.speech import speech  # noqa: E402


@pytest.fixture(scope="module")
def hubert(tmp_path_factory):
    """(meta, front end, dataset-like dir, pcm, T) of the tiny HuBERT on 2.3 s of audio."""
    root = tmp_path_factory.mktemp("hubert")
    ckpt = tiny_checkpoint(root / "ckpt")
    out = root / "ds"
    out.mkdir()
    pcm = speech(2.3)
    T = 58  # the clip's 57.5 frames, padded at the end
    meta = write_audio_features(out, pcm, T, AudioModelConfig(ckpt, **SMALL))
    from gt_runtime.audio import for_dataset

    return meta, for_dataset(out), out, pcm, T, ckpt


def test_features_shape_rate_and_description(hubert):
    meta, fe, out, pcm, T, _ = hubert
    feats = np.load(out / "audio_features.npy")
    assert feats.shape == (T, 2, 32) and feats.dtype == np.float32  # 2 rows of 20 ms per 40 ms video frame
    assert (meta["name"], meta["dim"], meta["rate_hz"], meta["rows_per_frame"]) == ("hubert", 32, 50, 2)
    assert meta["block"]["block_rows"] == 20 and meta["block"]["left_rows"] == 10 and meta["block"]["right_rows"] == 5
    assert json.loads((out / "audio_frontend.json").read_text())["onnx_sha256"] == meta["onnx_sha256"]
    assert meta["onnx_vs_torch"]["max_abs"] < 1e-4 and meta["onnx_vs_torch"]["frames"] > 0
    assert meta["output"] == "last_hidden_state" and meta["normalize"] is True
    # the dataset's features are the runtime front end's on the same audio
    np.testing.assert_array_equal(fe.features(pcm, num_frames=T), feats)
    # T = ceil(S / 640) by default; a longer T pads the end with silence, a shorter one cuts
    assert fe.features(pcm[:16000]).shape == (25, 2, 32) and fe.features(pcm[:16001]).shape == (26, 2, 32)
    np.testing.assert_array_equal(fe.features(pcm, num_frames=40), feats[:40])
    assert np.abs(feats).max() > 0.1 and np.isfinite(feats).all()


def test_onnx_matches_torch(hubert):
    meta, fe, _, _, _, ckpt = hubert
    from gt_train.preprocess.audio_model import _module, inspect_checkpoint, load_torch_model

    info = inspect_checkpoint(ckpt)
    module = _module(load_torch_model(ckpt, info), None, info["normalize"])
    pcm = speech(1.9, seed=5)
    ref = BlockStream(fe.spec, torch_runner(module, fe.spec), 32)
    want = np.concatenate([ref.push(pcm), ref.finish()])
    got = fe.features(pcm)
    err = np.abs(got - want).max()
    assert got.shape == want.shape == (48, 2, 32)
    assert err < 1e-4, err
    # one block, straight through transformers: the core rows of the window are the model's frames
    w = np.zeros(fe.spec.window_samples, np.float32)
    w[fe.spec.pad_left + 320 * fe.spec.left_rows:][:16000] = pcm[:16000][: w.size - fe.spec.pad_left - 320 * fe.spec.left_rows]
    x = torch.from_numpy(w)[None]
    x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
    with torch.no_grad():
        hf = module.model(x).last_hidden_state[0].numpy()
    rows = fe.spec.left_rows + np.arange(fe.spec.block_rows)
    np.testing.assert_allclose(fe.features(pcm[:16000])[: fe.spec.frames_per_block].reshape(-1, 32), hf[rows], atol=1e-4)


def test_chunked_equals_whole_file(hubert):
    _, fe, _, _, _, _ = hubert
    pcm = speech(3.1, seed=2)
    whole = fe.features(pcm)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        s, out, i = fe.stream(), [], 0
        while i < pcm.size:
            n = int(rng.integers(1, 12000))
            out.append(s.push(pcm[i:i + n]))
            i += n
        out.append(s.finish())
        np.testing.assert_array_equal(np.concatenate(out), whole)  # all frames: no edge frame differs


def test_wav2vec2_hidden_layer_and_no_normalisation(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "w2v", kind="wav2vec2", hidden=24, do_stable_layer_norm=True, feat_extract_norm="layer")
    (ckpt / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False, "sampling_rate": 16000}))
    out = tmp_path / "ds"
    out.mkdir()
    pcm = speech(1.2, seed=3)
    meta = write_audio_features(out, pcm, 30, AudioModelConfig(ckpt, layer=1, **SMALL))
    assert (meta["name"], meta["dim"], meta["layer"], meta["normalize"]) == ("wav2vec2", 24, 1, False)
    assert meta["output"] == "hidden_states[1]" and meta["onnx_vs_torch"]["max_abs"] < 1e-4
    assert np.load(out / "audio_features.npy").shape == (30, 2, 24)


def test_bad_checkpoints_give_one_line_errors(tmp_path, hubert):
    from gt_train.preprocess.audio_model import inspect_checkpoint

    ckpt = hubert[5]
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    (bert / "model.safetensors").write_bytes(b"x")
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    shutil.copy(ckpt / "config.json", noweights / "config.json")
    slow = tmp_path / "slow"
    shutil.copytree(ckpt, slow)
    cfg = json.loads((slow / "config.json").read_text())
    cfg["conv_stride"] = [5, 2, 2, 2, 2, 2, 1]
    (slow / "config.json").write_text(json.dumps(cfg))
    afile = tmp_path / "file.bin"
    afile.write_bytes(b"x")
    nocfg = tmp_path / "nocfg"
    nocfg.mkdir()
    cases = [(tmp_path / "missing", None, "no such directory"), (afile, None, "not a directory"),
             (nocfg, None, "no config.json"), (bert, None, "model_type 'bert'"), (noweights, None, "no weights"),
             (slow, None, "stride 160"), (ckpt, 3, "out of range")]
    for path, layer, words in cases:
        with pytest.raises(InputError, match=words) as exc:
            inspect_checkpoint(path, layer)
        msg = str(exc.value)
        assert "\n" not in msg and "|" in msg and str(path) in msg, msg
    # corrupt weights: transformers fails inside, the error is still one line naming the path
    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "ds_broken"
    out.mkdir()
    with pytest.raises(InputError, match="cannot load it") as exc:
        write_audio_features(out, speech(0.5), 13, AudioModelConfig(broken, **SMALL))
    assert "\n" not in str(exc.value) and str(broken) in str(exc.value)


def test_preprocess_refuses_a_bad_audio_model_before_any_work(tmp_path, capsys):
    from gt_cli.app import main
    from gt_train.preprocess import PreprocessConfig, preprocess

    bad = tmp_path / "not_a_model"
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no such directory") as exc:
        preprocess(PreprocessConfig(tmp_path / "talk.mp4", out, audio_model=bad, progress=False))
    assert str(bad) in str(exc.value) and "local" in str(exc.value)
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
    with pytest.raises(InputError, match="needs --audio-model"):
        preprocess(PreprocessConfig(tmp_path / "talk.mp4", out, audio_layer=3, progress=False))
    with pytest.raises(SystemExit) as exit_:
        main(["preprocess", str(tmp_path / "talk.mp4"), "-o", str(out), "--audio-model", str(bad)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--audio-model" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
