"""gt serve's POST /offer (WebRTC, aiortc) on a live server, with an aiortc client over loopback (127.0.0.1, no STUN).

The client sends a speech wav as its microphone track, controls the session over the "control" data channel,
and receives the avatar as a video track and an audio track.
"""
import asyncio
import json
import time
import urllib.error
import urllib.request
from fractions import Fraction
from importlib.util import find_spec

import numpy as np
import pytest
from tests.support.speech import speech

from gt_runtime.contract import FPS
from gt_runtime.errors import InputError

pytestmark = pytest.mark.timeout(90)
needs_aiortc = pytest.mark.skipif(find_spec("aiortc") is None, reason="WebRTC needs the webrtc extra: pip install 'gt[webrtc]'")

MIC_RATE = 48000
MIC_FRAME = 960   # 20 ms, as a browser sends


@pytest.fixture(scope="module")
def loopback_ice():
    """Both peers (in this process) gather host candidates on 127.0.0.1 only (aioice skips loopback by default)."""
    if find_spec("aiortc") is None:
        yield
        return
    import aioice.ice

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
        yield


@pytest.fixture(scope="module")
def rtc_server(avatars, loopback_ice):
    """A live server, max 2 sessions, token "s3" -> (base, app)."""
    from gt_serve import ServeConfig
    from tests.support.serve import live_server

    with live_server(ServeConfig(port=0, max_sessions=2, token="s3"), avatars) as s:
        yield s


