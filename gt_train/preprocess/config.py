"""`PreprocessConfig`: what `gt preprocess` does, saved as preprocess.json in the dataset."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class PreprocessConfig:
    """Video of one person talking -> identity dataset (DESIGN.md section 3)."""

    video: Path
    out_dir: Path
    size: int = 512  # square working resolution (frames are size x size)
    fps: int = 25  # output frame rate (the dataset format and the mel front end need 25)
    detector: str = "auto"  # "dlib" | "mediapipe" | "auto" (see gt_train.preprocess.landmarks)
    crop_scale: float = 2.3  # crop side / face size (brows-to-chin and ear-to-ear extent of the landmarks)
    max_gap_s: float = 0.5  # face lost for longer than this -> error; shorter gaps are interpolated
    min_seconds: float = 2.0  # shorter clips are refused
    pose_smoothing: float = 1.0  # Gaussian sigma (frames) on the head track
    n_points: int = 20000  # points in points_init.ply
    preview: bool = True  # write preview.mp4 (landmarks and head axes over the frames)
    progress: bool = True  # rich progress bars on stderr

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k not in ("out_dir", "progress")}
