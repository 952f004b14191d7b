"""A live `gt serve` (uvicorn on 127.0.0.1, a free port) in a thread, and a small protocol client."""
from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(cfg, avatars):
    """Serve create_app(cfg, avatars) on cfg.host:cfg.port (0: a free port) -> base URL "127.0.0.1:PORT"."""
    import uvicorn

    from gt_serve.app import create_app

    cfg.port = cfg.port or free_port()
    app = create_app(cfg, avatars)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="error",
                                           ws_max_size=4 * cfg.max_message_bytes, lifespan="on"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    t0 = time.time()
    while not server.started:
        if time.time() - t0 > 20 or not th.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{cfg.port}", app
    finally:
        server.should_exit = True
        th.join(timeout=10)


def pcm_s16(pcm: np.ndarray) -> bytes:
    return np.rint(np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()


class Client:
    """A blocking protocol client (websockets.sync): recv() -> ("text", dict) | ("frame", (header, jpeg, audio, t))."""

    def __init__(self, url: str, **kw):
        from websockets.sync.client import connect

        self._cm = connect(url, max_size=None, open_timeout=10, **kw)
        self.ws = self._cm.__enter__()

    def send_json(self, **msg) -> None:
        self.ws.send(json.dumps(msg))

    def recv(self, timeout: float = 10.0):
        from gt_serve.protocol import unpack_frame

        m = self.ws.recv(timeout=timeout)
        if isinstance(m, str):
            return "text", json.loads(m)
        return "frame", (*unpack_frame(m), time.perf_counter())

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def decode_jpeg(b: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
