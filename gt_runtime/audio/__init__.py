"""Audio front ends shared by training and runtime (README: "Audio front end").

`mel` (numpy, D = 80) is the default; `hubert` / `wav2vec2` run a speech model exported to
ONNX on fixed blocks with context (gt_runtime.audio.blocks). All give features [T, 2, D]
(2 rows per 40 ms video frame), whole-file and chunked alike (gt_runtime.audio.frontend).
"""
from gt_runtime.audio.blocks import BlockSpec, BlockStream, block_features
from gt_runtime.audio.frontend import (
    FRONTENDS, BlockFrontend, MelFrontend, for_bundle, for_dataset, frontend_from_meta, read_dataset_meta,
)
from gt_runtime.audio.io import SAMPLE_RATE, check_pcm, load_audio, resample, to_mono, write_wav
from gt_runtime.audio.mel import FPS, LOOKAHEAD_SAMPLES, MelStream, mel_features, num_video_frames

__all__ = [
    "FPS", "FRONTENDS", "LOOKAHEAD_SAMPLES", "SAMPLE_RATE", "BlockFrontend", "BlockSpec", "BlockStream", "MelFrontend",
    "MelStream", "block_features", "check_pcm", "for_bundle", "for_dataset", "frontend_from_meta", "load_audio",
    "mel_features", "num_video_frames", "read_dataset_meta", "resample", "to_mono", "write_wav",
]
