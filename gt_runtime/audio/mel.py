"""The `mel` audio front end (README: "Audio front end"), shared by training and runtime.

16 kHz mono -> 25 ms Hann window, 10 ms hop, 512-point FFT, 80 Slaney mel bins
(0-8 kHz), log10, fixed normalisation -> 2 rows per video frame at 25 fps.

Alignment: STFT frame j is centred on the middle of the 10 ms hop
[160 j, 160 j + 160). Row r of the 50 Hz output is the mean of STFT frames 2r and
2r+1, i.e. it describes [20 r, 20 r + 20) ms. Video frame t gets rows 2t and 2t+1,
i.e. exactly its own 40 ms [40 t, 40 t + 40). Samples before 0 and after the end
are zeros, so the first frame and the last frame (the edge frames) see zero
padding; the streaming path pads the same way, on `finish()`.

Every video frame is computed by the same fixed-shape numpy calls, [4, 512] FFT
and [4, 257] @ [257, 80] product, so the whole-file and the chunked paths give
bit-identical results whatever the chunk sizes.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from gt_runtime.contract import FPS, N_MELS, ROWS_PER_FRAME, SAMPLE_RATE, SAMPLES_PER_FRAME

WIN = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
HOPS_PER_FRAME = SAMPLE_RATE // FPS // HOP  # 4
# A window centred on hop j starts (WIN - HOP) / 2 samples before the hop.
PAD_LEFT = (WIN - HOP) // 2  # 120
# Samples past the end of video frame t that frame t needs: its last window's tail.
LOOKAHEAD_SAMPLES = WIN - HOP - PAD_LEFT  # 120 = 7.5 ms
LOG_FLOOR = 1e-10


def _hz_to_mel(f):
    """Slaney mel scale (librosa's default): linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=None)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE, fmax: float = 8000.0) -> np.ndarray:
    """Slaney-normalised triangular filters -> [n_fft // 2 + 1, n_mels] float32."""
    fft_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return np.ascontiguousarray(weights.T, dtype=np.float32)


@lru_cache(maxsize=None)
def _window() -> np.ndarray:
    n = np.arange(WIN)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / WIN)).astype(np.float32)  # periodic Hann


def _frame_features(span: np.ndarray) -> np.ndarray:
    """span [640 + 280] samples around one video frame -> [2, 80] float32 features."""
    idx = np.arange(HOPS_PER_FRAME)[:, None] * HOP + np.arange(WIN)[None, :]
    frames = span[idx] * _window()  # [4, 400]
    power = np.abs(np.fft.rfft(frames, n=N_FFT, axis=1)).astype(np.float32) ** 2  # [4, 257]
    mel = power @ mel_filterbank()  # [4, 80]
    logmel = (np.log10(np.maximum(mel, LOG_FLOOR)) + 4.0) / 4.0
    return logmel.reshape(ROWS_PER_FRAME, 2, N_MELS).mean(axis=1).astype(np.float32)


def num_video_frames(num_samples: int, fps: int = FPS, sample_rate: int = SAMPLE_RATE) -> int:
    """Video frames that cover num_samples of audio: ceil, so no speech is dropped."""
    return -(-num_samples * fps // sample_rate)


def mel_features(pcm: np.ndarray, sample_rate: int = SAMPLE_RATE, num_frames: int | None = None) -> np.ndarray:
    """pcm [S] float32 mono at 16 kHz -> features [T, 2, 80] float32, one entry per video frame.

    T defaults to ceil(S / 640) (25 fps); with num_frames the audio is zero-padded
    or cut to exactly that many frames.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"mel_features: sample_rate {sample_rate} | expected {SAMPLE_RATE}; resample first (gt_runtime.audio.resample)")
    pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
    stream = MelStream()
    out = stream.push(pcm)
    tail = stream.finish(num_frames if num_frames is not None else num_video_frames(pcm.size))
    feats = np.concatenate([out, tail], axis=0) if len(tail) else out
    return feats[:num_frames] if num_frames is not None else feats


class MelStream:
    """Chunked `mel` front end: push any number of samples, get every complete video frame.

    A frame t is complete once samples up to 640 (t + 1) + LOOKAHEAD_SAMPLES have
    arrived, so the front end's lookahead is 7.5 ms. `finish(T)` zero-pads the end
    and returns the remaining frames up to T in total. The output equals
    `mel_features` of the concatenated audio, bit for bit.
    """

    def __init__(self) -> None:
        # Samples kept from absolute index `_offset` on; zeros stand before sample 0.
        self._buf = np.zeros(PAD_LEFT, dtype=np.float32)
        self._offset = -PAD_LEFT
        self._next = 0  # next video frame to emit
        self._received = 0

    @property
    def frames_emitted(self) -> int:
        return self._next

    @property
    def samples_received(self) -> int:
        return self._received

    def _emit(self, limit: int) -> np.ndarray:
        rows = []
        span_len = SAMPLES_PER_FRAME + WIN - HOP
        while self._next < limit:
            start = self._next * SAMPLES_PER_FRAME - PAD_LEFT - self._offset
            rows.append(_frame_features(self._buf[start:start + span_len]))
            self._next += 1
        # Drop samples that no later frame needs.
        keep_from = self._next * SAMPLES_PER_FRAME - PAD_LEFT - self._offset
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._offset += keep_from
        return np.stack(rows) if rows else np.zeros((0, ROWS_PER_FRAME, N_MELS), np.float32)

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """pcm [S] float32 at 16 kHz -> features [n, 2, 80] of the frames now complete."""
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, pcm])
        self._received += pcm.size
        complete = max(0, (self._received - LOOKAHEAD_SAMPLES) // SAMPLES_PER_FRAME)
        return self._emit(complete)

    def finish(self, total_frames: int | None = None) -> np.ndarray:
        """Zero-pad the end -> features [n, 2, 80] of the remaining frames (up to total_frames)."""
        total = num_video_frames(self._received) if total_frames is None else total_frames
        need = total * SAMPLES_PER_FRAME + LOOKAHEAD_SAMPLES - (self._offset + self._buf.size)
        if need > 0:
            self._buf = np.concatenate([self._buf, np.zeros(need, np.float32)])
        return self._emit(total)
