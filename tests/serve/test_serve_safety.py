"""gt serve's safety: bad messages get an error and a close while other sessions go on; vanished clients free their
session; token, Origin, server full, bind address, and the missing-extra message."""
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from tests.support.speech import speech
from tests.support.serve import Client, live_server, pcm_s16

from gt_serve import ServeConfig

pytestmark = pytest.mark.timeout(180)

START = json.dumps({"type": "start", "sample_rate": 16000, "encoding": "s16le", "pace": "fast"})
START_F32 = json.dumps({"type": "start", "sample_rate": 16000, "encoding": "f32le", "pace": "fast"})
NAN = np.array([0.1, np.nan, 0.2], "<f4").tobytes()

# name -> (messages to send after ready, expected close code, a word of the error message)
BAD = {
    "audio before start": ([pcm_s16(np.zeros(640, np.float32))], 1008, "before start"),
    "not JSON": (["{oops"], 1008, "not JSON"),
    "no type": ([json.dumps({"sample_rate": 16000})], 1008, "type"),
    "unknown type": ([json.dumps({"type": "dance"})], 1008, "unknown message type"),
    "bad sample rate": ([json.dumps({"type": "start", "sample_rate": 10**9})], 1008, "sample_rate"),
    "bad encoding": ([json.dumps({"type": "start", "encoding": "mp3"})], 1008, "encoding"),
    "bad pace": ([json.dumps({"type": "start", "pace": "slow"})], 1008, "pace"),
    "odd PCM bytes": ([START, b"\x00\x01\x02"], 1003, "whole number"),
    "NaN audio": ([START_F32, NAN], 1003, "NaN"),
    "oversized message": ([START, bytes(2 * 40_000)], 1009, "over the cap"),
    "finish before start": ([json.dumps({"type": "finish"})], 1008, "before start"),
    "start during an utterance": ([START, pcm_s16(speech(0.2, gated=True)), START], 1008, "during an utterance"),
    "too much queued audio": ([START] + [pcm_s16(np.zeros(16000, np.float32))] * 4, 1009, "queued audio"),
    "text too long": ([json.dumps({"type": "finish", "pad": "x" * 5000})], 1009, "at most"),
}


@pytest.fixture(scope="module")
def small_server(avatars):
    """Caps small enough to hit: 40 kB messages, 3 s of queued audio, 3 sessions."""
    with live_server(ServeConfig(port=0, max_sessions=3, max_message_bytes=40_000, max_queued_s=3.0), avatars) as s:
        yield s


def health(base: str) -> dict:
    return json.loads(urllib.request.urlopen(f"http://{base}/healthz", timeout=5).read())


def expect_error_close(c: Client, timeout: float = 15.0):
    """-> (error message, close code): an error text, then the close."""
    from websockets.exceptions import ConnectionClosed

    err = None
    t_end = time.time() + timeout
    while time.time() < t_end:
        try:
            kind, m = c.recv(timeout=timeout)
        except ConnectionClosed as exc:
            return err, exc.rcvd.code if exc.rcvd else None
        if kind == "text" and m["type"] == "error":
            err = m["message"]
    raise AssertionError("the server did not close")


class Bystander(threading.Thread):
    """A good session streaming speech meanwhile: it must go on receiving frames."""

    def __init__(self, base):
        super().__init__(daemon=True)
        self.base, self.frames, self.stop, self.error = base, 0, False, None

    def run(self):
        try:
            with Client(f"ws://{self.base}/v1/stream?avatar=default") as c:
                c.recv()
                c.ws.send(START)
                while not self.stop:
                    c.ws.send(pcm_s16(speech(0.4, gated=True)))
                    c.ws.send(json.dumps({"type": "finish"}))
                    while True:
                        kind, m = c.recv(timeout=30)
                        if kind == "frame":
                            self.frames += 1
                        elif m["type"] == "speech_end":
                            break
        except Exception as exc:  # reported by the test
            self.error = exc


