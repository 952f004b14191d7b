"""One WebSocket connection: utterances in, frames (JPEG + their 40 ms of audio) out.

The client's audio goes through a runtime `Session` per utterance (the same front end, windows
and frame count as `Player.play`), but the Session is built on a `WindowTap` instead of the
render pipeline: its frames() hands out each frame's audio window, and the avatar's render
thread renders it in a batch with other streams' frames. Speech frame i of an utterance uses
track frame i, as `gt play` does, so an utterance's frames equal Player.play's on that audio.

Pacing (`pump`):
- realtime: one frame every 40 ms on a fixed clock. A slot sends the next speech frame if it is
  rendered, else an idle frame (silence, the avatar at rest, the track going on from where the
  speech left it: eyes blink on their track). Speech frames are rendered as soon as their
  lookahead is filled, at most AHEAD frames before their slot.
- fast: speech frames as soon as they are rendered, no idle frames (one after an interrupt).
Every frame carries its own audio, so audio and video cannot drift apart.
"""
from __future__ import annotations

import asyncio
import json
from collections import deque

import numpy as np

from gt_runtime.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from gt_runtime.playback.pipeline import Timings
from gt_runtime.playback.scene import pingpong
from gt_runtime.playback.session import Session
from gt_serve.protocol import (CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TOO_BIG, SILENT_AUDIO, ProtocolError, decode_pcm,
                               frame_audio, pack_frame)
from gt_serve.renderer import Job

FRAME_S = 1.0 / FPS
AHEAD = {"realtime": 8, "fast": 16}   # rendered or in-flight speech frames per stream (memory and fairness bound)
CATCH_UP_S = 2.0                      # a realtime clock this far behind restarts from now (else late slots catch up)
IDLE_PREFETCH = 3                     # idle frames requested ahead of their slot
PREROLL = 2                           # realtime: an utterance starts once this many of its frames are rendered (jitter)


class _TapState:
    """The RenderState a WindowTap gives its Session: timings only (nothing renders here)."""

    def __init__(self):
        self.timings = Timings()

    def close(self) -> None:
        pass


class WindowTap:
    """Stands in for a FramePipeline in a runtime Session: frames() yields (frame index, window [15, 2, D])."""

    def __init__(self, pipeline):
        self.frontend = pipeline.frontend

    def new_state(self, overlap=None) -> _TapState:
        return _TapState()

    def run_batches(self, state, batches):
        for frames, windows in batches:
            for f, w in zip(frames, windows):
                yield int(f), w


class SpeechFrame:
    __slots__ = ("utt", "i", "audio", "job", "jpeg", "error", "last")

    def __init__(self, utt: int, i: int, audio: bytes):
        self.utt, self.i, self.audio = utt, i, audio
        self.job = None
        self.jpeg = None
        self.error = None
        self.last = False


class Utterance:
    """The open utterance: its runtime Session, resampler and the 16 kHz audio not yet cut into frames."""

    def __init__(self, uid: int, tap: WindowTap, sample_rate: int):
        self.uid = uid
        self.session = Session(tap, batch=1)
        self.resampler = None
        if sample_rate != SAMPLE_RATE:
            import soxr

            self.resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        self.pcm = np.zeros(0, np.float32)   # 16 kHz audio from frame `cut` on
        self.cut = 0                          # frames whose audio has been cut
        self.samples = 0                      # 16 kHz samples pushed

    def push(self, pcm: np.ndarray, last: bool = False) -> None:
        if self.resampler is not None:
            pcm = self.resampler.resample_chunk(pcm, last=last)
        if pcm.size:
            self.pcm = np.concatenate([self.pcm, pcm])
            self.samples += pcm.size
            self.session.push_audio(pcm, SAMPLE_RATE)

    def take(self) -> list[tuple[int, np.ndarray, bytes]]:
        """Frames whose windows are complete -> [(frame index, window, audio bytes)]."""
        out = []
        for i, w in self.session.frames():
            a = self.pcm[:SAMPLES_PER_FRAME]
            self.pcm = self.pcm[SAMPLES_PER_FRAME:]
            out.append((i, w, frame_audio(a)))
            self.cut += 1
        return out

    def queued_samples(self) -> int:
        return self.samples - self.cut * SAMPLES_PER_FRAME


