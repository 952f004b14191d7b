"""Streaming session: push PCM audio in any chunk size, pull every frame whose audio window is complete.

All per-stream state lives here (resampler, front-end stream, feature history, frame
counter, render state); the `Player` it comes from holds only shared immutable data.

Frame t needs the features of frames up to t+6 (docs/MODEL.md: window t-8 .. t+6), and
feature frame u needs some audio past its end: 7.5 ms with the `mel` front end, so the
lookahead is 6 x 40 ms + 7.5 ms = 247.5 ms (`lookahead_ms`). The `hubert` / `wav2vec2`
front ends compute fixed blocks (gt_runtime.audio.blocks), so feature frame u waits for
the rest of its block and the block's right context: with the default 1 s blocks and
0.2 s right context, 6 x 40 + 960 + 200 + 2.5 = 1402.5 ms (the worst case, for the frame
whose window ends on the first frame of a block). Frames are rendered in fixed batches
[kB, (k+1)B) of the speech's frame indices, whatever the chunking, so chunked output
equals whole-file output exactly. `finish()` ends the speech: the last frames' windows
are clamped to the speech's last frame, as the whole-file path does.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from gt_runtime.audio import num_video_frames
from gt_runtime.audio.io import to_mono
from gt_runtime.contract import SAMPLE_RATE, SAMPLES_PER_FRAME, WINDOW_AFTER, WINDOW_BEFORE
from gt_runtime.errors import InputError



class Session:
    """One audio stream -> frames. Create with `Player.session()`."""

    def __init__(self, pipeline, batch: int = 1, overlap: bool | None = None):
        if batch < 1:
            raise InputError(f"--batch {batch}: must be at least 1 | use 1 for the lowest latency")
        self._pipe = pipeline
        self.batch = int(batch)
        self.state = pipeline.new_state(overlap)
        self._frontend = pipeline.frontend
        self._audio = self._frontend.stream()  # mel or the model front end's blocks
        self._sr = None
        self._resampler = None
        self._feats = np.zeros((0, 2, self._frontend.dim), np.float32)
        self._feat_offset = 0         # speech frame index of self._feats[0]
        self._n_feats = 0             # feature frames computed so far
        self._next = 0                # next frame to render
        self._total = None            # speech frame count, known after finish()
        self.samples_16k = 0

    # -- properties ----------------------------------------------------------------------
    @property
    def lookahead_ms(self) -> float:
        """Audio that must arrive after a frame's own 40 ms before it can be rendered (ms), batching excluded.

        The worst case over frames: 247.5 ms with mel; with a block front end it depends on the frame's
        place in its block, and this is the first frame of a block (gt_runtime.audio.blocks).
        """
        return (WINDOW_AFTER * SAMPLES_PER_FRAME + self._frontend.lookahead_samples) / SAMPLE_RATE * 1000.0

    @property
    def audio_frontend(self) -> str:
        return self._frontend.name

    @property
    def frames_emitted(self) -> int:
        return self._next

    @property
    def finished(self) -> bool:
        return self._total is not None

    @property
    def timings(self):
        return self.state.timings

    # -- audio in ------------------------------------------------------------------------
    def push_audio(self, pcm, sample_rate: int = SAMPLE_RATE) -> None:
        """pcm [S] or [S, C] float32 (any chunk size, any rate >= 4 kHz; one rate per session)."""
        if self._total is not None:
            raise InputError("Session.push_audio: the session is finished | start a new session with Player.session()")
        t0 = time.perf_counter()
        pcm = to_mono(np.asarray(pcm, np.float32))
        if pcm.size and not np.all(np.isfinite(pcm)):
            raise InputError("Session.push_audio: the audio has NaN or Inf samples | check the audio source")
        sample_rate = int(sample_rate)
        if self._sr is None:
            # Check the rate before keeping it, so a rejected push leaves the session usable.
            if sample_rate != SAMPLE_RATE and not 4000 <= sample_rate <= 384000:
                raise InputError(f"audio: unsupported sample rate {sample_rate} Hz | expected 4 kHz to 384 kHz")
            self._sr = sample_rate
            if sample_rate != SAMPLE_RATE:
                import soxr

                self._resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        elif sample_rate != self._sr:
            raise InputError(f"Session.push_audio: sample rate changed from {self._sr} to {sample_rate} Hz | use one rate per session")
        if self._resampler is not None:
            pcm = self._resampler.resample_chunk(pcm)
        self._push16k(pcm)
        self.state.timings.add("audio_frontend", time.perf_counter() - t0, 0)

    def _push16k(self, pcm: np.ndarray) -> None:
        self.samples_16k += pcm.size
        self._append(self._audio.push(pcm))

    def _append(self, feats: np.ndarray) -> None:
        if len(feats):
            self._feats = np.concatenate([self._feats, feats.astype(np.float32, copy=False)])
            self._n_feats += len(feats)

    def finish(self) -> None:
        """End of speech: flush the resampler and the front end; `frames()` then yields the tail."""
        if self._total is not None:
            return
        t0 = time.perf_counter()
        if self._resampler is not None:
            self._push16k(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self._total = num_video_frames(self.samples_16k)
        self._append(self._audio.finish(self._total))
        self.state.timings.add("audio_frontend", time.perf_counter() - t0, 0)

    # -- frames out ------------------------------------------------------------------------
    def _ready(self) -> int:
        """Frames [0, ready) whose windows are complete."""
        if self._total is not None:
            return self._total
        return max(0, self._n_feats - WINDOW_AFTER)

    def _batches(self):
        ready = self._ready()
        out = []
        while self._next < ready:
            end = min(self._next + self.batch, self._total if self._total is not None else 1 << 62)
            if end > ready:
                break  # wait for a whole batch (fixed batch boundaries keep output chunking-independent)
            frames = np.arange(self._next, end)
            out.append((frames, self._windows(frames)))
            self._next = end
        # Drop features no later window needs.
        drop = max(0, self._next - WINDOW_BEFORE - self._feat_offset)
        if drop:
            self._feats = self._feats[drop:]
            self._feat_offset += drop
        return out

    def _windows(self, frames: np.ndarray) -> np.ndarray:
        """Windows of speech frames -> [B, 15, 2, D], clamped to [0, T-1] (T = total when known)."""
        hi = (self._total if self._total is not None else self._n_feats) - 1
        idx = np.clip(frames[:, None] + np.arange(-WINDOW_BEFORE, WINDOW_AFTER + 1)[None, :], 0, hi) - self._feat_offset
        return self._feats[idx]

    def frames(self) -> Iterator[np.ndarray]:
        """Yield every frame (uint8 [H, W, 3]) that can be rendered now, in order.

        The frames are claimed when iteration starts: consume the iterator fully before
        the next push_audio / frames call (frames of an abandoned iterator are dropped).
        """
        yield from self._pipe.run_batches(self.state, self._batches())

    def close(self) -> None:
        self.state.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
