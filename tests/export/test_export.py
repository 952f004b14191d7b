"""`gt export`: a tiny run -> bundle; parity with torch; the bundle round trip; one-line refusals; the CLI."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from gt_runtime.bundle import Bundle  # noqa: E402
from gt_runtime.errors import InputError  # noqa: E402
from tests.support.runs import N_GAUSSIANS, make_run  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_identity, tmp_path_factory):
    """(run dir, model, bundle path) of an export with --fp16 --int8, via the library call."""
    from gt_export import ExportConfig, export

    root = tmp_path_factory.mktemp("export")
    run = root / "run"
    model = make_run(tiny_identity, run)
    out = export(ExportConfig(run=run, out=root / "tiny.gtb", fp16=True, int8=True, trt=False))
    return run, model, out


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg and "|" in msg, msg
    return msg


# -- the bundle -----------------------------------------------------------------------------
def test_bundle_contents_and_manifest(exported, tiny_identity):
    run, model, out = exported
    b = Bundle.open(out)
    m = b.manifest
    assert not list(out.parent.glob(".tiny.gtb.partial-*")), "temporary directory left behind"
    assert b.num_gaussians == model.num_gaussians == N_GAUSSIANS
    assert (b.width, b.height) == (64, 64) and b.sh_degree == model.cfg.sh_degree and b.num_layers == model.cfg.num_layers
    assert m["exporter_version"] and m["export"]["opset"] >= 18 and "dynamo" in m["export"]["exporter"]
    assert {"fp32", "fp16"} <= set(b.precisions)
    for rel in ("deform.onnx", "deform.fp16.onnx", "audio_encoder.onnx", "gaussians.npz", "weights.npz",
                "scene/background.jpg", "scene/track.npz"):
        assert rel in m["files"] and len(m["files"][rel]) == 64
    assert not any(".." in r or r.startswith("/") for r in m["files"])
    assert len(b.torso_files) == b.track["c2w"].shape[0] == 75
    # frozen canonical Gaussians and the MODEL.md weights are the model's
    arrays = model.export_arrays()
    for k, v in arrays.items():
        np.testing.assert_array_equal(b.gaussians[k], v)
    sd = model.state_dict()
    for k, v in b.weights.items():
        np.testing.assert_array_equal(v, sd[k].numpy())
    assert not any(k.startswith(("triplane.", "fcan.", "gaussians.")) for k in b.weights)
    # intrinsics follow the working resolution; no absolute paths in the manifest's config copies
    assert m["intrinsics"]["fx"] == pytest.approx(2.5 * 64)
    assert "/" not in m["train"]["data"] and "/" not in m["export"]["config"]["run"]


def test_onnx_io_contract(exported):
    import onnx

    _, model, out = exported
    d = onnx.load(str(out / "deform.onnx"))
    a = onnx.load(str(out / "audio_encoder.onnx"))
    dims = lambda vi: [x.dim_param or x.dim_value for x in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert [(i.name, dims(i)) for i in d.graph.input] == [("tokens", ["B", 4, 64]), ("queries", ["N", 64])]
    k3 = 3 * (model.cfg.sh_degree + 1) ** 2
    assert [(o.name, dims(o)) for o in d.graph.output] == [("dmu", ["B", "N", 3]), ("drot", ["B", "N", 4]),
                                                          ("dscale", ["B", "N", 3]), ("dsh", ["B", "N", k3]),
                                                          ("dopacity", ["B", "N", 1])]
    assert [(i.name, dims(i)) for i in a.graph.input] == [("audio_window", ["B", 15, 2, 80])]
    assert [(o.name, dims(o)) for o in a.graph.output] == [("audio_token", ["B", 64])]
    assert max(o.version for o in d.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert not d.graph.initializer[0].external_data  # weights inside the file


def test_onnx_fp32_matches_torch_dynamic_shapes(exported):
    """Torch and the array reference (gt_runtime.model.reference, on the bundle's weights) vs ONNX FP32
    <= 1e-4 on every offset (random tokens, several B and N) and the audio token."""
    import onnxruntime as ort

    from gt_runtime.model.reference import audio_token, deform_plain

    _, model, out = exported
    b = Bundle.open(out)
    sd = ort.InferenceSession(str(out / "deform.onnx"), providers=["CPUExecutionProvider"])
    sa = ort.InferenceSession(str(out / "audio_encoder.onnx"), providers=["CPUExecutionProvider"])
    q = model.export_arrays()["queries"]
    rng = np.random.default_rng(0)
    for bsz, n in ((1, N_GAUSSIANS), (3, 257), (2, 2)):
        tokens = rng.standard_normal((bsz, 4, 64)).astype(np.float32)
        got = sd.run(None, {"tokens": tokens, "queries": q[:n]})
        with torch.no_grad():
            ref = model.deform(torch.from_numpy(tokens), torch.from_numpy(q[:n]))[:5]
        plain = deform_plain(tokens, q[:n], b.weights, b.num_layers, b.sh_degree)
        for g, r, p in zip(got, ref, plain.values()):
            assert g.shape == tuple(r.shape) == p.shape
            assert np.abs(g - r.numpy()).max() <= 1e-4 and np.abs(g - p).max() <= 1e-4
        win = rng.standard_normal((bsz, 15, 2, 80)).astype(np.float32)
        (tok,) = sa.run(None, {"audio_window": win})
        with torch.no_grad():
            assert np.abs(tok - model.audio(torch.from_numpy(win)).numpy()).max() <= 1e-4
        assert np.abs(tok - audio_token(win, b.weights)).max() <= 1e-4


def test_parity_in_manifest(exported):
    """The parity table on the real val frames: FP32 exact, FP16 >= 40 dB, INT8 shipped only if >= 38 dB."""
    _, _, out = exported
    b = Bundle.open(out)
    p = b.manifest["parity"]
    assert p["reference"] == "torch-fp32" and len(p["frames"]) >= 1
    e = p["engines"]
    assert e["onnxruntime-fp32"]["max_abs"] <= 1e-4
    assert p["audio_encoder"]["onnxruntime-fp32"]["max_abs"] <= 1e-4
    assert e["onnxruntime-fp16"]["render_psnr_min_db"] >= 40.0
    assert set(e["onnxruntime-fp16"]["outputs"]) == {"dmu", "drot", "dscale", "dsh", "dopacity"}
    int8 = e["onnxruntime-int8"]
    assert int8["shipped"] == (int8["render_psnr_min_db"] >= 38.0)
    assert ("int8" in b.precisions) == int8["shipped"]
    if not int8["shipped"]:
        assert any("INT8 left out" in n for n in p["notes"])


def _identity_of(exported):
    return json.loads((exported[0] / "config.json").read_text())["data"]


def _torch_offsets(model, ds, b, t):
    """Torch offsets of dataset frames t (the val frames' real tokens) -> (windows, offsets dict)."""
    from gt_runtime.model.reference import audio_windows

    win = audio_windows(ds.audio_features, t)
    with torch.no_grad():
        tok = model.forward_tokens(torch.from_numpy(win), torch.from_numpy(ds.blink[t]), torch.from_numpy(ds.c2w[t]))
        outs = model.deform(tok, torch.from_numpy(b.gaussians["queries"]))[:5]
    return win, dict(zip(("dmu", "drot", "dscale", "dsh", "dopacity"), (o.numpy() for o in outs)))


def test_offsets_are_not_trivial(exported):
    """The test model must deform visibly, or the parity numbers would prove nothing."""
    from gt_export.parity import raster_backend, render
    from gt_runtime.engines.comparator import psnr
    from gt_runtime.playback.scene import Scene
    from gt_train.data.format import load_identity

    _, model, out = exported
    b = Bundle.open(out)
    t = np.asarray(b.manifest["parity"]["frames"][:2])
    _, off = _torch_offsets(model, load_identity(_identity_of(exported)), b, t)
    zero = {k: np.zeros_like(v) for k, v in off.items()}
    scene = Scene(b)
    assert psnr(render(b, scene, t, zero, raster_backend()), render(b, scene, t, off, raster_backend()), 255.0) < 35.0


def test_player_render_equals_torch(exported):
    """Bundle -> Player (its default CPU engine) renders the val frames as torch does (PSNR >= 45 dB)."""
    from gt_export.parity import raster_backend, render
    from gt_runtime.engines.comparator import psnr
    from gt_runtime.playback.player import Player
    from gt_runtime.playback.scene import Scene
    from gt_train.data.format import load_identity

    _, model, out = exported
    b = Bundle.open(out)
    t = np.asarray(b.manifest["parity"]["frames"])
    win, ref = _torch_offsets(model, load_identity(_identity_of(exported)), b, t)
    torch_img = render(b, Scene(b), t, ref, raster_backend())
    for engine in ("onnxruntime-fp32", "auto"):
        p = Player(b, engine=engine, raster=raster_backend())
        try:
            st = p.pipeline.new_state(overlap=False)
            imgs = np.concatenate([img[None] for img in p.pipeline.run_batches(st, [(t, win)])])
        finally:
            p.close()
        assert imgs.shape == torch_img.shape
        assert psnr(imgs, torch_img, 255.0) >= 45.0, engine


# -- refusals (the runtime's checks, on the exporter's output) --------------------------------
@pytest.fixture
def copy(exported, tmp_path):
    return shutil.copytree(exported[2], tmp_path / "c.gtb")


def test_tampered_and_missing_files_refused(copy):
    onnx_file = copy / "deform.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(InputError) as ei:
        Bundle.open(copy)
    assert "deform.onnx" in _one_line(ei) and "SHA-256" in str(ei.value)
    (copy / "scene" / "torso" / "00003.png").unlink()
    with pytest.raises(InputError) as ei:
        Bundle.open(copy, verify_hashes=False)
    assert "00003.png" in _one_line(ei) and "missing" in str(ei.value)


def test_newer_format_refused(copy):
    m = json.loads((copy / "manifest.json").read_text())
    m["version"] += 1
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError) as ei:
        Bundle.open(copy)
    assert "newer" in _one_line(ei)


def test_engine_for_another_gpu_refused(copy):
    """An engine keyed to another GPU / TensorRT version in the exported bundle is refused (no GPU needed)."""
    from gt_runtime.bundle import sha256_file
    from gt_runtime.engines.trt_engine import check_plan, key_name

    b = Bundle.open(copy)
    here = {"gpu": "NVIDIA-H100-80GB-HBM3", "sm": 90, "trt": "10.3.0", "precision": "fp16"}
    for other in (dict(here, gpu="NVIDIA-A10G", sm=86), dict(here, trt="10.0.1")):
        b.engines_dir.mkdir(exist_ok=True)
        plan = b.engines_dir / f"{key_name(here)}.plan"
        plan.write_bytes(b"not a real plan")
        plan.with_suffix(".json").write_text(json.dumps(dict(other, onnx_sha256=b.manifest["files"]["deform.fp16.onnx"],
                                                             plan_sha256=sha256_file(plan))))
        with pytest.raises(InputError) as ei:
            check_plan(plan, here, b.manifest["files"]["deform.fp16.onnx"])
        assert "delete" in _one_line(ei)
    assert Bundle.open(copy).num_gaussians == N_GAUSSIANS  # engines/ is not part of the hashed files


def test_existing_output_refused_and_nothing_written(exported, tmp_path):
    from gt_export import ExportConfig, export

    run, _, out = exported
    with pytest.raises(InputError) as ei:
        export(ExportConfig(run=run, out=out, trt=False))
    assert "--overwrite" in _one_line(ei)
    with pytest.raises(InputError) as ei:
        export(ExportConfig(run=tmp_path / "nope", out=tmp_path / "x.gtb", trt=False))
    assert "nope" in _one_line(ei)
    assert not (tmp_path / "x.gtb").exists() and not list(tmp_path.glob(".x.gtb.partial-*"))


def test_fp16_gate_fails_cleanly(exported, tmp_path):
    """An FP16 PSNR below the gate aborts the export with one line and leaves no bundle behind."""
    from gt_export import ExportConfig, export
    from gt_export.exporter import ParityError

    run, _, _ = exported
    with pytest.raises(ParityError) as ei:
        export(ExportConfig(run=run, out=tmp_path / "f.gtb", fp16=True, fp16_min_psnr=1000.0, parity_frames=1, trt=False))
    assert "FP16" in _one_line(ei)
    assert not (tmp_path / "f.gtb").exists() and not list(tmp_path.glob(".f.gtb.partial-*"))


# -- the CLI ------------------------------------------------------------------------------------
def _gt(*args):
    import os

    env = {k: v for k, v in os.environ.items() if k != "GT_QUIET"}  # show the progress and the parity table
    return subprocess.run([sys.executable, "-m", "gt_cli", *args], capture_output=True, text=True, env=env)


def test_cli_export_ok_and_bad_run(exported, tmp_path):
    run, _, _ = exported
    r = _gt("export", str(run), "-o", str(tmp_path / "cli.gtb"), "--no-trt", "--track-frames", "5")
    assert r.returncode == 0, r.stderr[-2000:]
    b = Bundle.open(tmp_path / "cli.gtb")
    assert b.precisions == ["fp32"] and b.manifest["scene"]["num_frames"] == 5  # the track is cut, played ping-pong
    assert len(list((tmp_path / "cli.gtb" / "scene" / "torso").iterdir())) == 5
    assert "parity" in r.stderr and "onnxruntime-fp32" in r.stderr
    r = _gt("export", str(tmp_path / "not-a-run"), "-o", str(tmp_path / "bad.gtb"))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("gt: error")]
    assert len(lines) == 1 and "not-a-run" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "bad.gtb").exists()
