"""Load test of `gt serve` on loopback: N concurrent realtime clients, and batched vs unbatched throughput.

    python -m tools.bench.serve_load                       # N = 1, 2, 4, 8 realtime clients, 20 s each
    python -m tools.bench.serve_load --clients 1 4 --seconds 10 --out tools/bench/RESULTS.md

A server (`gt serve`, the bundled default identity unless --bundle) runs as a subprocess on
127.0.0.1 and a free port; the clients run here on asyncio. Bounded: at most 16 clients and
120 s of audio per client. Per run, for each session:

- delivered FPS: frames received / their time span (the realtime pace is 25);
- audio-in -> frame-out latency: from sending the audio that ends a speech frame's 40 ms to
  receiving that frame (includes the model's 247.5 ms lookahead), p50 / p99;
- frame-interval p99: gaps between consecutive frames as received;
- frames lost: speech frames expected (ceil(S / 640)) minus received, plus gaps in `index`;
- A/V drift: speech frames whose 40 ms of audio is not the input's own (frame i: samples 640 i ..);
- memory per session: (server RSS with N sessions - RSS at rest) / N.

`--long-minutes 10`: one `fast` session of 10 minutes of speech, every frame's audio checked
against the input (A/V drift), the frame count and the index sequence.

Throughput (`--throughput`): 4 `fast` clients at once, each one utterance, on a server with
--max-batch 8 (batching across sessions) and --max-batch 1 (every frame alone), and the same
frames from 4 threads each running `Player.play` on its own session ("four separate streams",
the Player's defaults, one engine's weights shared), and from 4 processes each running one
`Player.play` (one process per session, as a deployment without a shared server runs), in turn,
best of 3 rounds; with the CPU time per frame of each (the server process; this process for the
threads; the processes' own), which a shared machine's load moves much less than the wall clock.
The server's own figures (render lanes, stage ms per frame) come from its /healthz.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from gt_runtime.contract import SAMPLE_RATE, SAMPLES_PER_FRAME

MAX_CLIENTS, MAX_SECONDS = 16, 120.0
CHUNK = SAMPLE_RATE // 50          # 20 ms chunks, as a microphone sends them


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def speech(seconds: float) -> np.ndarray:
    """The bundled speech clip (16 kHz), looped to `seconds` -> float32 [S]."""
    from gt_runtime.assets import speech_path
    from gt_runtime.audio import load_audio

    pcm, _ = load_audio(speech_path("cross"))
    n = int(seconds * SAMPLE_RATE)
    return np.resize(pcm, n).astype(np.float32)


def s16(pcm: np.ndarray) -> bytes:
    return np.clip(np.rint(pcm * 32768.0), -32768, 32767).astype("<i2").tobytes()


class Server:
    """`gt serve` in a subprocess on 127.0.0.1:port; waits until its idle frames are cached."""

    def __init__(self, bundle: str | None, max_batch: int, max_sessions: int = MAX_CLIENTS):
        self.port = free_port()
        cmd = [sys.executable, "-c", "from gt_cli.app import main; main()", "serve", "--port", str(self.port),
               "--max-batch", str(max_batch), "--max-sessions", str(max_sessions)]
        if bundle:
            cmd += ["--bundle", bundle]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t_end = time.time() + 120
        while True:
            try:
                h = self.health()
                r = next(iter(h["render"].values()))
                if r["idle_cached"] >= r["track_frames"]:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > t_end:
                raise RuntimeError(f"gt serve did not start: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)

    def health(self) -> dict:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5).read())

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process (all its threads)."""
        f = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def render_stats(self) -> dict:
        """The default avatar's render stats (/healthz): lanes, batches, mean_batch, ms_per_frame by stage."""
        return next(iter(self.health()["render"].values()))

    def engine(self) -> str:
        info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/avatars", timeout=5).read())[0]
        return f"{info['engine']} + {info['raster']} raster"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def realtime_client(port: int, pcm: np.ndarray, stats: dict) -> None:
    """Stream pcm in 20 ms chunks at real time, finish, and record every frame until speech_end."""
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream?avatar=default", max_size=None) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "encoding": "s16le", "pace": "realtime"}))
        sent_end = {}                  # frame i -> time its audio's last sample was sent
        frames = []                    # (arrival, header, audio bytes)

        async def sender():
            t0 = time.perf_counter()
            for k in range(0, pcm.size, CHUNK):
                delay = t0 + k / SAMPLE_RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(s16(pcm[k:k + CHUNK]))
                now = time.perf_counter()
                for i in range(k // SAMPLES_PER_FRAME, min(k + CHUNK, pcm.size) // SAMPLES_PER_FRAME):
                    sent_end.setdefault(i, now)   # frame i's audio ends at sample 640 (i + 1) <= k + CHUNK
            sent_end.setdefault(pcm.size // SAMPLES_PER_FRAME, time.perf_counter())
            await ws.send(json.dumps({"type": "finish"}))

        task = asyncio.create_task(sender())
        while True:
            m = await ws.recv()
            now = time.perf_counter()
            if isinstance(m, str):
                if json.loads(m)["type"] == "speech_end":
                    break
                continue
            n = int.from_bytes(m[:4], "little")
            frames.append((now, json.loads(m[4:4 + n]), m[-SAMPLES_PER_FRAME * 2:]))
        await task
    t = np.array([f[0] for f in frames])
    speech_frames = [(f[0], f[1]) for f in frames if f[1]["speech"]]
    lat = [(a - sent_end[h["frame"]]) * 1e3 for a, h in speech_frames if h["frame"] in sent_end]
    idx = [f[1]["index"] for f in frames]
    expected = -(-pcm.size // SAMPLES_PER_FRAME)
    # A/V drift: a speech frame whose 40 ms of audio is not the input's samples [640 i, 640 (i + 1)).
    want = s16(np.pad(pcm, (0, expected * SAMPLES_PER_FRAME - pcm.size)))
    fb = SAMPLES_PER_FRAME * 2
    drift = sum(f[2] != want[f[1]["frame"] * fb:(f[1]["frame"] + 1) * fb] for f in frames if f[1]["speech"])
    stats.update(frames=len(frames), fps=(len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else 0.0,
                 lat_p50=float(np.percentile(lat, 50)), lat_p99=float(np.percentile(lat, 99)),
                 interval_p99=float(np.percentile(np.diff(t) * 1e3, 99)),
                 lost=expected - len(speech_frames) + (idx[-1] - idx[0] + 1 - len(idx)),
                 drift=drift, speech=len(speech_frames))


def run_realtime(bundle, n: int, seconds: float, max_batch: int) -> dict:
    srv = Server(bundle, max_batch)
    try:
        rss0 = srv.rss_mb()
        pcm = speech(seconds)
        stats = [dict() for _ in range(n)]
        peak = [rss0]

        async def main():
            async def sample():
                while True:
                    peak[0] = max(peak[0], srv.rss_mb())
                    await asyncio.sleep(0.5)
            s = asyncio.create_task(sample())
            await asyncio.gather(*(realtime_client(srv.port, pcm, st) for st in stats))
            s.cancel()

        c0 = srv.cpu_s()
        asyncio.run(main())
        cpu = srv.cpu_s() - c0
        render = srv.render_stats()
        engine = srv.engine()
    finally:
        srv.close()
    return {"clients": n, "seconds": seconds, "fps_min": min(s["fps"] for s in stats),
            "fps_mean": float(np.mean([s["fps"] for s in stats])),
            "lat_p50": float(np.median([s["lat_p50"] for s in stats])), "lat_p99": max(s["lat_p99"] for s in stats),
            "interval_p99": max(s["interval_p99"] for s in stats), "lost": sum(s["lost"] for s in stats),
            "drift": max(abs(s["drift"]) for s in stats), "mem_per_session_mb": (peak[0] - rss0) / n,
            "rss0_mb": rss0, "mean_batch": render["mean_batch"], "lanes": render["lanes"], "engine": engine,
            "cpu_ms_per_frame": 1e3 * cpu / max(sum(s["frames"] for s in stats), 1)}


async def fast_client(port: int, pcm: np.ndarray) -> int:
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream?avatar=default", max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "encoding": "s16le", "pace": "fast"}))
        for k in range(0, pcm.size, 16000):
            await ws.send(s16(pcm[k:k + 16000]))
        await ws.send(json.dumps({"type": "finish"}))
        n = 0
        while True:
            m = await ws.recv()
            if isinstance(m, str):
                if json.loads(m)["type"] == "speech_end":
                    return n
            else:
                n += 1


# One session's stream in its own process: warm up, say "ready", wait for "go" on stdin, play, report
# "frames t_start t_end cpu_s" (wall clock: time.time, comparable between processes).
_PROCESS_STREAM = """
import sys, time
import numpy as np
from gt_runtime.assets import default_bundle
from gt_runtime.playback.player import Player
pcm = np.load(sys.argv[1])
player = Player(sys.argv[2] or default_bundle())
list(player.play(pcm[:16000]))
print("ready", flush=True)
sys.stdin.readline()
c0, t0 = time.process_time(), time.time()
n = sum(1 for _ in player.play(pcm))
print(n, t0, time.time(), time.process_time() - c0, flush=True)
player.close()
"""


def run_processes(bundle, n: int, pcm: np.ndarray, tmp: Path) -> tuple[float, float]:
    """n processes, each one `Player.play` of pcm, started together -> (frames per second of all, CPU ms per frame)."""
    audio = tmp / "speech.npy"
    np.save(audio, pcm)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [subprocess.Popen([sys.executable, "-c", _PROCESS_STREAM, str(audio), str(bundle or "")], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a stream process failed before it was ready (its stderr is above)")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        got = [p.stdout.readline().split() for p in procs]
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:  # after a failure: none left waiting for "go"
            if p.poll() is None:
                p.kill()
                p.wait()
    frames = sum(int(g[0]) for g in got)
    span = max(float(g[2]) for g in got) - min(float(g[1]) for g in got)
    return frames / span, 1e3 * sum(float(g[3]) for g in got) / max(frames, 1)


def run_throughput(bundle, n: int, seconds: float, rounds: int = 3) -> dict:
    """Frames per second of n fast clients: batched server, unbatched server, n separate Player streams.

    The three are measured in turn, `rounds` times, and the best of each is kept: on a shared
    machine, other work only ever slows a run down.
    """
    import threading

    from gt_runtime.assets import default_bundle
    from gt_runtime.playback.player import Player

    pcm = speech(seconds)
    servers = {mb: Server(bundle, mb) for mb in (8, 1)}
    player = Player(bundle or default_bundle())
    list(player.play(pcm[:SAMPLE_RATE]))   # warm-up
    best = {k: 0.0 for k in ("server_b8_fps", "server_b1_fps", "separate_fps", "processes_fps")}
    cpu = {k: float("inf") for k in ("server_b8", "server_b1", "separate", "processes")}   # CPU ms per frame, lowest of the rounds
    tmp = Path(tempfile.mkdtemp(prefix="gt-serve-load-"))
    try:
        for _ in range(rounds):
            for mb, srv in servers.items():
                async def main(port=srv.port):
                    return await asyncio.gather(*(fast_client(port, pcm) for _ in range(n)))
                c0, t0 = srv.cpu_s(), time.perf_counter()
                got = asyncio.run(main())
                dt, dc = time.perf_counter() - t0, srv.cpu_s() - c0
                best[f"server_b{mb}_fps"] = max(best[f"server_b{mb}_fps"], sum(got) / dt)
                cpu[f"server_b{mb}"] = min(cpu[f"server_b{mb}"], 1e3 * dc / max(sum(got), 1))
            counts = [0] * n

            def one(k, counts=counts):
                counts[k] = sum(1 for _ in player.play(pcm))
            th = [threading.Thread(target=one, args=(k,)) for k in range(n)]
            c0, t0 = time.process_time(), time.perf_counter()
            for t in th:
                t.start()
            for t in th:
                t.join()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            best["separate_fps"] = max(best["separate_fps"], sum(counts) / dt)
            cpu["separate"] = min(cpu["separate"], 1e3 * dc / max(sum(counts), 1))
            fps, ms = run_processes(bundle, n, pcm, tmp)
            best["processes_fps"] = max(best["processes_fps"], fps)
            cpu["processes"] = min(cpu["processes"], ms)
        render = servers[8].render_stats()
        engine = servers[8].engine()
        separate_engine = player.describe()["engine"]
    finally:
        for srv in servers.values():
            srv.close()
        player.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"clients": n, "seconds": seconds, "rounds": rounds, "server_b8_mean_batch": render["mean_batch"],
            "lanes": render["lanes"], "stage_ms": render.get("ms_per_frame", {}), "engine": engine,
            "separate_engine": separate_engine, **best, **{f"cpu_{k}": v for k, v in cpu.items()}}


async def long_client(port: int, pcm: np.ndarray) -> dict:
    """One fast-pace utterance of pcm, sent at most 20 s ahead of the frames received -> frame and drift counts."""
    import websockets

    fb = SAMPLES_PER_FRAME * 2
    expected = -(-pcm.size // SAMPLES_PER_FRAME)
    want = s16(np.pad(pcm, (0, expected * SAMPLES_PER_FRAME - pcm.size)))
    got = {"frames": 0, "drift": 0, "gaps": 0, "last_index": -1}
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream?avatar=default", max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "encoding": "s16le", "pace": "fast"}))

        async def sender():
            for k in range(0, pcm.size, SAMPLE_RATE):
                while k - got["frames"] * SAMPLES_PER_FRAME > 20 * SAMPLE_RATE:
                    await asyncio.sleep(0.05)
                await ws.send(s16(pcm[k:k + SAMPLE_RATE]))
            await ws.send(json.dumps({"type": "finish"}))
        task = asyncio.create_task(sender())
        while True:
            m = await ws.recv()
            if isinstance(m, str):
                if json.loads(m)["type"] == "speech_end":
                    break
                continue
            n = int.from_bytes(m[:4], "little")
            h = json.loads(m[4:4 + n])
            got["gaps"] += h["index"] != got["last_index"] + 1
            got["last_index"] = h["index"]
            i = h["frame"]
            got["drift"] += m[-fb:] != want[i * fb:(i + 1) * fb] or i != got["frames"]
            got["frames"] += 1
        await task
    return {**got, "expected": expected}


def run_long(bundle, minutes: float) -> dict:
    srv = Server(bundle, 8)
    try:
        t0 = time.perf_counter()
        r = asyncio.run(long_client(srv.port, speech(minutes * 60)))
        r["wall_s"] = time.perf_counter() - t0
    finally:
        srv.close()
    return r


def machine() -> str:
    from gt_runtime.util.cpu import cpu_name

    flags = set()
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pass
    isa = "+".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni") if f in flags) or "no AVX2"
    return f"{cpu_name()}, {os.cpu_count()} cores ({isa}), load average {os.getloadavg()[0]:.1f} at start"



def bundle_label(path) -> str:
    """The bundle as the table names it: its path (or "default") with its size and Gaussian count."""
    from gt_runtime.assets import default_bundle
    from gt_runtime.bundle import Bundle

    b = Bundle.open(path or default_bundle())
    return f"{path or 'default'} ({b.width} px, {b.num_gaussians} Gaussians)"

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=None, help="bundle directory (default: the bundled identity)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=20.0, help="audio per realtime client")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--throughput", type=int, default=4, help="fast clients of the throughput test (0: skip)")
    ap.add_argument("--throughput-seconds", type=float, default=8.0)
    ap.add_argument("--long-minutes", type=float, default=0.0,
                    help="also one fast session this long (at most 10): A/V drift and frame count over it")
    ap.add_argument("--out", type=Path, default=None, help="append the markdown tables here")
    ap.add_argument("--ray", action="store_true", help="plain gt serve against gt serve --ray, per N (tools/bench/serve_load_ray.py)")
    ap.add_argument("--replicas", type=int, default=1, help="with --ray: Ray Serve replicas (the cores shared out between them)")
    a = ap.parse_args(argv)
    if max(a.clients) > MAX_CLIENTS or a.seconds > MAX_SECONDS or a.throughput > MAX_CLIENTS:
        ap.error(f"at most {MAX_CLIENTS} clients and {MAX_SECONDS:.0f} s of audio per client")
    os.environ.setdefault("GT_QUIET", "1")
    if a.ray:
        from tools.bench.serve_load_ray import run

        return run(a)
    lines = [f"Machine: {machine()}; bundle {bundle_label(a.bundle)}; "
             f"{a.seconds:.0f} s of speech per client, sent in 20 ms chunks at real time; --max-batch {a.max_batch}.", "",
             "| clients | FPS min / mean | latency p50 / p99 (ms) | frame interval p99 (ms) | frames lost | A/V drift (frames) "
             "| memory per session (MB) | mean batch | server CPU per frame (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    r = None
    for n in (c for c in a.clients if c > 0):   # --clients 0: none
        r = run_realtime(a.bundle, n, a.seconds, a.max_batch)
        row = (f"| {n} | {r['fps_min']:.1f} / {r['fps_mean']:.1f} | {r['lat_p50']:.0f} / {r['lat_p99']:.0f} | "
               f"{r['interval_p99']:.0f} | {r['lost']} | {r['drift']:.0f} | {r['mem_per_session_mb']:.1f} | {r['mean_batch']:.2f} "
               f"| {r['cpu_ms_per_frame']:.1f} |")
        print(row, flush=True)
        lines.append(row)
    if r is not None:
        lines += ["", f"Server: {r['engine']}, {r['lanes']} render lanes; server CPU per frame: the server process's CPU time "
                  "over the frames it sent (idle frames, cached, included)."]
        print("\n".join(lines[-2:]), flush=True)
    if a.throughput:
        r = run_throughput(a.bundle, a.throughput, a.throughput_seconds)
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_ms"].items())
        more = ["", f"Throughput, {r['clients']} `fast` clients x {r['seconds']:.0f} s of speech (frames per second, all sessions; "
                f"best of {r['rounds']} interleaved rounds; CPU ms per frame, lowest of the rounds). Server: {r['engine']}, "
                f"{r['lanes']} render lanes; separate streams: {r['separate_engine']}, the Player's defaults:", "",
                "| | batched server (--max-batch 8) | unbatched server (--max-batch 1) | separate streams (threads x Player.play) "
                "| separate processes (one Player.play each) | batched / separate streams | batched / separate processes |",
                "|---|---|---|---|---|---|---|",
                f"| frames per second | {r['server_b8_fps']:.1f} (mean batch {r['server_b8_mean_batch']:.2f}) | {r['server_b1_fps']:.1f} | "
                f"{r['separate_fps']:.1f} | {r['processes_fps']:.1f} | {r['server_b8_fps'] / r['separate_fps']:.2f}x "
                f"| {r['server_b8_fps'] / r['processes_fps']:.2f}x |",
                f"| CPU ms per frame | {r['cpu_server_b8']:.1f} | {r['cpu_server_b1']:.1f} | {r['cpu_separate']:.1f} | "
                f"{r['cpu_processes']:.1f} | {r['cpu_separate'] / r['cpu_server_b8']:.2f}x less | "
                f"{r['cpu_processes'] / r['cpu_server_b8']:.2f}x less |",
                "", f"Batched server, thread time per frame by stage (ms, summed over lanes): {stages}."]
        print("\n".join(more), flush=True)
        lines += more
    if a.long_minutes:
        r = run_long(a.bundle, min(a.long_minutes, 10.0))
        more = ["", f"One `fast` session of {a.long_minutes:g} min of speech: {r['frames']} speech frames of {r['expected']} expected, "
                f"{r['drift']} whose audio is not their own 40 ms (A/V drift), {r['gaps']} gaps in index, in {r['wall_s']:.0f} s."]
        print("\n".join(more), flush=True)
        lines += more
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
