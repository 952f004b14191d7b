"""mp4 output: H.264 + AAC, durations that match, nothing half-written on failure."""
import numpy as np
import pytest

from gt_runtime.playback.video import Mp4Writer, probe_durations
from tests.support.speech import speech


@pytest.mark.parametrize("w,h", [(64, 48), (65, 47)])
def test_mp4_durations_match(tmp_path, w, h):
    out = tmp_path / "a.mp4"
    n = 50  # 2 s at 25 fps
    with Mp4Writer(out, w, h, sample_rate=16000) as wr:
        for i in range(n):
            wr.write(np.full((h, w, 3), i * 5 % 255, np.uint8))
        pcm = speech(2.0)
        for chunk in np.array_split(pcm, 7):  # streamed in uneven chunks
            wr.write_audio(chunk)
    d = probe_durations(out)
    assert d["video_codec"] == "h264" and d["audio_codec"] == "aac"
    assert d["frames"] == n
    assert abs(d["video_s"] - 2.0) <= 1 / 25
    assert abs(d["audio_s"] - 2.0) <= 1 / 25


def test_failure_leaves_no_file(tmp_path):
    out = tmp_path / "b.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Writer(out, 32, 32, sample_rate=None) as wr:
            wr.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
