"""TensorRT engine build from an exported bundle (needs a CUDA GPU, CuPy and TensorRT; skipped otherwise)."""
import json
import shutil

import numpy as np
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.trt]


def _gpu():
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no CUDA device ({exc})")
    return cp


def test_build_engine_from_export(tiny_identity, tmp_path):
    _gpu()
    pytest.importorskip("tensorrt")
    pytest.importorskip("torch")
    from gt_export import ExportConfig, export
    from gt_runtime.bundle import Bundle
    from gt_runtime.engines.trt_engine import check_plan, device_key, key_name

    from tests.support.runs import make_run

    run = tmp_path / "run"
    make_run(tiny_identity, run, n=800)
    out = export(ExportConfig(run=run, out=tmp_path / "t.gtb", fp16=True, trt=True))
    b = Bundle.open(out)
    key = device_key("fp16")
    plan = b.engines_dir / f"{key_name(key)}.plan"
    assert plan.is_file(), list(b.engines_dir.iterdir())
    meta = json.loads(plan.with_suffix(".json").read_text())
    assert meta["trt"] == key["trt"] and meta["cuda_driver"] > 0 and meta["cuda_runtime"] > 0
    assert check_plan(plan, key, b.manifest["files"]["deform.fp16.onnx"])["stale"] is False
    e = b.manifest["parity"]["engines"]["tensorrt-fp16"]
    assert e["render_psnr_min_db"] >= 40.0
    # the engine is refused on a machine keyed differently
    from gt_runtime.errors import InputError

    with pytest.raises(InputError, match="delete"):
        check_plan(plan, dict(key, trt="0.0.1"))
    # a copy of the bundle still opens (engines are not hashed)
    assert Bundle.open(shutil.copytree(out, tmp_path / "copy.gtb")).num_gaussians == 800
    assert np.isfinite(e["max_abs"])
