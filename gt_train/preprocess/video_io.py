"""Reading the user's video with PyAV: constant-rate frames by timestamp, and 16 kHz mono audio.

Any container and codec FFmpeg reads. Variable or other frame rates become `fps`
(25) by timestamp resampling: output frame k (time t0 + k / fps, t0 = the first video
frame's time) is the decoded frame whose own time is nearest. The clip ends with the
last decoded frame's display interval. Audio is mixed to mono, resampled to 16 kHz,
aligned to t0 and cut or zero-padded to T / fps seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from gt_runtime.contract import SAMPLE_RATE
from gt_runtime.errors import InputError



@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    duration: float  # seconds, from the container or stream (estimate)
    has_audio: bool


def _fail(path: Path, what: str) -> InputError:
    return InputError(f"{path}: {what} | give a readable video file (re-encode it: ffmpeg -i {path.name} -c:v libx264 -c:a aac fixed.mp4)")


def probe(path: str | Path) -> VideoInfo:
    """Open the file and read its header -> VideoInfo; InputError when it is not a video."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file | give the path of a video of one person talking")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise _fail(path, "no video stream")
            s = c.streams.video[0]
            dur = None
            if s.duration is not None and s.time_base is not None:
                dur = float(s.duration * s.time_base)
            elif c.duration is not None:
                dur = c.duration / 1e6
            return VideoInfo(path, int(s.codec_context.width), int(s.codec_context.height), float(dur or 0.0), bool(c.streams.audio))
    except InputError:
        raise
    except Exception as exc:  # av.error.*: corrupt or unknown container
        raise _fail(path, f"not a readable video ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def iter_frames(path: str | Path, fps: int = 25) -> Iterator[tuple[int, "object"]]:
    """-> (k, av.VideoFrame) at a constant fps, by nearest timestamp. Raises InputError on decode errors."""
    import av

    path = Path(path)
    try:
        c = av.open(str(path))
    except Exception as exc:
        raise _fail(path, f"not a readable video ({type(exc).__name__})") from None
    try:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        prev, prev_t, t0, k, n_dec = None, None, None, 0, 0
        try:
            for frame in c.decode(stream):
                t = frame.time if frame.time is not None else (n_dec / float(stream.average_rate or fps))
                n_dec += 1
                if t0 is None:
                    t0 = t
                if prev is not None:
                    mid = 0.5 * (prev_t + t)
                    while t0 + k / fps < mid:
                        yield k, prev
                        k += 1
                prev, prev_t = frame, t
        except av.error.FFmpegError as exc:
            raise _fail(path, f"decoding failed after {n_dec} frames ({type(exc).__name__})") from None
        if prev is None:
            raise _fail(path, "no decodable video frames")
        rate = float(stream.average_rate) if stream.average_rate else fps
        end = prev_t + 1.0 / rate  # the last frame is shown for one source frame interval
        while t0 + k / fps < end - 0.5 / fps + 1e-9:
            yield k, prev
            k += 1
    finally:
        c.close()


def start_time(path: str | Path) -> float:
    """Time (s) of the first decoded video frame."""
    import av

    with av.open(str(path)) as c:
        for frame in c.decode(c.streams.video[0]):
            return float(frame.time or 0.0)
    return 0.0


def read_audio(path: str | Path, t0: float, n_samples: int) -> tuple[np.ndarray, bool]:
    """16 kHz mono float32 audio from t0 for n_samples -> (pcm [n_samples], had_audio)."""
    import av

    path = Path(path)
    out = np.zeros(n_samples, np.float32)
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return out, False
        stream = c.streams.audio[0]
        res = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks, first_t = [], None
        try:
            for frame in c.decode(stream):
                if first_t is None:
                    first_t = float(frame.time or 0.0)
                for r in res.resample(frame):
                    chunks.append(r.to_ndarray().reshape(-1))
            for r in res.resample(None):
                chunks.append(r.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            raise _fail(path, f"audio decoding failed ({type(exc).__name__})") from None
    if not chunks:
        return out, False
    pcm = np.concatenate(chunks).astype(np.float32)
    offset = int(round(((first_t or 0.0) - t0) * SAMPLE_RATE))  # audio sample 0 sits at first_t
    if offset >= 0:
        n = max(0, min(n_samples - offset, pcm.size))
        out[offset:offset + n] = pcm[:n]
    else:
        src = pcm[-offset:]
        n = min(n_samples, src.size)
        out[:n] = src[:n]
    return np.nan_to_num(np.clip(out, -1, 1)), True
