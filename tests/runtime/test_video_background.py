"""Mp4Writer(background=True): the encoder thread writes the same video as inline encoding, and its errors reach the caller."""
import numpy as np
import pytest

from gt_runtime.playback.video import Mp4Writer, probe_durations
from tests.support.speech import speech


def _frames(n, w, h):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return [np.roll(base, 3 * i, axis=1) for i in range(n)]


def _decode(path):
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("w,h", [(64, 48), (65, 47)])
def test_background_equals_inline(tmp_path, w, h):
    frames = _frames(30, w, h)
    pcm = speech(1.2)
    outs = {}
    for bg in (False, True):
        out = tmp_path / f"{bg}.mp4"
        with Mp4Writer(out, w, h, sample_rate=16000, background=bg) as wr:
            buf = np.empty((h, w, 3), np.uint8)
            for fr, chunk in zip(frames, np.array_split(pcm, len(frames))):
                buf[...] = fr          # the caller reuses its buffer: the writer must have copied
                wr.write(buf)
                wr.write_audio(chunk)  # audio interleaved with video: muxed by the same thread
        assert wr.encode_seconds > 0
        d = probe_durations(out)
        assert d["frames"] == len(frames) and abs(d["audio_s"] - 1.2) <= 1 / 25
        outs[bg] = _decode(out)
    assert outs[True].shape == (len(frames), h + h % 2, w + w % 2, 3)
    assert np.array_equal(outs[False], outs[True])


def test_encoder_error_reaches_the_caller_and_leaves_no_file(tmp_path, monkeypatch):
    out = tmp_path / "c.mp4"

    def boom(self, frame, pts):
        raise OSError("disk full")

    monkeypatch.setattr(Mp4Writer, "_encode_video", boom)
    with pytest.raises(OSError, match="disk full"):
        with Mp4Writer(out, 32, 32, sample_rate=None, background=True, queue_frames=1) as wr:
            for _ in range(50):  # never blocks on the full queue: the thread drains after the failure
                wr.write(np.zeros((32, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_abort_drops_the_queue(tmp_path):
    out = tmp_path / "d.mp4"
    with pytest.raises(RuntimeError, match="stop"):
        with Mp4Writer(out, 32, 32, sample_rate=None, background=True) as wr:
            wr.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
