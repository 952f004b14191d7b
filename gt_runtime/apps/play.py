"""`gt play`: speech + bundle -> mp4 (H.264 + AAC), PNG sequence or raw RGB on stdout.

    from gt_runtime.apps.play import PlayConfig, play
    result = play(PlayConfig(speech="speech.wav", bundle="may.gtb", out="out.mp4", fps=True))

The speech is checked (readable, not empty, finite) before any output is created; a
silent speech renders the avatar at rest, with a warning; an mp4 is written under a temporary name and only moved into place when
complete. Video duration = ceil(S / 640) frames at 25 fps = audio duration + < 1 frame.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gt_runtime.assets import default_bundle
from gt_runtime.audio import load_audio, num_video_frames
from gt_runtime.audio.io import SILENCE_PEAK
from gt_runtime.contract import SAMPLE_RATE
from gt_runtime.errors import InputError
from gt_runtime.playback.player import Player
from gt_runtime.playback.video import Mp4Writer, contact_sheet
from gt_runtime.util.progress import progress


@dataclass
class PlayConfig:
    """Options of `gt play` (saved beside nothing: playback is stateless)."""

    speech: Path
    bundle: Path | None = None    # None: the bundled default identity (gt_runtime.assets.default_bundle)
    out: str = "out.mp4"          # *.mp4 | a directory for PNGs | "-" for raw RGB24 on stdout
    engine: str = "auto"
    raster: str = "auto"
    fps: bool = False             # report model FPS and delivered FPS
    batch: int = 1                # frames per deform/raster batch (GPU throughput; latency + B-1 frames)
    threads: int | None = None    # CPU threads of the engine (default: all usable cores)
    overlap: bool | None = None   # deform of batch k+1 during raster of batch k (default: on with the CPU raster)
    quiet: bool = False           # no progress bar
    stats_json: Path | None = None  # write per-stage timings here
    sheet: Path | None = None     # also write a contact sheet PNG of 8 evenly spaced frames


@dataclass
class PlayResult:
    out: str
    frames: int
    audio_s: float
    video_s: float
    engine: str
    raster: str
    device: str
    model_fps: float
    delivered_fps: float
    wall_s: float                 # audio load + front end + engine + raster + encode (setup excluded)
    setup_s: float = 0.0          # bundle open (hash check) + engine activation (+ --engine auto's measurement)
    stages: dict = field(default_factory=dict)
    engine_choice: str = ""       # --engine auto: the measured choice and every engine's time, one line
    overlap: str = ""             # deform/raster overlap: on, off, or the pipeline's measured choice

    def fps_report(self) -> str:
        st = ", ".join(f"{k} {v['ms_per_frame']:.1f}" for k, v in self.stages.items())
        # stage times are each thread's own: with lanes side by side, model FPS is one lane's
        model = "engine + raster, one lane's" if self.overlap.startswith("auto: lanes") else "engine + raster"
        return (f"model FPS {self.model_fps:.1f} ({model}), delivered FPS {self.delivered_fps:.1f} "
                f"(everything: audio front end, engine, raster, encode) | {self.frames} frames in {self.wall_s:.2f} s "
                f"+ {self.setup_s:.2f} s setup | "
                f"engine {self.engine}, raster {self.raster}, device {self.device}, overlap {self.overlap} | ms/frame: {st}")


def _sink_kind(out: str) -> str:
    if out == "-":
        return "raw"
    if out.lower().endswith(".mp4"):
        return "mp4"
    if Path(out).suffix:
        raise InputError(f"-o {out}: unknown output type | use a .mp4 file, a directory (PNG frames) or '-' (raw RGB on stdout)")
    return "png"


def _tap_frames(frames, n_frames: int, count: int = 8):
    """Pass frames through, keeping copies of `count` evenly spaced ones -> (iterator, list it fills)."""
    picks = set(np.linspace(0, max(n_frames - 1, 0), count).round().astype(int).tolist())
    kept: list[np.ndarray] = []

    def tap():
        for i, fr in enumerate(frames):
            if i in picks:
                kept.append(fr.copy())
            yield fr
    return tap(), kept


def play(cfg: PlayConfig) -> PlayResult:
    """Render the speech with the bundle into cfg.out -> PlayResult (one-line InputError on bad input)."""
    t_start = time.perf_counter()
    kind = _sink_kind(str(cfg.out))
    t0 = time.perf_counter()
    pcm, sr = load_audio(cfg.speech, allow_silent=True)   # checks the speech before any output exists
    if float(np.max(np.abs(pcm))) < SILENCE_PEAK:
        print(f"gt play: warning: {cfg.speech}: the audio is silent (peak below -80 dBFS); rendering the avatar at rest",
              file=sys.stderr)
    t_load = time.perf_counter() - t0
    bundle = cfg.bundle if cfg.bundle is not None else default_bundle()
    player = Player(bundle, engine=cfg.engine, raster=cfg.raster, batch=cfg.batch, threads=cfg.threads, overlap=cfg.overlap)
    info = player.describe()
    log = sys.stderr
    print(f"gt play: engine {info['engine']}, raster {info['raster']}, device {info['device']}, "
          f"{info['gaussians']} Gaussians, {info['width']}x{info['height']}", file=log)
    if info["engine_choice"]:
        print(f"gt play: {info['engine_choice']}", file=log)
    n_frames = num_video_frames(pcm.size)
    session = player.session()
    session.timings.add("audio_frontend", t_load, 0)
    frames = player.play(pcm, sr, session=session)
    if not cfg.quiet:
        frames = progress(frames, "gt play", total=n_frames, unit="frames")
    if cfg.sheet:
        frames, sheet_frames = _tap_frames(frames, n_frames)
    w, h = player.width, player.height
    count = 0
    encode = 0.0
    t_run = time.perf_counter()
    if kind == "mp4":
        # encoded on the writer's thread, beside the next frames' deformation and raster
        with Mp4Writer(cfg.out, w, h, fps=player.fps, sample_rate=SAMPLE_RATE, background=True) as wr:
            wr.write_audio(pcm)
            for fr in frames:
                wr.write(fr)
                count += 1
        encode = wr.encode_seconds           # the encoder thread's time, flush + mux at close included
    elif kind == "png":
        from PIL import Image

        d = Path(cfg.out)
        d.mkdir(parents=True, exist_ok=True)
        for fr in frames:
            t1 = time.perf_counter()
            Image.fromarray(fr).save(d / f"{count:05d}.png", compress_level=1)
            encode += time.perf_counter() - t1
            count += 1
    else:
        stream = sys.stdout.buffer
        for fr in frames:
            t1 = time.perf_counter()
            stream.write(np.ascontiguousarray(fr).tobytes())
            encode += time.perf_counter() - t1
            count += 1
        stream.flush()
    tm = session.timings
    tm.add("encode", encode, count)
    tm.wall = time.perf_counter() - t_run + t_load
    summary = tm.summary()
    result = PlayResult(out=str(cfg.out), frames=count, audio_s=pcm.size / SAMPLE_RATE, video_s=count / player.fps,
                        engine=info["engine"], raster=info["raster"], device=info["device"],
                        model_fps=summary["model_fps"], delivered_fps=summary["delivered_fps"],
                        wall_s=tm.wall, setup_s=t_run - t_start - t_load, stages=summary["stages"],
                        engine_choice=info["engine_choice"], overlap=player.pipeline.overlap_mode())
    if cfg.sheet:
        from PIL import Image

        Path(cfg.sheet).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(contact_sheet(sheet_frames)).save(cfg.sheet)
    if cfg.fps:
        print(result.fps_report(), file=log)
    if cfg.stats_json:
        Path(cfg.stats_json).write_text(json.dumps({"config": {k: str(v) for k, v in asdict(cfg).items()},
                                                    "result": asdict(result)}, indent=2) + "\n")
    player.close()
    return result
