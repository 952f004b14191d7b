"""Streaming: any chunking gives exactly the whole-file frames; lookahead and rate handling."""
import numpy as np
import pytest
import soundfile as sf

from gt_runtime.audio import LOOKAHEAD_SAMPLES, load_audio
from gt_runtime.errors import InputError
from gt_runtime.playback.player import Player
from tests.support.frames import stream_in_chunks
from tests.support.speech import speech


@pytest.fixture(scope="module")
def player(random_bundle):
    p = random_bundle(n_gaussians=400, sh_degree=2, num_layers=2, width=32, height=32, n_track_frames=7, seed=2, onnx=False)
    return Player(p, engine="array", raster="auto")


def stream(player, pcm, sr, chunks_seed, batch=1, ms=(1, 1000)):
    rng = np.random.default_rng(chunks_seed)
    return stream_in_chunks(player.session(batch=batch), pcm, lambda: rng.integers(ms[0], ms[1] + 1) * sr / 1000, sr)


def test_chunked_equals_whole_file(player):
    pcm = speech(2.37)
    whole = np.stack(list(player.play(pcm)))
    assert whole.shape == (int(np.ceil(pcm.size / 640)), 32, 32, 3) and whole.dtype == np.uint8
    for seed in (0, 1):
        np.testing.assert_array_equal(stream(player, pcm, 16000, seed), whole)


def test_chunked_equals_whole_file_batched(player):
    pcm = speech(1.53, seed=1)
    whole = np.stack(list(player.play(pcm, session=player.session(batch=4))))
    np.testing.assert_array_equal(stream(player, pcm, 16000, 5, batch=4), whole)


def test_48k_stereo_stream_equals_file(player, tmp_path):
    pcm48 = speech(1.2, sr=48000, channels=2, seed=3)
    path = tmp_path / "st.wav"
    sf.write(path, pcm48, 48000, subtype="FLOAT")
    whole = np.stack(list(player.play(path)))
    assert len(whole) == int(np.ceil(load_audio(path)[0].size / 640))
    np.testing.assert_array_equal(stream(player, pcm48, 48000, 7), whole)


def test_lookahead(player):
    s = player.session()
    assert s.lookahead_ms == pytest.approx(247.5)
    pcm = speech(1.0)
    need = 640 * 7 + LOOKAHEAD_SAMPLES  # frame 0 needs feature frame 6, which needs 7.5 ms past its end
    s.push_audio(pcm[:need - 1])
    assert list(s.frames()) == []
    s.push_audio(pcm[need - 1:need])
    assert len(list(s.frames())) == 1
    s.push_audio(pcm[need:need + 640])
    assert len(list(s.frames())) == 1 and s.frames_emitted == 2
    s.finish()
    rest = list(s.frames())
    assert s.frames_emitted == 9 and len(rest) == 7  # ceil((need + 640) / 640) frames in all
    s.close()


def test_session_errors(player):
    s = player.session()
    with pytest.raises(InputError, match="NaN"):
        s.push_audio(np.array([0.1, np.nan], np.float32))
    s.push_audio(np.zeros(100, np.float32), 16000)
    with pytest.raises(InputError, match="sample rate changed"):
        s.push_audio(np.zeros(100, np.float32), 8000)
    s.finish()
    s.finish()  # idempotent
    assert len(list(s.frames())) == 1
    with pytest.raises(InputError, match="finished"):
        s.push_audio(np.zeros(10, np.float32))
    with pytest.raises(InputError, match="batch"):
        player.session(batch=0)


def test_sessions_share_a_player(player):
    """Two interleaved sessions on one Player give the same frames as each alone."""
    a, b = speech(0.8, seed=4), speech(0.6, seed=5)
    ref_a, ref_b = np.stack(list(player.play(a))), np.stack(list(player.play(b)))
    sa, sb = player.session(), player.session()
    out_a, out_b = [], []
    for i in range(0, 16000, 1600):
        sa.push_audio(a[i:i + 1600])
        sb.push_audio(b[i:i + 1600])
        out_a += list(sa.frames())
        out_b += list(sb.frames())
    for s, o in ((sa, out_a), (sb, out_b)):
        s.finish()
        o += list(s.frames())
    np.testing.assert_array_equal(np.stack(out_a), ref_a)
    np.testing.assert_array_equal(np.stack(out_b), ref_b)


def test_rejected_rate_leaves_session_usable(random_bundle):
    """A push at an unsupported rate is refused without fixing the session's rate."""
    b = random_bundle(n_gaussians=50, sh_degree=0, num_layers=1, width=16, height=16, n_track_frames=4, seed=0, onnx=False)
    s = Player(b, engine="array", raster="reference").session()
    with pytest.raises(InputError, match="unsupported sample rate"):
        s.push_audio(np.zeros(100, np.float32), 1000)
    s.push_audio(np.full(1600, 0.1, np.float32), 16000)
