"""Bad input to `gt train`: one-line InputErrors (exit code 2 from the CLI), never a deep traceback."""
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_runtime._raster_cpu", reason="the C++ rasterizer is not built (python setup.py build_ext --inplace)")

from gt_runtime.errors import InputError  # noqa: E402
from gt_train.config import TrainConfig  # noqa: E402
from gt_train.trainer import train  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from gt_train.data.synthetic import SyntheticConfig, make_synthetic_identity

    return make_synthetic_identity(SyntheticConfig(out_dir=tmp_path_factory.mktemp("err") / "synth", seconds=2.0, size=32, progress=False))


@pytest.fixture(scope="module")
def short_run(dataset, tmp_path_factory):
    """A finished 3-iteration run (2 canonical + 1 deform)."""
    out = tmp_path_factory.mktemp("err") / "run"
    train(_cfg(dataset, out))
    return out


def _cfg(data, out, **kw):
    kw.setdefault("iterations_canonical", 2)
    kw.setdefault("iterations_deform", 1)
    return TrainConfig.from_preset("test-tiny", data=data, out=out, resolution=32, max_init_points=300, **kw)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


def test_missing_dataset_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GT_QUIET", "1")
    with pytest.raises(InputError) as e:
        train(_cfg(tmp_path / "nope", tmp_path / "run"))
    assert "nope" in _one_line(e)


def test_missing_frame_propagates_validator_error(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("GT_QUIET", "1")
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    (bad / "frames" / "00010.jpg").unlink()
    with pytest.raises(InputError) as e:
        train(_cfg(bad, tmp_path / "run"))
    assert "00010.jpg" in _one_line(e)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_mismatched_features_propagate(dataset, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("GT_QUIET", "1")
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    np.save(bad / "audio_features.npy", np.zeros((7, 2, 80), np.float32))
    with pytest.raises(InputError) as e:
        train(_cfg(bad, tmp_path / "run"))
    assert "audio_features.npy" in _one_line(e)


def test_existing_run_without_resume_is_refused(short_run, dataset, monkeypatch):
    monkeypatch.setenv("GT_QUIET", "1")
    with pytest.raises(InputError) as e:
        train(_cfg(dataset, short_run))
    assert "--resume" in _one_line(e)


def test_resume_with_other_config_is_refused(short_run, dataset, monkeypatch):
    monkeypatch.setenv("GT_QUIET", "1")
    with pytest.raises(InputError) as e:
        train(_cfg(dataset, short_run, resume=True, seed=5))
    msg = _one_line(e)
    assert "seed: 0 -> 5" in msg and "config" in msg
    with pytest.raises(InputError) as e:
        train(_cfg(dataset, short_run, resume=True, model={"num_layers": 1, "sh_degree": 1}))
    assert "model.num_layers: 2 -> 1" in _one_line(e)


def test_resume_without_checkpoint_is_refused(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("GT_QUIET", "1")
    with pytest.raises(InputError) as e:
        train(_cfg(dataset, tmp_path / "empty", resume=True))
    assert "no checkpoint" in _one_line(e)


def test_corrupt_checkpoint_is_one_line(short_run, dataset, tmp_path, monkeypatch):
    from gt_train.checkpoint import latest_checkpoint, load_model

    monkeypatch.setenv("GT_QUIET", "1")
    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    ck = latest_checkpoint(run)
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.raises(InputError) as e:
        load_model(run)
    assert ck.name in _one_line(e)
    with pytest.raises(InputError) as e:
        train(_cfg(dataset, run, resume=True))
    assert ck.name in _one_line(e)


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gt_cli", "train", str(tmp_path / "nope"), "-o", str(tmp_path / "run"),
                        "--preset", "test-tiny"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gt: error:") and "nope" in lines[0], r.stderr
    r = subprocess.run([sys.executable, "-m", "gt_cli", "train", str(tmp_path), "-o", str(tmp_path / "run"),
                        "--preset", "huge"], capture_output=True, text=True)
    assert r.returncode == 2 and "preset" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_help_has_example():
    r = subprocess.run([sys.executable, "-m", "gt_cli", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "Example: gt train" in r.stdout and "--resume" in r.stdout
