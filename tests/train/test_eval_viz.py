"""`gt eval` and `gt viz` on a tiny model trained here (test-tiny preset, shortened) and on a random bundle."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_runtime._raster_cpu", reason="the C++ rasterizer is not built (python setup.py build_ext --inplace)")
pytest.importorskip("av")

from gt_train.config import TrainConfig  # noqa: E402
from gt_train.eval import EvalConfig, evaluate  # noqa: E402
from gt_train.viz import TOKENS, VizConfig, visualize  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# test-tiny with a shortened canonical stage and a longer deformation stage: where the audio attention peaks
# settles only after several hundred deformation steps (see test_audio_attention_highest_in_mouth_box)
ITERS = (150, 1000)


@pytest.fixture(scope="module")
def synth(speech_identity):
    return speech_identity


@pytest.fixture(scope="module")
def run(synth, tmp_path_factory):
    from gt_train.trainer import train

    cfg = TrainConfig.from_preset("test-tiny", data=synth, out=tmp_path_factory.mktemp("ev") / "run",
                                  iterations_canonical=ITERS[0], iterations_deform=ITERS[1])
    return train(cfg)


@pytest.fixture(scope="module")
def viz(run, synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("viz")
    return visualize(VizConfig(run=run, out=out, data=synth)), out


def test_viz_writes_pngs_and_video(viz):
    res, out = viz
    names = {Path(f).name for f in res["files"]}
    expected = {f"attention_{t}.png" for t in TOKENS} | {"attention_grid.png", "triplane_pca.png", "val_side_by_side.mp4"}
    expected |= {f"triplane_pca_s{s}_{p}.png" for s in (0, 1) for p in ("xy", "xz", "yz")}
    assert expected <= names, expected - names
    for f in res["files"]:
        data = Path(f).read_bytes()
        assert len(data) > 500, f
        if f.endswith(".png"):
            assert data[:4] == b"\x89PNG", f
    import av

    with av.open(str(out / "val_side_by_side.mp4")) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (128, 64) and len(c.streams.audio) == 1


def test_attention_maps_are_weights(viz):
    """Per pixel: the alpha-normalised mean weight of the Gaussians seen; the 4 token maps sum to 1 on the face."""
    res, _ = viz
    maps = [res["attention"][t]["map"] for t in TOKENS]
    alpha = res["attention"]["audio"]["alpha"]
    face = alpha > 0.5
    assert face.sum() > 100
    total = sum(maps)
    assert np.allclose(total[face], 1.0, atol=1e-3)
    for m in maps:
        assert m[face].min() >= -1e-4 and m[face].max() <= 1 + 1e-4


def test_audio_attention_highest_in_mouth_box(viz):
    """Mean audio attention weight, mouth box vs face. Measured at 150 + 1000 it, seeds 0-3: 0.139 vs 0.066,
    0.114 vs 0.063, 0.161 vs 0.095, 0.124 vs 0.095 (the smallest margin 1.3x). Shorter runs do not settle it
    (150 + 250 it: 2 of 4 seeds); the cpu-small run gives 0.186 vs 0.082 (tools/bench/RESULTS.md)."""
    res, _ = viz
    a = res["attention"]["audio"]
    assert a["mouth_mean"] > a["face_mean"], (a["mouth_mean"], a["face_mean"])


def test_eval_run_dir(run, synth, tmp_path):
    from gt_runtime.assets import speech_path

    out = tmp_path / "eval.json"
    res = evaluate(EvalConfig(model=run, data=synth, cross=speech_path("human"), json=out, max_cross_frames=30, quiet=True))
    assert res["kind"] == "run" and (res["width"], res["height"]) == (64, 64)
    v = res["val"]
    assert v["frames"] == len(json.loads((Path(synth) / "split.json").read_text())["val"])
    assert 20 < v["psnr"] < 60 and 0.5 < v["ssim"] <= 1.0 and v["mouth_psnr"] > 10
    assert v["lpips"] is None and any("LPIPS skipped" in n for n in res["notes"])
    assert v["lmd"] is None or v["lmd"] >= 0
    if v["lmd"] is None:
        assert any("LMD skipped" in n for n in res["notes"])
    for key in ("sync", "sync_of_gt_frames"):
        s = v[key]
        assert set(s) == {"corr_at_0", "best_offset", "best_corr", "corr_by_offset"} and abs(s["best_offset"]) <= 5
    # the real frames' mouth opening follows the audio and the synthetic ground truth: the proxy works
    assert v["sync_of_gt_frames"]["best_corr"] > 0.3
    assert v["mouth_open_corr_of_gt_frames"] > 0.5
    assert -1 <= v["mouth_open_corr"] <= 1
    assert res["cross"]["frames"] == 30 and "best_offset" in res["cross"]["sync"]
    saved = json.loads(out.read_text())
    assert saved["val"]["psnr"] == pytest.approx(v["psnr"])


def test_eval_bundle_through_the_player(synth, random_bundle):
    T = len(list((Path(synth) / "frames").iterdir()))
    b = random_bundle(n_gaussians=400, width=64, height=64, n_track_frames=T, onnx=False)
    res = evaluate(EvalConfig(model=b, data=synth, lmd=False, engine="array", quiet=True))
    assert res["kind"] == "bundle" and not any("track" in n for n in res["notes"])
    assert math.isfinite(res["val"]["psnr"]) and 0 < res["val"]["ssim"] < 1
    assert "sync" in res["val"] and res["cross"] is None


def test_eval_bad_model_is_one_line_error(synth, tmp_path):
    p = subprocess.run([sys.executable, "-m", "gt_cli", "eval", str(tmp_path / "nothing"), str(synth)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "neither a run directory" in p.stderr
