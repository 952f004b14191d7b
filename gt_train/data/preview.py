"""A quick look at an identity dataset: an mp4 of its frames with its sound, and a contact sheet PNG."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gt_runtime.util.progress import progress
from gt_runtime.playback.video import contact_sheet
from gt_train.data.format import load_identity


@dataclass
class PreviewConfig:
    dataset: Path
    out: Path = Path("out/preview.mp4")
    sheet: Path | None = None  # contact sheet PNG; None -> next to the mp4
    sheet_frames: int = 8
    landmarks: bool = False  # draw the 68 landmarks on the frames


def _draw_landmarks(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """img [H, W, 3] uint8, pts [68, 2] pixels -> a copy with 3x3 green dots."""
    img = img.copy()
    h, w = img.shape[:2]
    for x, y in np.round(pts).astype(int):
        img[max(0, y - 1):min(h, y + 2), max(0, x - 1):min(w, x + 2)] = (0, 255, 0)
    return img


def write_preview(cfg: PreviewConfig) -> tuple[Path, Path]:
    """Write cfg.out (H.264 + AAC mp4 of the dataset's frames and audio.wav) and a contact sheet -> (mp4, png)."""
    from PIL import Image

    from gt_runtime.audio import load_audio
    from gt_runtime.playback.video import Mp4Writer

    ds = load_identity(cfg.dataset)
    pcm, sr = load_audio(ds.audio_path, allow_silent=True)
    sheet_path = cfg.sheet or cfg.out.with_suffix(".png")
    picks = set(np.linspace(0, ds.num_frames - 1, cfg.sheet_frames).round().astype(int).tolist())
    chosen = []
    with Mp4Writer(cfg.out, ds.intrinsics.width, ds.intrinsics.height, sample_rate=sr) as writer:
        writer.write_audio(pcm)
        for t in progress(range(ds.num_frames), "preview", total=ds.num_frames, unit="frame"):
            frame = np.asarray(Image.open(ds.frame_paths[t]).convert("RGB"))
            if cfg.landmarks:
                frame = _draw_landmarks(frame, ds.landmarks[t])
            writer.write(frame)
            if t in picks:
                chosen.append(frame)
    sheet_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(chosen)).save(sheet_path)
    return cfg.out, sheet_path
