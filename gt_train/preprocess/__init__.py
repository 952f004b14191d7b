"""`gt preprocess`: a video of one person talking -> an identity dataset (README: "Identity dataset format").

    from gt_train.preprocess import PreprocessConfig, preprocess
    preprocess(PreprocessConfig(video="talk.mp4", out_dir="data/may", size=512))

Steps (gt_train.preprocess.pipeline): decode at 25 fps by timestamps (video_io), find the
face on a sample of frames and fix one square crop for the clip, landmarks per frame at
the working resolution (landmarks: dlib or MediaPipe behind `LandmarkDetector`), gaps
interpolated, head pose by PnP against MediaPipe's canonical face (pose), blink from the
eye aspect ratio (blink), background plate and torso images (background), the fitted
face (warped to the landmarks) + a head shell as points_init.ply, audio features (mel, or a local HuBERT /
wav2vec 2.0 checkpoint with `audio_model=PATH`: audio_model.py), split, transforms.json, and preview.mp4.
Heavy optional packages (dlib, mediapipe, transformers) are imported when used.
"""
from gt_train.preprocess.config import PreprocessConfig

__all__ = ["PreprocessConfig", "preprocess"]


def preprocess(cfg: PreprocessConfig):
    """Run the whole pipeline -> the dataset directory (pathlib.Path)."""
    from gt_train.preprocess.pipeline import preprocess as _run

    return _run(cfg)
