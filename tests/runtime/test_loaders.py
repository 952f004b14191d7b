"""Session loaders (gt_runtime/engines/loaders.py): runners are given their sessions, created in activate()."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

from gt_runtime.engines import loaders
from gt_runtime.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_loaders_import_only_the_contract_errors_and_stdlib():
    """No engine or bundle module: only the contract, errors and util.cpu (standard library only)."""
    deps = {m for m in _imports(ROOT / "gt_runtime" / "engines" / "loaders.py") if m.startswith("gt_runtime")}
    assert deps <= {"gt_runtime.contract", "gt_runtime.errors", "gt_runtime.util.cpu"}, deps
    # the audio front end takes its sessions from the loaders, not from an engine
    front = _imports(ROOT / "gt_runtime" / "audio" / "frontend.py")
    assert "gt_runtime.engines.loaders" in front and not any("ort_engine" in m for m in front)


def test_a_loader_is_lazy_and_fails_in_one_line(tmp_path):
    missing = tmp_path / "absent.onnx"
    load = loaders.SessionFromOnnx(missing)  # nothing read yet
    assert load.where == str(missing)
    pytest.importorskip("onnxruntime")
    with pytest.raises(InputError) as exc:
        load()
    assert str(exc.value).startswith(f"{missing}: ONNX Runtime cannot load the graph (") and "\n" not in str(exc.value)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(InputError, match="cannot load the audio front end"):
        loaders.SessionFromOnnx(bad, label="the audio front end")()


def test_runner_is_given_its_session_and_creates_it_in_activate(random_bundle):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from gt_runtime.bundle import Bundle
    from gt_runtime.contract import DEFORM_INPUTS, DEFORM_OUTPUTS
    from gt_runtime.engines.ort_engine import OrtRunner

    b = Bundle.open(random_bundle(n_gaussians=200, sh_degree=1, num_layers=2, width=32, height=32, n_track_frames=2, seed=1, onnx=True))
    calls = []
    inner = loaders.SessionFromOnnx(b.onnx_path("fp32"), threads=1)

    def load():
        calls.append(1)
        return inner()

    r = OrtRunner(load, "counted", DEFORM_INPUTS, DEFORM_OUTPUTS, constant_feed={"queries": b.gaussians["queries"]},
                  optional_inputs=("queries",))  # fmt: skip
    assert calls == []
    tokens = np.random.default_rng(0).standard_normal((2, 4, 64)).astype(np.float32)
    with r:
        assert calls == [1]
        got = r.infer({"tokens": tokens})
    # a model instead of a loader (gt_export's parity runners): wrapped in the CPU loader, same outputs
    with OrtRunner(b.onnx_path("fp32"), "path", DEFORM_INPUTS, DEFORM_OUTPUTS, constant_feed={"queries": b.gaussians["queries"]},
                   optional_inputs=("queries",)) as r2:  # fmt: skip
        assert isinstance(r2._load, loaders.SessionFromOnnx)
        same = r2.infer({"tokens": tokens})
    for k in got:
        np.testing.assert_array_equal(got[k], same[k])


def test_cuda_loader_refuses_the_null_stream_and_a_missing_provider(monkeypatch):
    pytest.importorskip("onnxruntime")
    load = loaders.CudaSessionFromOnnx("deform.onnx")
    if not loaders.cuda_provider_available():
        with pytest.raises(InputError, match="no CUDA execution provider"):
            load(1)
    monkeypatch.setattr(loaders, "cuda_provider_available", lambda: True)
    with pytest.raises(ValueError, match="null stream"):
        load(0)


def test_cuda_load_failure_names_a_cpu_only_build():
    ort = pytest.importorskip("onnxruntime")
    why = loaders.cuda_load_failure(ort)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "libonnxruntime_providers_cuda.so" in why
    assert "\n" not in why and sys.modules["onnxruntime"] is ort