class Stream:
    """A session of the protocol on one connection. Call `handle_text` / `handle_binary`; run `pump` as a task."""

    def __init__(self, avatar, send_bytes, send_text, max_queued_s: float = 60.0):
        self.avatar = avatar
        self._send_bytes = send_bytes
        self._send_text = send_text
        self.max_queued = int(max_queued_s * SAMPLE_RATE)
        self.tap = WindowTap(avatar.pipeline)
        self.fmt: dict | None = None
        self.utt: Utterance | None = None
        self.speech: deque[SpeechFrame] = deque()
        self.next_uid = 0
        self.index = 0                 # frames sent
        self.track_pos = 0             # track frame of the next idle frame
        self.in_speech = None          # uid of the utterance being shown
        self.idle_once = False         # fast pace: send one idle frame (after an interrupt)
        self.cut_uid = 0               # utterances below this were dropped by an interrupt
        self.end_pending = False       # the pump owes the client a speech_end (interrupted) before its next frame
        self.last_idle = None          # JPEG of the last idle frame sent (held while the idle cache warms up)
        self.closed = False
        self.wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.stats = {"speech_frames": 0, "idle_frames": 0, "interrupts": 0}

    # -- client messages --------------------------------------------------------------------
    async def handle_text(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "start":
            if self.utt is not None:
                raise ProtocolError("start during an utterance | send finish or interrupt first")
            first = self.fmt is None
            if not first and msg["pace"] != self.fmt["pace"]:
                raise ProtocolError(f"start: pace {msg['pace']} after {self.fmt['pace']} | the first start's pace holds for the connection")
            self.fmt = msg
            if first:
                self.wake.set()    # the pump waits for the first start to know its pace
        elif kind == "finish":
            if self.fmt is None:
                raise ProtocolError("finish before start | send {\"type\": \"start\", ...} first")
            if self.utt is not None:
                self.utt.push(np.zeros(0, np.float32), last=True)
                self.utt.session.finish()
                self._claim()
                if self.speech and self.speech[-1].utt == self.utt.uid:
                    self.speech[-1].last = True
                self.utt.session.close()
                self.utt = None
        elif kind == "interrupt":
            await self.interrupt()

    def handle_binary(self, data: bytes) -> None:
        if self.fmt is None:
            raise ProtocolError("audio before start | send {\"type\": \"start\", \"sample_rate\": 16000, ...} first")
        pcm = decode_pcm(data, self.fmt["encoding"])
        if pcm.size == 0:
            return
        if self.utt is None:
            self.utt = Utterance(self.next_uid, self.tap, self.fmt["sample_rate"])
            self.next_uid += 1
        self.utt.push(pcm)
        self._claim()
        queued = len(self.speech) * SAMPLES_PER_FRAME + self.utt.queued_samples()
        if queued > self.max_queued:
            raise ProtocolError(f"queued audio {queued / SAMPLE_RATE:.1f} s is over the cap of {self.max_queued / SAMPLE_RATE:.0f} s "
                                "| send audio no faster than it plays (pace realtime), or wait for its frames", CLOSE_TOO_BIG)

    async def interrupt(self) -> None:
        """Drop queued audio and frames at once; the next frame is idle."""
        self.stats["interrupts"] += 1
        self._drop_queued()
        self.cut_uid = self.next_uid
        if self.in_speech is not None:
            # Sent by the pump, so that it comes after a frame already on its way and before anything else.
            self.in_speech = None
            self.end_pending = True
        if self.fmt is not None and self.fmt["pace"] == "fast":
            self.idle_once = True
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self._drop_queued()
        self.wake.set()

    def _drop_queued(self) -> None:
        """Cancel the speech frames not rendered yet and close the utterance's session."""
        for f in self.speech:
            if f.job is not None:
                f.job.cancelled = True
        self.speech.clear()
        if self.utt is not None:
            self.utt.session.close()
            self.utt = None

    # -- rendering --------------------------------------------------------------------------
    def _claim(self) -> None:
        for i, w, audio in self.utt.take():
            f = SpeechFrame(self.utt.uid, i, audio)
            f.job = Job(i, w, None)
            self.speech.append(f)
        self._feed()

    def _feed(self) -> None:
        """Submit the first AHEAD speech frames that are not yet submitted."""
        ahead = AHEAD[self.fmt["pace"]] if self.fmt else 8
        todo = []
        for n, f in enumerate(self.speech):
            if n >= ahead:
                break
            if f.job.deliver is None:
                f.job.deliver = self._deliverer(f)
                todo.append(f.job)
        if todo:
            self.avatar.renderer.submit(todo)

    def _deliverer(self, f: SpeechFrame):
        def deliver(jpeg, err):   # on the render thread
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self._delivered, f, jpeg, err)
        return deliver

    def _delivered(self, f: SpeechFrame, jpeg, err) -> None:
        f.jpeg, f.error = jpeg, err
        self.wake.set()

    # -- frames out ---------------------------------------------------------------------------
    async def pump(self) -> None:
        """Send frames until the stream closes (run as a task)."""
        while self.fmt is None and not self.closed:
            self.wake.clear()
            await self.wake.wait()
        if self.fmt is not None and self.fmt["pace"] == "realtime":
            await self._pump_realtime()
        else:
            await self._pump_fast()

    def _ready_head(self, preroll: int = 1) -> SpeechFrame | None:
        """The next speech frame if it is rendered (and, starting an utterance, the `preroll` frames from it are)."""
        f = self.speech[0] if self.speech else None
        if f is not None and f.error is not None:
            raise ProtocolError(f"internal error while rendering: {type(f.error).__name__}: {f.error}", CLOSE_INTERNAL)
        if f is None or f.jpeg is None:
            return None
        if f.utt != self.in_speech and preroll > 1:
            for k in range(1, min(preroll, len(self.speech))):
                g = self.speech[k]
                if g.utt != f.utt:
                    break
                if g.jpeg is None:
                    return None
            if len(self.speech) < preroll and not self.speech[-1].last:
                return None
        return f

    async def _flush_end(self) -> None:
        if self.end_pending:
            self.end_pending = False
            await self._send_text(json.dumps({"type": "speech_end", "interrupted": True}))

    async def _send_speech(self, f: SpeechFrame) -> None:
        self.speech.popleft()
        await self._flush_end()
        if self.in_speech != f.utt:
            if self.in_speech is not None:
                await self._send_text(json.dumps({"type": "speech_end"}))
            self.in_speech = f.utt
            await self._send_text(json.dumps({"type": "speech_start", "utterance": f.utt}))
        if f.utt < self.cut_uid:
            return   # interrupted while speech_start was on its way: the pump sends speech_end next
        await self._send_bytes(pack_frame(self.index, f.jpeg, f.audio, True, f.utt, f.i))
        self.index += 1
        self.stats["speech_frames"] += 1
        self.track_pos = f.i + 1
        if f.last and self.in_speech == f.utt:   # (an interrupt meanwhile owes its own speech_end)
            self.in_speech = None
            await self._send_text(json.dumps({"type": "speech_end"}))
        self._feed()

    async def _send_idle(self) -> None:
        ti = int(pingpong(self.track_pos, self.avatar.track_frames))
        jpeg = self.avatar.idle.cached(ti)
        if jpeg is None:
            # Not rendered yet (the server is warming up): render it in the background and hold the last
            # idle picture meanwhile, so that idle frames never take the renderer from speech.
            self.avatar.idle.request(ti, urgent=False)
            jpeg = self.last_idle or await self.avatar.idle.request(ti)
        self.last_idle = jpeg
        await self._flush_end()
        await self._send_bytes(pack_frame(self.index, jpeg, SILENT_AUDIO, False))
        self.index += 1
        self.stats["idle_frames"] += 1
        self.track_pos += 1

    def _prefetch_idle(self) -> None:
        for k in range(IDLE_PREFETCH):
            ti = int(pingpong(self.track_pos + k, self.avatar.track_frames))
            if self.avatar.idle.cached(ti) is None:
                self.avatar.idle.request(ti, urgent=False)

    async def _pump_realtime(self) -> None:
        t0 = self.loop.time()
        k = 0
        while not self.closed:
            delay = t0 + k * FRAME_S - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > CATCH_UP_S:
                t0, k = self.loop.time(), 0
            if self.closed:
                return
            f = self._ready_head(PREROLL)
            if f is not None:
                await self._send_speech(f)
            else:
                await self._send_idle()
            if not self.speech:
                self._prefetch_idle()
            k += 1

    async def _pump_fast(self) -> None:
        while not self.closed:
            f = self._ready_head()
            if f is not None:
                await self._send_speech(f)
                continue
            if self.idle_once:
                self.idle_once = False
                await self._send_idle()
                continue
            await self._flush_end()
            self.wake.clear()
            await self.wake.wait()


def check_origin(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """A browser's Origin must name this server (scheme://Host) or be in `allowed`; no Origin (not a browser) passes."""
    if not origin:
        return True
    if origin in allowed:
        return True
    from urllib.parse import urlsplit

    return bool(host) and urlsplit(origin).netloc == host


__all__ = ["Stream", "WindowTap", "check_origin", "CLOSE_POLICY"]
