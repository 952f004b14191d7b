"""tools/gpu_check.py, the script a lent GPU runs first (`make gpu-check`), checked where there is no GPU.

On a CPU machine it must skip every step with the reason and exit 0, writing its JSON and Markdown; its
benchmark steps also run here in-process under the emulation (fake CuPy, ONNX Runtime CUDA EP and TensorRT
from tests/cuda_emu, kernels on CPU threads) on a tiny bundle, so a lent GPU's few minutes are not spent on
a bug in the script itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def _run_script(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OUT=str(out))
    return subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("args", [(), ("--dry-run",)])
def test_without_a_gpu_every_step_is_skipped_with_its_reason(tmp_path, args):
    if not args and gpu_check.gpu_reason() is None:
        pytest.skip("this machine has a GPU: the plain run is the real check")
    proc = _run_script(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["name"] for s in rep["steps"]] == list(gpu_check.STEPS)
    reason = "dry run" if args else gpu_check.gpu_reason()
    assert all(s["status"] == "skipped" and s["reason"] == reason for s in rep["steps"]), rep["steps"]
    assert rep["exit_code"] == 0 and rep["gpu"] is None
    md = (tmp_path / "gpu_check.md").read_text()
    for name in gpu_check.STEPS:
        assert f"| {name} | skipped |" in md and reason in md
    assert "wrote" in proc.stderr


def test_benchmark_steps_run_under_the_emulation(tmp_path, gpu, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tests.cuda_emu import fake_ort_cuda, fake_tensorrt

    fake_ort_cuda.install(monkeypatch)
    fake_tensorrt.install(monkeypatch)
    from gt_runtime.engines import fused_cuda
    from tests.cuda_emu import deform as deform_emu
    from tests.cuda_emu.fake_cupy import DeviceKernels

    deform_kernels = DeviceKernels(deform_emu.Kernels(deform_emu.build(tmp_path)))  # cuda-fused's kernels on CPU threads
    monkeypatch.setattr(fused_cuda, "get_module", lambda: deform_kernels)
    rep = gpu_check.run(tmp_path, budget_s=600, gaussians=200, size=32, batches=(1, 3), seconds=0.4,
                        steps=("raster", "deform", "frame"), measure_s=0.05)  # fmt: skip
    steps = {s["name"]: s for s in rep["steps"]}
    assert all(s["status"] == "passed" for s in steps.values()), {k: (v["status"], v.get("error")) for k, v in steps.items()}
    raster = steps["raster"]["rows"]
    assert [(r["B"], r["what"]) for r in raster] == [(1, "gt CUDA raster (CuPy)"), (3, "gt CUDA raster (CuPy)")]
    assert all(r["ms"] > 0 and r["ms_per_frame"] == pytest.approx(r["ms"] / r["B"], abs=1e-3) for r in raster)
    deform = {(r["engine"], r.get("B")) for r in steps["deform"]["rows"] if "ms" in r}
    want = {"array-cupy", "cuda-fused-fp32", "onnxruntime-cuda-fp32", "tensorrt-fp32"}
    assert {(e, b) for e in want for b in (1, 3)} <= deform, steps["deform"]["rows"]
    frames = [r for r in steps["frame"]["rows"] if "fps" in r]
    assert {r["engine"].split("-")[0] for r in frames} == {"array", "cuda", "onnxruntime", "tensorrt"}, steps["frame"]["rows"]
    assert all(r["frames"] == 10 and r["fps"] > 0 for r in frames)
    # no torch on CUDA here: the baselines are skipped, and the report says so
    assert any("no eager torch baseline" in n for n in rep["notes"]), rep["notes"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "## raster" in md and "| gt CUDA raster (CuPy) | 3 |" in md.replace("| what | B |", "")
    assert json.loads((tmp_path / "gpu_check.json").read_text())["exit_code"] == 0
