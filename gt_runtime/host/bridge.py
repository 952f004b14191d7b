"""The Python half of the C host: libgt_host.so (plugins/host) imports this module and calls its functions.

The C side owns what a native caller sees: handles, locks, the frame queue, the caller's
buffers and the status codes. Everything that touches gt_runtime happens here, through
the public API of `Player`, `Session` and `Timings`. Each function returns plain Python
values (tuples of str / int / float, numpy frames) that plugins/host/gt_host_api.c unpacks
with PyArg_ParseTuple; a change of layout here needs the same change there.

Calls come from any C thread with the GIL held; the C side serialises calls on one
session, so only the table of shared Players (used by every session) needs a lock.
"""
from __future__ import annotations

import os
import threading
import traceback
from typing import Iterator

import numpy as np

from gt_runtime.contract import DEBUG, ENGINE, RASTER, SAMPLE_RATE
from gt_runtime.errors import InputError
from gt_runtime.playback.player import Player
from gt_runtime.playback.session import Session

# The C structs' stage fields (gt_frame_info.ms_<field>, gt_stats.<field>), in their order,
# and the contract stage each reports. The structs' names are ABI and stay; "background" is
# the stage the pipeline records as "composite" (torso + background plate).
FRAME_STAGES = (
    ("audio_frontend", "audio_frontend"),
    ("audio_encoder", "audio_encoder"),
    ("deform", "deform"),
    ("background", "composite"),
    ("raster", "raster"),
)
STATS_LEN = 2 + 4 * len(FRAME_STAGES)  # audio_s, model_fps, then (mean, p50, p99, total) ms per stage

# An ImportError's fix (gt_host_python.c writes the same words when this module cannot be imported).
IMPORT_HINT = ("point GT_PYTHON (or gt_options.python_executable) at the venv's bin/python "
               "and GT_PYTHONPATH at the folder that holds gt_runtime")

# One Player per (bundle, engine, raster, threads, batch), shared by its sessions and closed with the
# last of them. Threads switch between bytecodes even with the GIL, hence the lock.
_players: dict[tuple, list] = {}
_players_lock = threading.Lock()


def open_session(bundle: str, engine: str, raster: str, threads: int, batch: int) -> tuple:
    """Open a streaming session on `bundle` (sharing its Player) -> (key, session, width, height, fps,
    lookahead_ms, engine name, raster name).

    engine / raster "" mean $GT_ENGINE / $GT_RASTER (gt_runtime.contract), else "auto";
    threads 0 means automatic. `key` goes back to `close_session`.
    """
    engine = engine or ENGINE.get() or "auto"
    raster = raster or RASTER.get() or "auto"
    key = (os.path.realpath(bundle), engine, raster, int(threads), int(batch))
    with _players_lock:
        entry = _players.get(key)
        if entry is None:
            player = Player(bundle, engine=engine, raster=raster, threads=threads or None, batch=batch)
            entry = _players[key] = [player, 0]
        player = entry[0]
        session = player.session()
        entry[1] += 1
    info = player.describe()
    return (key, session, int(player.width), int(player.height), float(player.fps), float(session.lookahead_ms),
            str(info["engine"]), str(info["raster"]))


def close_session(key: tuple, session: Session) -> None:
    """Close `session`; close its Player too when no other session uses it."""
    try:
        session.close()
    finally:
        with _players_lock:
            entry = _players.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _players[key]
                    entry[0].close()


def open_players() -> int:
    """Players loaded now (each shared by one or more sessions)."""
    with _players_lock:
        return len(_players)


def push(session: Session, pcm, sample_rate: int) -> None:
    """pcm: a buffer of float32 samples [S] that the caller owns (copied before the session keeps any)."""
    session.push_audio(np.frombuffer(pcm, np.float32).copy(), sample_rate)


def frames(session: Session) -> Iterator[np.ndarray]:
    """The frames that can be rendered now (a generator: drain it before the next push / finish)."""
    return session.frames()


def finish(session: Session) -> None:
    """End of speech: the next `frames` yields the tail."""
    session.finish()


def frame_seconds(session: Session) -> tuple:
    """Stage seconds of the frame just rendered, in FRAME_STAGES order.

    The audio front end runs per push, not per frame: its entry is the mean per frame so
    far. The others are the latest record: this frame's share of its batch.
    """
    tm = session.timings
    return tuple(tm.mean(stage) if stage == "audio_frontend" else tm.latest(stage) for _, stage in FRAME_STAGES)


def pull(it: Iterator[np.ndarray], session: Session):
    """Next frame of `it` -> (frame uint8 [H, W, 3], frame_seconds), or None when `it` is exhausted."""
    frame = next(it, None)
    if frame is None:
        return None
    return frame, frame_seconds(session)


def stats(session: Session) -> tuple:
    """-> STATS_LEN floats: audio seconds pushed, model FPS (0 before any frame), then for each of
    FRAME_STAGES: mean ms per frame, p50 ms, p99 ms, total ms (zeros for a stage not run yet)."""
    tm = session.timings
    stages = tm.summary()["stages"]
    fps = tm.model_fps()
    out = [session.samples_16k / SAMPLE_RATE, fps if fps == fps else 0.0]
    for _, stage in FRAME_STAGES:
        st = stages.get(stage)
        out += [0.0] * 4 if st is None else [st["ms_per_frame"], st["p50_ms"], st["p99_ms"], 1e3 * tm.total.get(stage, 0.0)]
    return tuple(float(x) for x in out)


def describe_error(exc_type: type, exc: BaseException | None, tb) -> tuple[str, str]:
    """An exception -> (kind, one-line message); kind is "input", "memory", "python" or "internal"
    (GT_ERR_INPUT, _NO_MEMORY, _PYTHON, _INTERNAL). GT_DEBUG=1 prints the traceback to stderr."""
    if DEBUG.on():
        traceback.print_exception(exc_type, exc, tb)
    msg = " ".join(str(exc).split()) if exc is not None else ""
    if issubclass(exc_type, InputError):
        return "input", msg
    if issubclass(exc_type, MemoryError):
        return "memory", "out of memory" + (": " + msg if msg else "")
    if issubclass(exc_type, ImportError):
        return "python", f"{exc_type.__name__}: {msg} | {IMPORT_HINT}"
    return "internal", f"{exc_type.__name__}: {msg} | set GT_DEBUG=1 for the traceback"

