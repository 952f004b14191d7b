"""Quick CPU rasterizer timing: forward and forward+backward (ms, median) on head-shaped scenes,
with the numpy and torch references for comparison.

    PYTHONPATH=. python tools/bench/raster_cpu_quick.py
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests"))
from raster_scenes import head_scene  # noqa: E402

from gt_runtime.raster import _cpu  # noqa: E402
from gt_runtime.raster._reference import rasterize_reference  # noqa: E402


def median_ms(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def main():
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}, cpus={os.cpu_count()}")
    for n in (10_000, 50_000):
        for size in (256, 512):
            s = head_scene(n, size, size, sh_degree=3)
            _cpu.forward(**s)
            fwd = median_ms(lambda: _cpu.forward(**s), 7)

            def fb():
                img, st = _cpu.forward_with_state(**s)
                _cpu.backward(st, np.ones_like(img))

            print(f"N={n:6d} {size}x{size}: cpu fwd {fwd:7.1f} ms | fwd+bwd {median_ms(fb, 5):7.1f} ms")
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


if __name__ == "__main__":
    main()
