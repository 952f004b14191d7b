"""Player.play: frame counts, sample rates, bad audio, broken bundles, scene ping-pong, a 10-minute speech."""
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from gt_runtime.audio import num_video_frames
from gt_runtime.bundle import Bundle
from gt_runtime.errors import InputError
from gt_runtime.apps.play import PlayConfig, play
from gt_runtime.playback.player import Player
from gt_runtime.playback.scene import Scene, pingpong
from gt_runtime.playback.video import probe_durations
from tests.support.speech import speech


@pytest.fixture(scope="module")
def bundle_path(random_bundle):
    return random_bundle(n_gaussians=300, sh_degree=1, num_layers=2, width=32, height=32, n_track_frames=5, seed=4)


@pytest.fixture(scope="module")
def player(bundle_path):
    return Player(bundle_path, engine="auto", raster="auto")


@pytest.mark.parametrize("samples", [1, 639, 640, 641, 16000, 16001])
def test_frame_count(player, samples):
    pcm = speech(1.1)[:samples]
    pcm[0] = 0.5  # not silent even when one sample long
    frames = list(player.play(pcm))
    assert len(frames) == num_video_frames(samples) == -(-samples // 640)
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)


def test_frames_show_head_over_background(player, bundle_path):
    frames = np.stack(list(player.play(speech(0.5))))
    bg = Scene(Bundle.open(bundle_path)).background(0)
    diff = np.abs(frames[0].astype(np.float32) / 255 - bg).max(axis=-1)
    assert (diff > 0.1).mean() > 0.05          # the head covers part of the frame
    assert (diff < 0.02).mean() > 0.05         # and the background shows elsewhere
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).max() > 0  # it moves


@pytest.mark.parametrize("sr,channels", [(8000, 1), (48000, 2), (44100, 1)])
def test_sample_rates(player, tmp_path, sr, channels):
    path = tmp_path / f"s{sr}.wav"
    sf.write(path, speech(1.0, sr, channels=channels), sr)
    assert len(list(player.play(path))) == 25


def _bad_wavs(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    nan = tmp_path / "nan.wav"
    x = speech(0.5)
    x[100] = np.nan
    sf.write(nan, x, 16000, subtype="FLOAT")
    return {"corrupt": corrupt, "empty": empty, "NaN": nan}  # silence is valid: tests/runtime/test_play_silent.py


def test_bad_audio_one_line_no_mp4(bundle_path, tmp_path):
    for word, wav in _bad_wavs(tmp_path).items():
        out = tmp_path / "out" / f"{wav.stem}.mp4"
        with pytest.raises(InputError) as ei:
            play(PlayConfig(speech=wav, bundle=bundle_path, out=str(out), quiet=True))
        msg = str(ei.value)
        assert "\n" not in msg and wav.name in msg, msg
        assert word.lower() in msg.lower() or word == "corrupt", msg
        assert not out.exists() and not list(tmp_path.glob("**/*.mp4")) and not list(tmp_path.glob("**/.*partial*"))


def test_truncated_bundle(bundle_path, tmp_path):
    import shutil

    b = shutil.copytree(bundle_path, tmp_path / "t.gtb")
    p = b / "deform.onnx"
    p.write_bytes(p.read_bytes()[:1000])
    wav = tmp_path / "a.wav"
    sf.write(wav, speech(0.5), 16000)
    with pytest.raises(InputError) as ei:
        play(PlayConfig(speech=wav, bundle=b, out=str(tmp_path / "o.mp4"), quiet=True))
    assert "deform.onnx" in str(ei.value) and "\n" not in str(ei.value)
    assert not (tmp_path / "o.mp4").exists()


def test_pingpong():
    assert [pingpong(t, 4) for t in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [pingpong(t, 1) for t in range(3)] == [0, 0, 0]
    np.testing.assert_array_equal(pingpong(np.arange(6), 2), [0, 1, 0, 1, 0, 1])
    assert pingpong(10**9 + 7, 5) in range(5)


def test_scene_background_composite(bundle_path):
    b = Bundle.open(bundle_path)
    s = Scene(b)
    from PIL import Image

    crop = np.asarray(Image.open(b.file("scene/torso/00003.png"))).astype(np.float32) / 255
    top, left = b.torso_box or (0, 0)   # the writer keeps only the box where any alpha > 0
    rgba = np.zeros((b.height, b.width, 4), np.float32)
    rgba[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    a = rgba[..., 3:]
    expect = rgba[..., :3] * a + s.plate * (1 - a)
    np.testing.assert_allclose(s.background(3), expect, atol=1e-6)
    np.testing.assert_array_equal(s.background(5), s.background(3))  # ping-pong: 5 -> 3 with 5 track frames
    assert s.viewmats.shape == (5, 4, 4)
    np.testing.assert_allclose(s.viewmats[0] @ b.track["c2w"][0], np.eye(4), atol=1e-5)


def test_mp4_png_and_raw(bundle_path, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, speech(1.3), 16000)
    res = play(PlayConfig(speech=wav, bundle=bundle_path, out=str(tmp_path / "a.mp4"), fps=True, quiet=True))
    d = probe_durations(tmp_path / "a.mp4")
    assert res.frames == d["frames"] == 33 and d["video_codec"] == "h264" and d["audio_codec"] == "aac"
    assert abs(d["video_s"] - d["audio_s"]) <= 1 / 25 + 1e-6
    assert res.model_fps > 0 and res.delivered_fps > 0 and "deform" in res.stages and "encode" in res.stages
    res = play(PlayConfig(speech=wav, bundle=bundle_path, out=str(tmp_path / "pngs"), quiet=True))
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 33


def test_no_torch_after_full_cpu_play(bundle_path, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, speech(0.6), 16000)
    code = (
        "import sys, os\n"
        "from gt_runtime.apps.play import PlayConfig, play\n"
        f"r = play(PlayConfig(speech={str(wav)!r}, bundle={str(bundle_path)!r}, out={str(tmp_path / 'x.mp4')!r}, quiet=True))\n"
        "assert r.frames == 15\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'gt_train', 'gt_export')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_ten_minute_speech(random_bundle, tmp_path):
    """600 s of speech -> exactly 15000 frames and an mp4 whose A/V durations agree within one frame.

    A tiny bundle (16x16, 100 Gaussians, one layer) keeps this to the cost of the pipeline itself.
    """
    b = random_bundle(n_gaussians=100, sh_degree=0, num_layers=1, width=16, height=16, n_track_frames=9, seed=9, onnx=False)
    wav = tmp_path / "long.wav"
    sf.write(wav, speech(600.0), 16000)
    t0 = time.perf_counter()
    res = play(PlayConfig(speech=wav, bundle=b, out=str(tmp_path / "long.mp4"), engine="array", batch=25, quiet=True))
    elapsed = time.perf_counter() - t0
    d = probe_durations(tmp_path / "long.mp4")
    assert res.frames == d["frames"] == 15000
    assert abs(d["video_s"] - 600.0) < 1e-6 and abs(d["video_s"] - d["audio_s"]) <= 1 / 25
    print(f"10-minute speech: 15000 frames in {elapsed:.1f} s")
