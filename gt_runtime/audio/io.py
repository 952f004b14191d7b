"""Reading speech from files: any format libsndfile reads, mixed to mono, resampled.

The front end wants 16 kHz mono float32. Files at other rates or with several
channels are converted (soxr, high quality). Files that cannot give usable speech
(unreadable, empty, NaN/Inf samples, silent) raise a one-line `InputError`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gt_runtime.contract import SAMPLE_RATE
from gt_runtime.errors import InputError

# Peak below this (about -80 dBFS) is digital silence: nothing would move the mouth.
SILENCE_PEAK = 1e-4
_FIX = "re-encode it, e.g.: ffmpeg -i IN -ac 1 -ar 16000 out.wav"


def to_mono(pcm: np.ndarray) -> np.ndarray:
    """pcm [S] or [S, C] -> [S] float32, channels averaged."""
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm.ndim == 2:
        pcm = pcm.mean(axis=1, dtype=np.float32)
    if pcm.ndim != 1:
        raise InputError(f"audio: expected samples [S] or [S, C], got shape {pcm.shape}")
    return pcm


def resample(pcm: np.ndarray, sample_rate: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """pcm [S] float32 at sample_rate -> [S'] float32 at target_sr (soxr HQ)."""
    if sample_rate == target_sr:
        return np.ascontiguousarray(pcm, dtype=np.float32)
    if sample_rate < 4000 or sample_rate > 384000:
        raise InputError(f"audio: unsupported sample rate {sample_rate} Hz | expected 4 kHz to 384 kHz")
    import soxr

    return soxr.resample(pcm, sample_rate, target_sr, quality="HQ").astype(np.float32, copy=False)


def check_pcm(pcm: np.ndarray, where: str, allow_silent: bool = False) -> None:
    """Raise a one-line InputError if pcm [S] cannot drive a talking head."""
    if pcm.size == 0:
        raise InputError(f"{where}: the audio is empty (0 samples) | give a file with speech in it")
    if not np.all(np.isfinite(pcm)):
        raise InputError(f"{where}: the audio has NaN or Inf samples | {_FIX}")
    if not allow_silent and float(np.max(np.abs(pcm))) < SILENCE_PEAK:
        raise InputError(f"{where}: the audio is silent (peak below -80 dBFS) | give a file with speech in it")


def load_audio(path: str | Path, target_sr: int = SAMPLE_RATE, allow_silent: bool = False) -> tuple[np.ndarray, int]:
    """Read a speech file -> (pcm [S] float32 mono at target_sr, target_sr).

    Raises InputError with the file name and a fix for a missing, unreadable,
    empty, non-finite or (unless allow_silent) silent file.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such audio file | check the path")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError or TypeError
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable audio file ({msg}) | {_FIX}") from None
    pcm = to_mono(data)
    check_pcm(pcm, str(path), allow_silent=allow_silent)
    return resample(pcm, sr, target_sr), target_sr


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write pcm [S] float32 as 16-bit PCM wav."""
    import soundfile as sf

    sf.write(str(path), np.clip(pcm, -1.0, 1.0), sample_rate, subtype="PCM_16")
