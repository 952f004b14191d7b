"""Deformation network ms / frame at 10k / 20k / 50k Gaussians, all engines in ONE run, as ratios.

    python -m tools.bench.deform_fused [--counts 10000 20000 50000] [--threads 2] [--batch 1]
                                       [--rounds 7] [--clock wall|cpu] [--append tools/bench/RESULTS.md]

Engines: eager torch (gt_train's deformation network), ONNX Runtime FP32 / INT8 (the bundle's
exported graphs), cpu-fused FP32 / INT8 (gt_runtime._deform_cpu). Bundles are random
(gt_runtime.bundle.synthetic.make_random_bundle, L = 2, SH degree 3), cached under --cache.
Every library gets --threads threads; times are ms per frame (a call of --batch frames divided
by the batch), the median of --rounds rounds in which the engines take turns, so a load that
comes and goes on a shared machine hits them alike. --clock cpu (with --threads 1) times the
calling thread's CPU time instead of the wall clock: every engine then runs in that thread, and
the time other processes take the core away does not count (steadier on a loaded machine). Prints the CPU model and the
fused kernel's ISA, and a markdown table (appended to --append when given).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tools.bench.raster import machine_info
from tools.bench.suite import EagerTorch, bundle_for

ENGINES = ("onnxruntime-fp32", "onnxruntime-int8", "cpu-fused-fp32", "cpu-fused-int8")
OFFSETS = ("dmu", "drot", "dscale", "dsh", "dopacity")


def cpu_flags() -> str:
    """The SIMD flags of /proc/cpuinfo that the kernels care about."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    want = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16")
    return " ".join(f for f in want if f in have) or "none of avx2/avx512"


def setup_threads(threads: int) -> None:
    import torch

    from gt_runtime.util.cpu import set_blas_threads

    torch.set_num_threads(threads)
    set_blas_threads(threads)


def bench(cache: Path, counts, threads: int, batch: int, rounds: int, clock) -> list[dict]:
    from gt_runtime.bundle import Bundle
    from gt_runtime.engines.select import select_engine

    rows = []
    tok = np.random.default_rng(0).standard_normal((batch, 4, 64)).astype(np.float32)
    for n in counts:
        b = Bundle.open(bundle_for(cache, n, 256, 2))
        eager = EagerTorch(b)
        ref = [o.numpy() for o in eager.deform(tok)[:5]]
        calls = {"torch (eager)": lambda m=eager: m.deform(tok)}
        errs = {"torch (eager)": 0.0}
        sets = []
        for name in ENGINES:
            es = select_engine(b, name, gpu=False, threads=threads).activate()
            sets.append(es)
            out = es.deform.infer({"tokens": tok})
            errs[es.name] = max(float(np.abs(np.asarray(out[k]) - want).max()) for k, want in zip(OFFSETS, ref))
            calls[es.name] = lambda runner=es.deform: runner.infer({"tokens": tok})
        times = {k: [] for k in calls}
        for fn in calls.values():  # warm-up
            fn()
        for _ in range(rounds):
            for k, fn in calls.items():
                t0 = clock()
                fn()
                times[k].append((clock() - t0) / batch)
        for es in sets:
            es.deactivate()
        ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        ort8 = ms.get("onnxruntime-int8")
        for k, v in ms.items():
            rows.append({"N": n, "engine": k, "ms": v, "x_torch": ms["torch (eager)"] / v,
                         "x_ort8": (ort8 / v) if ort8 else float("nan"), "err": errs[k]})
            print(f"N={n} {k}: {v:.1f} ms, {ms['torch (eager)'] / v:.2f}x torch, "
                  f"{(ort8 / v) if ort8 else float('nan'):.2f}x ORT INT8, max err vs torch {errs[k]:.2g}",
                  file=sys.stderr, flush=True)
    return rows


def table(rows) -> str:
    lines = ["| N | engine | ms / frame | x eager torch | x ORT INT8 | max abs err vs torch |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['N'] // 1000}k | {r['engine']} | {r['ms']:.1f} | {r['x_torch']:.2f}x | {r['x_ort8']:.2f}x | {r['err']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[10000, 20000, 50000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "gt-bench-cache")
    ap.add_argument("--append", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu times one thread: use it with --threads 1")
    os.environ.setdefault("GT_QUIET", "1")
    args.cache.mkdir(parents=True, exist_ok=True)
    setup_threads(args.threads)

    from gt_runtime.engines import fused_cpu

    info = machine_info()
    isa = f"{fused_cpu.isa()} (this build and CPU run: {', '.join(fused_cpu.isas())})"
    print(f"CPU: {info['cpu']}, {info['cores']} cores; flags: {cpu_flags()}; cpu-fused ISA: {isa}", file=sys.stderr)
    t0 = time.perf_counter()
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    rows = bench(args.cache, args.counts, args.threads, args.batch, args.rounds, clock)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    body = "\n".join([
        "## Fused deformation kernel (cpu-fused) against torch and ONNX Runtime",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores; SIMD flags: {cpu_flags()}; cpu-fused kernels: {isa}. "
        f"torch {info.get('torch', '?')}.",
        f"Run: `python tools/bench/deform_fused.py --threads {args.threads} --batch {args.batch} --rounds {args.rounds} "
        f"--clock {args.clock}` "
        f"on {_dt.date.today().isoformat()}, {time.perf_counter() - t0:.0f} s; load average at the end "
        f"{' '.join(load)} (a shared machine).",
        f"Times: {'wall' if args.clock == 'wall' else 'one-thread CPU'} ms per frame (B = {args.batch} frames per call), "
        f"every library on {args.threads} thread{'s' if args.threads > 1 else ''}, "
        "median of rounds in which the engines take turns. L = 2, SH degree 3, random bundles.",
        "",
        table(rows),
        "",
    ])
    print(body)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
