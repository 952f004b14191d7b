"""Eye blink from the landmarks: the eye aspect ratio (EAR), normalised per identity to [0, 1] (1 = closed).

EAR = (|p1 - p5| + |p2 - p4|) / (2 |p0 - p3|) per eye (Soukupova & Cech 2016), with
p0..p5 the six iBUG points of an eye (corners at 0 and 3), averaged over both eyes.

Normalisation: "open" is the median EAR of the clip (eyes are open most of the time);
"closed" is the 1st percentile, but at most half the open value, so a clip without
blinks maps its small EAR noise near 0 instead of stretching it over [0, 1].
"""
from __future__ import annotations

import numpy as np

from gt_runtime.errors import require
from gt_train.data.format import LEFT_EYE, RIGHT_EYE


def eye_aspect_ratio(lms: np.ndarray) -> np.ndarray:
    """lms [T, 68, 2] -> EAR [T] (mean of both eyes)."""
    def ear(e):
        v = np.linalg.norm(e[:, 1] - e[:, 5], axis=-1) + np.linalg.norm(e[:, 2] - e[:, 4], axis=-1)
        h = np.linalg.norm(e[:, 0] - e[:, 3], axis=-1)
        return v / (2 * np.maximum(h, 1e-6))

    return 0.5 * (ear(lms[:, LEFT_EYE]) + ear(lms[:, RIGHT_EYE]))


def blink_track(lms: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """lms [T, 68, 2] -> blink [T] float32 in [0, 1], 1 = closed."""
    e = eye_aspect_ratio(lms.astype(np.float64))
    if sigma > 0:
        gaussian_filter1d = require("scipy.ndimage", "gt preprocess").gaussian_filter1d

        e = gaussian_filter1d(e, sigma, mode="nearest")
    open_ = float(np.median(e))
    closed = min(float(np.percentile(e, 1)), 0.5 * open_)
    return np.clip((open_ - e) / max(open_ - closed, 1e-6), 0, 1).astype(np.float32)