def post(url: str, body, headers: dict | None = None, timeout: float = 20.0) -> tuple[int, dict]:
    """POST body (bytes, or JSON of a dict) -> (status, JSON answer)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def health(base: str) -> dict:
    with urllib.request.urlopen(f"http://{base}/healthz", timeout=10) as r:
        return json.loads(r.read())


def _mic_track():
    from aiortc import MediaStreamTrack
    from av import AudioFrame

    class Mic(MediaStreamTrack):
        """A microphone: 20 ms frames at 48 kHz on a real-time clock, silence but for say(pcm).

        Like a real one, say() starts at the first frame not captured yet by the clock (even if the sender is late
        asking for frames: it then gets them in a burst), and `ended` is set when the clock has captured the last.
        """

        kind = "audio"

        def __init__(self):
            super().__init__()
            self.pcm = np.zeros(0, np.float32)
            self.at = 0                  # frame index where pcm begins
            self.n = 0
            self.t0 = time.monotonic()
            self.ended = asyncio.Event()

        def say(self, pcm: np.ndarray) -> None:
            self.at = max(self.n, int(np.ceil((time.monotonic() - self.t0) * MIC_RATE / MIC_FRAME)))
            self.pcm = pcm.astype(np.float32)
            self.ended.clear()
            done = self.t0 + (self.at + -(-pcm.size // MIC_FRAME)) * MIC_FRAME / MIC_RATE
            asyncio.get_running_loop().call_later(max(done - time.monotonic(), 0), self.ended.set)

        async def recv(self):
            wait = self.t0 + self.n * MIC_FRAME / MIC_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            k = (self.n - self.at) * MIC_FRAME
            chunk = self.pcm[max(k, 0):max(k + MIC_FRAME, 0)]
            pcm = np.zeros(MIC_FRAME, np.int16)
            pcm[:chunk.size] = np.clip(np.rint(chunk * 32767), -32768, 32767)
            f = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            f.sample_rate, f.pts, f.time_base = MIC_RATE, self.n * MIC_FRAME, Fraction(1, MIC_RATE)
            self.n += 1
            return f

    return Mic()


class Peer:
    """An aiortc client: mic track out, video + audio in, the control channel; records what arrives."""

    def __init__(self, base: str, **offer):
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.base, self.offer = base, offer
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = _mic_track()
        self.pc.addTrack(self.mic)
        self.pc.addTransceiver("video", direction="recvonly")
        self.channel = self.pc.createDataChannel("control")
        self.texts: asyncio.Queue = asyncio.Queue()
        self.channel.on("message", lambda m: self.texts.put_nowait(json.loads(m)))
        self.video: list[tuple[float, int]] = []    # (arrival, pts at 90 kHz)
        self.audio_samples = 0
        self.audio_peak = 0       # of the avatar's voice (s16)
        self.tasks = []
        self.pc.on("track", lambda t: self.tasks.append(asyncio.ensure_future(self._read(t))))
        self.session = None

    async def connect(self) -> dict:
        """Offer/answer through POST /offer; -> the ready message."""
        from aiortc import RTCSessionDescription

        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "avatar": "default", **self.offer}
        status, ans = await asyncio.get_running_loop().run_in_executor(None, post, f"http://{self.base}/offer", body)
        assert status == 200, ans
        self.session = ans["session"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=ans["sdp"], type=ans["type"]))
        return await self.text("ready", 15)

    async def _read(self, track):
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                f = await track.recv()
                if track.kind == "video":
                    self.video.append((time.monotonic(), f.pts))
                else:
                    self.audio_samples += f.samples
                    self.audio_peak = max(self.audio_peak, int(np.abs(f.to_ndarray().astype(np.int32)).max()))
        except MediaStreamError:
            pass

    def send(self, **msg) -> None:
        self.channel.send(json.dumps(msg))

    async def text(self, kind: str, timeout: float) -> dict:
        """The next control message of type `kind` (others are skipped)."""
        async def first():
            while True:
                m = await self.texts.get()
                if m["type"] == kind:
                    return m
        return await asyncio.wait_for(first(), timeout)

    async def close(self):
        await self.pc.close()
        for t in self.tasks:
            t.cancel()


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_until(cond, timeout: float, what: str):
    t_end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > t_end:
            raise AssertionError(f"{what} within {timeout} s")
        await asyncio.sleep(0.05)


@needs_aiortc
def test_speech_round_trip(rtc_server, avatars, tmp_path):
    """A wav through the mic track -> one utterance of Player.play's frame count (+-1), video at ~25 FPS, audio in step."""
    import soundfile as sf

    base, app = rtc_server
    sf.write(tmp_path / "speech.wav", speech(1.6, MIC_RATE, seed=3), MIC_RATE)
    pcm, sr = sf.read(tmp_path / "speech.wav", dtype="float32")
    ref = sum(1 for _ in avatars["default"].player.play(pcm, sr))

    async def go():
        p = Peer(base, token="s3")
        try:
            ready = await p.connect()
            assert (ready["avatar"], ready["width"], ready["height"], ready["fps"]) == ("default", 256, 256, FPS)
            assert ready["session"] == p.session
            await wait_until(lambda: len(p.video) >= 10, 15, "10 idle video frames")
            st = app.state.streams[p.session]
            before = st.stats["speech_frames"]
            p.send(type="start")
            p.mic.say(pcm)
            assert (await p.text("speech_start", 5))["utterance"] == 0
            await asyncio.wait_for(p.mic.ended.wait(), 10)
            p.send(type="finish")
            await p.text("speech_end", 10)
            n = st.stats["speech_frames"] - before
            await asyncio.sleep(1.0)   # idle frames go on after the speech
            return n, list(p.video), p.audio_samples, p.audio_peak
        finally:
            await p.close()

    n, video, audio_samples, peak = run(go())
    assert abs(n - ref) <= 1, (n, ref)
    span = video[-1][0] - video[10][0]
    fps = (len(video) - 11) / span
    assert fps >= 20, f"{fps:.1f} FPS over {span:.1f} s"
    steps = np.diff([pts for _, pts in video])
    assert np.median(steps) == 90000 // FPS and (steps > 0).all()   # pts from the frame index, 25 FPS on a 90 kHz clock
    video_s = (video[-1][1] - video[0][1]) / 90000 + 1 / FPS
    assert abs(audio_samples / MIC_RATE - video_s) < 0.25, (audio_samples / MIC_RATE, video_s)
    assert peak > 0.1 * 32768   # the speech came back on the audio track (idle frames are silent)


