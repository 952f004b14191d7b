"""`serve_load.py --ray`: the realtime load table of `gt serve` through Ray Serve, next to plain `gt serve`, in one run.

    python -m tools.bench.serve_load --ray                          # 1, 2, 4, 8 clients, 1 replica
    python -m tools.bench.serve_load --ray --replicas 2 --clients 4 --seconds 10 --out tools/bench/RESULTS.md

Three servers run at once, each started once: plain `gt serve`, `gt serve --ray` (a local Ray instance;
--replicas replicas sharing the machine's cores, --num-cpus each, as Ray caps a replica's OpenMP threads to its
CPUs) and the same without the relay (`RayOptions(relay=False)`: every WebSocket message a Ray call). They are
measured in turn on the same clients, the others frozen (SIGSTOP on their whole process trees, so Ray's idle
daemons take nothing from the one measured), N by N and then `fast` round by round: load from other work on a
shared machine falls on all alike. Each reports per session FPS, latency p50/p99, frame-interval p99, frames
lost, and the CPU time of the server's whole process tree per delivered frame (Ray: driver, GCS, raylet, proxy,
controller and replicas).

Ray's overhead, two figures: at `fast` pace (every frame a speech frame, as fast as the server renders),
frames per second of all sessions and CPU per frame against plain's; at realtime pace (25 FPS per session), the
latency p50 added and the CPU per frame against plain's (the servers deliver the same frames while they keep up).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from tools.bench.serve_load import MAX_CLIENTS, Server, bundle_label, fast_client, free_port, machine, realtime_client, speech

TICK = os.sysconf("SC_CLK_TCK")


def tree(root: int) -> list[int]:
    """root and its descendants (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


ROLES = (("ServeReplica", "replicas"), ("ProxyActor", "proxy"))   # Ray's process titles -> role; the rest: "other"


def cpu_parts(root: int) -> dict[str, float]:
    """User + system CPU seconds of root's process tree by role: replicas, proxy, other (the driver, GCS, raylet,
    Serve controller, agents; the whole plain server)."""
    out = {"replicas": 0.0, "proxy": 0.0, "other": 0.0}
    for p in tree(root):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            title = Path(f"/proc/{p}/cmdline").read_bytes()[:200].decode(errors="replace")
        except (OSError, IndexError):
            continue
        role = next((r for key, r in ROLES if key in title), "other")
        out[role] += (int(f[11]) + int(f[12])) / TICK
    return out


def cpu_s(root: int) -> float:
    """User + system CPU seconds of root's process tree."""
    return sum(cpu_parts(root).values())


def rss_mb(root: int) -> float:
    total = 0
    for p in tree(root):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class RayServer:
    """`gt serve --ray` in a subprocess (its own local Ray instance) on 127.0.0.1:port; waits until every replica
    has the default avatar's idle frames cached."""

    def __init__(self, bundle: str | None, replicas: int, max_sessions: int = MAX_CLIENTS, relay: bool = True):
        self.port = free_port()
        if relay:
            cmd = [sys.executable, "-c", "from gt_cli.app import main; main()", "serve", "--ray", "--port", str(self.port),
                   "--replicas", str(replicas), "--num-cpus", str(self.num_cpus(replicas)), "--max-sessions", str(max_sessions)]
            if bundle:
                cmd += ["--bundle", bundle]
        else:   # every WebSocket message a Ray call (the version before the relay): RayOptions(relay=False)
            cmd = [sys.executable, "-c", "from gt_serve.ray_serve import RayOptions, serve_ray; from gt_serve.config import ServeConfig; "
                   f"serve_ray(ServeConfig(bundles={[bundle] if bundle else []!r}, port={self.port}, max_sessions={max_sessions}), "
                   f"RayOptions(replicas={replicas}, num_cpus={self.num_cpus(replicas)}, relay=False))"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        t_end, warm = time.time() + 240, set()
        while len(warm) < replicas:
            try:
                h = self.health()
                r = next(iter(h["render"].values()), None)
                if r and r["idle_cached"] >= r["track_frames"]:
                    warm.add(h["replica"])
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > t_end:
                self.close()
                raise RuntimeError(f"gt serve --ray did not start: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)

    @staticmethod
    def num_cpus(replicas: int) -> int:
        """The machine's cores shared out between the replicas (Ray sets OMP_NUM_THREADS of a replica to its CPUs)."""
        return max(1, (os.cpu_count() or 1) // replicas)

    def health(self) -> dict:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5).read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)   # serve.shutdown() and ray.shutdown() in gt serve --ray
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def measure(port: int, pid: int, n: int, pcm: np.ndarray) -> dict:
    """n realtime clients on the server at port -> the serve_load row, plus CPU s per frame and peak tree RSS."""
    stats = [dict() for _ in range(n)]
    rss0, peak = rss_mb(pid), [0.0]

    async def main():
        async def sample():
            while True:
                peak[0] = max(peak[0], rss_mb(pid))
                await asyncio.sleep(0.5)
        s = asyncio.create_task(sample())
        await asyncio.gather(*(realtime_client(port, pcm, st) for st in stats))
        s.cancel()

    c0 = cpu_parts(pid)
    asyncio.run(main())
    c1 = cpu_parts(pid)
    frames = sum(s["frames"] for s in stats)
    parts = {k: 1e3 * (c1[k] - c0[k]) / max(frames, 1) for k in c0}
    return {"fps_min": min(s["fps"] for s in stats), "fps_mean": float(np.mean([s["fps"] for s in stats])),
            "lat_p50": float(np.median([s["lat_p50"] for s in stats])), "lat_p99": max(s["lat_p99"] for s in stats),
            "interval_p99": max(s["interval_p99"] for s in stats), "lost": sum(s["lost"] for s in stats),
            "drift": max(abs(s["drift"]) for s in stats), "cpu_ms_per_frame": sum(parts.values()),
            "cpu_parts": parts,
            "mem_per_session_mb": (max(peak[0], rss0) - rss0) / n}


def fast_round(a, port: int, pid: int, pcm: np.ndarray) -> tuple[float, float]:
    """a.throughput `fast` clients at once -> (frames per second of all sessions, CPU ms per frame of the server tree)."""
    async def main():
        return await asyncio.gather(*(fast_client(port, pcm) for _ in range(a.throughput)))
    c0, t0 = cpu_s(pid), time.perf_counter()
    frames = sum(asyncio.run(main()))
    return frames / (time.perf_counter() - t0), 1e3 * (cpu_s(pid) - c0) / frames


class Frozen:
    """`with Frozen(*pids):` the process trees of pids are stopped (SIGSTOP) and resumed (SIGCONT) after: the server not
    being measured takes no CPU from the one that is (Ray's daemons poll even when idle)."""

    def __init__(self, *roots: int):
        self.pids = [p for r in roots for p in tree(r)]

    def _signal(self, sig) -> None:
        for p in self.pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass

    def __enter__(self):
        self._signal(signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        self._signal(signal.SIGCONT)
        time.sleep(0.5)   # let it catch up on its timers before it is measured


def interleaved(a, servers: list, pcm: np.ndarray, fast_pcm: np.ndarray, rounds: int = 3) -> tuple[list[dict], list[tuple]]:
    """All servers up; every N and every `fast` round on each in turn, with the others frozen, so that the shared
    machine's load falls on all alike -> ([{N: row}] per server, [(fps, cpu)] per server), throughput the best of
    `rounds`."""
    rows: list[dict] = [{} for _ in servers]
    best = [(0.0, 0.0) for _ in servers]
    for n in (c for c in a.clients if c > 0):
        for k, (name, srv) in enumerate(servers):
            with Frozen(*(o.proc.pid for o in servers_of(servers) if o is not srv)):
                rows[k][n] = measure(srv.port, srv.proc.pid, n, pcm)
            print(f"  {n} clients, {name}: " + ", ".join(f"{key} {v:.1f}" for key, v in rows[k][n].items()
                                                       if key != "cpu_parts"), flush=True)
    for _ in range(rounds if a.throughput else 0):
        for k, (_name, srv) in enumerate(servers):
            with Frozen(*(o.proc.pid for o in servers_of(servers) if o is not srv)):
                best[k] = max(best[k], fast_round(a, srv.port, srv.proc.pid, fast_pcm))
    return rows, best


def servers_of(named: list) -> list:
    return [s for _, s in named]


def run(a) -> None:
    """serve_load.main's arguments (a) with --ray: plain `gt serve` and `gt serve --ray`, interleaved; the rows side
    by side."""
    pcm, fast_pcm = speech(a.seconds), speech(a.throughput_seconds)
    head = [f"Machine: {machine()}; bundle {bundle_label(a.bundle)}; {a.seconds:.0f} s of speech per "
            f"client at real time; plain `gt serve` and `gt serve --ray --replicas {a.replicas} "
            f"--num-cpus {RayServer.num_cpus(a.replicas)}` (local Ray; with the relay, and without: every message a Ray call), "
            "each started once, measured in turn (the others frozen).", "",
            "| clients | server | FPS min / mean | latency p50 / p99 (ms) | frame interval p99 (ms) | frames lost | A/V drift "
            "| CPU per frame (ms, server tree) | of which replicas / proxy / other (ms) | Ray overhead (CPU per frame, latency p50) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(head), flush=True)
    name = f"ray x{a.replicas}"
    servers = [("plain", Server(a.bundle, a.max_batch))]
    try:
        for label, relay in ((name, True), (f"{name}, no relay", False)):
            servers.append((label, RayServer(a.bundle, a.replicas, relay=relay)))
        rows, best = interleaved(a, servers, pcm, fast_pcm)
    finally:
        for _, s in reversed(servers):
            s.close()
    lines = list(head)
    p_rows = rows[0]
    for n, p in p_rows.items():
        for (label, _), r in zip(servers, rows):
            x = r[n]
            o = "" if r is p_rows else \
                f"{100 * (x['cpu_ms_per_frame'] / p['cpu_ms_per_frame'] - 1):+.0f} %, {x['lat_p50'] - p['lat_p50']:+.0f} ms"
            lines.append(f"| {n} | {label} | {x['fps_min']:.1f} / {x['fps_mean']:.1f} | {x['lat_p50']:.0f} / {x['lat_p99']:.0f} | "
                         f"{x['interval_p99']:.0f} | {x['lost']} | {x['drift']:.0f} | {x['cpu_ms_per_frame']:.1f} | "
                         + (" / ".join(f"{x['cpu_parts'][k]:.1f}" for k in ("replicas", "proxy", "other")) if o else "")
                         + f" | {o} |")
    if a.throughput:
        pf, pc = best[0]
        lines += ["", f"Throughput, {a.throughput} `fast` clients x {a.throughput_seconds:.0f} s of speech (every frame a speech "
                  "frame), best of 3 interleaved rounds:", "",
                  "| server | frames per second (all sessions) | CPU per frame (ms, server tree) |", "|---|---|---|",
                  f"| plain | {pf:.1f} | {pc:.1f} |"]
        lines += [f"| {label} | {rf:.1f} ({100 * (rf / pf - 1):+.0f} %) | {rc:.1f} ({100 * (rc / pc - 1):+.0f} %) |"
                  for (label, _), (rf, rc) in zip(servers[1:], best[1:])]
    print("\n".join(lines[len(head):]), flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")
