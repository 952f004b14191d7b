"""The WebSocket protocol of `gt serve` (docs/PROTOCOL.md): frame packing, message parsing, close codes.

A frame message is one binary WebSocket message:

    [u32 little-endian n][n bytes UTF-8 JSON header][JPEG][1280 bytes: 640 s16le samples at 16 kHz]

The header is {"index", "pts", "speech"} (+ "utterance", "frame" on speech frames); the JPEG
ends where the audio begins (the audio is always SAMPLES_PER_FRAME x 2 bytes at the end).
"""
from __future__ import annotations

import json
import math
import struct

import numpy as np

from gt_runtime.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

AUDIO_BYTES = SAMPLES_PER_FRAME * 2       # one frame's audio: 640 s16le samples = 1280 bytes
ENCODINGS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
PACES = ("realtime", "fast")
MAX_TEXT_BYTES = 4096                      # a control message is small JSON

# Close codes (RFC 6455 and the IANA registry).
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003                   # a message of the wrong kind (binary before start, bad PCM)
CLOSE_POLICY = 1008                        # bad token, bad Origin, out-of-order or malformed message
CLOSE_TOO_BIG = 1009                       # a message or the queued audio over its cap
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012                       # gt serve --ray: the session's replica stopped; reconnect
CLOSE_TRY_LATER = 1013                     # server full


class ProtocolError(Exception):
    """A bad request: the server sends {"type": "error", "message"} and closes with `code`."""

    def __init__(self, message: str, code: int = CLOSE_POLICY):
        super().__init__(message)
        self.code = code


def pack_frame(index: int, jpeg: bytes, audio: bytes, speech: bool, utterance: int | None = None,
               frame: int | None = None) -> bytes:
    """One frame message. audio: exactly AUDIO_BYTES of s16le 16 kHz (the frame's 40 ms)."""
    if len(audio) != AUDIO_BYTES:
        raise ValueError(f"frame audio is {len(audio)} bytes, expected {AUDIO_BYTES}")
    head = {"index": int(index), "pts": round(index / FPS, 6), "speech": bool(speech)}
    if speech:
        head["utterance"], head["frame"] = int(utterance), int(frame)
    h = json.dumps(head, separators=(",", ":")).encode()
    return struct.pack("<I", len(h)) + h + jpeg + audio


def unpack_frame(msg: bytes) -> tuple[dict, bytes, bytes]:
    """A frame message -> (header dict, JPEG bytes, audio bytes)."""
    (n,) = struct.unpack_from("<I", msg, 0)
    head = json.loads(msg[4:4 + n].decode())
    return head, msg[4 + n:len(msg) - AUDIO_BYTES], msg[len(msg) - AUDIO_BYTES:]


def frame_audio(pcm16k: np.ndarray) -> bytes:
    """pcm [<= 640] float32 at 16 kHz -> AUDIO_BYTES of s16le, zero-padded (the speech's last frame)."""
    out = np.zeros(SAMPLES_PER_FRAME, np.int16)
    x = np.asarray(pcm16k, np.float32)[:SAMPLES_PER_FRAME]
    out[:x.size] = np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)  # s16le input comes back exact
    return out.tobytes()


SILENT_AUDIO = bytes(AUDIO_BYTES)


def parse_text(data: str) -> dict:
    """A client text message -> validated dict with "type" in start | finish | interrupt."""
    if len(data.encode()) > MAX_TEXT_BYTES:
        raise ProtocolError(f"text message of {len(data.encode())} bytes | control messages are at most {MAX_TEXT_BYTES} bytes",
                            CLOSE_TOO_BIG)
    try:
        msg = json.loads(data)
    except ValueError:
        raise ProtocolError("text message is not JSON | send {\"type\": \"start\" | \"finish\" | \"interrupt\", ...}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("text message has no \"type\" | send {\"type\": \"start\" | \"finish\" | \"interrupt\", ...}")
    kind = msg["type"]
    if kind == "start":
        return _parse_start(msg)
    if kind in ("finish", "interrupt"):
        return {"type": kind}
    raise ProtocolError(f"unknown message type {kind!r} | expected start, finish or interrupt")


def _parse_start(msg: dict) -> dict:
    sr = msg.get("sample_rate", SAMPLE_RATE)
    if isinstance(sr, bool) or not isinstance(sr, (int, float)) or not math.isfinite(sr) or sr != int(sr) \
            or not 4000 <= int(sr) <= 384000:
        raise ProtocolError(f"start: sample_rate {sr!r} | expected a whole number of Hz from 4000 to 384000")
    enc = msg.get("encoding", "s16le")
    if enc not in ENCODINGS:
        raise ProtocolError(f"start: encoding {enc!r} | expected s16le or f32le")
    pace = msg.get("pace", "realtime")
    if pace not in PACES:
        raise ProtocolError(f"start: pace {pace!r} | expected realtime or fast")
    return {"type": "start", "sample_rate": int(sr), "encoding": enc, "pace": pace}


def decode_pcm(data: bytes, encoding: str) -> np.ndarray:
    """A binary PCM chunk (mono) -> float32 [S] in [-1, 1]."""
    dt = ENCODINGS[encoding]
    if len(data) % dt.itemsize:
        raise ProtocolError(f"audio chunk of {len(data)} bytes is not a whole number of {encoding} samples "
                            f"({dt.itemsize} bytes each) | send mono {encoding} PCM", CLOSE_UNSUPPORTED)
    x = np.frombuffer(data, dt)
    if encoding == "s16le":
        return x.astype(np.float32) / 32768.0
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ProtocolError("audio chunk has NaN or Inf samples | send finite f32le PCM in [-1, 1]", CLOSE_UNSUPPORTED)
    return x


def error_message(message: str) -> str:
    return json.dumps({"type": "error", "message": message})
