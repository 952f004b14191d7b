"""The identity dataset validator: every file is checked, errors are one line and name the file."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from gt_runtime.errors import InputError
from gt_train.data.format import default_split, load_identity, read_ply_points, write_ply_points


@pytest.fixture
def ds(tiny_identity, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(tiny_identity, dst)
    return dst


def test_valid_dataset_loads(tiny_identity):
    d = load_identity(tiny_identity, check_images="all")
    T = d.num_frames
    assert T == 75
    assert d.c2w.shape == (T, 4, 4) and d.audio_features.shape == (T, 2, 80)
    assert d.landmarks.shape == (T, 68, 2) and d.blink.shape == (T,)
    assert d.points_init.ndim == 2 and d.points_init.shape[1] == 3
    assert len(d.val_idx) == -(-T // 11) and d.val_idx[0] == T - len(d.val_idx)
    assert np.allclose(d.viewmat(0) @ d.c2w[0], np.eye(4), atol=1e-5)
    assert "mouth_open" in d.ground_truth


def _expect(ds_path, needle):
    with pytest.raises(InputError) as e:
        load_identity(ds_path, check_images="all")
    msg = str(e.value)
    assert "\n" not in msg and needle in msg and "|" in msg, msg
    return msg


def test_missing_frame(ds):
    (ds / "frames" / "00010.jpg").unlink()
    _expect(ds, "00010.jpg")


def test_corrupt_frame(ds):
    (ds / "frames" / "00003.jpg").write_bytes(b"not a jpeg")
    _expect(ds, "00003.jpg")


def test_torso_must_be_rgba(ds):
    from PIL import Image

    Image.open(ds / "torso" / "00000.png").convert("RGB").save(ds / "torso" / "00000.png")
    _expect(ds, "00000.png")


@pytest.mark.parametrize("name,bad", [
    ("blink.npy", np.zeros((5,), np.float32)),
    ("blink.npy", np.full((75,), 2.0, np.float32)),
    ("audio_features.npy", np.zeros((75, 80), np.float32)),
    ("landmarks.npy", np.full((75, 68, 2), np.nan, np.float32)),
])
def test_bad_arrays(ds, name, bad):
    np.save(ds / name, bad)
    _expect(ds, name)


def test_pickled_npy_is_refused(ds):
    np.save(ds / "blink.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _expect(ds, "blink.npy")


def test_audio_wrong_rate_and_length(ds):
    sf.write(ds / "audio.wav", np.zeros(44100 * 3, np.float32), 44100)
    _expect(ds, "audio.wav")
    sf.write(ds / "audio.wav", np.zeros(16000, np.float32), 16000)
    _expect(ds, "audio.wav")


def test_truncated_ply(ds):
    data = (ds / "points_init.ply").read_bytes()
    (ds / "points_init.ply").write_bytes(data[: len(data) // 2])
    _expect(ds, "points_init.ply")


def test_bad_transforms(ds):
    tf = json.loads((ds / "transforms.json").read_text())
    tf["frames"][2]["transform_matrix"] = [[1, 0, 0]]
    (ds / "transforms.json").write_text(json.dumps(tf))
    _expect(ds, "transforms.json")
    (ds / "transforms.json").write_text("{")
    _expect(ds, "transforms.json")


def test_path_escape_is_refused(ds):
    tf = json.loads((ds / "transforms.json").read_text())
    tf["frames"][0]["file_path"] = "../../etc/passwd"
    (ds / "transforms.json").write_text(json.dumps(tf))
    _expect(ds, "escapes")


def test_overlapping_split(ds):
    (ds / "split.json").write_text(json.dumps({"train": [0, 1, 2], "val": [2]}))
    _expect(ds, "split.json")


def test_missing_dir(tmp_path):
    with pytest.raises(InputError, match="gt sample synthetic"):
        load_identity(tmp_path / "nope")


def test_ply_round_trip(tmp_path):
    xyz = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)
    rgb = np.random.default_rng(1).integers(0, 255, (100, 3)).astype(np.uint8)
    write_ply_points(tmp_path / "p.ply", xyz, rgb)
    x2, c2 = read_ply_points(tmp_path / "p.ply")
    assert np.array_equal(xyz, x2) and np.array_equal(rgb, c2)


def test_default_split():
    s = default_split(110)
    assert s["val"] == list(range(100, 110)) and s["train"] == list(range(100))
