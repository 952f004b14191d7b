"""Block front ends (gt_runtime.audio.blocks) without torch: alignment, chunked == whole file, lookahead,
and a Session over a bundle with a (toy) model front end."""
import json
import shutil

import numpy as np
import pytest

from gt_runtime.audio import BlockSpec, BlockStream, block_features
from gt_runtime.errors import InputError
from tests.support.frames import stream_in_chunks
from tests.support.speech import speech


def _global_model(spec, dim=6, seed=0):
    """A stand-in for self-attention: every row depends on the whole window (normalised, then projected)."""
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((spec.receptive_field, dim)).astype(np.float32) / 20
    idx = np.arange(spec.window_rows)[:, None] * spec.stride + np.arange(spec.receptive_field)[None, :]

    def run(w):
        w = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
        return np.tanh(w[idx] @ proj + w[: spec.stride].mean())
    return run


def test_spec_geometry():
    s = BlockSpec()
    assert (s.block_rows, s.left_rows, s.right_rows) == (50, 25, 10)
    assert s.window_samples == 320 * 85 + 80 and s.frames_per_block == 25
    assert s.lookahead_samples == 640 * 24 + 320 * 10 + 40  # 1162.5 ms past the frame (+ 240 ms of the model window)
    assert s.window_start(0) == -320 * 25 - 40 and s.window_end(1) == 320 * (100 + 10) + 40
    assert BlockSpec.from_ms(1000, 500, 200) == s
    assert BlockSpec.from_ms(10, 0, 0).block_rows == 2
    assert BlockSpec.from_dict(s.to_dict()) == s
    for bad in ({"block_rows": 3}, {"block_rows": 0}, {"left_rows": -1}, {"stride": 160}):
        with pytest.raises(ValueError):
            BlockSpec(**bad)


