"""gt serve's WebSocket protocol on a live server: round trip, equality with Player.play, pacing, interrupt."""
import time

import numpy as np
import pytest
from tests.support.speech import speech
from tests.support.serve import Client, decode_jpeg, pcm_s16

from gt_runtime.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from gt_serve.protocol import AUDIO_BYTES

pytestmark = pytest.mark.timeout(120)


def _utterance(c: Client, pcm: np.ndarray, chunk: int, realtime: bool = False):
    """Send pcm (16 kHz float32) in chunks of `chunk` samples, then finish."""
    for k in range(0, pcm.size, chunk):
        c.ws.send(pcm_s16(pcm[k:k + chunk]))
        if realtime:
            time.sleep(chunk / SAMPLE_RATE)
    c.send_json(type="finish")


def _collect(c: Client, until: str = "speech_end", timeout: float = 60.0):
    """Messages up to and including the first text message of type `until` -> (frames, texts)."""
    frames, texts = [], []
    t_end = time.time() + timeout
    while time.time() < t_end:
        kind, m = c.recv()
        if kind == "text":
            texts.append(m)
            if m["type"] == until:
                return frames, texts
        else:
            frames.append(m)
    raise AssertionError(f"no {until} within {timeout} s")


def test_ready_message(server):
    base, _ = server
    with Client(f"ws://{base}/v1/stream?avatar=default") as c:
        kind, m = c.recv()
        assert kind == "text" and m["type"] == "ready"
        assert (m["avatar"], m["width"], m["height"], m["fps"]) == ("default", 256, 256, FPS)
        assert m["lookahead_ms"] == pytest.approx(247.5) and m["session"] and m["replica"]


