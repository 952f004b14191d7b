"""The `gt` command: help works without torch, errors are one line with exit code 2."""
import subprocess
import sys

import pytest


def _run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gt_cli", *args], capture_output=True, text=True, **kw)


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from gt_cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'cupy', 'tensorrt', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "sample" in r.stdout


def test_import_gt_runtime_is_torch_free():
    code = "import sys, gt_runtime, gt_runtime.audio, gt_runtime.video, gt_runtime.raster; assert 'torch' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("cmd", [["sample", "--help"], ["sample", "synthetic", "--help"], ["sample", "preview", "--help"]])
def test_subcommand_help_has_examples(cmd):
    r = _run(*cmd)
    assert r.returncode == 0, r.stderr
    if len(cmd) == 3:
        assert "Example" in r.stdout


def test_bad_input_is_one_line_exit_2(tmp_path):
    r = _run("sample", "preview", str(tmp_path / "nope"))
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope" in lines[0] and "Traceback" not in r.stderr


def test_unknown_command_exit_2():
    assert _run("frobnicate").returncode == 2
