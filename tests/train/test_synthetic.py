"""The synthetic identity (gt_train.data.synthetic) and the bundled speech clips (gt_runtime.assets)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from gt_runtime.errors import InputError
from gt_train.data.synthetic import SyntheticConfig, make_synthetic_identity

FRAME_KEYS = {"index", "file_path", "torso_path", "transform_matrix"}
TRANSFORM_KEYS = {"format", "version", "fps", "width", "height", "fl_x", "fl_y", "cx", "cy", "convention",
                  "landmarks", "frames"}
GT_SHAPES = {"mouth_open": (None,), "mouth_open_m": (None,), "blink": (None,), "head_rotation": (None, 3, 3),
             "head_translation": (None, 3), "head_euler_deg": (None, 3), "landmarks": (None, 68, 2),
             "loudness": (None,)}


def build(root: Path, **kw) -> Path:
    return make_synthetic_identity(SyntheticConfig(root, progress=False, **kw))


@pytest.fixture(scope="module")
def ident(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("syn") / "id3s", seconds=3.0, size=96, seed=0)


@pytest.fixture(scope="module")
def long_ident(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("syn") / "id8s", seconds=8.0, size=64, seed=3)


def _gt(root: Path) -> dict:
    with np.load(root / "ground_truth.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------- format


def test_every_file_has_the_format(ident):
    T, S = 75, 96
    names = sorted(p.name for p in ident.iterdir())
    assert names == sorted(["frames", "torso", "audio.wav", "audio_features.npy", "transforms.json", "blink.npy",
                            "background.jpg", "landmarks.npy", "points_init.ply", "split.json",
                            "ground_truth.npz", "ground_truth.json"])
    assert sorted(p.name for p in (ident / "frames").iterdir()) == [f"{i:05d}.jpg" for i in range(T)]
    assert sorted(p.name for p in (ident / "torso").iterdir()) == [f"{i:05d}.png" for i in range(T)]
    for i in (0, T - 1):
        with Image.open(ident / "frames" / f"{i:05d}.jpg") as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (S, S))
        with Image.open(ident / "torso" / f"{i:05d}.png") as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGBA", (S, S))
            alpha = np.asarray(im)[..., 3]
        assert set(np.unique(alpha)) <= {0, 255} and 0 < (alpha == 255).mean() < 0.6
    with Image.open(ident / "background.jpg") as im:
        assert (im.mode, im.size) == ("RGB", (S, S))
        assert np.asarray(im).std() > 10  # a textured scene, not a flat colour

    info = sf.info(str(ident / "audio.wav"))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", T * 640)

    feats = np.load(ident / "audio_features.npy")
    assert feats.shape == (T, 2, 80) and feats.dtype == np.float32 and np.isfinite(feats).all()
    from gt_runtime.audio import load_audio, mel_features

    pcm, _ = load_audio(ident / "audio.wav")
    assert np.abs(mel_features(pcm, 16000, num_frames=T) - feats).max() < 0.02  # up to 16-bit rounding

    blink = np.load(ident / "blink.npy")
    assert blink.shape == (T,) and blink.dtype == np.float32 and blink.min() >= 0 and blink.max() <= 1

    lms = np.load(ident / "landmarks.npy")
    assert lms.shape == (T, 68, 2) and lms.dtype == np.float32
    assert (lms > 0).all() and (lms < S).all()

    split = json.loads((ident / "split.json").read_text())
    n_val = math.ceil(T / 11)
    assert split == {"train": list(range(T - n_val)), "val": list(range(T - n_val, T))}

    gt = _gt(ident)
    assert set(gt) == set(GT_SHAPES)
    for k, shape in GT_SHAPES.items():
        assert gt[k].dtype == np.float32 and gt[k].shape == (T,) + shape[1:], k
    assert np.array_equal(gt["landmarks"], lms) and np.array_equal(gt["blink"], blink)
    assert 0 <= gt["mouth_open"].min() and gt["mouth_open"].max() <= 1
    assert np.allclose(gt["mouth_open_m"], gt["mouth_open"] * gt["mouth_open_m"].max() / gt["mouth_open"].max(), atol=1e-6)
    assert np.abs(gt["head_euler_deg"]).max() < 10
    desc = json.loads((ident / "ground_truth.json").read_text())
    assert desc["seed"] == 0 and desc["config"]["size"] == S and desc["source_audio"]["bundled"] is True


def test_transforms_and_points(ident):
    from gt_train.data.format import load_identity, read_ply_points

    tf = json.loads((ident / "transforms.json").read_text())
    assert set(tf) == TRANSFORM_KEYS
    assert (tf["format"], tf["version"], tf["fps"], tf["width"], tf["height"]) == ("gt-identity", 1, 25, 96, 96)
    assert (tf["convention"], tf["landmarks"]) == ("opencv", "ibug68")
    assert tf["fl_x"] == tf["fl_y"] > 0 and (tf["cx"], tf["cy"]) == (48.0, 48.0)
    gt = _gt(ident)
    for i, f in enumerate(tf["frames"]):
        assert set(f) == FRAME_KEYS and f["index"] == i
        assert f["file_path"] == f"frames/{i:05d}.jpg" and f["torso_path"] == f"torso/{i:05d}.png"
        c2w = np.array(f["transform_matrix"])
        assert c2w.shape == (4, 4) and np.allclose(c2w[3], [0, 0, 0, 1])
        assert np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-6)
        assert c2w[2, 3] < -0.8  # the camera sits in front of the face, at negative z
        # c2w is the inverse of the head motion x_cam = R x_head + t
        R, t = gt["head_rotation"][i].astype(np.float64), gt["head_translation"][i].astype(np.float64)
        assert np.allclose(c2w[:3, :3], R.T, atol=1e-5) and np.allclose(c2w[:3, 3], -R.T @ t, atol=1e-5)

    # landmarks are projections of 3-D points: the nose tip (30) is the landmark nearest the camera
    xyz, rgb = read_ply_points(ident / "points_init.ply")
    assert 10_000 <= len(xyz) <= 30_000 and rgb is not None
    assert np.abs(xyz).max() < 0.2 and xyz[:, 2].min() < -0.09  # metres, face toward -z
    assert rgb.astype(float).std() > 20  # textured (skin, hair, lips), not one colour

    ds = load_identity(ident, check_images="all")  # the lead's validator accepts it
    assert ds.num_frames == 75 and ds.points_init.shape == xyz.shape


def test_torso_plus_plate_reproduce_the_frame_outside_the_head(ident):
    frame = np.asarray(Image.open(ident / "frames" / "00010.jpg"), np.float32)
    torso = np.asarray(Image.open(ident / "torso" / "00010.png"), np.float32)
    plate = np.asarray(Image.open(ident / "background.jpg"), np.float32)
    on = torso[..., 3] == 255
    assert np.abs(torso[on, :3] - frame[on]).mean() < 4  # JPEG noise only
    lms = np.load(ident / "landmarks.npy")[10]
    # the bottom-left corner is far from the head and the torso's neck: plate or torso only
    corner = (slice(80, 96), slice(0, 12))
    comp = np.where(on[..., None], torso[..., :3], plate)
    assert np.abs(comp[corner] - frame[corner]).mean() < 6
    # where the face is, the torso layer is empty
    cx, cy = np.round(lms[30]).astype(int)
    assert torso[cy, cx, 3] == 0


def test_mouth_opens_in_the_mouth_box(ident):
    gt = _gt(ident)
    lms = gt["landmarks"]
    i_open, i_closed = int(np.argmax(gt["mouth_open"])), int(np.argmin(gt["mouth_open"]))
    assert gt["mouth_open"][i_open] > 0.6 and gt["mouth_open"][i_closed] < 0.05

    def crop(i, part):
        c = np.round(lms[i, part].mean(0)).astype(int)
        im = np.asarray(Image.open(ident / "frames" / f"{i:05d}.jpg"), np.float32)
        return im[c[1] - 5:c[1] + 6, c[0] - 8:c[0] + 9]

    mouth = slice(48, 68)
    eyes = slice(36, 48)
    d_mouth = np.abs(crop(i_open, mouth) - crop(i_closed, mouth)).mean()
    d_eyes = np.abs(crop(i_open, eyes) - crop(i_closed, eyes)).mean()
    if gt["blink"][[i_open, i_closed]].max() < 0.05:
        assert d_mouth > 2 * d_eyes
    assert d_mouth > 12
    # the open mouth shows teeth (bright) and the cavity (dark) between the inner lips
    inner = np.round(lms[i_open, [62, 66]].mean(0)).astype(int)
    im = np.asarray(Image.open(ident / "frames" / f"{i_open:05d}.jpg"), np.float32)
    col = im[int(lms[i_open, 62, 1]):int(lms[i_open, 66, 1]) + 1, inner[0]].mean(-1)
    assert col.max() - col.min() > 60


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = build(tmp_path / "a", seconds=1.0, size=48, seed=7)
    b = build(tmp_path / "b", seconds=1.0, size=48, seed=7)
    c = build(tmp_path / "c", seconds=1.0, size=48, seed=8)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "ground_truth.npz").read_bytes() != (c / "ground_truth.npz").read_bytes()
    assert (a / "frames/00012.jpg").read_bytes() != (c / "frames/00012.jpg").read_bytes()


def test_mouth_follows_loudness_and_eyes_blink(long_ident):
    gt = _gt(long_ident)
    mo, loud, blink, lms = gt["mouth_open"], gt["loudness"], gt["blink"], gt["landmarks"]
    assert len(mo) == 200
    assert np.corrcoef(mo, loud)[0, 1] >= 0.7
    assert mo.max() > 0.9 and (mo < 0.05).mean() > 0.1  # wide open at loud syllables, closed in pauses
    # inner-lip landmarks spread with the opening
    gap = lms[:, 66, 1] - lms[:, 62, 1]
    assert np.corrcoef(mo, gap)[0, 1] > 0.95
    hi, lo = mo > np.quantile(mo, 0.8), mo < np.quantile(mo, 0.2)
    assert gap[hi].mean() > gap[lo].mean() + 1.0
    outer = lms[:, 57, 1] - lms[:, 51, 1]
    assert outer[hi].mean() > outer[lo].mean()
    # blinks: in [0, 1], at least one full blink of 4-6 frames
    assert blink.min() == 0 and blink.max() == 1 and ((blink > 0).sum() >= 4)
    starts = np.nonzero((blink[1:] > 0) & (blink[:-1] == 0))[0] + 1
    assert 1 <= len(starts) <= 5
    # upper eyelid landmarks close on the lower ones during a blink
    lid = lms[:, 41, 1] - lms[:, 37, 1]
    assert lid[blink == 1].max() < 0.3 * lid[blink == 0].mean()
    # the head moves a few degrees, smoothly
    eu = gt["head_euler_deg"]
    assert 0.5 < np.abs(eu[:, 0]).max() < 8 and np.abs(np.diff(eu, axis=0)).max() < 1.0


# ----------------------------------------------------------------------------- errors


def test_refuses_a_non_empty_out_dir(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError) as exc:
        build(out, seconds=0.2, size=32)
    assert "not empty" in str(exc.value) and "\n" not in str(exc.value)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build(empty, seconds=0.2, size=32) == empty and (empty / "transforms.json").is_file()


def test_a_failed_run_leaves_nothing(tmp_path, monkeypatch):
    from gt_train.data.synthetic import identity

    calls = []

    def boom(*args):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("disk full")

    monkeypatch.setattr(identity, "_write_pair", boom)
    with pytest.raises(RuntimeError):
        build(tmp_path / "x", seconds=0.4, size=32)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    for kw in ({"speech": bad}, {"fps": 30}, {"seconds": 0.0}, {"size": 8}):
        with pytest.raises(InputError) as exc:
            build(tmp_path / "o", **kw)
        assert "\n" not in str(exc.value)
    assert not (tmp_path / "o").exists()


def test_custom_speech_is_looped(tmp_path):
    from gt_runtime.assets import speech_path

    out = build(tmp_path / "h", seconds=5.0, size=32, speech=speech_path("human"))  # a 4 s clip, looped
    info = json.loads((out / "ground_truth.json").read_text())["source_audio"]
    assert info["loops"] == 2 and info["bundled"] is False
    assert sf.info(str(out / "audio.wav")).frames == 5 * 16000


def test_import_stays_torch_free():
    code = "import sys, gt_train.data.synthetic; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ----------------------------------------------------------------------------- speech clips


def test_bundled_speech_clips():
    from gt_runtime.assets import SPEECH_CLIPS, speech_path

    total = 0
    lengths = {}
    for name in SPEECH_CLIPS:
        p = speech_path(name)
        info = sf.info(str(p))
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1), name
        lengths[name] = info.duration
        total += p.stat().st_size
    assert total <= 1_000_000
    assert lengths["train"] >= 20 and 6 <= lengths["cross"] <= 10
    assert speech_path("cross_8s") == speech_path("cross") == speech_path("cross_8s.flac")
    readme = (speech_path().parent / "README.md").read_text()
    assert all(f in readme for f in SPEECH_CLIPS.values()) and "espeak-ng" in readme and "CMU ARCTIC" in readme
    with pytest.raises(InputError, match="available: cross, human, train"):
        speech_path("nope")
