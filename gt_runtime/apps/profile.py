"""`gt profile`: per-stage latency of a bundle on this machine (stages: gt_runtime.contract.STAGES).

    from gt_runtime.apps.profile import ProfileConfig, profile
    report = profile(ProfileConfig(bundle="may.gtb", batch=(1, 8), frames=50, json="p.json", png="p.png"))

It drives the real streaming path (`Player.session()`: push audio, pull frames, encode
to mp4) and reads the pipeline's own per-stage timers (`gt_runtime.playback.pipeline.Timings`),
so what is profiled is what `gt play` runs. For each batch size B the speech is pushed
B frames (B x 40 ms of audio) at a time; one *iteration* = push the chunk, render the
batch it completes, encode its frames. The first `warmup` iterations that produce
frames (and the priming pushes before the audio lookahead is filled) are excluded.
Stages run one after the other here (no deform/raster overlap), so each is attributed,
and `share` gives each stage's part of the frame. How `gt play` runs them is measured
separately (CPU raster only), delivered FPS with the encoding on the mp4 writer's thread:
`fps_encode_thread` with the stages in turn, `fps_overlapped` with the deformation of the
next batch beside the raster, `fps_lanes` with one batch per core at once (every stage of a
batch on one thread; gt play measures the three on its first frames and keeps the fastest). With a fused engine (`cpu-fused`, `cuda-fused`) deform is the
whole network and the activations in one kernel (`deform_kernel` names its variant, e.g.
"cpu-fused-int8 (avx2)"), and raster starts from its activated Gaussians (no offsets pass).

Timers: `time.perf_counter` around calls that synchronise the device (the runners
synchronise, the CUDA rasterizer copies the frame to the host), so the stage times
are device times on a GPU too; the total per iteration is measured with CUDA events
(CuPy, legacy default stream) on a GPU and with perf_counter on a CPU (`timer`).

JSON schema (`gt-profile/1`), all times in milliseconds per frame unless named batch_*:

    {"schema": "gt-profile/1",
     "bundle", "engine", "raster", "device", "gaussians", "width", "height",
     "engine_choice": --engine auto's measured choice as one line (gt_runtime.engines.autotune), or "",
     "deform_kernel": the deformation as run, e.g. "cpu-fused-int8 (avx2)", "onnxruntime-int8",
     "timer": "perf_counter" | "cuda-events",
     "machine": {"cpu", "cores", "gpu", "load_avg": [1 min, 5 min, 15 min]},
     "config": {ProfileConfig fields},
     "stages": ["audio_frontend", "audio_encoder", "deform", "raster", "composite", "encode"],
     "runs": [{"batch": B, "frames": timed frames, "iterations": timed iterations,
               "warmup_iterations": int,
               "stages": {stage: {"mean_ms", "p50_ms", "p90_ms", "p99_ms"}},
               "other_ms": mean per frame not inside any stage (Python glue between stages),
               "share": {stage or "other": percent of total.mean_ms},
               "total": {"mean_ms", "p50_ms", "p90_ms", "p99_ms"},
               "batch_latency": {"p50_ms", "p90_ms", "p99_ms"}   (one whole iteration of B frames),
               "fps": frames / wall time of the timed iterations (delivered, encode included),
               "model_fps": frames / (audio_encoder + deform + raster time),
               "fps_encode_thread": delivered FPS, stages in turn, encoding on its thread (CPU raster), or null,
               "fps_overlapped": delivered FPS with deform/raster overlap, encoding on its thread (CPU raster), or null,
               "fps_lanes": delivered FPS with one batch per core at once, encoding on its thread (CPU raster, >= 2
               cores), or null}]}

Stage meaning: audio_frontend = resampling + the audio front end (`mel`, or the bundle's hubert / wav2vec2 blocks) of the pushed chunk;
audio_encoder = audio window -> audio token; deform = token stack + deform engine;
raster = activations + rasterization + uint8 conversion (+ host copy on a GPU);
composite = the per-frame background (torso RGBA over the plate; the head is splatted
over it by the rasterizer); encode = H.264 encoding of the frames (`encode="none"`: 0).

Tolerance (tested): the stage means add up to the total mean exactly once `other_ms`
is added (sum(stages.mean_ms) + other_ms == total.mean_ms, float rounding only), and
`other_ms` stays below 20 % of the total on a tiny bundle (it is typically < 2 %).
Percentiles do not add up (the p99 of a sum is not the sum of p99s).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gt_runtime.assets import default_bundle, speech_path
from gt_runtime.audio import load_audio
from gt_runtime.contract import MODEL_STAGES, SAMPLES_PER_FRAME, STAGES
from gt_runtime.errors import InputError, require
from gt_runtime.playback.player import Player
from gt_runtime.playback.video import Mp4Writer
from gt_runtime.util.cpu import cpu_name, usable_cores

SCHEMA = "gt-profile/1"


@dataclass
class ProfileConfig:
    """Options of `gt profile`."""

    bundle: Path | None = None     # None: the bundled default identity
    engine: str = "auto"
    raster: str = "auto"
    batch: tuple = (1, 8)          # batch sizes; 1 = latency, larger = throughput
    frames: int = 50               # timed frames per batch size (rounded up to whole batches)
    warmup: int = 3                # warm-up iterations excluded from the statistics
    speech: Path | None = None     # default: the bundled "human" clip, looped
    encode: str = "mp4"            # mp4 (H.264 into a temporary file) | none
    threads: int | None = None     # engine CPU threads (default: all usable cores)
    overlapped: bool = True        # also measure delivered FPS as gt play runs the stages (CPU raster)
    json: Path | None = None
    png: Path | None = None
    quiet: bool = False            # no table on stderr

    def __post_init__(self):
        if isinstance(self.batch, (int, str)):
            self.batch = tuple(int(b) for b in str(self.batch).split(",") if b.strip())
        self.batch = tuple(int(b) for b in self.batch)
        if not self.batch or min(self.batch) < 1:
            raise InputError(f"--batch {self.batch}: batch sizes must be >= 1 | e.g. --batch 1,8")
        if self.frames < 1 or self.warmup < 0:
            raise InputError(f"--frames {self.frames} --warmup {self.warmup} | expected frames >= 1, warmup >= 0")
        if self.encode not in ("mp4", "none"):
            raise InputError(f"--encode {self.encode} | expected mp4 or none")


def _stats(x) -> dict:
    a = np.asarray(x, np.float64)
    if a.size == 0:
        return {"mean_ms": 0.0, "p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0}
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.percentile(a, 50)),
            "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99))}


def machine_info(device: str = "cpu") -> dict:

    gpu = "none"
    if device.startswith("cuda"):
        gpu = device.split(":", 1)[-1].strip()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = []
    return {"cpu": cpu_name(), "cores": usable_cores(), "gpu": gpu, "load_avg": load}


def _speech(cfg: ProfileConfig, n_samples: int) -> np.ndarray:

    if cfg.speech is not None:
        pcm, _ = load_audio(cfg.speech)
    else:

        pcm, _ = load_audio(speech_path("human"))
    reps = -(-n_samples // pcm.size)
    return np.tile(pcm, reps)[:n_samples].astype(np.float32)


class _Clock:
    """Wall time of one iteration: CUDA events on a GPU (legacy default stream), perf_counter on a CPU."""

    def __init__(self, gpu: bool):
        self.gpu = gpu
        self.name = "cuda-events" if gpu else "perf_counter"
        if gpu:
            import cupy

            self.cp = cupy

    def start(self):
        if self.gpu:
            ev = self.cp.cuda.Event()
            ev.record(self.cp.cuda.Stream.null)
            return ev
        return time.perf_counter()

    def stop(self, start) -> float:
        """-> seconds since start (device synchronised)."""
        if self.gpu:
            end = self.cp.cuda.Event()
            end.record(self.cp.cuda.Stream.null)
            end.synchronize()
            return self.cp.cuda.get_elapsed_time(start, end) / 1e3
        return time.perf_counter() - start


class _Encoder:
    def __init__(self, kind: str, width: int, height: int, tmpdir: str):
        self.writer = None
        if kind == "mp4":

            self.writer = Mp4Writer(Path(tmpdir) / "profile.mp4", width, height, sample_rate=None)
            self.writer.__enter__()

    def write(self, frame) -> None:
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.__exit__(None, None, None)


def _run_batch(player, cfg: ProfileConfig, batch: int, clock: _Clock, tmpdir: str) -> dict:
    """Stream the speech B frames at a time; per-iteration stage deltas from the pipeline's Timings."""
    session = player.session(batch=batch, overlap=False)
    # A block front end (hubert / wav2vec2) yields its frames a block at a time: an iteration that renders
    # frames then renders at least a block's worth (mel: one frame per 40 ms pushed).
    spec = getattr(player.pipeline.frontend, "spec", None)
    per_iter = max(batch, spec.frames_per_block if spec is not None else 1)
    # priming (lookahead + batch alignment) + warm-up + timed, with margin
    lookahead_frames = int(np.ceil(session.lookahead_ms / 40.0))
    n_frames = lookahead_frames + (cfg.warmup + 2) * per_iter + cfg.frames + per_iter + 2
    pcm = _speech(cfg, n_frames * SAMPLES_PER_FRAME)
    tm = session.timings
    enc = _Encoder(cfg.encode, player.width, player.height, tmpdir)
    per_stage = {s: [] for s in STAGES}
    totals, batch_lat, other = [], [], []
    frames_timed, wall, model_s = 0, 0.0, 0.0
    seen = 0
    chunk = batch * SAMPLES_PER_FRAME
    try:
        for pos in range(0, pcm.size, chunk):
            if frames_timed >= cfg.frames:
                break
            before = dict(tm.total)
            t0 = clock.start()
            session.push_audio(pcm[pos:pos + chunk])
            got = 0
            encode = 0.0
            for fr in session.frames():
                if enc.writer is not None:
                    t1 = time.perf_counter()
                    enc.write(fr)
                    encode += time.perf_counter() - t1
                got += 1
            dt = clock.stop(t0)
            if got == 0:
                continue  # priming: the audio lookahead is not full yet
            seen += 1
            if seen <= cfg.warmup:
                continue
            delta = {s: tm.total.get(s, 0.0) - before.get(s, 0.0) for s in STAGES if s != "encode"}
            delta["encode"] = encode
            for s in STAGES:
                per_stage[s].append(1e3 * delta[s] / got)
            totals.append(1e3 * dt / got)
            other.append(1e3 * (dt - sum(delta.values())) / got)
            batch_lat.append(1e3 * dt)
            frames_timed += got
            wall += dt
            model_s += sum(delta[s] for s in MODEL_STAGES)
    finally:
        session.close()
        enc.close()
    if not totals:
        raise InputError(f"gt profile: no timed frames for batch {batch} | use more --frames or fewer --warmup")
    bl = _stats(batch_lat)
    stages = {s: _stats(v) for s, v in per_stage.items()}
    total = _stats(totals)
    share = {s: 100.0 * st["mean_ms"] / total["mean_ms"] if total["mean_ms"] > 0 else 0.0 for s, st in stages.items()}
    share["other"] = 100.0 * float(np.mean(other)) / total["mean_ms"] if total["mean_ms"] > 0 else 0.0
    return {"batch": batch, "frames": frames_timed, "iterations": len(totals), "warmup_iterations": cfg.warmup,
            "stages": stages, "other_ms": float(np.mean(other)), "share": share, "total": total,
            "batch_latency": {k: bl[k] for k in ("p50_ms", "p90_ms", "p99_ms")},
            "fps": frames_timed / wall if wall > 0 else float("nan"),
            "model_fps": frames_timed / model_s if model_s > 0 else float("nan"),
            "fps_encode_thread": None, "fps_overlapped": None, "fps_lanes": None}


