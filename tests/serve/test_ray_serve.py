"""`gt serve --ray`: the protocol through Ray Serve on a local Ray instance (loopback, 2 CPUs, no dashboard),
2 replicas: 4 concurrent clients equal to Player.play and spread over both replicas; a replica killed mid-stream
closes its client with 1012 within 2 s, the other replica's sessions go on, and a reconnect is served.

One Ray instance for the module (Ray starts slowly on 2 cores); torn down at the end."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from tests.support.speech import speech
from tests.support.serve import Client, free_port, pcm_s16

from gt_runtime.contract import SAMPLE_RATE, SAMPLES_PER_FRAME

ray = pytest.importorskip("ray", reason="gt serve --ray needs ray[serve]: pip install 'gt[ray]'")
pytest.importorskip("ray.serve", reason="gt serve --ray needs ray[serve]: pip install 'gt[ray]'")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def ray_server():
    """A local Ray instance as `gt serve --ray` starts it (2 CPUs, 127.0.0.1, no dashboard, its idle pollers slowed)
    running gt serve --ray with 2 replicas -> base URL."""
    from ray import serve

    from gt_serve import ServeConfig
    from gt_serve.ray_serve import RayOptions, deploy, start_local_ray

    env = dict(os.environ)   # start_local_ray sets Ray's variables here, for the processes Ray starts
    ro = RayOptions(replicas=2, num_cpus=1.0, object_store_mb=128)
    start_local_ray(ro)
    try:
        cfg = ServeConfig(port=free_port(), max_sessions=2, max_queued_s=20.0)
        deploy(cfg, ro)
        base = f"127.0.0.1:{cfg.port}"
        _wait_warm(base)
        yield base
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.clear()
        os.environ.update(env)
    assert not ray.is_initialized()


def _wait_warm(base: str, timeout: float = 90.0) -> None:
    """Until both replicas answer /healthz with the default avatar open."""
    import urllib.request

    seen, t_end = set(), time.time() + timeout
    while len(seen) < 2:
        assert time.time() < t_end, f"replicas not ready: {seen}"
        try:
            h = json.loads(urllib.request.urlopen(f"http://{base}/healthz", timeout=5).read())
            if h["render"]:
                seen.add(h["replica"])
        except OSError:
            pass
        time.sleep(0.2)


def _session(base: str, pcm: np.ndarray, out: dict, hold: threading.Event | None = None, chunk: int = 1600) -> None:
    """One fast-pace utterance -> out: replica, frames (headers), texts. With `hold`: half the audio, frames until
    `hold` is set (out["mid"] set once 5 arrived), then the rest. A close -> out["code"], out["closed_at"]."""
    from websockets.exceptions import ConnectionClosed

    out.update(frames=[], texts=[])

    def take(kind, m):
        (out["frames"] if kind == "frame" else out["texts"]).append(m[0] if kind == "frame" else m)

    try:
        with Client(f"ws://{base}/v1/stream?avatar=default") as c:
            kind, m = c.recv(timeout=30)
            out["replica"] = m["replica"]
            c.send_json(type="start", sample_rate=SAMPLE_RATE, encoding="s16le", pace="fast")
            half = pcm.size // 2 if hold is not None else pcm.size
            for k in range(0, half, chunk):
                c.ws.send(pcm_s16(pcm[k:min(k + chunk, half)]))
            while hold is not None and not hold.is_set():
                try:
                    take(*c.recv(timeout=0.02))
                except TimeoutError:
                    pass
                if len(out["frames"]) >= 5:
                    out["mid"].set()
            for k in range(half, pcm.size, chunk):
                c.ws.send(pcm_s16(pcm[k:k + chunk]))
            c.send_json(type="finish")
            while not out["texts"] or out["texts"][-1]["type"] != "speech_end":
                take(*c.recv(timeout=60))
    except ConnectionClosed as exc:
        out["closed_at"] = time.perf_counter()
        out["code"] = exc.rcvd.code if exc.rcvd is not None else None


def test_four_clients_two_replicas(ray_server):
    """4 concurrent sessions: each utterance complete, frame count = Player.play's, served by both replicas."""
    from gt_serve import ServeConfig
    from gt_serve.app import load_avatars

    pcms = [speech(1.2 + 0.2 * k, seed=10 + k, gated=True) for k in range(4)]
    outs = [dict() for _ in pcms]
    ths = [threading.Thread(target=_session, args=(ray_server, p, o)) for p, o in zip(pcms, outs)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(120)
    av = load_avatars(ServeConfig())["default"]
    try:
        for p, o in zip(pcms, outs):
            n_ref = sum(1 for _ in av.player.play(p, SAMPLE_RATE))
            assert len(o.get("frames", [])) == n_ref == -(-p.size // SAMPLES_PER_FRAME)
            assert [h["frame"] for h in o["frames"]] == list(range(n_ref))
    finally:
        av.close()
    replicas = {o["replica"] for o in outs}
    assert len(replicas) == 2 and all(r.startswith("SERVE_REPLICA::gt#GtAvatars#") for r in replicas)


def test_replica_killed_mid_stream(ray_server):
    """Kill one replica's process mid-stream (4 sessions, 2 per replica): its clients get an error and close 1012
    within 2 s, the other replica's sessions finish complete, and a reconnect is served."""
    from gt_serve.protocol import CLOSE_RESTART

    pcm = speech(3.0, seed=21, gated=True)
    hold = threading.Event()
    outs = [{"mid": threading.Event()} for _ in range(4)]
    ths = [threading.Thread(target=_session, args=(ray_server, pcm, o, hold), daemon=True) for o in outs]
    for th in ths:
        th.start()
    try:
        for o in outs:
            assert o["mid"].wait(60), "no frames mid-stream"
        victim = outs[0]["replica"]
        assert len({o["replica"] for o in outs}) == 2
        actor = ray.get_actor(victim, namespace="serve")
        pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
        t_kill = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        for o in outs:   # the victim's clients see the close while they wait for frames
            if o["replica"] == victim:
                t_end = time.time() + 5
                while "code" not in o and time.time() < t_end:
                    time.sleep(0.01)
    finally:
        hold.set()
        for th in ths:
            th.join(90)
    n = -(-pcm.size // SAMPLES_PER_FRAME)
    for o in outs:
        if o["replica"] == victim:
            assert o.get("code") == CLOSE_RESTART, o.get("code")
            assert o["closed_at"] - t_kill < 2.0
            assert o["texts"][-1]["type"] == "error" and "stopped" in o["texts"][-1]["message"]
        else:
            assert "code" not in o and len(o["frames"]) == n and o["texts"][-1]["type"] == "speech_end"
    again = {}
    _session(ray_server, speech(0.8, seed=22, gated=True), again)
    assert len(again["frames"]) == -(-int(0.8 * SAMPLE_RATE) // SAMPLES_PER_FRAME)


def test_plain_path_never_imports_ray():
    """gt_serve's plain server and the runtime import no ray (a fresh interpreter)."""
    code = ("import sys, gt_runtime, gt_serve, gt_serve.app, gt_serve.stream, gt_cli.app; "
            "from gt_serve import ServeConfig; from gt_serve.app import create_app; create_app(ServeConfig(), avatars={}); "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_replica_avatars_lru(monkeypatch):
    """ReplicaAvatars on Ray's multiplexing contract (an LRU of max_avatars that calls the evicted value's __del__):
    an avatar evicted while a session uses it closes when that session releases it, not before."""
    import asyncio
    from collections import OrderedDict
    from pathlib import Path

    from ray import serve

    import gt_serve.avatar
    from gt_serve import ServeConfig
    from gt_serve.ray_serve import ReplicaAvatars

    def lru(max_num_models_per_replica):   # Ray's documented behaviour, without a replica
        def wrap(load):
            held = OrderedDict()

            async def get(name):
                if name in held:
                    held.move_to_end(name)
                    return held[name]
                if len(held) >= max_num_models_per_replica:
                    _, old = held.popitem(last=False)
                    old.__del__()
                held[name] = await load(name)
                return held[name]
            return get
        return wrap

    class FakeAvatar:
        def __init__(self, name, *a):
            self.name, self.closed = name, False
            self.idle = type("I", (), {"prewarm": lambda self: None})()

        def info(self):
            return {"name": self.name}

        def close(self):
            self.closed = True

    monkeypatch.setattr(serve, "multiplexed", lru)
    monkeypatch.setattr(gt_serve.avatar, "Avatar", FakeAvatar)
    for n in ("a.gtb", "b.gtb"):
        (Path("/tmp") / f"gt-ray-lru-{n}").mkdir(exist_ok=True)
    pool = ReplicaAvatars(ServeConfig(bundles=[Path(f"/tmp/gt-ray-lru-{n}") for n in ("a.gtb", "b.gtb")]), max_avatars=1)

    async def run():
        a = await pool.acquire("gt-ray-lru-a")
        assert set(pool.opened) == {"gt-ray-lru-a"}
        b = await pool.acquire("gt-ray-lru-b")        # evicts a, which a session still uses
        assert not a.closed and set(pool.opened) == {"gt-ray-lru-b"}
        pool.release(a)
        assert a.closed and not b.closed
        pool.release(b)
        assert not b.closed                            # held by the LRU: stays open for the next session
        assert await pool.acquire("gt-ray-lru-b") is b

    asyncio.run(run())
    assert [i["name"] for i in pool.info()] == ["gt-ray-lru-a", "gt-ray-lru-b"]
