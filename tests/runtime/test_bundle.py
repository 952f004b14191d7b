"""Bundle format: round trip, and one-line errors for every way a bundle can be broken."""
import json
import shutil

import numpy as np
import pytest

from gt_runtime.bundle import Bundle, sha256_file, update_manifest, weight_shapes
from gt_runtime.engines.trt_engine import check_plan, key_name
from gt_runtime.errors import InputError
from gt_runtime.bundle.synthetic import random_gaussians, random_weights


@pytest.fixture(scope="module")
def base(random_bundle):
    return random_bundle(n_gaussians=200, sh_degree=2, num_layers=1, width=32, height=24, n_track_frames=5, seed=3, onnx=False)


@pytest.fixture
def copy(base, tmp_path):
    dst = tmp_path / "copy.gtb"
    shutil.copytree(base, dst, symlinks=True)
    return dst


def one_line_error(path, *needles):
    with pytest.raises(InputError) as ei:
        Bundle.open(path)
    msg = str(ei.value)
    assert "\n" not in msg and "|" in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def _rewrite_manifest(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def test_round_trip(base):
    b = Bundle.open(base)
    g, w = random_gaussians(200, 2, seed=3), random_weights(1, 2, seed=3)
    for k, v in g.items():
        np.testing.assert_array_equal(b.gaussians[k], v)
    assert set(b.weights) == set(weight_shapes(1, 2))
    for k, v in w.items():
        np.testing.assert_array_equal(b.weights[k], v)
    m = b.manifest
    assert m["format"] == "gt-bundle" and m["version"] == 1
    assert (b.width, b.height, b.num_gaussians, b.sh_degree, b.num_layers) == (32, 24, 200, 2, 1)
    assert m["model"]["hidden"] == 64 and m["model"]["heads"] == 2 and m["audio_frontend"] == "mel"
    assert b.K.shape == (3, 3) and b.K[0, 2] == 16.0
    assert b.track["c2w"].shape == (5, 4, 4) and len(b.torso_files) == 5
    assert b.precisions == []
    assert all(len(h) == 64 for h in m["files"].values())


def test_tampered_file(copy):
    p = copy / "weights.npz"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    one_line_error(copy, "weights.npz", "SHA-256", "re-export")


def test_missing_file(copy):
    (copy / "scene" / "track.npz").unlink()
    one_line_error(copy, "track.npz", "missing")


def test_missing_manifest_and_bad_json(copy):
    (copy / "manifest.json").write_text("{not json")
    one_line_error(copy, "manifest.json", "JSON")
    (copy / "manifest.json").unlink()
    one_line_error(copy, "manifest.json")


def test_truncated_npz(copy):
    p = copy / "gaussians.npz"
    p.write_bytes(p.read_bytes()[:200])
    one_line_error(copy, "gaussians.npz", "re-export")
    # Even with a matching hash (a broken exporter), the npz error is one line.
    _rewrite_manifest(copy, lambda m: m["files"].__setitem__("gaussians.npz", sha256_file(p)))
    one_line_error(copy, "gaussians.npz", "not a readable npz")


def test_pickled_array_rejected(copy):
    p = copy / "gaussians.npz"
    g = dict(np.load(p))
    g["means"] = np.array([{"evil": 1}], dtype=object)
    np.savez(p, **g)
    _rewrite_manifest(copy, lambda m: m["files"].__setitem__("gaussians.npz", sha256_file(p)))
    one_line_error(copy, "gaussians.npz")


def test_newer_version(copy):
    _rewrite_manifest(copy, lambda m: m.__setitem__("version", 2))
    one_line_error(copy, "upgrade gt", "version 2")


def test_wrong_format(copy):
    _rewrite_manifest(copy, lambda m: m.__setitem__("format", "something-else"))
    one_line_error(copy, "not a gt bundle")


@pytest.mark.parametrize("rel", ["../outside.txt", "/etc/hostname", "scene/../../x"])
def test_path_escape(copy, rel):
    _rewrite_manifest(copy, lambda m: m["files"].__setitem__(rel, "0" * 64))
    one_line_error(copy, rel)


def test_symlink_out(copy, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    (copy / "scene" / "link.txt").symlink_to(outside)
    _rewrite_manifest(copy, lambda m: m["files"].__setitem__("scene/link.txt", sha256_file(outside)))
    one_line_error(copy, "outside the bundle")


def test_shape_mismatch(copy):
    _rewrite_manifest(copy, lambda m: m.__setitem__("num_gaussians", 201))
    one_line_error(copy, "gaussians.npz", "means")
    _rewrite_manifest(copy, lambda m: (m.__setitem__("num_gaussians", 200), m["scene"].__setitem__("num_frames", 6)))
    one_line_error(copy, "track.npz")


def test_missing_weight(copy):
    p = copy / "weights.npz"
    w = dict(np.load(p))
    del w["deform.layers.0.norm2.bias"]
    np.savez(p, **w)
    _rewrite_manifest(copy, lambda m: m["files"].__setitem__("weights.npz", sha256_file(p)))
    one_line_error(copy, "deform.layers.0.norm2.bias")


def test_not_a_directory(tmp_path):
    with pytest.raises(InputError, match="no such bundle"):
        Bundle.open(tmp_path / "nope.gtb")


def test_update_manifest_adds_files_and_parity(copy):
    (copy / "deform.int8.onnx").write_bytes(b"fake")
    m = update_manifest(copy, parity={"fp16": {"psnr_drop_db": 0.01}}, add_files=["deform.int8.onnx"])
    assert "int8" in m["precisions"] and m["parity"]["fp16"]["psnr_drop_db"] == 0.01
    assert Bundle.open(copy).precisions == ["int8"]


# -- TensorRT engine keys (no TensorRT needed) ---------------------------------------------
KEY = {"gpu": "NVIDIA-H100-80GB-HBM3", "sm": 90, "trt": "10.3.0", "precision": "fp16"}


def _fake_plan(d, key, payload=b"plan-bytes"):
    plan = d / f"{key_name(key)}.plan"
    plan.write_bytes(payload)
    meta = dict(key, onnx_sha256="a" * 64, plan_sha256=sha256_file(plan), profile={"batch": [1, 1, 8], "n": [1, 10, 10]})
    plan.with_suffix(".json").write_text(json.dumps(meta))
    return plan


def test_engine_key_ok_and_stale(tmp_path):
    assert key_name(KEY) == "NVIDIA-H100-80GB-HBM3-sm90-trt10.3.0-fp16"
    plan = _fake_plan(tmp_path, KEY)
    assert check_plan(plan, KEY, "a" * 64)["stale"] is False
    assert check_plan(plan, KEY, "b" * 64)["stale"] is True


@pytest.mark.parametrize("field,value,word", [("gpu", "NVIDIA-A10G", "GPU"), ("sm", 86, "compute capability"),
                                              ("trt", "10.0.1", "TensorRT version")])
def test_engine_key_mismatch(tmp_path, field, value, word):
    other = dict(KEY, **{field: value})
    plan = _fake_plan(tmp_path, other)
    with pytest.raises(InputError) as ei:
        check_plan(plan, KEY)
    msg = str(ei.value)
    assert "\n" not in msg and plan.name in msg and word in msg and "delete" in msg


def test_engine_truncated_plan(tmp_path):
    plan = _fake_plan(tmp_path, KEY)
    plan.write_bytes(b"plan")
    with pytest.raises(InputError, match="truncated or modified"):
        check_plan(plan, KEY)
    plan.with_suffix(".json").unlink()
    with pytest.raises(InputError, match="metadata"):
        check_plan(plan, KEY)


def test_relative_bundle_path_round_trip(tmp_path, monkeypatch):
    """A bundle written and opened through a relative path (as `gt export -o out/x.gtb` does)."""
    from gt_runtime.bundle import Bundle
    from gt_runtime.bundle.synthetic import make_random_bundle

    monkeypatch.chdir(tmp_path)
    make_random_bundle("rel/x.gtb", n_gaussians=20, sh_degree=0, num_layers=1, width=16, height=16, n_track_frames=2)
    assert Bundle.open("rel/x.gtb").num_gaussians == 20
