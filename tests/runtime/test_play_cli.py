"""`gt play` end to end through the real entry point: exit codes, outputs, one-line errors."""
import os
import subprocess
import sys

import pytest
import soundfile as sf

from gt_runtime.playback.video import probe_durations
from tests.support.speech import speech

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def gt(*args, timeout=180):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), GT_QUIET="1")
    return subprocess.run([sys.executable, "-c", "from gt_cli.app import main; main()", *args],
                          capture_output=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, random_bundle):
    d = tmp_path_factory.mktemp("cli")
    b = random_bundle(n_gaussians=300, sh_degree=1, num_layers=1, width=24, height=20, n_track_frames=4)
    sf.write(d / "speech.wav", speech(1.7), 16000)
    return d, b


def test_play_mp4(setup):
    d, b = setup
    r = gt("play", str(d / "speech.wav"), "--bundle", str(b), "-o", str(d / "o.mp4"), "--fps")
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    assert "model FPS" in err and "delivered FPS" in err and "engine" in err and "raster" in err and "device" in err
    p = probe_durations(d / "o.mp4")
    assert p["frames"] == 43 and abs(p["video_s"] - 1.7) <= 1 / 25 and abs(p["audio_s"] - 1.7) <= 1 / 25


def test_play_raw_stdout(setup):
    d, b = setup
    r = gt("play", str(d / "speech.wav"), "--bundle", str(b), "-o", "-", "--engine", "array")
    assert r.returncode == 0, r.stderr.decode()
    assert len(r.stdout) == 43 * 20 * 24 * 3


@pytest.mark.parametrize("case", ["corrupt", "no_bundle", "bad_engine", "bad_out"])
def test_play_bad_input_exit_2(setup, case):
    d, b = setup
    bad = d / "corrupt.wav"
    bad.write_bytes(b"not audio at all")
    args = {
        "corrupt": [str(bad), "--bundle", str(b), "-o", str(d / "x.mp4")],
        "no_bundle": [str(d / "speech.wav"), "--bundle", str(d / "missing.gtb"), "-o", str(d / "x.mp4")],
        "bad_engine": [str(d / "speech.wav"), "--bundle", str(b), "-o", str(d / "x.mp4"), "--engine", "warp"],
        "bad_out": [str(d / "speech.wav"), "--bundle", str(b), "-o", str(d / "x.avi")],
    }[case]
    r = gt("play", *args)
    err = r.stderr.decode().strip()
    assert r.returncode == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("gt: error:"), err
    assert not (d / "x.mp4").exists()
