"""Quick CPU rasterizer timing: forward and forward+backward (ms, median) on head-shaped scenes.

    python -m tools.bench.raster_cpu_quick                 # best kernel variant (from the repository root)
    python -m tools.bench.raster_cpu_quick --isa all       # every variant this CPU runs
    python -m tools.bench.raster_cpu_quick --refs          # + numpy / torch references (slow)

--isa sets GT_RASTER_ISA (generic | avx2 | avx512) for the run; the load average is printed
because other processes skew the numbers.
"""
import argparse
import os
import time

import numpy as np

from gt_runtime.raster import _cpu
from gt_runtime.raster._reference import rasterize_reference
from tests.support.raster_scenes import head_scene


def median_ms(fn, reps):
    """Median wall time (ms)."""
    return median_ms_cpu(fn, reps)[0]


def median_ms_cpu(fn, reps):
    """Median wall time and median process CPU time (ms, all threads): on a loaded machine the CPU
    time over the thread count tracks the quiet-machine wall time better than the wall time does."""
    ts, cs = [], []
    for _ in range(reps):
        c, t = time.process_time(), time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    return 1e3 * float(np.median(ts)), 1e3 * float(np.median(cs))


def bench(sizes, counts, reps):
    for n in counts:
        for size in sizes:
            s = head_scene(n, size, size, sh_degree=3)
            _cpu.forward(**s)
            fwd, fwd_cpu = median_ms_cpu(lambda s=s: _cpu.forward(**s), reps)

            def fb(s=s):
                img, st = _cpu.forward_with_state(**s)
                _cpu.backward(st, np.ones_like(img))

            fb()
            fb_wall, fb_cpu = median_ms_cpu(fb, reps)
            print(f"N={n:6d} {size}x{size}: cpu fwd {fwd:7.1f} ms | fwd+bwd {fb_wall:7.1f} ms   "
                  f"(cpu time: fwd {fwd_cpu:7.1f} ms | fwd+bwd {fb_cpu:7.1f} ms)", flush=True)


def references():
    s = head_scene(10_000, 256, 256, sh_degree=3)
    print(f"numpy reference N=10000 256x256: {median_ms(lambda: rasterize_reference(**s), 1):.0f} ms")
    try:
        import torch

        from gt_train.raster import rasterize_torch_impl
    except ImportError:
        return
    s = head_scene(1_000, 256, 256, sh_degree=3)
    t = {k: torch.tensor(v, requires_grad=k in ("means", "colors")) for k, v in s.items()
         if isinstance(v, np.ndarray)}

    def torch_fb():
        img = rasterize_torch_impl(t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], t["viewmat"],
                                   t["K"], 256, 256, t["background"])
        img.sum().backward()

    print(f"torch reference (_torch_impl) N=1000 256x256 fwd+bwd: {median_ms(torch_fb, 1):.0f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default=None, help="generic | avx2 | avx512 | all (default: the best this CPU runs)")
    ap.add_argument("--reps", type=int, default=9, help="repetitions per timing (median)")
    ap.add_argument("--sizes", default="256,512", help="image sides, comma separated")
    ap.add_argument("--counts", default="10000,50000", help="Gaussian counts, comma separated")
    ap.add_argument("--refs", action="store_true", help="also time the numpy and torch references (minutes)")
    args = ap.parse_args()
    ext = _cpu.load()
    isas = ext.isas() if args.isa == "all" else [args.isa]
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}, cpus={os.cpu_count()}, "
          f"kernel variants: {ext.isas()}, load average: {os.getloadavg()[0]:.2f}")
    sizes = [int(x) for x in args.sizes.split(",")]
    counts = [int(x) for x in args.counts.split(",")]
    for isa in isas:
        if isa is None:
            os.environ.pop("GT_RASTER_ISA", None)
        else:
            os.environ["GT_RASTER_ISA"] = isa
        print(f"-- isa {ext.isa()}")
        bench(sizes, counts, args.reps)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.refs:
        references()


if __name__ == "__main__":
    main()
