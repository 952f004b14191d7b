"""The bundled default identity (gt_runtime/assets/default.gtb): `gt play` and `gt profile` without --bundle."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gt_runtime import assets
from gt_runtime.bundle import Bundle
from gt_runtime.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 256  # tools/default_bundle.py: the cpu-small preset at 256 px


def test_default_bundle_opens_with_its_hashes():
    b = Bundle.open(assets.default_bundle())  # checks every file's SHA-256 against the manifest
    assert (b.width, b.height) == (SIZE, SIZE)
    assert "int8" in b.precisions and "fp32" in b.precisions
    assert 10_000 <= b.num_gaussians <= 20_000  # the cpu-small preset's budget
    size = sum(p.stat().st_size for p in assets.DEFAULT_BUNDLE.rglob("*") if p.is_file())
    assert size < 24e6, size  # it lives in the repository and in every wheel


def test_missing_default_bundle_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(assets, "DEFAULT_BUNDLE", tmp_path / "default.gtb")
    with pytest.raises(InputError, match="default identity is missing .* --bundle"):
        assets.default_bundle()


def test_play_without_bundle_mouth_follows_speech(tmp_path):
    """The default identity plays real speech (CMU ARCTIC, 4 s): 100 frames, and the lower face changes
    with the audio far more than the upper face, which only follows the head track (measured: 2.5x)."""
    out = tmp_path / "frames"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), GT_QUIET="1")
    r = subprocess.run([sys.executable, "-c", "from gt_cli.app import main; main()", "play",
                        str(assets.speech_path("human")), "-o", str(out), "--fps"], capture_output=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    assert f"{SIZE}x{SIZE}" in r.stderr.decode()
    from PIL import Image

    frames = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p in sorted(out.glob("*.png"))])
    assert frames.shape == (100, SIZE, SIZE, 3)
    meta = json.loads((assets.DEFAULT_BUNDLE / "manifest.json").read_text())
    assert meta["num_gaussians"] > 0
    # the face occupies the middle of the frame; the mouth is in its lower part
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(0, 3))  # [H, W] mean frame-to-frame change
    rows = lambda a, b: slice(round(a * SIZE), round(b * SIZE))  # noqa: E731 (fractions of the frame)
    mouth, eyes = change[rows(0.55, 0.75), rows(0.375, 0.625)].mean(), change[rows(0.16, 0.31), rows(0.375, 0.625)].mean()
    assert mouth > 2 * eyes, (mouth, eyes)
