"""Audio front end shared by training and runtime (DESIGN.md section 5)."""
from gt_runtime.audio.io import SAMPLE_RATE, check_pcm, load_audio, resample, to_mono, write_wav
from gt_runtime.audio.mel import FPS, LOOKAHEAD_SAMPLES, MelStream, mel_features, num_video_frames

__all__ = [
    "FPS", "LOOKAHEAD_SAMPLES", "SAMPLE_RATE", "MelStream", "check_pcm", "load_audio",
    "mel_features", "num_video_frames", "resample", "to_mono", "write_wav",
]
