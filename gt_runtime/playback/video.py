"""Writing frames + speech to mp4 (H.264 + AAC) through PyAV.

A/V sync is exact by construction: video frame t has pts t (time base 1/fps) and
audio sample s has pts s (time base 1/sample_rate), both from 0, so there is no
drift however long the speech is. The file is written under a temporary name and
renamed at the end, so a failure never leaves a half-written mp4.

With `background=True` the encoding (RGB -> YUV conversion, libx264, muxing) runs on
an encoder thread fed by a short queue, beside the caller's next frames: PyAV releases
the GIL while it encodes, so on 2 cores it overlaps the deformation and the raster
instead of following them (512² x 20k on a 2-core EPYC: 26 -> 31 FPS delivered).
"""
from __future__ import annotations

import os
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from gt_runtime.contract import SAMPLE_RATE

AAC_RATE = 48000
AAC_FRAME = 1024


class Mp4Writer:
    """mp4 sink: `write(frame [H, W, 3] uint8)` per video frame, audio given up front or streamed.

    Use as a context manager; on an exception the partial file is removed.
    Odd widths/heights are padded by one edge pixel (yuv420p needs even sizes).
    preset: libx264's; "superfast" costs 40 % less CPU than "veryfast" at the same CRF and
    decodes at least as close to the frames (PSNR 38.2 against 37.3 dB at 512², larger files).
    background: encode on a thread (`queue_frames` frames queued at most); an encoder error is
    raised by the next write() or by close(). `encode_seconds`: time spent encoding and muxing.
    threads: libx264's threads; None: 1 on a background writer with at most 4 cores (its thread
    already runs beside the render, and x264's own threads only take turns with it there:
    1.6 -> 1.2 ms CPU per 256² frame on a 2-core EPYC), else x264's choice.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: int = 25,
                 sample_rate: int | None = SAMPLE_RATE, crf: int = 18, preset: str = "superfast",
                 background: bool = False, queue_frames: int = 4, threads: int | None = None):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.partial.mp4")
        self.width, self.height, self.fps = width, height, fps
        self._container = av.open(str(self._tmp), mode="w")
        v = self._container.add_stream("libx264", rate=fps)
        v.width, v.height = width + width % 2, height + height % 2
        v.pix_fmt = "yuv420p"
        v.time_base = Fraction(1, fps)
        if threads is None:
            from gt_runtime.util.cpu import usable_cores

            threads = 1 if background and usable_cores() <= 4 else 0
        v.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}  # 0: x264's choice
        self._video = v
        self._audio = None
        if sample_rate is not None:
            a = self._container.add_stream("aac", rate=AAC_RATE)
            a.layout = "mono"
            a.time_base = Fraction(1, AAC_RATE)
            self._audio = a
            self._sample_rate = sample_rate
            self._resampled = 0  # AAC samples sent so far
            self._pending = np.zeros(0, np.float32)
        self.frames_written = 0
        self.encode_seconds = 0.0
        self._error = None
        self._thread = None
        if background:
            self._queue = queue.Queue(maxsize=max(1, int(queue_frames)))
            self._thread = threading.Thread(target=self._encoder_loop, name="gt-encode", daemon=True)
            self._thread.start()

    # -- encoder thread ----------------------------------------------------------------
    def _submit(self, fn, *args) -> None:
        """Run fn(*args) on the encoder thread (in order), or now without one."""
        if self._thread is None:
            t0 = time.perf_counter()
            fn(*args)
            self.encode_seconds += time.perf_counter() - t0
            return
        self._raise_error()
        self._queue.put((fn, args))

    def _encoder_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain after a failure, so that the caller never blocks on a full queue
            t0 = time.perf_counter()
            try:
                item[0](*item[1])
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc
            self.encode_seconds += time.perf_counter() - t0

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _join(self) -> None:
        """Wait until the encoder thread has encoded everything queued (no-op without one)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    # -- video -------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """frame [H, W, 3] uint8 RGB (copied when encoded in the background, so the caller may reuse it)."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"Mp4Writer.write: frame {frame.shape} {frame.dtype} | expected ({self.height}, {self.width}, 3) uint8")
        if self.width % 2 or self.height % 2:
            frame = np.pad(frame, ((0, self.height % 2), (0, self.width % 2), (0, 0)), mode="edge")
        elif self._thread is not None:
            frame = np.array(frame, order="C", copy=True)
        pts = self.frames_written
        self.frames_written += 1
        self._submit(self._encode_video, np.ascontiguousarray(frame), pts)

    def _encode_video(self, frame: np.ndarray, pts: int) -> None:
        import av

        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vf.pts = pts
        for packet in self._video.encode(vf):
            self._container.mux(packet)

    # -- audio -------------------------------------------------------------------------
    def write_audio(self, pcm: np.ndarray) -> None:
        """pcm [S] float32 mono at the sample_rate given to the constructor, any chunk size."""
        from gt_runtime.audio.io import resample

        if self._audio is None:
            raise ValueError("Mp4Writer: created with sample_rate=None, so it has no audio track")
        pcm = resample(np.asarray(pcm, np.float32), self._sample_rate, AAC_RATE)
        self._pending = np.concatenate([self._pending, np.clip(pcm, -1, 1)])
        # The AAC encoder takes whole 1024-sample frames; keep the remainder for later.
        n = (self._pending.size // AAC_FRAME) * AAC_FRAME
        if n:
            # one thread muxes: the audio goes through the encoder thread too
            self._submit(self._encode_audio, self._pending[:n], self._resampled)
            self._resampled += n
            self._pending = self._pending[n:]

    def _encode_audio(self, pcm: np.ndarray, pts: int) -> None:
        import av

        af = av.AudioFrame.from_ndarray(pcm[None, :], format="flt", layout="mono")
        af.sample_rate = AAC_RATE
        af.pts = pts
        for packet in self._audio.encode(af):
            self._container.mux(packet)

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> Path:
        """Encode what is queued, flush the encoders and move the finished file into place -> path.

        On an encoder error the partial file is removed and the error raised.
        """
        try:
            self._join()
            self._raise_error()
            t0 = time.perf_counter()
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                if self._pending.size:
                    self._encode_audio(self._pending, self._resampled)
                    self._resampled += self._pending.size
                    self._pending = np.zeros(0, np.float32)
                for packet in self._audio.encode(None):
                    self._container.mux(packet)
            self._container.close()
            self.encode_seconds += time.perf_counter() - t0
        except BaseException:
            self.abort()
            raise
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._error = self._error or RuntimeError("aborted")  # the encoder thread drops what is queued
        self._join()
        try:
            self._container.close()
        except Exception:
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def contact_sheet(images: list[np.ndarray], cols: int = 4) -> np.ndarray:
    """images: list of [H, W, 3] uint8 of one size -> [rows*H, cols*W, 3] uint8 grid."""
    h, w = images[0].shape[:2]
    rows = -(-len(images) // cols)
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = im
    return sheet


def probe_durations(path: str | Path) -> dict:
    """mp4 -> {"video_s", "audio_s", "frames", "video_codec", "audio_codec"} read from the streams."""
    import av

    with av.open(str(path)) as c:
        out = {"video_s": None, "audio_s": None, "frames": 0, "video_codec": None, "audio_codec": None}
        for s in c.streams:
            dur = float(s.duration * s.time_base) if s.duration is not None else None
            if s.type == "video":
                out["video_s"], out["video_codec"] = dur, s.codec_context.name
                out["frames"] = s.frames
            elif s.type == "audio":
                out["audio_s"], out["audio_codec"] = dur, s.codec_context.name
        return out
