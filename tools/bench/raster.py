"""Rasterizer benchmark: ms per frame of every available backend on head-shaped scenes.

    python -m tools.bench.raster                              # print the markdown table
    python -m tools.bench.raster --out tools/bench/RESULTS.md # also write its "## Rasterizer" section
    python -m tools.bench.raster --quick                      # small scenes, a smoke run

Scenes: an ellipsoidal shell of Gaussians the size of a head (SH degree 3), seen from
0.6 m, with 10k and 50k Gaussians at 256^2 and 512^2. Backends, each skipped with a
note when it is not available:

- cpu        the C++/OpenMP rasterizer (gt_runtime._raster_cpu): forward, forward+backward;
- cuda B=1   CudaRasterizer, one frame per render (latency), timed with CUDA events;
- cuda B=16  CudaRasterizer, 16 frames per render (throughput), ms per frame;
- gsplat     gsplat.rasterization on CUDA (forward, forward+backward), when installed;
- reference  the numpy oracle (small scenes only);
- torch      the eager PyTorch rasterizer (gt_train.raster._torch_impl), the reference point,
             on the CPU and, when torch has CUDA, on the GPU.

Each number is the median of several timed repetitions after a warm-up. The "x torch"
columns divide the eager torch time on the same kind of device by the backend's time.
The CPU part stays within --cpu-budget seconds (slow backends run fewer repetitions and
skip the larger scenes once one run exceeds --slow-limit).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

SECTION = "## Rasterizer"
TORCH_CPU_BWD_MAX = 2e8  # N x pixels above which the eager torch backward is not run on the CPU


###############################
# Scenes
###############################


def head_scene(n: int, size: int, sh_degree: int = 3, seed: int = 0) -> dict:
    """n Gaussians on a head-sized ellipsoidal shell (semi-axes 7.5 x 10 x 8.5 cm), camera 0.6 m in front.

    Returns float32 numpy arrays: means [N, 3], quats [N, 4], scales [N, 3], opacities [N],
    colors [N, K, 3] (SH), viewmat [4, 4], K [3, 3], plus width, height, background [3].
    """
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
    means = d * np.array([0.075, 0.10, 0.085]) * rng.uniform(0.9, 1.0, size=(n, 1))
    # ~3 mm spacing at 10k on the shell's ~0.1 m^2: scales 1-6 mm, one axis flatter (surface splats)
    scales = np.exp(rng.uniform(np.log(0.001), np.log(0.006), size=(n, 3)))
    scales[:, 2] *= 0.3
    quats = rng.normal(size=(n, 4))
    opacities = rng.uniform(0.3, 1.0, size=n)
    K_sh = (sh_degree + 1) ** 2
    colors = rng.normal(scale=0.15, size=(n, K_sh, 3))
    colors[:, 0, :] += np.array([0.9, 0.6, 0.5])  # skin-ish DC term
    viewmat = np.eye(4)
    viewmat[2, 3] = 0.6  # camera at z = -0.6 m looking along +z (OpenCV)
    f = 2.4 * size
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    out = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmat=viewmat, K=K)
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    out.update(width=size, height=size, background=np.array([0.2, 0.3, 0.4], np.float32))
    return out


###############################
# Timing
###############################


@dataclass
class Cell:
    fwd_ms: float | None = None
    fwdbwd_ms: float | None = None
    note: str = ""


@dataclass
class Budget:
    """Wall-clock budget of the CPU backends, and the per-backend 'too slow for bigger scenes' flag."""

    cpu_seconds: float
    slow_limit: float
    started: float = field(default_factory=time.perf_counter)
    too_slow: set = field(default_factory=set)

    def left(self) -> float:
        return self.cpu_seconds - (time.perf_counter() - self.started)


def time_cpu(fn, reps: int, budget_s: float) -> tuple[float, float]:
    """(median ms, warm-up ms) of fn() over up to `reps` runs after one warm-up, within budget_s."""
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    n = max(1, min(reps, int(budget_s / max(warm, 1e-6))))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, warm * 1e3


def time_cuda_events(cp, fn, reps: int, stream=None) -> float:
    """Median ms of fn() measured with CUDA events on `stream` (after two warm-ups)."""
    stream = stream or cp.cuda.get_current_stream()
    for _ in range(2):
        fn()
    stream.synchronize()
    times = []
    for _ in range(reps):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


###############################
# Backends
###############################


def bench_cpu(scene, reps, budget: Budget) -> Cell:
    try:
        from gt_runtime import _raster_cpu
    except Exception as exc:
        return Cell(note=f"C++ extension not built ({exc.__class__.__name__}): pip install -e .")
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmat", "K")]
    W, H, bg = scene["width"], scene["height"], scene["background"]
    per_cell = max(1.0, budget.left() / 8)
    fwd, _ = time_cpu(lambda: _raster_cpu.forward(*args, W, H, bg), reps, per_cell)
    v_image = np.ones((H, W, 3), np.float32)

    def fwd_bwd():
        _, state = _raster_cpu.forward_with_state(*args, W, H, bg)
        _raster_cpu.backward(state, v_image)

    fb, _ = time_cpu(fwd_bwd, reps, per_cell)
    return Cell(fwd, fb)


def bench_reference(scene, reps, budget: Budget, max_gaussians: int, max_size: int) -> Cell:
    if len(scene["means"]) > max_gaussians or scene["width"] > max_size:
        return Cell(note=f"skipped: only run up to {max_gaussians} Gaussians at {max_size}^2")
    if budget.left() < 10:
        return Cell(note="skipped: CPU time budget spent")
    from gt_runtime.raster._reference import rasterize_reference

    fwd, _ = time_cpu(lambda: rasterize_reference(**scene), min(reps, 2), min(30.0, budget.left() / 4))
    return Cell(fwd, None, "forward only")


def _torch_rasterize():
    """(callable, name) of the eager torch rasterizer gt_train.raster._torch_impl.rasterize_torch_impl, or (None, why)."""
    try:
        from gt_train.raster._torch_impl import rasterize_torch_impl
    except Exception as exc:
        return None, f"gt_train.raster._torch_impl not importable ({exc.__class__.__name__}: {exc})"
    return rasterize_torch_impl, "_torch_impl.rasterize_torch_impl"


def bench_torch(scene, reps, budget: Budget, device: str) -> Cell:
    key = f"torch-{device}"
    if key in budget.too_slow:
        return Cell(note=f"skipped: a smaller scene took over {budget.slow_limit:.0f} s")
    if device == "cpu" and budget.left() < 10:
        return Cell(note="skipped: CPU time budget spent")
    try:
        import torch
    except Exception:
        return Cell(note="torch not installed")
    if device == "cuda" and not torch.cuda.is_available():
        return Cell(note="torch has no CUDA")
    fn, what = _torch_rasterize()
    if fn is None:
        return Cell(note=what)
    t = {k: torch.from_numpy(v).to(device) for k, v in scene.items() if isinstance(v, np.ndarray)}
    W, H = scene["width"], scene["height"]
    leaves = ("means", "quats", "scales", "opacities", "colors")

    def call(grad: bool):
        inputs = {k: (t[k].clone().requires_grad_(True) if grad and k in leaves else t[k]) for k in t}
        with torch.set_grad_enabled(grad):
            img = fn(inputs["means"], inputs["quats"], inputs["scales"], inputs["opacities"], inputs["colors"],
                     inputs["viewmat"], inputs["K"], W, H, background=inputs["background"])  # fmt: skip
            img = img[0] if isinstance(img, (tuple, list)) else img
            if grad:
                img.sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    per_cell = max(1.0, budget.left() / 6) if device == "cpu" else 30.0
    try:
        fwd, warm = time_cpu(lambda: call(False), reps, per_cell)
        if warm > budget.slow_limit * 1e3:
            budget.too_slow.add(key)
            return Cell(fwd, None, f"{what}; fwd+bwd skipped (forward took {warm / 1e3:.0f} s)")
        n = int(scene["means"].shape[0])
        if device == "cpu" and n * W * H > TORCH_CPU_BWD_MAX:
            # autograd keeps every intermediate of the eager per-tile loop: 10k Gaussians at 256^2 filled 24 GB
            return Cell(fwd, None, f"{what}; fwd+bwd skipped (autograd memory: N x pixels > {TORCH_CPU_BWD_MAX:.0e})")
        fb, warm = time_cpu(lambda: call(True), reps, per_cell)
        if warm > budget.slow_limit * 1e3:
            budget.too_slow.add(key)
    except Exception as exc:  # e.g. out of memory on a big scene
        return Cell(note=f"{what} failed: {exc.__class__.__name__}: {str(exc).splitlines()[0][:80]}")
    return Cell(fwd, fb, what)


def bench_cuda(scene, reps, B: int) -> Cell:
    try:
        from gt_runtime.raster import _cuda
    except Exception as exc:
        return Cell(note=f"gt_runtime.raster._cuda not importable ({exc})")
    if not _cuda.cuda_available():
        return Cell(note="no CuPy / CUDA device")
    import cupy as cp

    r = _cuda.CudaRasterizer()
    with r.stream:
        # per-frame attributes [B, N, ...], as the runtime renders deformed Gaussians
        attrs = {k: cp.asarray(np.repeat(scene[k][None], B, axis=0))
                 for k in ("means", "quats", "scales", "opacities", "colors")}  # fmt: skip
        views = cp.asarray(np.repeat(scene["viewmat"][None], B, axis=0))
        Ks = cp.asarray(np.repeat(scene["K"][None], B, axis=0))
        bg = cp.asarray(scene["background"])
    r.stream.synchronize()

    def fwd():
        r.render(**attrs, viewmats=views, Ks=Ks, width=scene["width"], height=scene["height"], background=bg, sh=True)

    ms = time_cuda_events(cp, fwd, reps, r.stream)
    return Cell(ms / B, None, f"{r.last_n_isects // B} tile intersections/frame; no CUDA backward (training uses gsplat)")


def bench_gsplat(scene, reps) -> Cell:
    try:
        import gsplat
        import torch
    except Exception:
        return Cell(note="gsplat not installed")
    if not torch.cuda.is_available():
        return Cell(note="torch has no CUDA")
    t = {k: torch.from_numpy(v).cuda() for k, v in scene.items() if isinstance(v, np.ndarray)}
    deg = int(round(np.sqrt(scene["colors"].shape[1]))) - 1
    leaves = ("means", "quats", "scales", "opacities", "colors")

    def call(grad: bool):
        x = {k: (t[k].clone().requires_grad_(True) if grad and k in leaves else t[k]) for k in t}
        with torch.set_grad_enabled(grad):
            img, _, _ = gsplat.rasterization(x["means"], x["quats"], x["scales"], x["opacities"], x["colors"],
                                             x["viewmat"][None], x["K"][None], scene["width"], scene["height"],
                                             sh_degree=deg, packed=False, backgrounds=x["background"][None])  # fmt: skip
            if grad:
                img.sum().backward()

    import cupy as cp  # events on torch's current stream (the legacy default stream)

    fwd = time_cuda_events(cp, lambda: call(False), reps, cp.cuda.Stream.null)
    fb = time_cuda_events(cp, lambda: call(True), reps, cp.cuda.Stream.null)
    return Cell(fwd, fb, f"gsplat {getattr(gsplat, '__version__', '?')}")


###############################
# Report
###############################


def machine_info() -> dict:
    info = {"cpu": platform.processor() or "unknown", "cores": os.cpu_count(), "gpu": "none"}
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            info["cpu"] = m.group(1).strip()
    except OSError:
        pass
    try:
        from gt_runtime.raster import _cuda

        if _cuda.cuda_available():
            import cupy as cp

            name = cp.cuda.runtime.getDeviceProperties(0)["name"]
            info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            info["cupy"] = cp.__version__
    except Exception:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except Exception:
        pass
    info["python"] = platform.python_version()
    info["numpy"] = np.__version__
    return info


def _fmt(ms: float | None) -> str:
    return "-" if ms is None else (f"{ms:.2f}" if ms < 100 else f"{ms:.0f}")


def _ratio(base: float | None, ms: float | None) -> str:
    return "-" if base is None or ms is None or ms <= 0 else f"{base / ms:.1f}x"


def render_table(rows: list[tuple[str, str, str, Cell]], torch_ref: dict) -> str:
    """rows: (scene, backend, device kind, cell); torch_ref[(scene, device kind)] = eager torch Cell."""
    lines = [
        "| scene | backend | forward ms/frame | fwd+bwd ms/frame | forward x torch | fwd+bwd x torch | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for scene, backend, kind, c in rows:
        ref = torch_ref.get((scene, kind)) or Cell()
        lines.append(
            f"| {scene} | {backend} | {_fmt(c.fwd_ms)} | {_fmt(c.fwdbwd_ms)} | {_ratio(ref.fwd_ms, c.fwd_ms)} | "
            f"{_ratio(ref.fwdbwd_ms, c.fwdbwd_ms)} | {c.note} |"
        )
    return "\n".join(lines)


def write_section(path: Path, body: str):
    """Replace (or append) the '## Rasterizer' section of path, keeping every other section."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{SECTION}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\s*$.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="10000,50000", help="Gaussian counts, comma separated")
    p.add_argument("--sizes", default="256,512", help="square image sizes, comma separated")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per cell (median)")
    p.add_argument("--cpu-budget", type=float, default=240.0, help="seconds for all CPU backends together")
    p.add_argument("--slow-limit", type=float, default=60.0, help="skip bigger scenes of a backend slower than this (s)")
    p.add_argument("--reference-max", type=int, default=10000, help="largest Gaussian count for the numpy reference")
    p.add_argument("--quick", action="store_true", help="small scenes and few repetitions (smoke run)")
    p.add_argument("--out", type=Path, help="write the '## Rasterizer' section of this markdown file")
    a = p.parse_args(argv)
    if a.quick:
        a.counts, a.sizes, a.reps, a.cpu_budget = "2000", "128", 3, 60.0
    counts = [int(x) for x in a.counts.split(",") if x]
    sizes = [int(x) for x in a.sizes.split(",") if x]
    budget = Budget(a.cpu_budget, a.slow_limit)

    rows, torch_ref = [], {}
    t_start = time.perf_counter()
    for n in counts:
        for size in sizes:
            scene = head_scene(n, size)
            name = f"{n // 1000}k @ {size}^2" if n >= 1000 else f"{n} @ {size}^2"
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            cells = [
                ("torch (eager)", "cpu", bench_torch(scene, a.reps, budget, "cpu")),
                ("cpu (C++/OpenMP)", "cpu", bench_cpu(scene, a.reps, budget)),
                ("reference (numpy)", "cpu", bench_reference(scene, a.reps, budget, a.reference_max, 256)),
                ("torch (eager)", "cuda", bench_torch(scene, a.reps, budget, "cuda")),
                ("gsplat", "cuda", bench_gsplat(scene, a.reps)),
                ("cuda B=1", "cuda", bench_cuda(scene, a.reps, 1)),
                ("cuda B=16", "cuda", bench_cuda(scene, a.reps, 16)),
            ]
            for backend, kind, cell in cells:
                if backend == "torch (eager)":
                    torch_ref[(name, kind)] = cell
                rows.append((name, f"{backend} [{kind}]", kind, cell))

    info = machine_info()
    table = render_table(rows, torch_ref)
    cmd = "python -m tools.bench.raster " + " ".join(argv if argv is not None else sys.argv[1:])
    body = "\n".join([
        f"Machine: {info['cpu']}, {info['cores']} cores; GPU: {info['gpu']}. "
        + ", ".join(f"{k} {info[k]}" for k in ("python", "numpy", "torch", "cupy") if k in info) + ".",
        f"Run: `{cmd.strip()}` on {_dt.date.today().isoformat()} ({time.perf_counter() - t_start:.0f} s).",
        "",
        "Head-shaped scenes (SH degree 3, colour background), camera at 0.6 m. Median ms per frame after a",
        "warm-up; CUDA times from CUDA events (B=16: one render of 16 frames, divided by 16). "
        "'x torch': eager PyTorch (gt_train) time on the same kind of device divided by the backend's.",
        "",
        table,
    ])  # fmt: skip
    print(body)
    if a.out:
        write_section(a.out, body)
        print(f"[bench] wrote the '{SECTION}' section of {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
