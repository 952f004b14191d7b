"""The torso composite: the C++ one-pass form equals the numpy reference, and decoded torso frames are
kept within GT_TORSO_CACHE_MB."""
import numpy as np
import pytest

from gt_runtime.bundle import Bundle
from gt_runtime.playback.scene import Scene, composite_over
from gt_runtime.raster import _cpu


@pytest.fixture(scope="module")
def bundle(random_bundle):
    return Bundle.open(random_bundle(n_gaussians=300, sh_degree=1, num_layers=2, width=32, height=32, n_track_frames=5, seed=4))


def test_cpp_composite_equals_the_reference():
    if not _cpu.available():
        pytest.skip("the C++ extension is not built")
    rng = np.random.default_rng(0)
    plate = rng.random((37, 53, 3), dtype=np.float32)
    rgba = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    rgba[:10, :, 3] = 0        # the plate alone
    rgba[10:20, :, 3] = 255    # the torso alone
    got = _cpu.load().composite_over(plate, rgba)
    np.testing.assert_array_equal(got, composite_over(plate, rgba))  # the same floats, not just close
    np.testing.assert_array_equal(got[:10], plate[:10])
    np.testing.assert_array_equal(got[10:20], rgba[10:20, :, :3] / np.float32(255.0))


def test_cpp_composite_rejects_mismatched_shapes():
    if not _cpu.available():
        pytest.skip("the C++ extension is not built")
    with pytest.raises(ValueError, match="rgba"):
        _cpu.load().composite_over(np.zeros((4, 4, 3), np.float32), np.zeros((4, 5, 4), np.uint8))


def test_torso_frames_decoded_once_within_the_budget(bundle, monkeypatch):
    import gt_runtime.playback.scene as scene

    decoded = []
    real = scene._read_image
    monkeypatch.setattr(scene, "_read_image", lambda p, mode: ("torso" in str(p) and decoded.append(p)) or real(p, mode))
    s = Scene(bundle, cache_frames=1)
    n = len(s.torso_paths)
    assert n > 1
    first = [s.background_of_track(i).copy() for i in range(n)]
    again = [s.background_of_track(i) for i in range(n)]
    assert len(decoded) == n            # every torso frame decoded once, then kept
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_torso_budget_zero_decodes_every_time(bundle, monkeypatch):
    import gt_runtime.playback.scene as scene

    monkeypatch.setenv("GT_TORSO_CACHE_MB", "0")
    decoded = []
    real = scene._read_image
    monkeypatch.setattr(scene, "_read_image", lambda p, mode: ("torso" in str(p) and decoded.append(p)) or real(p, mode))
    s = Scene(bundle, cache_frames=1)
    n = len(s.torso_paths)
    for _ in range(2):
        for i in range(n):
            s.background_of_track(i)
    assert len(decoded) == 2 * n and not s._torso_rgba


def _full_frames(b):
    """The bundle's torso frames as whole [H, W, 4] frames (placed at its torso_box)."""
    from PIL import Image

    top, left = b.torso_box
    out = []
    for rel in b.torso_files:
        crop = np.asarray(Image.open(b.file(rel)).convert("RGBA"))
        full = np.zeros((b.height, b.width, 4), np.uint8)
        full[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
        out.append(full)
    return out


def test_writer_crops_the_torso_and_the_scene_composites_it_exactly(bundle):
    box = bundle.torso_box
    assert box is not None and box[0] > 0    # the random torso sits at the bottom of the frame
    s = Scene(bundle)
    for i, full in enumerate(_full_frames(bundle)):
        np.testing.assert_array_equal(s.background_of_track(i), composite_over(s.plate, full))


def test_bundles_with_whole_torso_frames_still_play(bundle, tmp_path):
    """An older bundle (whole frames, no scene.torso_box) composites the same."""
    import json
    import shutil

    from PIL import Image

    from gt_runtime.bundle.format import sha256_file

    full = _full_frames(bundle)
    dst = tmp_path / "whole.gtb"
    shutil.copytree(bundle.path, dst)
    man = json.loads((dst / "manifest.json").read_text())
    for rel, fr in zip(bundle.torso_files, full):
        Image.fromarray(fr).save(dst / rel)
        man["files"][rel] = sha256_file(dst / rel)
    del man["scene"]["torso_box"]
    (dst / "manifest.json").write_text(json.dumps(man))
    old = Bundle.open(dst)
    assert old.torso_box is None
    a, b = Scene(old), Scene(bundle)
    for i in range(len(full)):
        np.testing.assert_array_equal(a.background_of_track(i), b.background_of_track(i))


@pytest.mark.parametrize("box", [[-1, 0], [0, 10**6], "top", [1.5, 0]])
def test_bad_torso_box_is_one_line_error(bundle, tmp_path, box):
    import json
    import shutil

    from gt_runtime.errors import InputError

    dst = tmp_path / "bad.gtb"
    shutil.copytree(bundle.path, dst)
    man = json.loads((dst / "manifest.json").read_text())
    man["scene"]["torso_box"] = box
    (dst / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(InputError, match="torso_box") as e:
        Bundle.open(dst)
    assert "\n" not in str(e.value) and "re-export" in str(e.value)


def test_crop_outside_the_frame_is_one_line_error(bundle, tmp_path):
    import json
    import shutil

    from gt_runtime.errors import InputError

    dst = tmp_path / "shifted.gtb"
    shutil.copytree(bundle.path, dst)
    man = json.loads((dst / "manifest.json").read_text())
    man["scene"]["torso_box"] = [bundle.height - 1, 0]     # inside the frame, but the crop no longer fits
    (dst / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(InputError, match="crop") as e:
        Scene(Bundle.open(dst)).background_of_track(0)
    assert "\n" not in str(e.value)
