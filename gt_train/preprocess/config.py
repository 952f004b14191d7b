"""`PreprocessConfig`: what `gt preprocess` does, saved as preprocess.json in the dataset."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from gt_runtime.errors import InputError


@dataclass
class PreprocessConfig:
    """Video of one person talking -> identity dataset (README: "Identity dataset format")."""

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
    # Audio front end (README: "Audio front end"): None -> `mel` (D = 80). A local transformers HubertModel /
    # Wav2Vec2Model checkpoint directory -> `hubert` / `wav2vec2` features (D = its hidden size) on fixed
    # blocks (gt_runtime.audio.blocks); see gt_train.preprocess.audio_model.
    audio_model: Path | None = None
    audio_layer: int | None = None  # None: last_hidden_state; k: hidden_states[k] (0 = encoder input)
    audio_block_ms: float = 1000.0  # block core (rounded to whole 40 ms frames)
    audio_left_ms: float = 500.0  # left context of a block
    audio_right_ms: float = 200.0  # right context of a block (added to the runtime's lookahead)

    def audio_config(self):
        """-> gt_train.preprocess.audio_model.AudioModelConfig, or None for mel."""
        if self.audio_model is None:
            if self.audio_layer is not None:
                raise InputError(f"--audio-layer {self.audio_layer}: needs --audio-model | give the checkpoint directory, or drop --audio-layer")
            return None
        from gt_train.preprocess.audio_model import AudioModelConfig

        return AudioModelConfig(Path(self.audio_model), self.audio_layer, self.audio_block_ms, self.audio_left_ms, self.audio_right_ms)

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k not in ("out_dir", "progress")}
