"""Every runtime form of the model against the one reference, gt_runtime.model.reference.

- the array engine's fast `DeformNet` (algebraic savings, row chunks) vs `deform_plain`;
- both hand-built ONNX graphs of engines/onnx_graphs.py (the bundle layout and the fast
  CPU graph, heads fused or not) on ONNX Runtime vs `deform_plain`, and the audio graph vs
  `audio_token`;
- `apply_offsets` itself: docs/MODEL.md's raw-space sums and activations, one frame or a batch.

Random weights (gt_runtime.bundle.synthetic.random_weights) and N = 300 Gaussians keep it fast.
"""
import numpy as np
import pytest

from gt_runtime.bundle.synthetic import random_gaussians, random_weights
from gt_runtime.contract import HIDDEN, NUM_TOKENS, OFFSET_NAMES, WINDOW, head_dims, sh_bases
from gt_runtime.engines.array_deform import DeformNet
from gt_runtime.errors import InputError
from gt_runtime.model import reference

N = 300


def _tokens(bsz, seed=0):
    return np.random.default_rng(seed).standard_normal((bsz, NUM_TOKENS, HIDDEN)).astype(np.float32)


def _max_err(a: dict, b: dict) -> float:
    assert set(a) == set(b) == set(OFFSET_NAMES)
    for k in OFFSET_NAMES:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype == np.float32, k
    return max(float(np.abs(a[k] - b[k]).max()) for k in OFFSET_NAMES)


def _random_offsets(lead, n, sh_degree, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: (0.1 * rng.standard_normal((*lead, n, d))).astype(np.float32)
            for k, d in zip(OFFSET_NAMES, head_dims(sh_degree).values())}


@pytest.mark.parametrize("num_layers,sh_degree", [(1, 0), (2, 3)])
@pytest.mark.parametrize("chunk", [None, 128])
def test_deformnet_equals_deform_plain(num_layers, sh_degree, chunk):
    w = random_weights(num_layers, sh_degree, seed=3)
    q = random_gaussians(N, sh_degree, seed=3)["queries"]
    net = DeformNet(w, q, num_layers, sh_degree, chunk=chunk)
    for bsz in (1, 3):
        t = _tokens(bsz, seed=bsz)
        ref = reference.deform_plain(t, q, w, num_layers, sh_degree)
        assert ref["dsh"].shape == (bsz, N, 3 * sh_bases(sh_degree)) and ref["dopacity"].shape == (bsz, N, 1)
        assert _max_err(net(t), ref) <= 1e-5


def _ort(model):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("form", ["bundle", "fast", "fast-unfused"])
def test_onnx_graphs_equal_deform_plain(form):
    pytest.importorskip("onnx")
    from gt_runtime.engines.onnx_graphs import build_deform_onnx, layer0_query

    layers, deg = 2, 3
    w = random_weights(layers, deg, seed=5)
    q = random_gaussians(N, deg, seed=5)["queries"]
    sess = _ort(build_deform_onnx(w, layers, deg, fast=form != "bundle", fuse_heads=form == "fast"))
    for bsz in (1, 4):
        t = _tokens(bsz, seed=10 + bsz)
        feed = {"tokens": t, "queries": q}
        if form != "bundle":
            feed["q0"] = layer0_query(w, q)
        got = dict(zip(OFFSET_NAMES, sess.run(list(OFFSET_NAMES), feed)))
        assert _max_err(got, reference.deform_plain(t, q, w, layers, deg)) <= 1e-4


def test_onnx_audio_graph_equals_audio_token():
    pytest.importorskip("onnx")
    from gt_runtime.engines.onnx_graphs import build_audio_onnx

    w = random_weights(1, 0, seed=6, audio_dim=24)
    win = np.random.default_rng(6).standard_normal((3, WINDOW, 2, 24)).astype(np.float32)
    (got,) = _ort(build_audio_onnx(w)).run(["audio_token"], {"audio_window": win})
    ref = reference.audio_token(win, w)
    assert got.shape == ref.shape == (3, HIDDEN)
    assert float(np.abs(got - ref).max()) <= 1e-4


def test_deform_plain_refuses_weights_of_another_sh_degree():
    w = random_weights(1, 1, seed=0)
    with pytest.raises(InputError) as e:
        reference.deform_plain(_tokens(1), random_gaussians(10, 1)["queries"], w, 1, sh_degree=3)
    msg = str(e.value)
    assert "deform.heads.sh.fc2.weight" in msg and "sh_degree 3" in msg and "\n" not in msg


def test_apply_offsets_follows_model_md():
    """Raw sums, dsh [N, 3K] read as [N, K, 3] row-major, exp and sigmoid (float64 check), float32 out."""
    deg = 2
    g = random_gaussians(N, deg, seed=7)
    canon = {k: g[k] for k in reference.CANONICAL_KEYS}
    off = _random_offsets((), N, deg, seed=7)
    a = reference.apply_offsets(canon, off)
    assert set(a) == set(reference.ACTIVATED_KEYS)
    k = sh_bases(deg)
    shapes = {"means": (N, 3), "quats": (N, 4), "scales": (N, 3), "opacities": (N,), "sh": (N, k, 3)}
    for key, shape in shapes.items():
        assert a[key].shape == shape and a[key].dtype == np.float32, key
    f64 = {key: v.astype(np.float64) for key, v in {**canon, **off}.items()}
    np.testing.assert_allclose(a["means"], f64["means"] + f64["dmu"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a["quats"], f64["quats"] + f64["drot"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a["scales"], np.exp(f64["log_scales"] + f64["dscale"]), rtol=1e-6)
    np.testing.assert_allclose(a["opacities"], 1 / (1 + np.exp(-(f64["opacity_logits"] + f64["dopacity"][:, 0]))),
                               rtol=1e-6, atol=1e-7)
    for j in range(k):  # SH basis j, colour channel c is dsh channel 3 j + c
        for c in range(3):
            np.testing.assert_allclose(a["sh"][:, j, c], f64["sh"][:, j, c] + f64["dsh"][:, 3 * j + c], rtol=1e-6, atol=1e-7)


def test_apply_offsets_batch_equals_frames():
    """The CUDA path activates a batch, the CPU path frame by frame: the same bits."""
    deg = 3
    g = random_gaussians(N, deg, seed=8)
    canon = {k: g[k] for k in reference.CANONICAL_KEYS}
    off = _random_offsets((4,), N, deg, seed=8)
    batch = reference.apply_offsets(canon, off)
    assert batch["sh"].shape == (4, N, sh_bases(deg), 3) and batch["opacities"].shape == (4, N)
    for b in range(4):
        one = reference.apply_offsets(canon, {k: v[b] for k, v in off.items()})
        for key in reference.ACTIVATED_KEYS:
            np.testing.assert_array_equal(one[key], batch[key][b], err_msg=key)
    # zero offsets: the canonical Gaussians, activated
    zero = reference.apply_offsets(canon, {k: np.zeros_like(v[0]) for k, v in off.items()})
    np.testing.assert_array_equal(zero["scales"], np.exp(canon["log_scales"]))
    np.testing.assert_array_equal(zero["sh"], canon["sh"])