def _delivered_fps(player, cfg: ProfileConfig, batch: int, mode: str, tmpdir: str) -> float:
    """Delivered FPS as gt play runs the stages: all audio pushed, frames pulled and encoded on the
    mp4 writer's thread (cfg.encode "mp4"), the stages in `mode` (sequential, overlapped or lanes)."""
    n = cfg.frames + (cfg.warmup + 1) * batch
    pcm = _speech(cfg, n * SAMPLES_PER_FRAME)
    s = player.session(batch=batch)
    s.state.mode = mode
    wr = None
    if cfg.encode == "mp4":
        wr = Mp4Writer(Path(tmpdir) / "delivered.mp4", player.width, player.height, sample_rate=None, background=True)
    try:
        s.push_audio(pcm)
        s.finish()
        count, t0 = 0, None
        skip = cfg.warmup * batch
        for fr in s.frames():
            if wr is not None:
                wr.write(fr)
            count += 1
            if count == skip:
                t0 = time.perf_counter()
        if wr is not None:
            wr.close()
            wr = None
        if t0 is None or count <= skip:
            return float("nan")
        return (count - skip) / (time.perf_counter() - t0)
    finally:
        s.close()
        if wr is not None:
            wr.abort()


def deform_kernel(player) -> str:
    """The deformation as run: the engine's name and, for a fused kernel, its instruction-set variant."""
    es = player.pipeline.engines
    variant = getattr(es.deform, "variant", None)
    return f"{es.name} ({variant})" if variant else es.name