@needs_aiortc
def test_interrupt_and_disconnect_frees_the_session(rtc_server):
    """interrupt: speech_end (interrupted) at once and no speech frame after it; closing the peer frees its slot."""
    base, app = rtc_server

    async def go():
        p = Peer(base, token="s3")
        try:
            await p.connect()
            st = app.state.streams[p.session]
            p.send(type="start")
            p.mic.say(speech(4.0, MIC_RATE, seed=4))
            await p.text("speech_start", 5)
            await asyncio.sleep(0.4)
            t0 = time.monotonic()
            p.send(type="interrupt")
            end = await p.text("speech_end", 2)
            took = time.monotonic() - t0
            frozen = st.stats["speech_frames"]
            await asyncio.sleep(0.8)   # the mic goes on with the rest of the wav: it opens no utterance (no start)
            assert st.stats["speech_frames"] == frozen and p.texts.empty()
            assert st.stats["idle_frames"] > 0
            return end, took, frozen
        finally:
            await p.close()

    end, took, frozen = run(go())
    assert end.get("interrupted") is True and took < 0.5 and frozen > 0

    async def freed():
        await wait_until(lambda: health(base)["sessions"] == 0, 10, "the session freed")
    run(freed(), 15)
    assert not app.state.streams


@needs_aiortc
@pytest.mark.parametrize("bad", ['{"type": "start", "pace": "fast"}', "not json", '{"type": "dance"}'])
def test_a_bad_control_message_gets_an_error_and_the_close(rtc_server, bad):
    base, _ = rtc_server

    async def go():
        p = Peer(base, token="s3")
        closed = asyncio.Event()
        p.pc.on("connectionstatechange", lambda: p.pc.connectionState in ("closed", "failed") and closed.set())
        p.channel.on("close", closed.set)
        try:
            await p.connect()
            p.channel.send(bad)
            err = await p.text("error", 5)
            await asyncio.wait_for(closed.wait(), 10)   # the server closed the connection
            await wait_until(lambda: health(base)["sessions"] == 0, 10, "the session freed")
            return err["message"]
        finally:
            await p.close()

    message = run(go(), 30)
    assert "|" in message and "\n" not in message


