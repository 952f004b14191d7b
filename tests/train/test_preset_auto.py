"""`gt train --preset auto` (the default): paper on a CUDA GPU, cpu-small otherwise, the resumed run's own preset."""
import os
import subprocess
import sys

import pytest

from gt_train.config import TrainConfig, resolve_preset


def test_auto_follows_the_device():
    assert resolve_preset("auto", "cpu") == ("cpu-small", "--device cpu")
    assert resolve_preset("auto", "cuda") == ("paper", "--device cuda")
    assert resolve_preset("test-tiny", "cuda") == ("test-tiny", "")
    torch = pytest.importorskip("torch")
    assert resolve_preset("auto")[0] == ("paper" if torch.cuda.is_available() else "cpu-small")
    cfg = TrainConfig.from_preset("auto", device="cpu")
    assert cfg.preset == "cpu-small" and cfg.resolution == 256


def test_auto_resumes_with_the_runs_preset(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig.from_preset("test-tiny", out=run).save_json(run / "config.json")
    assert resolve_preset("auto", "cuda", run) == ("test-tiny", f"the preset of {run}")
    assert TrainConfig.from_preset("auto", out=run, resume=True, device="cpu").preset == "test-tiny"
    assert resolve_preset("auto", "cpu", tmp_path / "new")[0] == "cpu-small"  # nothing to resume yet


def test_gt_train_prints_the_preset_it_chose_first(tmp_path):
    env = {**os.environ, "GT_QUIET": "0"}
    r = subprocess.run([sys.executable, "-m", "gt_cli", "train", str(tmp_path / "missing"), "-o", str(tmp_path / "run"),
                        "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert lines[0] == "gt train: preset cpu-small (--device cpu; choose with --preset)"
    assert len(lines) == 2 and lines[1].startswith("gt: error:"), r.stderr
