"""The `mel` front end and audio loading (docs/ARCHITECTURE.md section 1: 640 samples a frame, 7.5 ms lookahead)."""
import numpy as np
import pytest
import soundfile as sf

from gt_runtime.audio import LOOKAHEAD_SAMPLES, MelStream, load_audio, mel_features, num_video_frames
from gt_runtime.errors import InputError
from tests.support.speech import SYLLABLE_HZ, speech


def test_shape_rate_and_alignment():
    pcm = speech(2.0, gated=True)
    f = mel_features(pcm)
    assert f.shape == (50, 2, 80) and f.dtype == np.float32
    assert num_video_frames(16001) == 26
    assert mel_features(pcm, num_frames=60).shape == (60, 2, 80)
    # A loud 40 ms burst in frame 10 only changes frames 9..11 (window overlap 7.5 ms each side).
    x = np.zeros(16000, np.float32)
    x[640 * 10:640 * 11] = np.random.default_rng(1).standard_normal(640) * 0.3
    energy = mel_features(x).mean(axis=(1, 2))
    assert np.argmax(energy) == 10
    assert np.all(energy[:9] == energy[0]) and np.all(energy[12:] == energy[-1])


def test_loud_is_higher_than_silent():
    f = mel_features(speech(2.0, gated=True))
    loudness = f.mean(axis=(1, 2))
    env = np.sin((np.arange(50) + 0.5) / 25 * 2 * np.pi * SYLLABLE_HZ) > 0  # frame centres inside a syllable
    assert loudness[env].mean() > loudness[~env].mean() + 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_whole_file(seed):
    rng = np.random.default_rng(seed)
    pcm = speech(7.3, seed=seed, gated=True)
    whole = mel_features(pcm)
    stream, parts, i = MelStream(), [], 0
    while i < pcm.size:
        n = int(rng.integers(16, 16000))  # 1 ms to 1 s
        got = stream.push(pcm[i:i + n])
        i = min(i + n, pcm.size)
        # Every frame whose window is complete has been emitted, and no other.
        assert stream.frames_emitted == max(0, (i - LOOKAHEAD_SAMPLES) // 640)
        parts.append(got)
    parts.append(stream.finish())
    assert np.array_equal(np.concatenate(parts), whole)


def test_load_resamples_and_mixes(tmp_path):
    pcm = speech(1.0, sr=48000, gated=True)
    sf.write(tmp_path / "st48.wav", np.stack([pcm, pcm], 1), 48000)
    x, sr = load_audio(tmp_path / "st48.wav")
    assert sr == 16000 and x.ndim == 1 and abs(x.size - 16000) <= 1
    sf.write(tmp_path / "m8.flac", speech(1.0, sr=8000, gated=True), 8000)
    x, sr = load_audio(tmp_path / "m8.flac")
    assert abs(x.size - 16000) <= 1


@pytest.mark.parametrize("case", ["corrupt", "empty", "silent", "nan", "missing"])
def test_bad_audio_gives_one_line_error(tmp_path, case):
    p = tmp_path / f"{case}.wav"
    if case == "corrupt":
        p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    elif case == "empty":
        sf.write(p, np.zeros(0, np.float32), 16000)
    elif case == "silent":
        sf.write(p, np.zeros(16000, np.float32), 16000)
    elif case == "nan":
        x = speech(0.5, gated=True)
        x[100] = np.nan
        sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(InputError) as e:
        load_audio(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "|" in msg


def test_rejects_wrong_rate():
    with pytest.raises(ValueError, match="resample"):
        mel_features(np.zeros(100, np.float32), 48000)
