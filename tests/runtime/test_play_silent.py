"""Silence is valid input: `gt play` warns and renders the avatar at rest (it used to refuse a silent file)."""
import numpy as np
import soundfile as sf

from gt_runtime.apps.play import PlayConfig, play
from gt_runtime.assets import default_bundle
from gt_runtime.audio import load_audio


def test_play_silent_file_warns_and_renders(tmp_path, capsys):
    wav = tmp_path / "silent.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    out = tmp_path / "frames"
    res = play(PlayConfig(speech=wav, bundle=default_bundle(), out=str(out), quiet=True))
    err = capsys.readouterr().err
    assert "warning" in err and "silent" in err and str(wav) in err
    assert res.frames == 25 and len(list(out.glob("*.png"))) == 25
    from PIL import Image

    first = np.asarray(Image.open(out / "00000.png"))
    assert first.std() > 5.0      # a face over its background, not a blank frame


def test_load_audio_still_refuses_silence_unless_allowed(tmp_path):
    import pytest

    from gt_runtime.errors import InputError

    wav = tmp_path / "silent.wav"
    sf.write(wav, np.zeros(800, np.float32), 16000)
    with pytest.raises(InputError, match="silent"):
        load_audio(wav)
    pcm, sr = load_audio(wav, allow_silent=True)
    assert sr == 16000 and pcm.size == 800 and not pcm.any()
