"""WebRTC for `gt serve`: POST /offer -> an answer, one session of the protocol per peer connection (aiortc).

Optional: the `webrtc` extra (pip install 'gt[webrtc]'); without aiortc /offer answers 501 with the
one-line install error. A peer connection runs the same `Stream` as a WebSocket (gt_serve/stream.py:
utterances through the runtime Session, realtime pace with idle frames, interrupt); only the
transport differs (docs/PROTOCOL.md, "WebRTC"):

- in: the client's microphone track (Opus, decoded by aiortc to 48 kHz) -> mono PCM -> the Stream,
  between the control channel's start and finish (placed on the audio's own timeline: `AudioGate`);
- out: each frame of the Stream -> a video frame (the JPEG decoded, pts = index at 25 FPS, 90 kHz clock)
  and its 40 ms of audio (two 20 ms frames, pts = its samples at 16 kHz). Both RTP timestamps come from
  the frame index, so the client plays picture and sound in sync;
- a data channel "control" carries the protocol's text messages: start / finish / interrupt from the
  client; ready / speech_start / speech_end / error from the server.

The session plays in realtime pace from the moment the channel opens (idle frames until speech).
"""

import asyncio
import json
import logging
from collections import deque
from fractions import Fraction

import numpy as np

from gt_runtime.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from gt_runtime.errors import InputError, MissingDependencyError, require
from gt_serve.config import parse_ice_server
from gt_serve.protocol import ProtocolError, error_message, parse_text, unpack_frame

log = logging.getLogger("gt_serve.webrtc")

WHAT = "gt serve /offer (WebRTC)"
MAX_OFFER_BYTES = 64 << 10     # an SDP offer is a few KiB
JITTER_S = 0.08                # aiortc's audio jitter buffer holds 4 packets (4 x 20 ms) before it decodes the oldest
CLOCK_FRAMES = 250             # frames (5 s) over which the microphone's timeline is matched to the server's clock
MARK_WAIT_S = 0.5              # a start / finish the microphone's audio does not reach in this time applies at once
CONNECT_TIMEOUT_S = 20.0       # an answered peer that has not opened the control channel by then is dropped
GATHER_TIMEOUT_S = 15.0        # ICE gathering (a TURN allocation) for the answer
TRACK_QUEUE = 8                # frames waiting for the sender (it takes them as the Stream makes them, 25 FPS)
VIDEO_CLOCK = 90000
VIDEO_TICKS = VIDEO_CLOCK // FPS
HALF = SAMPLES_PER_FRAME // 2  # 20 ms: Opus sends one packet per frame it is given


def aiortc():
    """The aiortc module, or the one-line MissingDependencyError naming pip install 'gt[webrtc]'."""
    return require("aiortc", WHAT)


def ice_configuration(urls: list[str]):
    """--ice-server URLs -> RTCConfiguration. None given: no STUN at all (aiortc would otherwise ask Google's)."""
    rtc = aiortc()
    return rtc.RTCConfiguration(iceServers=[rtc.RTCIceServer(**parse_ice_server(u)) for u in urls])


def mono(frame) -> np.ndarray:
    """A decoded av.AudioFrame (s16 or flt, packed or planar, any channels) -> float32 [samples] in [-1, 1]."""
    x = frame.to_ndarray()
    ch = len(frame.layout.channels)
    x = x.reshape(ch, -1).T if frame.format.is_planar else x.reshape(-1, ch)
    name = frame.format.name.rstrip("p")
    if name == "s16":
        x = x.astype(np.float32) / 32768.0
    elif name != "flt":
        raise ProtocolError(f"microphone audio in {frame.format.name} | send Opus (decoded as s16)")
    return x.astype(np.float32).mean(axis=1)


