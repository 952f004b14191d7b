"""Evaluation metrics of `gt eval` (numpy; LPIPS through torch only with local weights).

Images are [H, W, 3] float in [0, 1] (uint8 is accepted and divided by 255).

- `psnr(a, b)`: 10 log10(1 / MSE) in dB (scikit-image); identical images -> inf.
- `ssim(a, b)`: scikit-image's gaussian SSIM (window 11, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2,
  the 5-pixel border excluded), the same function as `gt_train.losses.ssim`; identical -> 1.
- `LpipsMetric(weights)`: LPIPS(alex) from a local state dict (`gt_train.losses.LPIPS`);
  never downloads anything.
- `lmd(pred [T, 68, 2], gt [T, 68, 2])`: landmark distance over the mouth points (iBUG-68
  48..67), mean Euclidean pixels; frames where a detection is missing (NaN) are skipped.
- `mouth_openness(img, box)`: the mouth opening measured on an image, 1 - mean luminance
  in a box tied to the lip corners (`gt_train.dataset.mouth_box`): the open mouth shows its
  dark interior. Continuous, so it also moves on blurry renders of small models (on the
  synthetic identity's real frames it correlates 0.8 with the ground-truth opening);
  the trainer's final metrics use it too. `mouth_dark_area(img, box)` is a thresholded variant.
- `audio_energy(feats [T, 2, 80])`: per-frame energy of the `mel` features (mean log-mel).
- `sync_offset(mouth [T], energy [T], max_offset)`: the lip-sync proxy. Pearson
  correlation of the two signals for every offset k in [-max_offset, max_offset]; k > 0
  means the video lags the audio by k frames (mouth[t] follows energy[t - k]).
  -> {"corr_at_0", "best_offset", "best_corr", "corr_by_offset"}.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gt_runtime.errors import require
from gt_train.data.format import MOUTH


def _f(img) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return a.astype(np.float64)


def psnr(a, b, peak: float = 1.0) -> float:
    """a, b [H, W, 3] in [0, 1] -> PSNR dB (scikit-image; inf when identical)."""
    x, y = _f(a), _f(b)
    if np.array_equal(x, y):
        return math.inf  # scikit-image divides by a zero MSE (a warning) to get there
    return float(_skm().peak_signal_noise_ratio(x, y, data_range=peak))


def ssim(a, b) -> float:
    """a, b [H, W, 3] in [0, 1], H, W >= 11 -> mean SSIM (scikit-image; equals gt_train.losses.ssim).

    Gaussian window 11, sigma 1.5, population covariances, C1 = 0.01^2, C2 = 0.03^2, averaged
    over the pixels at least 5 from the border (where the window fits).
    """
    return float(_skm().structural_similarity(_f(a), _f(b), data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                              sigma=1.5, use_sample_covariance=False))


def _skm():
    return require("skimage.metrics", "PSNR / SSIM")


class LpipsMetric:
    """LPIPS(alex) from a local state dict (no download). __call__(a, b) -> float."""

    def __init__(self, weights: str | Path):
        torch = require("torch", "LPIPS")

        from gt_train.losses import LPIPS

        self._torch = torch
        self.net = LPIPS(Path(weights), "cpu")

    def __call__(self, a, b) -> float:
        t = self._torch
        with t.no_grad():
            return float(self.net(t.from_numpy(_f(a).astype(np.float32)), t.from_numpy(_f(b).astype(np.float32))))


def lmd(pred: np.ndarray, gt: np.ndarray, points=MOUTH) -> float:
    """pred, gt [T, 68, 2] pixels (NaN rows = no detection) -> mean distance over `points` (NaN if no frame)."""
    p, g = np.asarray(pred, np.float64)[:, points], np.asarray(gt, np.float64)[:, points]
    d = np.linalg.norm(p - g, axis=-1).mean(-1)  # [T]
    d = d[np.isfinite(d)]
    return float(d.mean()) if d.size else float("nan")


def luminance(img) -> np.ndarray:
    x = _f(img)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def mouth_dark_area(img, box: tuple[int, int, int, int], threshold: float = 0.25) -> float:
    """img [H, W, 3], box (x0, y0, x1, y1) -> fraction of pixels with luminance < threshold (the open mouth)."""
    x0, y0, x1, y1 = box
    return float((luminance(np.asarray(img)[y0:y1, x0:x1]) < threshold).mean())


def mouth_openness(img, box: tuple[int, int, int, int]) -> float:
    """img [H, W, 3], box (x0, y0, x1, y1) -> 1 - mean luminance in the box (larger = more open)."""
    x0, y0, x1, y1 = box
    return float(1.0 - luminance(np.asarray(img)[y0:y1, x0:x1]).mean())


def audio_energy(feats: np.ndarray) -> np.ndarray:
    """feats [T, 2, 80] (`mel` front end, log-mel; IdentityDataset.mel_features() for any dataset) -> [T] mean log-mel energy per video frame."""
    f = np.asarray(feats, np.float64)
    return f.reshape(f.shape[0], -1).mean(-1)


def corr(a, b) -> float:
    """Pearson correlation (0 when either signal is constant or too short)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def shifted_corr(mouth, energy, k: int) -> float:
    """corr(mouth[t], energy[t - k]) over the overlap (k > 0: video lags audio)."""
    m, e = np.asarray(mouth, np.float64), np.asarray(energy, np.float64)
    n = min(m.size, e.size)
    m, e = m[:n], e[:n]
    if k > 0:
        return corr(m[k:], e[:n - k])
    if k < 0:
        return corr(m[:n + k], e[-k:])
    return corr(m, e)


def sync_offset(mouth, energy, max_offset: int = 5) -> dict:
    """Lip-sync proxy: correlation per A/V offset in frames -> {"corr_at_0", "best_offset", "best_corr", "corr_by_offset"}.

    best_offset maximises the correlation (k > 0: the mouth follows the audio k frames late);
    0 is preferred on ties.
    """
    n = min(len(mouth), len(energy))
    max_offset = int(max(0, min(max_offset, n - 3)))
    ks = list(range(-max_offset, max_offset + 1))
    cs = [shifted_corr(mouth, energy, k) for k in ks]
    order = sorted(range(len(ks)), key=lambda i: (-round(cs[i], 12), abs(ks[i])))
    best = order[0]
    return {"corr_at_0": shifted_corr(mouth, energy, 0), "best_offset": int(ks[best]), "best_corr": float(cs[best]),
            "corr_by_offset": {str(k): float(c) for k, c in zip(ks, cs)}}