def profile(cfg: ProfileConfig) -> dict:
    """Profile cfg.bundle -> the report dict (schema in the module docstring); writes cfg.json / cfg.png."""
    if cfg.png:
        require("matplotlib", "gt profile --png")  # before the measurements, not after

    bundle = cfg.bundle if cfg.bundle is not None else default_bundle()
    player = Player(bundle, engine=cfg.engine, raster=cfg.raster, batch=max(cfg.batch), threads=cfg.threads,
                    overlap=False)
    info = player.describe()
    if info["engine_choice"] and not cfg.quiet:
        import sys

        print(f"gt profile: {info['engine_choice']}", file=sys.stderr)
    gpu = player.pipeline.device == "cuda" or player.pipeline.raster == "cuda"
    clock = _Clock(gpu)
    runs = []
    kernel = deform_kernel(player)
    try:
        with tempfile.TemporaryDirectory(prefix="gt-profile-") as tmp:
            for b in cfg.batch:
                r = _run_batch(player, cfg, b, clock, tmp)
                if cfg.overlapped and not gpu and info["raster"] == "cpu":
                    r["fps_encode_thread"] = _delivered_fps(player, cfg, b, "sequential", tmp)
                    r["fps_overlapped"] = _delivered_fps(player, cfg, b, "overlapped", tmp)
                    if player.pipeline.lanes > 1:
                        r["fps_lanes"] = _delivered_fps(player, cfg, b, "lanes", tmp)
                runs.append(r)
    finally:
        player.close()
    conf = {k: (str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)) for k, v in asdict(cfg).items()}
    report = {"schema": SCHEMA, "bundle": str(bundle), **{k: info[k] for k in ("engine", "raster", "device", "gaussians", "width", "height")},
              "engine_choice": info["engine_choice"], "deform_kernel": kernel, "timer": clock.name, "machine": machine_info(info["device"]), "config": conf,
              "stages": list(STAGES), "runs": runs}
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(report, indent=2) + "\n")
    if cfg.png:
        plot(report, cfg.png)
    if not cfg.quiet:
        print_table(report)
    return report


