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