class AudioGate:
    """Feeds a Stream the microphone audio between the client's start and finish, on the audio's own timeline.

    A control message says "from now": the audio the client captures from the moment it sends it. That audio
    arrives later than the message (aiortc's jitter buffer holds JITTER_S of it before it decodes a packet, and
    a busy server reads frames late), so a mark is placed on the track's timeline (its RTP timestamps): the
    capture position of the message's arrival is (arrival - clock + JITTER_S) x rate, where `clock` is the
    least (read time - position / rate) of the last CLOCK_FRAMES frames (the frames that came through fastest;
    the message and the audio share one UDP path). The utterance is then the audio captured between start and
    finish, to a packet (20 ms), however late the frames are read. A mark the audio does not reach within
    MARK_WAIT_S (the track stopped or was never sent) is applied at once.
    """

    def __init__(self, stream):
        self.stream = stream
        self.pos = 0                            # timeline position (samples at `rate`) after the last frame
        self.rate = 48000                       # of the last frame (Opus decodes at 48 kHz)
        self.offsets: deque[float] = deque(maxlen=CLOCK_FRAMES)
        self.marks: deque[tuple[int, str]] = deque()
        self.open = False                       # between an applied start and its finish
        self.live = False                       # a microphone track is being read

    async def mark(self, kind: str) -> None:
        if not self.live:
            return await self._apply(kind)
        at = 0
        if self.offsets:
            now = asyncio.get_running_loop().time()
            at = round((now - min(self.offsets) + JITTER_S) * self.rate)
        self.marks.append((at, kind))

    async def feed(self, pcm: np.ndarray, rate: int, pos: int | None = None) -> None:
        """pcm [S] float32 at `rate`: the track's next frame, at timeline position `pos` (default: after the last)."""
        pos = self.pos if pos is None else pos
        self.rate, self.pos = rate, pos + pcm.size
        self.offsets.append(asyncio.get_running_loop().time() - pos / rate)
        while self.marks and self.marks[0][0] < self.pos:
            at, kind = self.marks.popleft()
            cut = max(at - pos, 0)
            self._audio(pcm[:cut])
            pcm, pos = pcm[cut:], pos + cut
            await self._apply(kind)
        self._audio(pcm)

    async def flush(self) -> None:
        while self.marks:
            await self._apply(self.marks.popleft()[1])

    async def interrupt(self) -> None:
        self.marks.clear()
        self.open = False
        await self.stream.interrupt()

    def _audio(self, pcm: np.ndarray) -> None:
        if self.open and pcm.size:
            self.stream.handle_binary(pcm.astype("<f4").tobytes())

    async def _apply(self, kind: str) -> None:
        if kind == "start":
            await self.stream.handle_text({"type": "start", "sample_rate": int(self.rate), "encoding": "f32le", "pace": "realtime"})
            self.open = True
        else:
            await self.stream.handle_text({"type": "finish"})
            self.open = False


def _track_classes():
    """The outgoing tracks (their base class is aiortc's, so they are made once aiortc is known to import)."""
    if _track_classes.made is None:
        import av
        from aiortc import MediaStreamTrack
        from aiortc.mediastreams import MediaStreamError

        class QueueTrack(MediaStreamTrack):
            """A track the sender pulls from; push() drops the oldest when the sender lags (frames carry their pts)."""

            def __init__(self, kind: str):
                super().__init__()
                self.kind = kind
                self.queue: asyncio.Queue = asyncio.Queue(TRACK_QUEUE)
                self.dropped = 0

            def push(self, item) -> None:
                if self.queue.full():
                    self.queue.get_nowait()
                    self.dropped += 1
                self.queue.put_nowait(item)

            def stop(self) -> None:
                super().stop()
                if self.queue.full():
                    self.queue.get_nowait()
                self.queue.put_nowait(None)   # wakes a recv() waiting

            async def recv(self):
                if self.readyState != "live":
                    raise MediaStreamError
                item = await self.queue.get()
                if item is None:
                    raise MediaStreamError
                return await self.make(item)

        class VideoTrack(QueueTrack):
            def __init__(self):
                super().__init__("video")

            async def make(self, item):
                index, jpeg = item
                frame = await asyncio.get_running_loop().run_in_executor(None, _decode_jpeg, jpeg)
                frame.pts, frame.time_base = index * VIDEO_TICKS, Fraction(1, VIDEO_CLOCK)
                return frame

        class AudioTrack(QueueTrack):
            def __init__(self):
                super().__init__("audio")

            async def make(self, item):
                pts, pcm = item   # s16 [HALF]
                frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, pts, Fraction(1, SAMPLE_RATE)
                return frame

        _track_classes.made = (VideoTrack, AudioTrack, MediaStreamError)
    return _track_classes.made


