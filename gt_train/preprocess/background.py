"""Person masks, the background plate and torso images, from the landmarks and the fixed camera.

The heuristic (numpy + scipy only, no segmentation model):

1. Head region per frame: the convex hull of the jaw and brow landmarks, plus the brow
   points pushed "up the face" (chin -> brows direction) by 0.9 face heights for the
   forehead and hair, dilated by 0.25 face widths (generous: hair must not leak into
   the background plate; too much head region only means more inpainting).
2. Round 1 background: per-pixel temporal median over up to 60 frames of the pixels
   outside (head region  U  a torso box from just above the chin, 3.6 face widths wide,
   down to the bottom of the frame). Pixels never seen are filled by inpainting.
3. Person mask per frame: head region  U  torso box  U  pixels of a wider box (up to the
   brows, 1.5x as wide: raised shoulders, long hair) that differ from the round-1
   background by more than 0.1 (max over RGB), cleaned by a morphological opening and
   closing and hole filling. Conservative on purpose: background pixels counted as torso
   are harmless when the torso is composited over this same background.
4. Round 2 background: the median again, now masking only the person, so the parts of
   the torso box that the person uncovers are seen; the rest is inpainted.

Torso image = the frame where (person mask and not head region), alpha 255; the rest
is transparent. Inpainting: normalised convolution at growing scales (a push-pull fill),
smooth and seam-free for the slowly varying backgrounds of talking-head videos.
"""
from __future__ import annotations

import numpy as np

from gt_runtime.errors import require
from gt_train.data.format import N_LANDMARKS

DIFF_THRESHOLD = 0.10
MAX_BG_FRAMES = 60