def print_table(report: dict, file=None) -> None:
    """A rich table of the report on stderr (or file)."""
    import sys

    from rich.console import Console
    from rich.table import Table

    con = Console(file=file or sys.stderr)
    m = report["machine"]
    t = Table(title=f"gt profile: {report['engine']} + {report['raster']} raster, {report['gaussians']} Gaussians, "
                    f"{report['width']}x{report['height']} | {report['device']} | load {m['load_avg'][:1]}",
              caption=f"deform = {report.get('deform_kernel', report['engine'])}; stages in turn, each attributed; "
                      "gt play encodes on its own thread (FPS with encode thread) and runs the stages overlapped or in lanes when that is faster")
    for c in ("batch", "stage", "mean ms", "share %", "p50 ms", "p90 ms", "p99 ms"):
        t.add_column(c, justify="right" if c != "stage" else "left")
    for r in report["runs"]:
        share = r.get("share", {})
        for s in report["stages"]:
            st = r["stages"][s]
            t.add_row(str(r["batch"]), s, f"{st['mean_ms']:.2f}", f"{share.get(s, 0.0):.1f}",
                      *(f"{st[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms")))
        t.add_row(str(r["batch"]), "other", f"{r['other_ms']:.2f}", f"{share.get('other', 0.0):.1f}", "", "", "")
        tot = r["total"]
        extra = "".join(f", {label} {r[k]:.1f}" for k, label in (("fps_encode_thread", "with encode thread"),
                                                                   ("fps_overlapped", "overlapped"), ("fps_lanes", "lanes"))
                        if r.get(k) is not None)
        t.add_row(str(r["batch"]), f"[bold]total / frame[/bold] (FPS {r['fps']:.1f}, model {r['model_fps']:.1f}{extra})",
                  f"{tot['mean_ms']:.2f}", "100.0", *(f"{tot[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms")), end_section=True)
    con.print(t)


def plot(report: dict, path) -> Path:
    """Stacked bars of the mean ms per frame of each stage, one bar per batch size -> PNG."""
    require("matplotlib", "gt profile --png").use("Agg")
    plt = require("matplotlib.pyplot", "gt profile --png")

    runs = report["runs"]
    labels = [f"B={r['batch']}" for r in runs]
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(runs), 4.2))
    bottom = np.zeros(len(runs))
    colors = plt.get_cmap("tab10").colors
    for i, s in enumerate(list(report["stages"]) + ["other"]):
        v = np.array([max(0.0, r["other_ms"]) if s == "other" else r["stages"][s]["mean_ms"] for r in runs])
        ax.bar(labels, v, bottom=bottom, label=s, color=colors[i % len(colors)], width=0.6)
        bottom += v
    for x, (r, top) in enumerate(zip(runs, bottom)):
        ax.text(x, top, f"{r['fps']:.1f} FPS", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("ms per frame (mean)")
    ax.set_ylim(0, bottom.max() * 1.15 if bottom.max() > 0 else 1)
    ax.set_title(f"{report['engine']} + {report['raster']}, N={report['gaussians']}, {report['width']}x{report['height']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
