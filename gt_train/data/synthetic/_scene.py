"""What is not the head: the camera, the background plate and the torso layer, and the driving signals.

All of it is per-clip or static; `render` in `identity.py` composites the head over it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gt_runtime.errors import require
from gt_train.data.synthetic._face import M_PER_PX, X0, Y0, HeadModel

# The real, fixed camera (OpenCV axes) sees the head's origin at (0, HEAD_Y, HEAD_DIST) at rest.
FOCAL_PER_PIXEL = 2.5  # fl = 2.5 * size: a 22.6 degree field of view
HEAD_DIST = 1.0  # m
HEAD_Y = -0.03  # m: the head sits in the upper part of the frame, the shoulders below
TORSO_Z = -0.06  # m: head-frame depth of the plane the (flat) torso layer lives on
MOUTH_OPEN_MAX_M = 0.022  # lip gap at mouth_open = 1


@dataclass
class Camera:
    fl: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def for_size(cls, size: int) -> "Camera":
        return cls(FOCAL_PER_PIXEL * size, size / 2.0, size / 2.0, size, size)

    def project(self, xc: np.ndarray) -> np.ndarray:
        """xc [N, 3] camera coords -> [N, 2] pixel coords (pixel j covers [j, j + 1))."""
        return np.stack([self.fl * xc[:, 0] / xc[:, 2] + self.cx, self.fl * xc[:, 1] / xc[:, 2] + self.cy], 1)

    def photo_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Photo px (x, y) [H, W] seen at each output pixel centre on the torso plane at rest."""
        j = np.arange(self.width) + 0.5
        i = np.arange(self.height) + 0.5
        depth = HEAD_DIST + TORSO_Z
        px = (j - self.cx) * depth / self.fl / M_PER_PX + X0
        py = ((i - self.cy) * depth / self.fl - HEAD_Y) / M_PER_PX + Y0
        return np.meshgrid(px, py)

    @property
    def texels_per_pixel(self) -> float:
        """Photo px per output pixel on the face (> 1: the texture must be prefiltered)."""
        return (HEAD_DIST - 0.09) / self.fl / M_PER_PX


def _gauss_prefilter(img: np.ndarray, texels_per_pixel: float) -> np.ndarray:
    ndi = require("scipy.ndimage", "gt sample synthetic")

    if texels_per_pixel <= 1.0:
        return img
    sigma = 0.5 * np.sqrt(texels_per_pixel**2 - 1)
    return ndi.gaussian_filter(img, (sigma, sigma, 0)).astype(np.float32)


def sample_image(img: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """img [h, w, C], px/py [H, W] float coords (centres at integers) -> [H, W, C], clamped at the border."""
    ndi = require("scipy.ndimage", "gt sample synthetic")

    out = [ndi.map_coordinates(img[..., k], [py, px], order=1, mode="nearest") for k in range(img.shape[2])]
    return np.stack(out, -1).astype(np.float32)


def background_plate(cam: Camera) -> np.ndarray:
    """A blurred, slightly darkened garage scene (skimage's motorcycle_left.png) -> [H, W, 3] float32."""
    import os

    from PIL import Image
    ndi = require("scipy.ndimage", "gt sample synthetic")
    data = require("skimage.data", "gt sample synthetic")

    path = os.path.join(os.path.dirname(data.__file__), "motorcycle_left.png")
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), np.float32) / 255.0  # [500, 741, 3]
    crop = rgb[0:480, 0:480]  # shelves and the wall on the left of the motorcycle
    n = cam.width
    yy = (np.arange(n) + 0.5) * 480 / n - 0.5
    px, py = np.meshgrid(yy, yy)
    plate = sample_image(ndi.gaussian_filter(crop, (6, 6, 0)), px, py)
    # a soft vignette and a little desaturation push the scene back behind the person
    r2 = ((px - 240) / 240) ** 2 + ((py - 240) / 240) ** 2
    grey = plate.mean(-1, keepdims=True)
    plate = (0.75 * plate + 0.25 * grey) * (1 - 0.25 * np.clip(r2, 0, 1))[..., None]
    return np.clip(plate * 0.92 + 0.03, 0, 1).astype(np.float32)


