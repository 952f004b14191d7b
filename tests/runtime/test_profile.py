"""`gt profile`: JSON schema, stage sum == total (with other_ms), PNG, CLI; never imports torch."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(random_bundle):
    return random_bundle(n_gaussians=500, width=48, height=48, n_track_frames=6)


@pytest.fixture(scope="module")
def report(bundle, tmp_path_factory):
    from gt_runtime.apps.profile import ProfileConfig, profile

    d = tmp_path_factory.mktemp("prof-out")
    r = profile(ProfileConfig(bundle=bundle, batch=(1, 4), frames=8, warmup=2, json=d / "p.json", png=d / "p.png",
                              quiet=True, threads=1))
    return r, d


def test_json_schema(report):
    from gt_runtime.apps.profile import SCHEMA, STAGES

    r, d = report
    saved = json.loads((d / "p.json").read_text())
    assert saved == json.loads(json.dumps(r))
    assert r["schema"] == SCHEMA and r["stages"] == list(STAGES)
    assert STAGES == ("audio_frontend", "audio_encoder", "deform", "raster", "composite", "encode")
    for k in ("bundle", "engine", "raster", "device", "gaussians", "width", "height", "timer", "machine", "config", "runs"):
        assert k in r, k
    assert r["timer"] == "perf_counter" and r["gaussians"] == 500
    assert set(r["machine"]) == {"cpu", "cores", "gpu", "load_avg"}
    assert [run["batch"] for run in r["runs"]] == [1, 4]
    for run in r["runs"]:
        assert set(run) == {"batch", "frames", "iterations", "warmup_iterations", "stages", "other_ms", "total",
                            "batch_latency", "fps", "model_fps", "fps_encode_thread", "fps_overlapped", "fps_lanes", "share"}
        assert run["frames"] >= 8 and run["frames"] == run["iterations"] * run["batch"]
        assert set(run["stages"]) == set(STAGES)
        for st in (*run["stages"].values(), run["total"]):
            assert set(st) == {"mean_ms", "p50_ms", "p90_ms", "p99_ms"}
            assert 0 <= st["p50_ms"] <= st["p90_ms"] <= st["p99_ms"]
        for s in ("audio_encoder", "deform", "raster", "encode"):
            assert run["stages"][s]["mean_ms"] > 0, s
        assert run["fps"] > 0 and run["model_fps"] >= run["fps"] * 0.99
        assert run["fps_overlapped"] is None or run["fps_overlapped"] > 0
        assert run["fps_lanes"] is None or run["fps_lanes"] > 0
        assert run["fps_encode_thread"] is None or run["fps_encode_thread"] > 0
        assert set(run["share"]) == set(STAGES) | {"other"}
        assert sum(run["share"].values()) == pytest.approx(100.0)
    assert r["deform_kernel"].startswith(r["engine"])


def test_stage_sum_equals_total(report):
    """sum(stage means) + other_ms == total mean (exactly), and the unattributed glue is < 20 % of the total."""
    r, _ = report
    for run in r["runs"]:
        total = run["total"]["mean_ms"]
        s = sum(v["mean_ms"] for v in run["stages"].values())
        assert s + run["other_ms"] == pytest.approx(total, rel=1e-9)
        assert abs(run["other_ms"]) < 0.2 * total, (run["other_ms"], total)
        assert run["batch_latency"]["p50_ms"] >= run["total"]["p50_ms"] * 0.99


def test_png_written(report):
    _, d = report
    png = d / "p.png"
    assert png.stat().st_size > 2000 and png.read_bytes()[:4] == b"\x89PNG"


def test_cli_profile_without_torch(bundle, tmp_path):
    out = tmp_path / "cli.json"
    code = ("import sys; from gt_cli.app import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'gt profile imported torch'\n")
    p = subprocess.run([sys.executable, "-c", code, "profile", "--bundle", str(bundle), "--batch", "1", "--frames", "3",
                        "--warmup", "1", "--json", str(out), "--encode", "none", "--no-overlapped"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["runs"][0]["stages"]["encode"]["mean_ms"] == 0.0
    assert "total / frame" in p.stderr


def test_bad_batch_is_one_line_error(bundle):
    p = subprocess.run([sys.executable, "-m", "gt_cli", "profile", "--bundle", str(bundle), "--batch", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
