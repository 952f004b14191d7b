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
    code = "import sys, gt_runtime, gt_runtime.audio, gt_runtime.playback.video, gt_runtime.raster; assert 'torch' not in sys.modules"
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


def test_sample_preview_writes_mp4_and_sheet(tiny_identity, tmp_path):
    from PIL import Image

    from gt_runtime.playback.video import probe_durations

    r = _run("sample", "preview", str(tiny_identity), "-o", str(tmp_path / "demo.mp4"), "--sheet", str(tmp_path / "sheet.png"))
    assert r.returncode == 0, r.stderr
    d = probe_durations(tmp_path / "demo.mp4")
    assert d["video_codec"] == "h264" and d["audio_codec"] == "aac" and d["frames"] == 75
    assert abs(d["video_s"] - 3.0) <= 1 / 25 and abs(d["audio_s"] - 3.0) <= 1 / 25
    assert Image.open(tmp_path / "sheet.png").size == (4 * 64, 2 * 64)


def test_sample_synthetic_refuses_non_empty_dir(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    r = _run("sample", "synthetic", "-o", str(tmp_path / "x"), "--seconds", "1", "--size", "32")
    assert r.returncode == 2 and (tmp_path / "x" / "keep.txt").read_text() == "mine"