def _torso_mask_photo(model: HeadModel) -> np.ndarray:
    """The person minus the head on the astronaut photo: neck, collar ring, suit -> [512, 512] float32 alpha."""
    from PIL import Image, ImageDraw
    ndi = require("scipy.ndimage", "gt sample synthetic")

    a = model.photo * 255
    chroma = a.max(-1) - a.min(-1)
    nonwall = (chroma > 28) | (a.mean(-1) < 140)
    # hand-drawn bound: keeps the flag (left) and the shuttle model (right) out
    poly = [(188, 150), (262, 150), (300, 178), (312, 205), (318, 232), (352, 290), (352, 520),
            (40, 520), (50, 292), (95, 225), (108, 190), (140, 162)]
    im = Image.new("L", (512, 512), 0)
    ImageDraw.Draw(im).polygon(poly, fill=255)
    bound = np.asarray(im) > 0
    m = bound & nonwall & ~_face_region()
    # the neck continues up behind the jaw (hidden at rest, seen when the head turns or the jaw drops)
    yy, xx = np.mgrid[0:512, 0:512]
    neck = (np.abs(xx - 225) < _neck_half_width(yy)) & (yy > 128) & (yy < 192)
    m = m | neck
    m = ndi.binary_opening(m, iterations=1)
    m = ndi.binary_closing(m, iterations=2)
    m = ndi.binary_fill_holes(m)
    return ndi.gaussian_filter(m.astype(np.float32), 0.7)


def _face_region() -> np.ndarray:
    """Photo pixels of the face's jaw and chin, a little wider than the mesh's jaw -> [512, 512] bool."""
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    half = 48.0 * np.sqrt(np.clip(1 - ((yy - 100) / 80) ** 2, 0, 1)) + 8
    return (yy > 120) & (yy < 181) & (np.abs(xx - 225) < half)


def _neck_half_width(y: np.ndarray) -> np.ndarray:
    """Half-width (photo px) of the neck at photo row y, centred on x = 225."""
    return np.interp(y, [128, 168, 180, 190, 196], [20.0, 21.5, 25.0, 30.0, 34.0])


def _torso_rgb_photo(model: HeadModel) -> np.ndarray:
    """Photo colours for the torso layer: the neck filled in behind the jaw, shaded like a cylinder and under the chin."""
    photo = model.photo.copy()
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    skin = np.median(photo[181:187, 212:238].reshape(-1, 3), 0)
    hw = _neck_half_width(yy)
    neck = (np.abs(xx - 225) < hw + 2) & (yy < 196)
    behind = model.head_mask | _face_region() | ((yy < 183) & neck)
    photo[behind] = skin
    u = np.clip((xx - 225) / hw, -1, 1)
    cyl = np.where(neck, 1 - 0.35 * u**4 - 0.1 * u**2, 1.0)
    chin = 1 - 0.40 * np.clip(1 - (yy - 172) / 16, 0, 1) * (yy > 150)
    return photo * (cyl * np.where(neck, chin, 1.0))[..., None]