_track_classes.made = None


def _decode_jpeg(jpeg: bytes):
    import io

    import av
    from PIL import Image

    return av.VideoFrame.from_image(Image.open(io.BytesIO(jpeg)).convert("RGB"))


class RtcSession:
    """One peer connection: a Stream fed by the microphone track and the control channel, sending to two tracks.

    `await answer(offer_sdp)` -> the answer SDP; the session then lives until the peer closes or fails, the
    control channel closes, a protocol error, CONNECT_TIMEOUT_S without a control channel, or `close()`.
    `on_close()` is called once, at the end.
    """

    def __init__(self, sid: str, avatar, ready: dict, ice_servers: list[str], max_queued_s: float, on_close):
        from gt_serve.stream import Stream

        VideoTrack, AudioTrack, self._MediaStreamError = _track_classes()
        rtc = aiortc()
        self.sid = sid
        self.ready = ready
        self.pc = rtc.RTCPeerConnection(ice_configuration(ice_servers))
        self.video, self.audio = VideoTrack(), AudioTrack()
        self.stream = Stream(avatar, self._send_frame, self._send_text, max_queued_s)
        self.gate = AudioGate(self.stream)
        self.channel = None
        self.control: asyncio.Queue = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []
        self.closed = asyncio.Event()
        self._on_close = on_close
        self._closing = False
        self.pc.on("datachannel", self._on_channel)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    # -- signalling ---------------------------------------------------------------------------
    async def answer(self, sdp: str) -> str:
        """Offer SDP -> answer SDP (ICE candidates gathered, no trickle). ValueError: a malformed offer."""
        rtc = aiortc()
        if "m=application" not in sdp:
            raise ValueError("the offer has no data channel | create the 'control' data channel before createOffer")
        try:   # anything wrong here is the offer's fault (aiortc raises ValueError, RuntimeError, its own errors)
            await self.pc.setRemoteDescription(rtc.RTCSessionDescription(sdp=sdp, type="offer"))
            kinds = [t.kind for t in self.pc.getTransceivers()]
            if "video" not in kinds:
                raise ValueError("the offer receives no video | add a video transceiver (recvonly) before createOffer")
            self.pc.addTrack(self.video)
            if "audio" in kinds:
                self.pc.addTrack(self.audio)   # the client's audio transceiver then carries the avatar's voice back
            answer = await self.pc.createAnswer()
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from exc
        await asyncio.wait_for(self.pc.setLocalDescription(answer), GATHER_TIMEOUT_S)
        self._spawn(self._watchdog())
        return self.pc.localDescription.sdp

    # -- the peer's events ----------------------------------------------------------------------
    def _on_channel(self, channel) -> None:
        if channel.label != "control" or self.channel is not None:
            channel.close()
            return
        self.channel = channel
        channel.on("message", self.control.put_nowait)
        channel.on("close", lambda: self._spawn(self.close()))
        channel.send(json.dumps(self.ready))
        self._spawn(self._run_control())
        self._spawn(self.stream.handle_text({"type": "start", "sample_rate": 48000, "encoding": "f32le", "pace": "realtime"}))
        self._spawn(self.stream.pump())

    def _on_track(self, track) -> None:
        if track.kind == "audio" and not self.gate.live:
            self.gate.live = True
            self._spawn(self._run_mic(track))
        else:
            self._spawn(self._drain(track))   # an unused track is still read, or aiortc queues its frames forever

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._spawn(self.close())

    # -- tasks ------------------------------------------------------------------------------------
    def _spawn(self, coro) -> None:
        if self._closing:
            coro.close()
            return
        self.tasks.append(asyncio.ensure_future(self._guard(coro)))

    async def _guard(self, coro) -> None:
        """Run a task of the session; a bad request or an internal error sends `error` and closes the session."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except (ProtocolError, InputError) as exc:
            await self.fail(str(exc))
        except Exception as exc:   # ours: the session ends, the server goes on
            log.exception("webrtc session %s", self.sid)
            await self.fail(f"internal error: {type(exc).__name__}: {exc}")

    async def _run_control(self) -> None:
        while True:
            data = await self.control.get()
            if not isinstance(data, str):
                raise ProtocolError("binary message on the control channel | audio comes as the media track, control as JSON text")
            msg = parse_text(data)
            kind = msg["type"]
            if kind == "interrupt":
                await self.gate.interrupt()
                continue
            if kind == "start" and msg["pace"] != "realtime":
                raise ProtocolError(f"start: pace {msg['pace']} over WebRTC | media tracks play in real time: pace realtime (or leave it out)")
            await self.gate.mark(kind)

    async def _run_mic(self, track) -> None:
        while True:
            try:
                if self.gate.marks:
                    frame = await asyncio.wait_for(track.recv(), MARK_WAIT_S)
                else:
                    frame = await track.recv()
            except asyncio.TimeoutError:
                await self.gate.flush()
                continue
            except self._MediaStreamError:
                self.gate.live = False
                await self.gate.flush()
                return
            pos = None if frame.pts is None or frame.time_base is None else round(frame.pts * frame.time_base * frame.sample_rate)
            await self.gate.feed(mono(frame), frame.sample_rate, pos)

    async def _drain(self, track) -> None:
        try:
            while True:
                await track.recv()
        except self._MediaStreamError:
            pass

    async def _watchdog(self) -> None:
        try:
            await asyncio.wait_for(self.closed.wait(), CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            if self.channel is None:
                await self.close()

    # -- the Stream's output ------------------------------------------------------------------------
    async def _send_frame(self, packed: bytes) -> None:
        head, jpeg, audio = unpack_frame(packed)
        i = head["index"]
        self.video.push((i, jpeg))
        pcm = np.frombuffer(audio, "<i2")
        self.audio.push((i * SAMPLES_PER_FRAME, pcm[:HALF]))
        self.audio.push((i * SAMPLES_PER_FRAME + HALF, pcm[HALF:]))

    async def _send_text(self, text: str) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)

    # -- the end ---------------------------------------------------------------------------------
    async def fail(self, message: str) -> None:
        """Send {"type": "error", "message"} on the control channel, let it go out, then close."""
        if self._closing:
            return
        await self._send_text(error_message(message))
        for _ in range(20):   # up to 0.5 s for the message to leave
            if self.channel is None or self.channel.bufferedAmount == 0:
                break
            await asyncio.sleep(0.025)
        await asyncio.sleep(0.05)
        await self.close()

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.stream.close()
        self.video.stop()
        self.audio.stop()
        me = asyncio.current_task()
        for t in self.tasks:
            if t is not me and not t.done():
                t.cancel()
        try:
            await self.pc.close()
        except Exception:   # a half-open connection may fail to close cleanly; it is gone either way
            log.debug("webrtc session %s: close", self.sid, exc_info=True)
        self.closed.set()
        self._on_close(self)


def add_offer_route(app, cfg, known, acquire, release, replica: str, check_origin, token_ok, request_token) -> None:
    """POST /offer on `app`: {sdp, type: "offer", avatar?, token?} -> {sdp, type: "answer", session}.

    Shares the app's session count (app.state.sessions, app.state.streams) and checks (check_origin, token_ok,
    request_token) with /v1/stream. `await acquire(name)` -> Avatar, release(avatar). Sessions still open at
    shutdown are closed by `await app.state.rtc_close_all()`.
    """
    from fastapi import Request
    from fastapi.responses import JSONResponse

    sessions: dict[str, RtcSession] = {}

    def refuse(status: int, message: str):
        return JSONResponse(json.loads(error_message(message)), status_code=status)

    async def close_all() -> None:
        for s in list(sessions.values()):
            await s.close()

    app.state.rtc_close_all = close_all

    @app.post("/offer")
    async def offer(request: Request):
        try:
            aiortc()
        except MissingDependencyError as exc:
            return refuse(501, str(exc))
        origin = request.headers.get("origin")
        if not check_origin(origin, request.headers.get("host"), cfg.allow_origins):
            return refuse(403, f"origin {origin} is not allowed | open the page from this server, or start gt serve with --allow-origin")
        body = await _read_capped(request, MAX_OFFER_BYTES)
        if body is None:
            return refuse(413, f"offer over {MAX_OFFER_BYTES} bytes | send the SDP offer alone: {{sdp, type, avatar}}")
        try:
            msg = json.loads(body)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            return refuse(400, "the offer is not a JSON object | POST {\"sdp\": ..., \"type\": \"offer\", \"avatar\": NAME}")
        token = request_token(request.query_params, request.headers) or msg.get("token")
        if not token_ok(token if isinstance(token, str) else None):
            return refuse(401, "missing or wrong token | add \"token\": T to the offer (or ?token=T)")
        if msg.get("type") != "offer" or not isinstance(msg.get("sdp"), str) or not msg["sdp"].strip():
            return refuse(400, "the offer needs \"sdp\" (a string) and \"type\": \"offer\" | send pc.localDescription after createOffer")
        name = msg.get("avatar") or (next(iter(known)) if len(known) == 1 else None)
        if name not in known:
            return refuse(404, f"avatar {name!r}: no such avatar | available: {', '.join(known)}")
        if app.state.sessions >= cfg.max_sessions:
            return refuse(503, f"server full ({cfg.max_sessions} sessions) | try again later")
        app.state.sessions += 1
        sid = f"{replica}/{app.state.next_session}"
        app.state.next_session += 1
        avatar = session = None
        freed = False

        def free(_=None) -> None:
            nonlocal freed
            if freed:
                return
            freed = True
            sessions.pop(sid, None)
            app.state.streams.pop(sid, None)
            app.state.sessions -= 1
            if avatar is not None:
                release(avatar)

        try:
            avatar = await acquire(name)
            ready = {"type": "ready", "session": sid, "avatar": name, "width": avatar.width, "height": avatar.height,
                     "fps": avatar.fps, "lookahead_ms": avatar.lookahead_ms, "replica": replica}   # as on /v1/stream
            session = RtcSession(sid, avatar, ready, cfg.ice_servers, cfg.max_queued_s, free)
            sessions[sid] = session
            app.state.streams[sid] = session.stream
            answer = await session.answer(msg["sdp"])
        except (ValueError, asyncio.TimeoutError) as exc:
            await _end(session, free)
            if isinstance(exc, asyncio.TimeoutError):
                return refuse(504, f"ICE gathering took over {GATHER_TIMEOUT_S:.0f} s | check --ice-server (is the TURN server reachable?)")
            line = (str(exc).splitlines() or [type(exc).__name__])[0]
            return refuse(400, f"malformed offer: {line}" + ("" if "|" in line else " | send pc.localDescription.sdp from createOffer"))
        except Exception as exc:
            await _end(session, free)
            log.exception("webrtc offer")
            return refuse(500, f"internal error: {type(exc).__name__}: {exc}")
        return {"sdp": answer, "type": "answer", "session": sid}


async def _end(session, free) -> None:
    if session is not None:
        await session.close()
    free()


async def _read_capped(request, cap: int) -> bytes | None:
    """The request body, or None once it passes `cap` bytes (read no further)."""
    n = request.headers.get("content-length")
    if n is not None and n.isdigit() and int(n) > cap:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            return None
    return bytes(body)


__all__ = ["AudioGate", "RtcSession", "add_offer_route", "ice_configuration", "mono"]