def test_bad_messages_error_and_close_others_go_on(small_server):
    from websockets.exceptions import ConnectionClosed

    base, _ = small_server
    by = Bystander(base)
    by.start()
    try:
        for name, (msgs, code, word) in BAD.items():
            with Client(f"ws://{base}/v1/stream?avatar=default") as c:
                assert c.recv()[1]["type"] == "ready"
                for m in msgs:
                    try:
                        c.ws.send(m)
                    except ConnectionClosed:
                        break   # closed by the server at an earlier message of this case
                err, got = expect_error_close(c)
            assert err is not None and word.lower() in err.lower() and "|" in err and "\n" not in err, (name, err)
            assert got == code, (name, got, err)
        seen = by.frames
        t_end = time.time() + 30
        while by.frames < seen + 10 and by.error is None and time.time() < t_end:
            time.sleep(0.05)
        assert by.error is None and by.frames >= seen + 10, (by.error, by.frames)
    finally:
        by.stop = True
        by.join(timeout=30)
    t_end = time.time() + 5
    while health(base)["sessions"] and time.time() < t_end:
        time.sleep(0.05)
    assert health(base)["sessions"] == 0


def test_unknown_avatar(small_server):
    base, _ = small_server
    with Client(f"ws://{base}/v1/stream?avatar=nobody") as c:
        err, code = expect_error_close(c)
    assert "no such avatar" in err and "default" in err and code == 1008


def test_vanished_client_frees_its_session(small_server):
    base, app = small_server
    c = Client(f"ws://{base}/v1/stream?avatar=default")
    c.recv()
    c.ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "s16le", "pace": "realtime"}))
    pcm = speech(2.0, gated=True)
    for k in range(0, pcm.size, 8000):
        c.ws.send(pcm_s16(pcm[k:k + 8000]))
    while not (lambda k, m: k == "frame" and m[0]["speech"])(*c.recv()):
        pass
    assert health(base)["sessions"] == 1
    c.ws.socket.close()   # gone without a close handshake
    t_end = time.time() + 10
    while health(base)["sessions"] and time.time() < t_end:
        time.sleep(0.05)
    assert health(base)["sessions"] == 0 and not app.state.streams


def test_server_full(small_server):
    base, _ = small_server
    clients = [Client(f"ws://{base}/v1/stream?avatar=default") for _ in range(3)]
    try:
        assert all(c.recv()[1]["type"] == "ready" for c in clients)
        with Client(f"ws://{base}/v1/stream?avatar=default") as c:
            err, code = expect_error_close(c)
        assert "server full" in err and code == 1013
    finally:
        for c in clients:
            c.close()


def test_token(avatars):
    with live_server(ServeConfig(port=0, token="s3cret"), avatars) as (base, _):
        for q in ("", "&token=wrong"):
            with Client(f"ws://{base}/v1/stream?avatar=default{q}") as c:
                err, code = expect_error_close(c)
            assert "token" in err and code == 1008
        with Client(f"ws://{base}/v1/stream?avatar=default&token=s3cret") as c:
            assert c.recv()[1]["type"] == "ready"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://{base}/v1/avatars", timeout=5)
        assert e.value.code == 401
        assert json.loads(urllib.request.urlopen(f"http://{base}/v1/avatars?token=s3cret", timeout=5).read())[0]["name"] == "default"


def test_origin(small_server):
    base, _ = small_server
    with Client(f"ws://{base}/v1/stream?avatar=default", origin="http://evil.example") as c:
        err, code = expect_error_close(c)
    assert "origin" in err and code == 1008
    with Client(f"ws://{base}/v1/stream?avatar=default", origin=f"http://{base}") as c:
        assert c.recv()[1]["type"] == "ready"


def test_bind_address_needs_token():
    from gt_runtime.errors import InputError

    with pytest.raises(InputError, match="--token"):
        ServeConfig(host="0.0.0.0").check()
    ServeConfig(host="0.0.0.0", token="t").check()
    ServeConfig(host="::1").check()


def test_cli_refuses_public_host_and_missing_extra(monkeypatch, capsys):
    import sys

    from gt_cli.app import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--host", "0.0.0.0"])
    assert e.value.code == 2 and "--token" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "fastapi", None)   # as if the serve extra were not installed
    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", "0"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "pip install 'gt[serve]'" in err and "\n" not in err