def torso_layer(model: HeadModel, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """-> (rgb [H, W, 3] float32, alpha [H, W] float32 in [0, 1]) of the static torso layer."""
    px, py = cam.photo_coords()
    tpp = (HEAD_DIST + TORSO_Z) / cam.fl / M_PER_PX
    rgb = sample_image(_gauss_prefilter(_torso_rgb_photo(model), tpp), px, py)
    alpha = sample_image(_torso_mask_photo(model)[..., None], px, py)[..., 0]
    return rgb, np.clip(alpha, 0, 1)


# ----------------------------------------------------------------------------- driving signals


def loudness_envelope(pcm: np.ndarray, T: int, samples_per_frame: int) -> np.ndarray:
    """RMS of each video frame's own samples -> [T] float32 (full scale = 1)."""
    x = pcm[: T * samples_per_frame].reshape(T, samples_per_frame).astype(np.float64)
    return np.sqrt((x**2).mean(1)).astype(np.float32)


def mouth_from_loudness(rms: np.ndarray) -> np.ndarray:
    """Loudness [T] -> mouth opening [T] in [0, 1]: a 30 dB window under the loud frames, smoothed."""
    ndi = require("scipy.ndimage", "gt sample synthetic")

    db = 20 * np.log10(rms.astype(np.float64) + 1e-6)
    ref = np.percentile(db, 95) if db.size else 0.0
    o = np.clip((db - (ref - 30.0)) / 30.0, 0, 1) ** 1.6
    o = ndi.gaussian_filter1d(o, 0.7, mode="nearest")
    return np.clip(o, 0, 1).astype(np.float32)


def blink_track(T: int, fps: int, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """Random blinks (4-6 frames, every 2-6 s) -> (blink [T] float32 in [0, 1], events)."""
    blink = np.zeros(T, np.float32)
    events = []
    t = rng.uniform(0.4, 1.8)
    while True:
        start = int(round(t * fps))
        n = int(rng.integers(4, 7))
        if start >= T:
            break
        k = np.arange(n)
        prof = np.clip(1.3 * np.sin(np.pi * (k + 0.5) / n), 0, 1)
        end = min(T, start + n)
        blink[start:end] = np.maximum(blink[start:end], prof[: end - start])
        events.append({"start_frame": start, "frames": n})
        t += n / fps + rng.uniform(2.0, 6.0)
    return blink, events


def _smooth_noise(T: int, sigma_frames: float, rng: np.random.Generator) -> np.ndarray:
    ndi = require("scipy.ndimage", "gt sample synthetic")

    pad = int(3 * sigma_frames) + 1
    x = ndi.gaussian_filter1d(rng.standard_normal(T + 2 * pad), sigma_frames, mode="wrap")[pad:pad + T]
    return x / max(float(np.std(x)), 1e-9) if T > 1 else x * 0


HEAD_MOTION_STD = {"yaw_deg": 2.2, "pitch_deg": 1.6, "roll_deg": 0.8, "x_m": 0.003, "y_m": 0.002, "z_m": 0.004}


def head_motion(T: int, fps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth random head motion -> (euler_deg [T, 3] yaw pitch roll, R [T, 3, 3], t [T, 3] in camera coords)."""
    sig = 0.7 * fps
    ypr = np.stack([np.clip(_smooth_noise(T, sig, rng), -2.7, 2.7) * HEAD_MOTION_STD[k]
                    for k in ("yaw_deg", "pitch_deg", "roll_deg")], 1)
    trans = np.stack([np.clip(_smooth_noise(T, sig, rng), -2.7, 2.7) * HEAD_MOTION_STD[k]
                      for k in ("x_m", "y_m", "z_m")], 1)
    trans = trans + np.array([0.0, HEAD_Y, HEAD_DIST])
    return ypr.astype(np.float32), euler_to_matrix(ypr), trans


def euler_to_matrix(ypr_deg: np.ndarray) -> np.ndarray:
    """[T, 3] (yaw about y, pitch about x, roll about z; degrees) -> R [T, 3, 3] = Ry(yaw) Rx(pitch) Rz(roll)."""
    y, p, r = np.deg2rad(ypr_deg.astype(np.float64)).T
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    o, z = np.ones_like(y), np.zeros_like(y)
    Ry = np.stack([np.stack([cy, z, sy], -1), np.stack([z, o, z], -1), np.stack([-sy, z, cy], -1)], -2)
    Rx = np.stack([np.stack([o, z, z], -1), np.stack([z, cp, -sp], -1), np.stack([z, sp, cp], -1)], -2)
    Rz = np.stack([np.stack([cr, -sr, z], -1), np.stack([sr, cr, z], -1), np.stack([z, z, o], -1)], -2)
    return Ry @ Rx @ Rz