def test_rows_are_aligned_with_video_frames():
    """Row r is the model frame whose 400-sample receptive field is centred on [320 r, 320 r + 320)."""
    spec = BlockSpec(block_rows=6, left_rows=3, right_rows=2)
    idx = np.arange(spec.window_rows)[:, None] * 320 + np.arange(400)[None, :]
    feats = block_features(speech(0.5), spec, lambda w: w[idx].mean(1, keepdims=True), 1)
    pcm = speech(0.5)
    assert feats.shape == (int(np.ceil(pcm.size / 640)), 2, 1)
    padded = np.concatenate([np.zeros(40, np.float32), pcm, np.zeros(2000, np.float32)])
    for r in range(feats.shape[0] * 2):
        assert feats[r // 2, r % 2, 0] == pytest.approx(padded[320 * r: 320 * r + 400].mean(), abs=1e-6)


@pytest.mark.parametrize("spec", [BlockSpec(block_rows=4, left_rows=5, right_rows=3), BlockSpec(block_rows=10, left_rows=0, right_rows=0),
                                  BlockSpec()])
def test_chunked_equals_whole_file(spec):
    run = _global_model(spec)
    pcm = speech(2.83, seed=1)
    whole = block_features(pcm, spec, run, 6)
    assert whole.shape == (int(np.ceil(pcm.size / 640)), 2, 6) and whole.dtype == np.float32
    for seed in range(4):
        rng = np.random.default_rng(seed)
        s, out, i = BlockStream(spec, run, 6), [], 0
        while i < pcm.size:
            n = int(rng.integers(1, 9000))
            out.append(s.push(pcm[i:i + n]))
            i += n
        out.append(s.finish())
        got = np.concatenate(out)
        np.testing.assert_array_equal(got, whole)  # every frame, the edge frames included
        assert s.frames_emitted == len(whole)


def test_num_frames_pads_and_trims_at_the_end():
    spec = BlockSpec(block_rows=4, left_rows=2, right_rows=2)
    run = _global_model(spec)
    pcm = speech(1.0)
    base = block_features(pcm, spec, run, 6)  # 25 frames
    longer = block_features(pcm, spec, run, 6, num_frames=31)
    shorter = block_features(pcm, spec, run, 6, num_frames=20)
    assert len(base) == 25 and len(longer) == 31 and len(shorter) == 20
    np.testing.assert_array_equal(shorter, base[:20])  # trimming keeps the audio past the cut as context
    np.testing.assert_array_equal(longer[:24], base[:24])  # blocks wholly inside the audio do not change


def test_features_appear_exactly_when_their_block_is_complete():
    spec = BlockSpec(block_rows=6, left_rows=3, right_rows=2)
    s = BlockStream(spec, _global_model(spec), 6)
    pcm = speech(1.0)
    need = spec.window_end(0)  # 320 (6 + 2) + 40
    assert need == 640 * 1 + spec.lookahead_samples  # frame 0: the first frame of block 0
    assert len(s.push(pcm[:need - 1])) == 0
    assert len(s.push(pcm[need - 1:need])) == 3
    assert len(s.push(pcm[need:spec.window_end(1) - 1])) == 0
    assert len(s.push(pcm[spec.window_end(1) - 1:spec.window_end(1)])) == 3


# -- a bundle with a model front end -----------------------------------------------------------
SPEC = BlockSpec(block_rows=4, left_rows=3, right_rows=2)


@pytest.fixture(scope="module")
def hubert_bundle(random_bundle):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return random_bundle(n_gaussians=200, sh_degree=1, num_layers=1, width=24, height=24, n_track_frames=5, seed=3,
                         onnx=False, audio_frontend="hubert", audio_dim=12, audio_block=SPEC)


def _stream(player, pcm, seed):
    rng = np.random.default_rng(seed)
    return stream_in_chunks(player.session(), pcm, lambda: rng.integers(1, 6000))


def test_session_with_a_model_front_end(hubert_bundle):
    from gt_runtime import Bundle, Player

    b = Bundle.open(hubert_bundle)
    assert (b.audio_frontend, b.audio_dim, b.manifest["audio_dim"]) == ("hubert", 12, 12)
    assert b.has("audio_frontend.onnx") and b.audio_meta["block"] == SPEC.to_dict()
    p = Player(b, engine="array", raster="reference")
    pcm = speech(1.37, seed=2)
    whole = np.stack(list(p.play(pcm)))
    assert whole.shape == (int(np.ceil(pcm.size / 640)), 24, 24, 3)
    for seed in (0, 1):
        np.testing.assert_array_equal(_stream(p, pcm, seed), whole)
    # the front end through ONNX Runtime: the whole-file path equals a chunked stream of it
    fe = p.pipeline.frontend
    assert fe.name == "hubert" and fe.dim == 12
    feats = fe.features(pcm)
    st = fe.stream()
    got = np.concatenate([st.push(pcm[:7001]), st.push(pcm[7001:9000]), st.push(pcm[9000:]), st.finish()])
    assert feats.shape == (len(whole), 2, 12)
    np.testing.assert_array_equal(got, feats)


def test_session_lookahead_with_a_model_front_end(hubert_bundle):
    from gt_runtime import Player

    p = Player(hubert_bundle, engine="array", raster="reference")
    s = p.session()
    # frame 0 needs feature frame 6, the first frame of block 3: the rest of block 3 (1 frame), 2 rows of right context, 40 samples
    assert s.lookahead_ms == pytest.approx((6 * 640 + 640 + 2 * 320 + 40) / 16)
    need = 640 + int(round(s.lookahead_ms * 16))
    assert need == SPEC.window_end(3)
    pcm = speech(1.0)
    s.push_audio(pcm[:need - 1])
    assert list(s.frames()) == []
    s.push_audio(pcm[need - 1:need])
    assert len(list(s.frames())) == 2  # frames 0 and 1 (feature frames up to 7 = the end of block 3)
    s.close()


def test_bundle_audio_contract_refusals(hubert_bundle, tmp_path):
    from gt_runtime import Bundle

    def tampered(edit):
        dst = tmp_path / f"b{len(list(tmp_path.iterdir()))}.gtb"
        shutil.copytree(hubert_bundle, dst)
        m = json.loads((dst / "manifest.json").read_text())
        edit(m)
        (dst / "manifest.json").write_text(json.dumps(m))
        return dst

    cases = [
        (lambda m: m["model"].update(audio_dim=80), "audio feature width"),
        (lambda m: m.update(audio_frontend="deepspeech"), "unknown audio front end"),
        (lambda m: m["files"].pop("audio_frontend.onnx"), "audio_frontend.onnx"),
        (lambda m: m["audio"].update(block={"block_rows": 3}), "block geometry"),
    ]
    for edit, words in cases:
        with pytest.raises(InputError, match=words) as exc:
            Bundle.open(tampered(edit), verify_hashes=False)
        assert "\n" not in str(exc.value) and "|" in str(exc.value)


def test_runner_checks_the_feature_width(hubert_bundle):
    from gt_runtime import Bundle
    from gt_runtime.engines.array_engine import ArrayAudioRunner

    r = ArrayAudioRunner(Bundle.open(hubert_bundle).weights).activate()
    assert r.infer({"audio_window": np.zeros((2, 15, 2, 12), np.float32)})["audio_token"].shape == (2, 64)
    with pytest.raises(ValueError, match=r"expected \[B, 15, 2, 12\]"):
        r.infer({"audio_window": np.zeros((2, 15, 2, 80), np.float32)})