def _face_frame(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """lm [68, 2] -> (up unit vector (chin -> brows), centre, face width, face height)."""
    assert lm.shape == (N_LANDMARKS, 2), lm.shape
    chin, brows = lm[8], lm[17:27].mean(0)
    up = brows - chin
    height = float(np.linalg.norm(up)) + 1e-6
    width = float(np.linalg.norm(lm[16] - lm[0])) + 1e-6
    return up / height, 0.5 * (chin + brows), width, height


def head_region(lm: np.ndarray, H: int, W: int) -> np.ndarray:
    """lm [68, 2] -> [H, W] bool: face, forehead and hair (see the module docstring)."""
    from PIL import Image, ImageDraw
    ConvexHull = require("scipy.spatial", "gt preprocess").ConvexHull

    up, _, width, height = _face_frame(lm)
    pts = np.concatenate([lm[:27], lm[17:27] + 0.9 * height * up, lm[[0, 16]] + 0.7 * height * up])
    hull = [tuple(p) for p in pts[ConvexHull(pts).vertices]]
    r = max(1, int(round(0.25 * width)))
    im = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(im)
    d.polygon(hull, fill=255)
    # dilation of a convex polygon by a disk = the polygon + thick edges + disks at the corners
    d.line(hull + hull[:1], fill=255, width=2 * r)
    for x, y in hull:
        d.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return np.asarray(im) > 0


def torso_box(lm: np.ndarray, H: int, W: int, widen: float = 1.0) -> np.ndarray:
    """lm [68, 2] -> [H, W] bool: a box below the chin where the neck and shoulders are."""
    up, _, width, height = _face_frame(lm)
    x0 = lm[8, 0] - 1.8 * widen * width
    x1 = lm[8, 0] + 1.8 * widen * width
    y0 = lm[8, 1] - (0.3 if widen <= 1 else 1.0) * height
    xs, ys = np.arange(W) + 0.5, np.arange(H) + 0.5
    return ((xs >= x0) & (xs <= x1))[None, :] & (ys >= y0)[:, None]


def _disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


def inpaint(img: np.ndarray, known: np.ndarray) -> np.ndarray:
    """img [H, W, 3] float32, known [H, W] bool -> img with the unknown pixels filled (push-pull).

    Normalised convolution at doubling scales on a 4x smaller copy (the fill is smooth
    anyway), upsampled into the unknown pixels.
    """
    ndi = require("scipy.ndimage", "gt preprocess")

    if known.all() or not known.any():
        return img
    H, W = known.shape
    k = 4 if min(H, W) >= 64 else 1
    h, w_ = H // k * k, W // k * k
    wgt = np.zeros((H, W), np.float32)
    wgt[known] = 1
    num = (img * wgt[..., None])[:h, :w_].reshape(h // k, k, w_ // k, k, 3).sum((1, 3))
    den = wgt[:h, :w_].reshape(h // k, k, w_ // k, k).sum((1, 3))
    small = num / np.maximum(den, 1e-6)[..., None]
    wsmall = (den > 0).astype(np.float32)
    filled = den > 0
    acc = small.copy()
    sigma = 1.0
    while not filled.all() and sigma < 2 * max(h, w_) / k:
        n2 = ndi.gaussian_filter(small * wsmall[..., None], (sigma, sigma, 0), mode="nearest")
        d2 = ndi.gaussian_filter(wsmall, sigma, mode="nearest")
        ok = (d2 > 1e-3) & ~filled
        acc[ok] = n2[ok] / d2[ok, None]
        filled |= ok
        sigma *= 2
    big = ndi.zoom(acc, (H / acc.shape[0], W / acc.shape[1], 1), order=1, mode="nearest", grid_mode=True)
    out = img.copy()
    out[~known] = big[~known]
    return out


def median_background(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """frames [N, H, W, 3] uint8, masks [N, H, W] bool (True = person) -> background [H, W, 3] float32 in [0, 1].

    Per-pixel median of the unmasked samples (lower median), by sorting uint16 values with
    masked samples set to 256 so that they sort last; pixels never seen are inpainted.
    """
    N, H, W = frames.shape[:3]
    v = np.where(masks[..., None], np.uint16(256), frames.astype(np.uint16))
    v.sort(axis=0)
    n = (~masks).sum(0)  # [H, W] samples seen
    idx = np.maximum(n - 1, 0) // 2
    med = np.take_along_axis(v, np.broadcast_to(idx[None, ..., None], (1, H, W, 3)).astype(np.intp), 0)[0]
    bg = np.minimum(med, 255).astype(np.float32) / 255.0
    return inpaint(bg, n > 0)


def person_mask(frame: np.ndarray, lm: np.ndarray, bg: np.ndarray, head: np.ndarray | None = None) -> np.ndarray:
    """frame [H, W, 3] uint8, lm [68, 2], bg [H, W, 3] float32 -> [H, W] bool person mask.

    The difference test and the morphology run at half resolution (speed).
    """
    ndi = require("scipy.ndimage", "gt preprocess")

    H, W = frame.shape[:2]
    head = head_region(lm, H, W) if head is None else head
    s = 2 if min(H, W) >= 128 else 1
    diff = np.abs(frame[::s, ::s].astype(np.float32) / 255.0 - bg[::s, ::s]).max(-1) > DIFF_THRESHOLD
    diff &= torso_box(lm / s, *diff.shape, widen=1.5)
    diff = ndi.binary_opening(diff, structure=_disk(1))
    m = diff | head[::s, ::s] | torso_box(lm / s, *diff.shape)
    m = ndi.binary_closing(m, structure=_disk(2))
    m = ndi.binary_fill_holes(m)
    lab, n = ndi.label(m)
    if n > 1:  # keep the blobs that touch the head
        keep = np.unique(lab[head[::s, ::s] & m])
        m = np.isin(lab, keep[keep > 0])
    if s > 1:
        m = np.repeat(np.repeat(m, s, 0), s, 1)[:H, :W]
        m = np.pad(m, ((0, H - m.shape[0]), (0, W - m.shape[1])), mode="edge")
    return m | head


def estimate_background(frames: np.ndarray, lms: np.ndarray) -> np.ndarray:
    """frames [N, H, W, 3] uint8 (a sample of the clip), lms [N, 68, 2] -> background [H, W, 3] float32 in [0, 1]."""
    N, H, W = frames.shape[:3]
    heads = np.stack([head_region(l, H, W) for l in lms])
    boxes = np.stack([torso_box(l, H, W) for l in lms])
    bg1 = median_background(frames, heads | boxes)
    persons = np.stack([person_mask(f, l, bg1, h) for f, l, h in zip(frames, lms, heads)])
    return median_background(frames, persons)


def torso_rgba(frame: np.ndarray, lm: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """frame [H, W, 3] uint8 -> torso [H, W, 4] uint8 RGBA: the person minus the head region."""
    H, W = frame.shape[:2]
    head = head_region(lm, H, W)
    keep = person_mask(frame, lm, bg, head) & ~head
    out = np.zeros((H, W, 4), np.uint8)
    out[keep, :3] = frame[keep]
    out[keep, 3] = 255
    return out
