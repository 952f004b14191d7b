"""Torch-side view of an IdentityDataset for training (README: "Identity dataset format").

Every frame is held in memory as uint8: the image [H, W, 3] and its background
(the plate with the frame's torso alpha-composited over it: the rendered head goes
over this, with no face mask). Per frame it also gives the 15-frame audio window
(docs/MODEL.md: feats[t-8 .. t+6] clamped), the blink value, the camera (c2w and
its inverse viewmat) and the lip box from landmarks 48..67 with a margin.

If the working resolution differs from the dataset's, images are resampled
(Lanczos) and the intrinsics and landmarks scaled.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gt_runtime.util.progress import progress
from gt_train.data.format import MOUTH, IdentityDataset, load_identity, working_camera
from gt_train.model.tokens import window_indices


@dataclass
class Frame:
    """One training sample (torch tensors on the target device)."""

    index: int
    image: torch.Tensor  # [H, W, 3] float32 in [0, 1]
    background: torch.Tensor  # [H, W, 3] float32: plate + torso
    audio: torch.Tensor  # [15, 2, D]
    blink: torch.Tensor  # [] float32
    c2w: torch.Tensor  # [4, 4]
    viewmat: torch.Tensor  # [4, 4] world -> camera
    lip_box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels


def lip_box(landmarks: np.ndarray, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """landmarks [68, 2] pixels -> (x0, y0, x1, y1) of the mouth points 48..67 grown by margin x size per side (>= 2 px)."""
    m = landmarks[MOUTH]
    lo, hi = m.min(0), m.max(0)
    pad = np.maximum((hi - lo) * margin, 2.0)
    x0, y0 = np.floor(lo - pad).astype(int)
    x1, y1 = np.ceil(hi + pad).astype(int) + 1
    x0, y0 = max(0, min(x0, width - 2)), max(0, min(y0, height - 2))
    return x0, y0, max(x0 + 2, min(x1, width)), max(y0 + 2, min(y1, height))


def mouth_box(landmarks: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """landmarks [68, 2] -> a box fixed relative to the lip corners (48, 54), whatever the opening:
    x: centre -+ 0.6 w, y: centre - 0.35 w .. centre + 0.6 w (w = corner distance). For the mouth-opening measure."""
    c = (landmarks[48] + landmarks[54]) / 2
    w = float(np.linalg.norm(landmarks[54] - landmarks[48]))
    x0, x1 = int(np.floor(c[0] - 0.6 * w)), int(np.ceil(c[0] + 0.6 * w))
    y0, y1 = int(np.floor(c[1] - 0.35 * w)), int(np.ceil(c[1] + 0.6 * w))
    x0, y0 = max(0, min(x0, width - 1)), max(0, min(y0, height - 1))
    return x0, y0, max(x0 + 1, min(x1, width)), max(y0 + 1, min(y1, height))


class TrainData:
    """Loads every frame of an identity into memory (uint8) at the working resolution."""

    def __init__(self, root: str | Path, resolution: int | None = None, lip_margin: float = 0.25,
                 device: str | torch.device = "cpu", identity: IdentityDataset | None = None, quiet: bool = False):
        from PIL import Image

        self.ds = ds = identity if identity is not None else load_identity(root)
        W, H, k = working_camera(ds.intrinsics, resolution)
        self.width, self.height = W, H
        self.K = torch.tensor([[k["fx"], 0, k["cx"]], [0, k["fy"], k["cy"]], [0, 0, 1]], dtype=torch.float32)
        self.device = torch.device(device)

        def load(path: Path, mode: str) -> np.ndarray:
            with Image.open(path) as im:
                im = im.convert(mode)
                if im.size != (W, H):
                    im = im.resize((W, H), Image.LANCZOS)
                return np.asarray(im)

        plate = load(ds.background_path, "RGB").astype(np.float32)
        T = ds.num_frames
        self.images = np.empty((T, H, W, 3), np.uint8)
        self.backgrounds = np.empty((T, H, W, 3), np.uint8)
        items = range(T) if quiet else progress(range(T), "loading frames", total=T, unit="frame")
        for t in items:
            self.images[t] = load(ds.frame_paths[t], "RGB")
            torso = load(ds.torso_paths[t], "RGBA").astype(np.float32)
            a = torso[..., 3:4] / 255.0
            self.backgrounds[t] = np.clip(np.rint(torso[..., :3] * a + plate * (1 - a)), 0, 255).astype(np.uint8)
        self.landmarks = ds.landmarks * np.array([W / ds.intrinsics.width, H / ds.intrinsics.height], np.float32)
        self.lip_boxes = [lip_box(self.landmarks[t], lip_margin, W, H) for t in range(T)]
        self.mouth_boxes = [mouth_box(self.landmarks[t], W, H) for t in range(T)]
        self.features = torch.from_numpy(np.ascontiguousarray(ds.audio_features, np.float32))  # [T, 2, D]
        self.audio_dim = int(self.features.shape[-1])
        self.blink = torch.from_numpy(ds.blink.astype(np.float32))
        self.c2w = torch.from_numpy(ds.c2w.astype(np.float32))
        self.viewmats = torch.linalg.inv(self.c2w)
        self.train_idx = [int(i) for i in ds.train_idx]
        self.val_idx = [int(i) for i in ds.val_idx]
        self.points = ds.points_init.astype(np.float32)

    @property
    def num_frames(self) -> int:
        return len(self.images)

    def audio_window(self, t: int) -> torch.Tensor:
        """-> [15, 2, D] features of frames t-8 .. t+6 (clamped)."""
        return self.features[window_indices(t, self.num_frames)]

    def frame(self, t: int) -> Frame:
        dev = self.device
        img = torch.from_numpy(self.images[t]).to(dev, torch.float32) / 255.0
        bg = torch.from_numpy(self.backgrounds[t]).to(dev, torch.float32) / 255.0
        return Frame(t, img, bg, self.audio_window(t).to(dev), self.blink[t].to(dev), self.c2w[t].to(dev),
                     self.viewmats[t].to(dev), self.lip_boxes[t])

    def order(self, seed: int, epoch: int) -> list[int]:
        """Deterministic shuffled train indices for an epoch."""
        rng = np.random.default_rng([seed, epoch])
        return [self.train_idx[i] for i in rng.permutation(len(self.train_idx))]

    def train_index(self, seed: int, iteration: int) -> int:
        """Frame of the global iteration (0-based): epoch-wise permutations, so resume replays the same order."""
        n = len(self.train_idx)
        return self.order(seed, iteration // n)[iteration % n]

    def scene_extent(self) -> float:
        """3DGS 'cameras_extent': 1.1 x the largest camera distance from the mean camera centre (>= the head size)."""
        centres = self.c2w[:, :3, 3]
        d = (centres - centres.mean(0)).norm(dim=-1).max().item()
        head = float(np.linalg.norm(self.points.max(0) - self.points.min(0)))
        return 1.1 * max(d, head)