def test_round_trip_fast(server):
    """Frame count = ceil(S / 640), indices 0.., pts = index / 25, 1280 audio bytes per frame = the input audio."""
    base, _ = server
    pcm = speech(1.93, seed=1, gated=True)
    with Client(f"ws://{base}/v1/stream?avatar=default") as c:
        c.recv()
        c.send_json(type="start", sample_rate=SAMPLE_RATE, encoding="s16le", pace="fast")
        _utterance(c, pcm, 1000)
        frames, texts = _collect(c)
    n = -(-pcm.size // SAMPLES_PER_FRAME)
    assert len(frames) == n and abs(n - round(pcm.size / SAMPLE_RATE * FPS)) <= 1
    assert [t["type"] for t in texts] == ["speech_start", "speech_end"]
    assert [h["index"] for h, *_ in frames] == list(range(n))
    assert [h["frame"] for h, *_ in frames] == list(range(n))
    assert all(h["speech"] and h["pts"] == pytest.approx(h["index"] / FPS) for h, *_ in frames)
    assert all(len(a) == AUDIO_BYTES for _, _, a, _ in frames)
    audio = b"".join(a for _, _, a, _ in frames)
    sent = pcm_s16(pcm)
    assert audio[:len(sent)] == sent and audio[len(sent):] == bytes(len(audio) - len(sent))
    assert all(decode_jpeg(j).shape == (256, 256, 3) for _, j, _, _ in frames[:3])


def test_equal_to_player_play(server, avatars):
    """An utterance's frames = Player.play on the same audio (JPEG aside), whatever the chunking; f32le at 24 kHz."""
    import soxr

    base, _ = server
    pcm16 = speech(1.5, seed=2, gated=True)
    pcm24 = soxr.resample(pcm16, SAMPLE_RATE, 24000, quality="HQ").astype(np.float32)
    ref = list(avatars["default"].player.play(pcm24, 24000))
    with Client(f"ws://{base}/v1/stream?avatar=default") as c:
        c.recv()
        c.send_json(type="start", sample_rate=24000, encoding="f32le", pace="fast")
        for k in range(0, pcm24.size, 777):
            c.ws.send(pcm24[k:k + 777].astype("<f4").tobytes())
        c.send_json(type="finish")
        frames, _ = _collect(c)
    assert len(frames) == len(ref)
    from gt_serve.renderer import encode_jpeg

    quality = avatars["default"].renderer.quality
    got = np.stack([decode_jpeg(j) for _, j, _, _ in frames]).astype(np.float32)
    want = np.stack([decode_jpeg(encode_jpeg(f, quality)) for f in ref]).astype(np.float32)
    err = np.abs(got - want)   # the same JPEG encoder on equal images gives equal bytes; batching may move a pixel by 1
    motion = np.abs(np.diff(want, axis=0)).mean()
    assert err.mean() < 0.1 and err.max() <= 24, (err.mean(), err.max())
    assert err.mean() < 0.2 * motion, (motion, err.mean())   # the speech moves the face far more than that


def wait_idle_cache(avatar, timeout: float = 90.0) -> None:
    """Wait until the server's background prewarm has rendered the idle frames of the whole track."""
    t_end = time.time() + timeout
    while len(avatar.idle) < avatar.track_frames:
        assert time.time() < t_end, f"idle frames cached: {len(avatar.idle)} of {avatar.track_frames}"
        time.sleep(0.2)


def test_realtime_idle_then_speech(server, avatars):
    """realtime: idle frames (silent audio) at 25 FPS before speech, then speech frames, then idle again."""
    base, _ = server
    wait_idle_cache(avatars["default"])
    with Client(f"ws://{base}/v1/stream?avatar=default") as c:
        c.recv()
        c.send_json(type="start", sample_rate=SAMPLE_RATE, encoding="s16le", pace="realtime")
        idle = [c.recv() for _ in range(30)]
        assert all(k == "frame" and not m[0]["speech"] and m[2] == bytes(AUDIO_BYTES) for k, m in idle)
        t = [m[3] for _, m in idle]
        fps = (len(t) - 1) / (t[-1] - t[0])
        assert 22.0 < fps < 27.0, fps   # the idle frames are cached: the clock alone paces them
        pcm = speech(1.0, seed=3, gated=True)
        _utterance(c, pcm, 1600)
        frames, texts = _collect(c)
        spoken = [h for h, *_ in frames if h["speech"]]
        assert len(spoken) == 25 and [h["frame"] for h in spoken] == list(range(25))
        assert texts[0]["type"] == "speech_start" and texts[-1]["type"] == "speech_end"
        # one frame per tick, indices unbroken after the 30 idle ones; idle frames fill any wait before the
        # speech (none when the first speech frame is ready by tick 30), speech frames come in their order
        assert [h["index"] for h, *_ in frames] == list(range(30, 30 + len(frames)))
        assert frames[-1][0]["speech"]
        kind, m = c.recv()
        assert kind == "frame" and not m[0]["speech"] and m[0]["index"] == frames[-1][0]["index"] + 1


def test_silence_renders_the_avatar_at_rest(server):
    """A silent utterance is valid: its frames come back (mouth at rest), with the silence as their audio."""
    base, _ = server
    with Client(f"ws://{base}/v1/stream?avatar=default") as c:
        c.recv()
        c.send_json(type="start", sample_rate=SAMPLE_RATE, encoding="s16le", pace="fast")
        _utterance(c, np.zeros(SAMPLE_RATE // 2, np.float32), 4000)
        frames, _ = _collect(c)
    assert len(frames) == 13 and all(a == bytes(AUDIO_BYTES) for _, _, a, _ in frames)
    assert decode_jpeg(frames[0][1]).std() > 5.0   # a face, not a blank image


def test_interrupt(server, avatars):
    """The first idle frame comes within 100 ms of the interrupt, and no speech frame after it."""
    base, _ = server
    wait_idle_cache(avatars["default"])
    with Client(f"ws://{base}/v1/stream?avatar=default") as c:
        c.recv()
        c.send_json(type="start", sample_rate=SAMPLE_RATE, encoding="s16le", pace="realtime")
        pcm = speech(6.0, seed=4, gated=True)
        for k in range(0, pcm.size, 16000):
            c.ws.send(pcm_s16(pcm[k:k + 16000]))
        n_speech = 0
        while n_speech < 10:
            kind, m = c.recv()
            n_speech += kind == "frame" and m[0]["speech"]
        t_int = time.perf_counter()
        c.send_json(type="interrupt")
        after, first_idle, ended = [], None, False
        while len(after) < 30:
            kind, m = c.recv()
            if kind == "text":
                assert m == {"type": "speech_end", "interrupted": True}
                ended = True
                continue
            after.append(m)
            if first_idle is None and not m[0]["speech"]:
                first_idle = m[3] - t_int
        assert ended and first_idle is not None and first_idle < 0.100, first_idle
        k_idle = next(i for i, m in enumerate(after) if not m[0]["speech"])
        assert k_idle <= 1 and not any(m[0]["speech"] for m in after[k_idle:])   # at most the frame in flight
        # The session goes on: a new utterance plays after the interrupt.
        _utterance(c, speech(0.4, seed=5, gated=True), 1600)
        frames, texts = _collect(c)
        assert texts[-1] == {"type": "speech_end"} and sum(h["speech"] for h, *_ in frames) == 10