@needs_aiortc
def test_a_peer_that_never_connects_is_dropped(rtc_server, monkeypatch):
    """A client that takes its answer and vanishes (no ICE, no control channel) frees its session after CONNECT_TIMEOUT_S."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    import gt_serve.webrtc as webrtc

    base, _ = rtc_server
    monkeypatch.setattr(webrtc, "CONNECT_TIMEOUT_S", 1.0)

    async def go():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        pc.createDataChannel("control")
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "token": "s3"}
        status, _ = await asyncio.get_running_loop().run_in_executor(None, post, f"http://{base}/offer", body)
        await pc.close()   # before setRemoteDescription: the server never hears from it again
        assert status == 200 and health(base)["sessions"] == 1
        await wait_until(lambda: health(base)["sessions"] == 0, 5, "the session dropped")

    run(go(), 20)


@needs_aiortc
def test_bad_offers_get_one_line_errors(rtc_server):
    base, app = rtc_server
    url = f"http://{base}/offer"
    ok = {"type": "offer", "avatar": "default", "token": "s3"}
    cases = [
        (post(url, b"{not json"), 400, "not a JSON object"),
        (post(url, {**ok, "type": "answer", "sdp": "v=0"}), 400, "type"),
        (post(url, {**ok, "sdp": "this is not SDP"}), 400, "malformed offer"),
        (post(url, {**ok, "sdp": 12}), 400, "sdp"),
        (post(url, {**ok, "avatar": "nobody", "sdp": "v=0"}), 404, "no such avatar"),
        (post(url, {**ok, "token": "wrong", "sdp": "v=0"}), 401, "token"),
        (post(url, {**ok, "sdp": "v=0\r\n" * 20000}), 413, "offer over"),
        (post(url, {**ok, "sdp": "v=0"}, {"Origin": "http://evil.example"}), 403, "origin"),
    ]
    for (status, body), want, words in cases:
        assert status == want, (want, body)
        assert body["type"] == "error" and words in body["message"] and "\n" not in body["message"] and "|" in body["message"], body
    assert health(base)["sessions"] == 0


@needs_aiortc
def test_malformed_sdp_offers_get_400(rtc_server):
    """Offers that parse as JSON but not as a usable SDP offer: 400, one line, no session left behind."""
    import re

    from aiortc import RTCConfiguration, RTCPeerConnection

    base, _ = rtc_server

    async def offer_sdp(channel: bool):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        if channel:
            pc.createDataChannel("control")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    good = run(offer_sdp(True), 20)
    cases = [(run(offer_sdp(False), 20), "no data channel"),
             (re.sub(r"a=ice-(ufrag|pwd):.*\r\n", "", good), "ICE"),
             (re.sub(r"a=rtpmap:.*\r\n", "", good), "malformed offer")]
    for sdp, words in cases:
        status, body = post(f"http://{base}/offer", {"sdp": sdp, "type": "offer", "token": "s3"})
        assert status == 400 and words in body["message"] and "|" in body["message"] and "\n" not in body["message"], body
    assert health(base)["sessions"] == 0


@needs_aiortc
def test_full_server_answers_503(rtc_server):
    base, _ = rtc_server

    async def go():
        peers = [Peer(base, token="s3") for _ in range(2)]
        try:
            for p in peers:
                await p.connect()
            status, body = await asyncio.get_running_loop().run_in_executor(
                None, post, f"http://{base}/offer", {"sdp": "v=0", "type": "offer", "token": "s3"})
            assert status == 503 and body["message"].startswith("server full (2 sessions) |"), body
        finally:
            for p in peers:
                await p.close()
        await wait_until(lambda: health(base)["sessions"] == 0, 10, "both sessions freed")

    run(go())


def test_missing_aiortc_answers_501(server, monkeypatch):
    """Without aiortc, /offer answers 501 with the one-line install error (the rest of the server goes on)."""
    import sys

    base, _ = server
    monkeypatch.setitem(sys.modules, "aiortc", None)
    status, body = post(f"http://{base}/offer", {"sdp": "v=0", "type": "offer"})
    assert status == 501 and body["message"] == "gt serve /offer (WebRTC): aiortc is not installed | pip install 'gt[webrtc]'"
    assert health(base)["status"] == "ok"


def test_ice_server_setting():
    from gt_serve import ServeConfig
    from gt_serve.config import parse_ice_server

    assert parse_ice_server("stun:stun.example.org:3478") == {"urls": "stun:stun.example.org:3478", "username": None, "credential": None}
    assert parse_ice_server("turn:al:p%40ss@turn.example.org:3478?transport=tcp") == {
        "urls": "turn:turn.example.org:3478?transport=tcp", "username": "al", "credential": "p@ss"}
    for bad, words in [("http://x", "not a stun:"), ("turn:turn.example.org", "USER:PASS@"), ("stun:h:99999", "HOST[:PORT]"),
                       ("turns:a:b@h?transport=udp", "transport")]:
        with pytest.raises(InputError, match=words.replace("[", r"\[").replace("]", r"\]")):
            ServeConfig(ice_servers=[bad]).check()
    if find_spec("aiortc") is not None:
        from gt_serve.webrtc import ice_configuration

        conf = ice_configuration(["stun:stun.example.org", "turn:al:pw@turn.example.org:3478"])
        assert [(s.urls, s.username, s.credential) for s in conf.iceServers] == [
            ("stun:stun.example.org", None, None), ("turn:turn.example.org:3478", "al", "pw")]
        assert ice_configuration([]).iceServers == []   # none: no STUN at all (not aiortc's default)
