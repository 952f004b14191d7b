"""C host API (plugins/host; its Python half gt_runtime/host/bridge.py): `make host`, then the C programs.

- example_host streams a wav in 20 ms chunks through libgt_host.so: ceil(S16k / 640)
  frames, equal to `Player.play` on the same file (bit-exact on the same backend).
- test_host_errors makes bad calls (NULL / stale handles, bad rates, small buffers, push
  after finish, double destroy), 8 / 44.1 / 48 kHz streams, drops and threads.
- Both run once under valgrind (slow): no invalid read / write.

Skips cleanly without a C compiler, make, or an embeddable (shared) libpython.
"""
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gt_runtime.playback.player import Player
from tests.support.speech import speech

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "host"
W = H = 64


def _env(**extra) -> dict:
    """The embedded interpreter gets this test's Python (venv site-packages) and the checkout."""
    env = dict(os.environ)
    env.update(GT_PYTHON=sys.executable, GT_PYTHONPATH=str(ROOT), PYTHONPATH=str(ROOT))
    env.pop("GT_ENGINE", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def host():
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None or shutil.which("make") is None:
        pytest.skip(f"no C compiler ({cc}) or make")
    chk = subprocess.run([sys.executable, str(ROOT / "plugins/host/pyflags.py"), "--check"], capture_output=True, text=True)
    if chk.returncode != 0:
        pytest.skip(f"this Python cannot be embedded: {chk.stderr.strip()}")
    r = subprocess.run(["make", "host", f"PYTHON={sys.executable}", f"VENV={sys.prefix}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return BUILD


@pytest.fixture(scope="module")
def bundle(random_bundle):
    return random_bundle(n_gaussians=500, sh_degree=2, num_layers=2, width=W, height=H, n_track_frames=8, seed=1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("subtype,sr", [("PCM_16", 16000), ("FLOAT", 48000)])
def test_example_matches_player(host, bundle, tmp_path, subtype, sr):
    wav = tmp_path / "speech.wav"
    pcm = speech(2.0, sr)
    sf.write(wav, pcm, sr, subtype=subtype)
    out = tmp_path / "out"
    r = subprocess.run([str(host / "example_host"), str(bundle), str(wav), str(out)], capture_output=True, text=True,
                       env=_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    frames = np.fromfile(out / "frames.rgb", np.uint8)
    assert frames.size % (W * H * 3) == 0
    frames = frames.reshape(-1, H, W, 3)
    assert len(frames) == math.ceil(round(pcm.size * 16000 / sr) / 640)  # 2 s -> 50 frames at any rate
    rows = (out / "timings.csv").read_text().splitlines()
    assert rows[0].startswith("index,pts_s,") and len(rows) == 1 + len(frames)
    assert [float(x.split(",")[1]) for x in rows[1:4]] == [0.0, 0.04, 0.08]
    stage_ms = np.array([[float(v) for v in x.split(",")[4:8]] for x in rows[1:]])  # encoder, deform, background, raster
    assert np.all(stage_ms > 0), stage_ms[:3]  # background: the contract's "composite", mapped by the bridge
    assert "lookahead: 247.5 ms" in r.stdout and f"frames: {len(frames)}" in r.stdout

    player = Player(bundle)
    try:
        ref = np.stack(list(player.play(wav)))
    finally:
        player.close()
    assert ref.shape == frames.shape
    if not np.array_equal(ref, frames):  # same engine + backend: bit-exact expected; thread-count noise at worst
        assert psnr(ref, frames) >= 45.0, psnr(ref, frames)


def test_example_bad_input(host, bundle, tmp_path):
    bad, good = tmp_path / "bad.wav", tmp_path / "good.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    sf.write(good, speech(0.2, 16000), 16000, subtype="PCM_16")
    for args, needle in [([str(tmp_path / "nope.gtb"), str(good)], "nope.gtb"), ([str(bundle), str(bad)], "bad.wav")]:
        r = subprocess.run([str(host / "example_host"), *args, str(tmp_path / "o")], capture_output=True, text=True,
                           env=_env(), timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_bridge_not_importable(host, bundle, tmp_path):
    """A gt_runtime without the bridge (here: one whose import fails) -> GT_ERR_PYTHON, one line with the fix."""
    fake = tmp_path / "fake" / "gt_runtime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('numpy is missing in this interpreter')\n")
    wav = tmp_path / "s.wav"
    sf.write(wav, speech(0.2, 16000), 16000, subtype="PCM_16")
    r = subprocess.run([str(host / "example_host"), str(bundle), str(wav), str(tmp_path / "o")], capture_output=True, text=True,
                       env=_env(GT_PYTHONPATH=str(fake.parent), PYTHONPATH=""), timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "GT_ERR_PYTHON" in lines[0] and "numpy is missing" in lines[0] and "GT_PYTHONPATH" in lines[0], r.stderr


def test_bad_calls_and_edge_cases(host, bundle):
    r = subprocess.run([str(host / "test_host_errors"), str(bundle)], capture_output=True, text=True, env=_env(),
                       timeout=300)
    assert r.returncode == 0 and "0 failed" in r.stdout, r.stdout + r.stderr
    assert "FAIL" not in r.stdout


# -- valgrind (memcheck): a tiny bundle and the numpy engine keep each run under ~1-2 min on 2 cores ----------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, random_bundle):
    d = tmp_path_factory.mktemp("vg")
    b = random_bundle(n_gaussians=64, sh_degree=1, num_layers=1, width=32, height=32, n_track_frames=4, seed=3, onnx=False)
    wav = d / "t.wav"
    sf.write(wav, speech(0.3, 16000), 16000, subtype="PCM_16")
    return b, wav


def _valgrind(cmd, log: Path):
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    vg = ["valgrind", "--error-exitcode=99", "--errors-for-leak-kinds=none", f"--log-file={log}",
          f"--suppressions={ROOT / 'plugins/host/valgrind.supp'}"]
    r = subprocess.run(vg + cmd, capture_output=True, text=True, timeout=900,
                       env=_env(PYTHONMALLOC="malloc", GT_ENGINE="array"))
    text = log.read_text()
    assert "Invalid read" not in text and "Invalid write" not in text and "Invalid free" not in text, text[-4000:]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + text[-4000:]
    assert "ERROR SUMMARY: 0 errors" in text, text[-4000:]
    return r


@pytest.mark.slow
def test_example_under_valgrind(host, tiny, tmp_path):
    b, wav = tiny
    r = _valgrind([str(host / "example_host"), str(b), str(wav), str(tmp_path / "o")], tmp_path / "vg.log")
    assert "frames: 8" in r.stdout  # ceil(4800 / 640)


@pytest.mark.slow
def test_bad_calls_under_valgrind(host, tiny, tmp_path):
    b, _ = tiny
    r = _valgrind([str(host / "test_host_errors"), str(b), "--quick"], tmp_path / "vg.log")
    assert "0 failed" in r.stdout
