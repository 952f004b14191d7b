"""Metrics of `gt eval` on inputs with known answers."""
import math

import numpy as np
import pytest

from gt_train import metrics


def _img(seed=0, h=48, w=40):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def test_identical_images_psnr_inf_ssim_one():
    a = _img()
    assert metrics.psnr(a, a) == math.inf
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-9)
    u8 = (a * 255).astype(np.uint8)
    assert metrics.psnr(u8, u8) == math.inf


def test_known_psnr_for_known_noise():
    a = np.full((64, 64, 3), 0.5, np.float64)
    b = a.copy()
    b[::2] += 0.1   # half the pixels off by 0.1, the rest by -0.1: MSE = 0.01 exactly
    b[1::2] -= 0.1
    assert metrics.psnr(a, b) == pytest.approx(20.0, abs=1e-9)
    rng = np.random.default_rng(0)
    noisy = a + rng.normal(0, 0.05, a.shape)  # sigma 0.05 -> 10 log10(1 / 0.0025) = 26.02 dB
    assert metrics.psnr(a, noisy) == pytest.approx(26.02, abs=0.1)
    assert metrics.ssim(a, noisy) < metrics.ssim(a, a + rng.normal(0, 0.01, a.shape)) < 1.0


def test_ssim_matches_the_training_loss():
    torch = pytest.importorskip("torch")
    from gt_train.losses import ssim as ssim_torch

    a, b = _img(1), np.clip(_img(1) + 0.1 * _img(2) - 0.05, 0, 1)
    ref = float(ssim_torch(torch.from_numpy(a), torch.from_numpy(b.astype(np.float32))))
    assert metrics.ssim(a, b) == pytest.approx(ref, abs=1e-5)


def test_lmd_mouth_points_and_missing_detections():
    gt = np.zeros((3, 68, 2))
    pred = gt.copy()
    pred[:, 48:68, 0] += 3.0        # mouth points 3 px off
    pred[:, :48] += 100.0           # other points do not count
    pred[1] = np.nan                # no detection in frame 1: skipped
    assert metrics.lmd(pred, gt) == pytest.approx(3.0)
    assert math.isnan(metrics.lmd(np.full((2, 68, 2), np.nan), gt[:2]))


@pytest.mark.parametrize("k", [-3, 0, 2, 4])
def test_sync_offset_detects_a_known_shift(k):
    rng = np.random.default_rng(5)
    energy = np.convolve(rng.standard_normal(200), np.ones(3) / 3, mode="same")  # speech-like, short correlation
    mouth = np.roll(energy, k) + 0.05 * rng.standard_normal(200)                  # mouth[t] = energy[t - k]
    r = metrics.sync_offset(mouth, energy, max_offset=6)
    assert r["best_offset"] == k, r
    assert r["best_corr"] > 0.9
    assert set(r["corr_by_offset"]) == {str(i) for i in range(-6, 7)}


def test_mouth_dark_area_and_energy():
    img = np.ones((20, 20, 3), np.float32)
    img[5:10, 5:15] = 0.0  # dark interior: 50 of the 10 x 10 box
    assert metrics.mouth_dark_area(img, (5, 5, 15, 15)) == pytest.approx(0.5)
    feats = np.stack([np.full((2, 80), v, np.float32) for v in (-1.0, 0.0, 2.0)])
    assert np.allclose(metrics.audio_energy(feats), [-1.0, 0.0, 2.0])
    assert metrics.corr(np.ones(5), np.arange(5)) == 0.0
