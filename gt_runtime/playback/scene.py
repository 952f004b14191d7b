"""Playback scene of a bundle: background plate, torso frames and the camera/blink track.

Speech longer than the recorded clip ping-pongs the track (0, 1, .., T-1, T-2, .., 1, 0, 1, ..),
so there is no length cap and no jump at the loop point. The per-frame background is the
plate with the torso RGBA of the same track frame composited over it; the head is then
splatted over that background.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from gt_runtime.contract import TORSO_CACHE_MB
from gt_runtime.errors import InputError


def pingpong(t, n: int):
    """Frame index t (int or int array) -> track index in [0, n-1], bouncing at both ends."""
    if n <= 1:
        return np.zeros_like(t) if isinstance(t, np.ndarray) else 0
    period = 2 * n - 2
    m = np.asarray(t) % period
    out = np.where(m < n, m, period - m)
    return out if isinstance(t, np.ndarray) else int(out)


def _read_image(path, mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except Exception as exc:
        raise InputError(f"{path}: cannot decode the image ({exc}) | re-export the bundle with gt export") from None


def composite_over(plate: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """The reference composite: plate [H, W, 3] float32, rgba [H, W, 4] uint8 -> [H, W, 3] float32
    rgb / 255 * a + plate * (1 - a) with a = alpha / 255 (the C++ form: gt_runtime.raster._cpu)."""
    a = rgba[..., 3:4].astype(np.float32) / np.float32(255.0)
    fg = rgba[..., :3].astype(np.float32) / np.float32(255.0)
    return fg * a + plate * (np.float32(1.0) - a)


def _composite(plate: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    from gt_runtime.raster import _cpu

    if _cpu.available():
        return _cpu.load().composite_over(plate, rgba)  # one pass, the same floats
    return composite_over(plate, rgba)


class Scene:
    """Immutable scene data of a bundle plus a small thread-safe cache of composited backgrounds.

    c2w [T, 4, 4], blink [T]; `background(t)` -> [H, W, 3] float32 in [0, 1] for frame t.
    """

    def __init__(self, bundle, cache_frames: int = 8):
        self.width, self.height = bundle.width, bundle.height
        self.c2w = np.ascontiguousarray(bundle.track["c2w"], np.float32)
        self.blink = np.ascontiguousarray(bundle.track["blink"], np.float32)
        self.num_frames = int(self.c2w.shape[0])
        self.viewmats = np.linalg.inv(self.c2w.astype(np.float64)).astype(np.float32)  # world -> camera
        plate = _read_image(bundle.file("scene/background.jpg"), "RGB")
        if plate.shape != (self.height, self.width, 3):
            raise InputError(f"{bundle.file('scene/background.jpg')}: size {plate.shape[1]}x{plate.shape[0]} | expected {self.width}x{self.height} (manifest); re-export the bundle")
        self.plate = plate.astype(np.float32) / 255.0
        self.torso_paths = [bundle.file(r) for r in bundle.torso_files]
        self.torso_box = bundle.torso_box  # (top, left) of cropped torso frames, None: whole frames
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()  # composited backgrounds, most recent last
        self._cache_frames = cache_frames
        self._torso_rgba: dict[int, np.ndarray] = {}
        self._torso_budget = int(float(TORSO_CACHE_MB.get()) * 2**20)  # bytes of decoded torso frames kept
        self._torso_bytes = 0
        self._lock = threading.Lock()

    def track_index(self, t):
        """Frame index (int or [B]) -> ping-pong track index."""
        return pingpong(t, self.num_frames)

    def background_of_track(self, i: int) -> np.ndarray:
        """Track index i -> [H, W, 3] float32: plate with torso i (if any) composited over it."""
        if not self.torso_paths:
            return self.plate
        with self._lock:
            hit = self._cache.get(i)
            if hit is not None:
                self._cache.move_to_end(i)
                return hit
        rgba = self._torso(i)
        if self.torso_box is None:
            bg = _composite(self.plate, rgba)
        else:  # a crop (Bundle.torso_box): outside it the plate alone
            (top, left), (h, w) = self.torso_box, rgba.shape[:2]
            bg = self.plate.copy()
            bg[top:top + h, left:left + w] = _composite(self.plate[top:top + h, left:left + w], rgba)
        bg.flags.writeable = False
        with self._lock:
            self._cache[i] = bg
            while len(self._cache) > self._cache_frames:
                self._cache.popitem(last=False)
        return bg

    def _torso(self, i: int) -> np.ndarray:
        """Track index i -> torso RGBA uint8 [H, W, 4] (or its crop), decoded once while GT_TORSO_CACHE_MB allows
        (a PNG decode costs more than the rest of the frame's composite and raster setup)."""
        k = i % len(self.torso_paths)
        hit = self._torso_rgba.get(k)
        if hit is not None:
            return hit
        path = self.torso_paths[k]
        rgba = _read_image(path, "RGBA")
        if self.torso_box is None:
            if rgba.shape != (self.height, self.width, 4):
                raise InputError(f"{path}: size {rgba.shape[1]}x{rgba.shape[0]} | expected {self.width}x{self.height}; re-export the bundle")
        elif self.torso_box[0] + rgba.shape[0] > self.height or self.torso_box[1] + rgba.shape[1] > self.width:
            raise InputError(f"{path}: a {rgba.shape[1]}x{rgba.shape[0]} crop at (left, top) = {self.torso_box[::-1]} | "
                             f"expected inside {self.width}x{self.height}; re-export the bundle")
        with self._lock:
            if k not in self._torso_rgba and self._torso_bytes + rgba.nbytes <= self._torso_budget:
                rgba.flags.writeable = False
                self._torso_rgba[k] = rgba  # kept for good: the track plays them over and over
                self._torso_bytes += rgba.nbytes
        return rgba

    def background(self, t: int) -> np.ndarray:
        """Frame t -> [H, W, 3] float32 background (read-only array)."""
        return self.background_of_track(self.track_index(t))
