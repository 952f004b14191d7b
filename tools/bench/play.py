"""Benchmark `gt play` on CPU: model FPS (engine + raster) and delivered FPS (everything, mp4 encode included).

    python -m tools.bench.play                       # the default identity (trained, 20k) at 256^2 and 512^2
    python -m tools.bench.play --identity random --gaussians 10000 20000 50000
    python -m tools.bench.play --sizes 512 --engines onnxruntime-int8 array --seconds 6

(from the repository root: the speech is the tests' own, tests.support.speech).

--identity default: the bundled default identity (trained, 256², 20k Gaussians; its INT8 passes
parity, so auto may choose it), at other sizes rescaled (tools.bench.rescaled_bundle); --gaussians
does not apply. --identity random: random bundles (gt_runtime.bundle.synthetic, L = 2, SH degree 3;
random weights fail the INT8 render parity, so auto runs FP32). Both are cached under --cache. Prints a
markdown table (and appends it to --out if given). Extra columns come from BASELINES:
name -> fn(bundle_path, n_frames) -> ms per frame of the deformation network, e.g. the
eager torch model of gt_train on the same weights (added by the lead; this script never
imports torch itself).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gt_runtime.apps.play import PlayConfig, play
from gt_runtime.audio import write_wav
from gt_runtime.bundle.synthetic import make_random_bundle
from tests.support.speech import speech as speech_pcm

# name -> callable(bundle_path: Path, n_frames: int) -> deform ms per frame. Register more with BASELINES[name] = fn.
BASELINES: dict = {}


def bundle_for(cache: Path, n: int, size: int) -> Path:
    p = cache / f"random-n{n}-{size}.gtb"
    if not (p / "manifest.json").is_file():
        import shutil

        shutil.rmtree(p, ignore_errors=True)
        make_random_bundle(p, n_gaussians=n, sh_degree=3, num_layers=2, width=size, height=size,
                           n_track_frames=50, seed=0, int8=True)
    return p


def default_for(cache: Path, size: int) -> Path:
    """The bundled default identity at size x size (rescaled copies cached under cache)."""
    from gt_runtime.assets import default_bundle
    from gt_runtime.bundle import Bundle
    from tools.bench.rescaled_bundle import rescale_bundle

    src = default_bundle()
    if Bundle.open(src).width == size:
        return src
    p = cache / f"default-{size}.gtb"
    if not (p / "manifest.json").is_file():
        rescale_bundle(src, p, size)
    return p


def speech(path: Path, seconds: float) -> Path:
    write_wav(path, speech_pcm(seconds))
    return path


def run_one(bundle: Path, wav: Path, out_dir: Path, engine: str, raster: str, overlap) -> dict:
    import resource

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    res = play(PlayConfig(speech=wav, bundle=bundle, out=str(out_dir / "bench.mp4"), engine=engine, raster=raster,
                          overlap=overlap, quiet=True))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    st = res.stages
    # CPU time of every thread of the process per frame (setup included): the work, whatever else the machine runs
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return {"engine": res.engine, "raster": res.raster, "model_fps": res.model_fps, "delivered_fps": res.delivered_fps,
            "deform_ms": st["deform"]["ms_per_frame"], "raster_ms": st["raster"]["ms_per_frame"],
            "composite_ms": st["composite"]["ms_per_frame"], "encode_ms": st["encode"]["ms_per_frame"],
            "cpu_ms": 1e3 * cpu / max(1, res.frames), "overlap": res.overlap.split(" (")[0], "frames": res.frames}


def cpu_time_one(bundle: Path, engine: str, frames: int = 20) -> dict:
    """Per-stage CPU time of one core (thread_time; robust to other load on the machine) -> ms per frame.

    Deform (+ audio encoder) and raster each run single-threaded; with the overlap of
    gt_runtime.playback.pipeline on 2 cores the frame rate is bounded by the slower stage.
    """
    from gt_runtime.bundle import Bundle
    from gt_runtime.engines.select import select_engine
    from gt_runtime.util.cpu import set_omp_threads
    from gt_runtime.playback.pipeline import FramePipeline
    from gt_runtime.raster import _cpu

    b = Bundle.open(bundle)
    es = select_engine(b, engine, threads=1)
    pipe = FramePipeline(b, es, "cpu", overlap=False, raster_threads=1)
    st = pipe.new_state(False)
    _cpu.load()
    set_omp_threads(1)
    rng = np.random.default_rng(0)
    dts, rts = [], []
    for t in range(frames + 2):
        win = rng.standard_normal((1, 15, 2, 80)).astype(np.float32)
        t0 = time.thread_time()
        off, _ = pipe.deform(np.array([t]), win)
        t1 = time.thread_time()
        pipe.render(st, np.array([t]), off)
        t2 = time.thread_time()
        if t >= 2:
            dts.append(t1 - t0)
            rts.append(t2 - t1)
    d, r = 1e3 * float(np.median(dts)), 1e3 * float(np.median(rts))
    return {"engine": es.name, "deform_ms": d, "raster_ms": r, "est_fps": 1e3 / max(d, r)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--identity", choices=["default", "random"], default="default")
    ap.add_argument("--gaussians", type=int, nargs="+", default=[10000, 20000, 50000], help="random bundles only")
    ap.add_argument("--engines", nargs="+", default=["auto"])
    ap.add_argument("--raster", default="auto")
    ap.add_argument("--overlap", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="speech length (a short clip's figure is mostly start-up: probes, first torso decodes)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gt-bench")
    ap.add_argument("--out", type=Path, default=None, help="append the markdown table to this file")
    ap.add_argument("--cpu-time", action="store_true",
                    help="measure one-core CPU time per stage instead of wall time (for a busy machine)")
    a = ap.parse_args(argv)
    os.environ.setdefault("GT_QUIET", "1")
    a.cache.mkdir(parents=True, exist_ok=True)
    overlap = {"auto": None, "on": True, "off": False}[a.overlap]
    wav = speech(a.cache / f"speech-{a.seconds:g}s.wav", a.seconds)
    cols = ["N", "size", "engine", "raster", "deform ms", "raster ms", "composite ms", "encode ms (own thread)", "CPU ms/frame",
            "stages", "model FPS", "delivered FPS"] + [f"{b} ms" for b in BASELINES]
    if a.cpu_time:
        cols = ["N", "size", "engine", "deform ms (1 core)", "raster ms (1 core)", "est. FPS, 2 cores overlapped"] + [f"{b} ms" for b in BASELINES]
    rows = []
    from gt_runtime.bundle import Bundle

    for count in a.gaussians if a.identity == "random" else [None]:
        for size in a.sizes:
            b = bundle_for(a.cache, count, size) if count else default_for(a.cache, size)
            n = Bundle.open(b).num_gaussians
            for eng in a.engines:
                if a.cpu_time:
                    r = cpu_time_one(b, eng)
                    row = [f"{n // 1000}k", f"{size}²", r["engine"], f"{r['deform_ms']:.1f}", f"{r['raster_ms']:.1f}", f"{r['est_fps']:.1f}"]
                    row += [f"{fn(b, 20):.1f}" for fn in BASELINES.values()]
                    rows.append(row)
                    print(" | ".join(row), file=sys.stderr, flush=True)
                    continue
                r = run_one(b, wav, a.cache, eng, a.raster, overlap)
                row = [f"{n // 1000}k", f"{size}²", r["engine"], r["raster"], f"{r['deform_ms']:.1f}", f"{r['raster_ms']:.1f}",
                       f"{r['composite_ms']:.1f}", f"{r['encode_ms']:.1f}", f"{r['cpu_ms']:.0f}", r["overlap"],
                       f"{r['model_fps']:.1f}", f"{r['delivered_fps']:.1f}"]
                for fn in BASELINES.values():
                    row.append(f"{fn(b, r['frames']):.1f}")
                rows.append(row)
                print(" | ".join(row), file=sys.stderr, flush=True)
    from gt_runtime.util.cpu import cpu_name

    head = (f"gt play on CPU ({'one-core CPU time per stage' if a.cpu_time else 'wall time'}), {cpu_name()}, "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {a.seconds:g} s speech, "
            f"{'random bundles (L=2, SH 3)' if a.identity == 'random' else 'the default identity (trained; rescaled above 256²)'}, "
            f"{time.strftime('%Y-%m-%d')}\n\n")
    table = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n" + "".join("| " + " | ".join(r) + " |\n" for r in rows)
    print(head + table)
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n" + head + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
