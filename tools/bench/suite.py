"""CPU benchmarks of the runtime against the eager PyTorch model, measured in the same run -> tools/bench/RESULTS.md.

    python -m tools.bench.suite                                  # all sections, print + write RESULTS.md
    python -m tools.bench.suite --sections deform frame --quick  # a smoke run, nothing written without --out

Sections (each replaces its own "## ..." section of --out, keeping the others):

- deform:  the deformation network, ms per frame (B = 1) for N = 10k / 20k / 50k Gaussians, L = 2:
           eager torch (gt_train's DeformationNetwork on the bundle's weights), `array` (numpy,
           algebraic savings), ONNX Runtime FP32 / FP16 / INT8; "x torch" = torch ms / engine ms;
- layers:  L = 1 ("GaussianTalker*") vs L = 2 at 20k, eager torch and the engines;
- frame:   a whole frame (audio token + deform + activations + raster + composite) at 20k Gaussians,
           256² and 512²: eager torch (GaussianTalker tokens + deform, gt_train.render with the C++
           rasterizer) vs gt_runtime's FramePipeline with each CPU engine and the C++ rasterizer;
- scaling: FPS vs Gaussian count (10k..50k at 256²) and vs resolution (128²..512² at 20k), pipeline
           (best engine, ONNX Runtime INT8) and eager torch -> tools/bench/fps_vs_gaussians.png.

Timing: every stage runs on ONE thread (engine, BLAS, OpenMP rasterizer and torch all set to 1)
and is measured as the CPU time of that thread (`time.thread_time`), median of the repetitions
after a warm-up. On a shared, loaded machine this is stable where wall time is not. "est. FPS
(2 cores)" is 1000 / max(deform, raster): the pipeline overlaps the two stages on 2 cores.
Random but valid bundles (gt_runtime.bundle.synthetic, SH degree 3) are cached under --cache.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tools.bench.raster import machine_info

ROOT = Path(__file__).resolve().parents[2]

ENGINES = ("array", "onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8")
SECTIONS = ("deform", "layers", "frame", "scaling")


# ---------------------------------------------------------------- setup
def one_thread() -> None:
    import torch

    from gt_runtime.util.cpu import set_blas_threads, set_omp_threads
    from gt_runtime.raster import _cpu

    torch.set_num_threads(1)
    _cpu.load()
    set_omp_threads(1)
    set_blas_threads(1)


def bundle_for(cache: Path, n: int, size: int = 256, layers: int = 2) -> Path:
    from gt_runtime.bundle.synthetic import make_random_bundle

    p = cache / f"suite-n{n}-s{size}-L{layers}.gtb"
    if not (p / "manifest.json").is_file():
        import shutil

        shutil.rmtree(p, ignore_errors=True)
        make_random_bundle(p, n_gaussians=n, sh_degree=3, num_layers=layers, width=size, height=size,
                           n_track_frames=12, seed=0, fp16=True, int8=True)
    return p


def time_cpu(fn, reps: int, budget_s: float) -> float:
    """Median one-thread CPU ms of fn() after one warm-up, up to reps runs within budget_s."""
    fn()
    times = []
    t_end = time.perf_counter() + budget_s
    while len(times) < reps and (len(times) < 2 or time.perf_counter() < t_end):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return 1e3 * statistics.median(times)


class EagerTorch:
    """gt_train's GaussianTalker on a bundle's weights (tokens, deformation, gt_train.render)."""

    def __init__(self, bundle):
        import torch

        from gt_train.config import ModelConfig
        from gt_train.model import GaussianTalker
        from gt_train.model.talker import TRAINING_ONLY

        self.torch = torch
        g = bundle.gaussians
        cfg = ModelConfig(num_layers=bundle.num_layers, sh_degree=bundle.sh_degree)
        self.model = GaussianTalker(cfg, g["means"][:64]).eval()
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in bundle.weights.items()}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        assert not unexpected and all(k.split(".")[0] in TRAINING_ONLY for k in missing), (missing, unexpected)
        self.canon = {k: torch.from_numpy(np.ascontiguousarray(g[k])) for k in ("means", "quats", "log_scales", "opacity_logits", "sh")}
        self.queries = torch.from_numpy(np.ascontiguousarray(g["queries"]))
        self.bundle = bundle

    def deform(self, tokens: np.ndarray):
        with self.torch.no_grad():
            return self.model.deform(self.torch.from_numpy(tokens), self.queries)

    def frame(self, window: np.ndarray, blink: float, c2w: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
              background: np.ndarray) -> np.ndarray:
        from gt_train.model.talker import apply_offsets
        from gt_train.render import render

        torch = self.torch
        b = self.bundle
        with torch.no_grad():
            tokens = self.model.forward_tokens(torch.from_numpy(window[None]), torch.tensor([blink]), torch.from_numpy(c2w[None]))
            *offs, _ = self.model.deform(tokens, self.queries)
            a = apply_offsets(self.canon, *offs)
            img = render(a["means"][0], a["quats"][0], a["log_scales"][0], a["opacity_logits"][0], a["sh"][0],
                         torch.from_numpy(viewmat), torch.from_numpy(K), b.width, b.height, torch.from_numpy(background),
                         b.sh_degree)
            return (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def random_tokens(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 4, 64)).astype(np.float32)


def engine_set(bundle, name: str):
    from gt_runtime.engines.select import select_engine

    return select_engine(bundle, name, gpu=False, threads=1).activate()


# ---------------------------------------------------------------- sections
def bench_deform(cache, counts, layers, reps, budget) -> list[dict]:
    from gt_runtime.bundle import Bundle

    rows = []
    tok = random_tokens()
    for L in layers:
        for n in counts:
            b = Bundle.open(bundle_for(cache, n, 256, L))
            eager = EagerTorch(b)
            ref = [o.numpy() for o in eager.deform(tok)[:5]]
            t_torch = time_cpu(lambda eager=eager: eager.deform(tok), reps, budget)
            rows.append({"L": L, "N": n, "engine": "torch (eager)", "ms": t_torch, "x": 1.0, "err": 0.0})
            for name in ENGINES:
                es = engine_set(b, name)
                out = es.deform.infer({"tokens": tok})
                err = max(float(np.abs(np.asarray(out[k]) - r).max()) for k, r in zip(("dmu", "drot", "dscale", "dsh", "dopacity"), ref))
                ms = time_cpu(lambda es=es: es.deform.infer({"tokens": tok}), reps, budget)
                es.deactivate()
                rows.append({"L": L, "N": n, "engine": es.name, "ms": ms, "x": t_torch / ms, "err": err})
                print(f"[deform] L={L} N={n} {es.name}: {ms:.1f} ms ({t_torch / ms:.2f}x torch {t_torch:.1f} ms), max err {err:.2g}",
                      file=sys.stderr, flush=True)
    return rows


def bench_frame(cache, n, sizes, engines, reps, budget) -> list[dict]:
    from gt_runtime.bundle import Bundle

    rows = []
    win = np.random.default_rng(1).standard_normal((1, 15, 2, 80)).astype(np.float32)
    for size in sizes:
        b = Bundle.open(bundle_for(cache, n, size, 2))
        eager = EagerTorch(b)
        pipe0 = None
        for name in engines:
            pipe, d_ms, r_ms = time_deform_raster(b, name, win, reps, budget)
            rows.append({"N": n, "size": size, "engine": pipe.engines.name, "deform_ms": d_ms, "raster_ms": r_ms})
            pipe0 = pipe0 or pipe
            pipe.engines.deactivate()
        sc = pipe0.scene
        ti = int(sc.track_index(3))
        args = (win[0], float(sc.blink[ti]), sc.c2w[ti], sc.viewmats[ti], np.asarray(b.K, np.float32), sc.background_of_track(ti))
        t_ms = time_cpu(lambda eager=eager, args=args: eager.frame(*args), reps, budget)
        for r in rows:
            if r["size"] == size:
                r["torch_ms"] = t_ms
        rows.append({"N": n, "size": size, "engine": "torch (eager)", "deform_ms": None, "raster_ms": None, "torch_ms": t_ms, "total_ms": t_ms})
        print(f"[frame] {size}²: torch {t_ms:.1f} ms; " + ", ".join(f"{r['engine']} {r['deform_ms']:.1f}+{r['raster_ms']:.1f}" for r in rows
                                                                    if r["size"] == size and r["deform_ms"] is not None), file=sys.stderr, flush=True)
    return rows


def time_deform_raster(b, engine: str, win, reps, budget):
    """-> (pipeline, deform ms, raster ms) of track frame 3 on one thread; the caller deactivates pipe.engines."""
    from gt_runtime.playback.pipeline import FramePipeline

    pipe = FramePipeline(b, engine_set(b, engine), "cpu", overlap=False, raster_threads=1)
    st = pipe.new_state(False)
    fr = np.array([3])
    one_thread()
    d_ms = time_cpu(lambda: pipe.deform(fr, win), reps, budget)
    off, _ = pipe.deform(fr, win)
    r_ms = time_cpu(lambda: pipe.render(st, fr, off), reps, budget)
    return pipe, d_ms, r_ms


def bench_scaling(cache, counts, sizes, n_fixed, size_fixed, engine, reps, budget, png: Path) -> list[dict]:
    from gt_runtime.bundle import Bundle

    win = np.random.default_rng(1).standard_normal((1, 15, 2, 80)).astype(np.float32)
    pts = [(n, size_fixed) for n in counts] + [(n_fixed, s) for s in sizes if s != size_fixed]
    rows = []
    for n, size in pts:
        b = Bundle.open(bundle_for(cache, n, size, 2))
        pipe, d, r = time_deform_raster(b, engine, win, reps, budget)
        eager = EagerTorch(b)
        sc = pipe.scene
        args = (win[0], float(sc.blink[3]), sc.c2w[3], sc.viewmats[3], np.asarray(b.K, np.float32), sc.background_of_track(3))
        t = time_cpu(lambda eager=eager, args=args: eager.frame(*args), max(2, reps // 2), budget)
        pipe.engines.deactivate()
        rows.append({"N": n, "size": size, "engine": pipe.engines.name, "deform_ms": d, "raster_ms": r, "torch_ms": t,
                     "fps_1core": 1e3 / (d + r), "fps_2core": 1e3 / max(d, r), "torch_fps": 1e3 / t})
        print(f"[scaling] N={n} {size}²: deform {d:.1f} raster {r:.1f} torch {t:.1f} ms", file=sys.stderr, flush=True)
    plot_scaling(rows, counts, sizes, n_fixed, size_fixed, png)
    return rows


def plot_scaling(rows, counts, sizes, n_fixed, size_fixed, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    by_n = sorted([r for r in rows if r["size"] == size_fixed], key=lambda r: r["N"])
    by_s = sorted([r for r in rows if r["N"] == n_fixed], key=lambda r: r["size"])
    for ax, rs, key, xl in ((a, by_n, "N", f"Gaussians (at {size_fixed}²)"), (b, by_s, "size", f"resolution (px, at {n_fixed // 1000}k Gaussians)")):
        x = [r[key] for r in rs]
        ax.plot(x, [r["fps_2core"] for r in rs], "o-", label=f"gt_runtime {rs[0]['engine']} + C++ raster, 2 cores overlapped (est.)")
        ax.plot(x, [r["fps_1core"] for r in rs], "s--", label="gt_runtime, 1 core")
        ax.plot(x, [r["torch_fps"] for r in rs], "^-", label="eager torch (gt_train), 1 core")
        ax.axhline(25, color="gray", ls=":", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel("FPS")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    info = machine_info()
    fig.suptitle(f"FPS (model: deform + raster), {info['cpu']}, one-thread CPU time per stage", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- report
def header(t_start: float, argv) -> str:
    info = machine_info()
    try:
        up = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        up = f"load average {os.getloadavg()}"
    return (f"Machine: {info['cpu']}, {info['cores']} cores; GPU: {info['gpu']} (CPU benchmarks only). "
            f"torch {info.get('torch', '?')}, numpy {info['numpy']}.\n"
            f"Run: `python -m tools.bench.suite {' '.join(argv)}` on {_dt.date.today().isoformat()}; "
            f"`uptime` at the end: `{up}` (a shared machine: other jobs were running).\n"
            "Times: one-thread CPU time per stage (time.thread_time), median after a warm-up; all libraries on 1 thread.\n")


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def table_deform(rows, L=None) -> str:
    lines = ["| L | N | engine | ms / frame | x eager torch | max abs err vs torch |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        if L is None or r["L"] == L:
            lines.append(f"| {r['L']} | {r['N'] // 1000}k | {r['engine']} | {fmt(r['ms'])} | {r['x']:.2f}x | {r['err']:.1e} |")
    return "\n".join(lines)


def table_frame(rows) -> str:
    lines = ["| N | size | pipeline | deform ms | raster ms | 1 core ms | x torch (1 core) | est. FPS (2 cores) | x torch (2 cores) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["deform_ms"] is None:
            lines.append(f"| {r['N'] // 1000}k | {r['size']}² | torch (eager) | - | - | {fmt(r['torch_ms'])} | 1.00x | {1e3 / r['torch_ms']:.1f} | - |")
            continue
        tot = r["deform_ms"] + r["raster_ms"]
        two = max(r["deform_ms"], r["raster_ms"])
        lines.append(f"| {r['N'] // 1000}k | {r['size']}² | {r['engine']} + cpu raster | {fmt(r['deform_ms'])} | {fmt(r['raster_ms'])} | "
                     f"{fmt(tot)} | {r['torch_ms'] / tot:.2f}x | {1e3 / two:.1f} | {r['torch_ms'] / two:.2f}x |")
    return "\n".join(lines)


def table_scaling(rows) -> str:
    lines = ["| N | size | engine | deform ms | raster ms | FPS 1 core | est. FPS 2 cores | eager torch FPS | x torch (2 cores) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['N'] // 1000}k | {r['size']}² | {r['engine']} | {fmt(r['deform_ms'])} | {fmt(r['raster_ms'])} | "
                     f"{r['fps_1core']:.1f} | {r['fps_2core']:.1f} | {r['torch_fps']:.1f} | {r['fps_2core'] / r['torch_fps']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--budget", type=float, default=6.0, help="seconds of repetitions per cell (at least 2 runs)")
    ap.add_argument("--quick", action="store_true", help="small counts and sizes (smoke run)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gt-bench-suite")
    ap.add_argument("--out", type=Path, default=None, help="write the sections into this markdown file (e.g. tools/bench/RESULTS.md)")
    ap.add_argument("--png", type=Path, default=ROOT / "tools/bench/fps_vs_gaussians.png")
    a = ap.parse_args(argv)
    os.environ.setdefault("GT_QUIET", "1")
    a.cache.mkdir(parents=True, exist_ok=True)
    one_thread()
    t0 = time.perf_counter()
    if a.quick:
        counts, sizes, n_fixed, frame_sizes, reps = [2000, 4000], [64, 128], 2000, [64], 3
    else:
        counts, sizes, n_fixed, frame_sizes, reps = [10000, 20000, 30000, 40000, 50000], [128, 256, 384, 512], 20000, [256, 512], a.reps
    out = {}
    if "deform" in a.sections:
        rows = bench_deform(a.cache, [counts[0], n_fixed, counts[-1]] if not a.quick else counts, [2], reps, a.budget)
        out["## Deform engine"] = ("Deformation network alone (B = 1, tokens given), L = 2, SH degree 3. "
                                   "'x eager torch' = eager torch ms / engine ms, same run.\n\n" + table_deform(rows))
    if "layers" in a.sections:
        rows = bench_deform(a.cache, [n_fixed], [1, 2], reps, a.budget)
        out["## L = 1 vs L = 2"] = ("Deformation network with 1 (GaussianTalker*) and 2 cross-attention layers, "
                                    f"{n_fixed // 1000}k Gaussians.\n\n" + table_deform(rows))
    if "frame" in a.sections:
        rows = bench_frame(a.cache, n_fixed, frame_sizes, ENGINES, reps, a.budget)
        out["## Whole frame"] = ("One frame: audio token + deform + activations + raster + composite, "
                                 f"{n_fixed // 1000}k Gaussians, L = 2. Eager torch = gt_train's GaussianTalker "
                                 "(tokens + deformation) and gt_train.render (C++ rasterizer through autograd, no_grad). "
                                 "'2 cores': the pipeline overlaps deform (worker thread) and raster, "
                                 "so its frame time is max(deform, raster).\n\n" + table_frame(rows))
    if "scaling" in a.sections:
        rows = bench_scaling(a.cache, counts, sizes, n_fixed, sizes[1] if len(sizes) > 1 else sizes[0], "onnxruntime-int8",
                             max(3, reps // 2), a.budget / 2, a.png)
        rel = os.path.relpath(a.png, a.out.parent) if a.out else a.png
        out["## FPS vs Gaussian count and resolution"] = (f"![FPS vs Gaussians]({rel})\n\n" + table_scaling(rows))
    head = header(t0, argv) + f"Suite wall time: {time.perf_counter() - t0:.0f} s.\n\n"
    for name, body in out.items():
        print(f"\n{name}\n\n{head}{body}")
        if a.out:
            _write(a.out, name, head + body)
    return 0


def _write(path: Path, section: str, body: str) -> None:
    import tools.bench.raster as r

    old = r.SECTION
    try:
        r.SECTION = section
        r.write_section(path, body)
    finally:
        r.SECTION = old


if __name__ == "__main__":
    sys.exit(main())
