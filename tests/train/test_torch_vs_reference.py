"""The torch model (gt_train) against the one reference, gt_runtime.model.reference.

The torch `GaussianTalker` is loaded with random weights (gt_runtime.bundle.synthetic.random_weights)
under the docs/MODEL.md names, which are its state_dict names: the exporter copies them one to one
into the bundle (gt_export.exporter._weights), and this test checks that too. Then, on the same
weights: the tokens and the deformation network within 1e-5, `apply_offsets` and the renderer's
activations. The torch-exported graphs are checked against the reference where one is exported
anyway (tests/export/test_export.py, test_onnx_fp32_matches_torch_dynamic_shapes).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gt_runtime.bundle.synthetic import random_gaussians, random_weights  # noqa: E402
from gt_runtime.contract import HIDDEN, NUM_TOKENS, OFFSET_NAMES, WINDOW  # noqa: E402
from gt_runtime.model import reference  # noqa: E402
from gt_train.config import ModelConfig  # noqa: E402
from gt_train.model import GaussianTalker, apply_offsets  # noqa: E402
from gt_train.model.talker import TRAINING_ONLY  # noqa: E402

N = 300


def _talker(num_layers, sh_degree, seed, audio_dim=80):
    """-> (torch model holding random_weights, those weights, the bundle-style Gaussians [N, ...])."""
    w = random_weights(num_layers, sh_degree, seed=seed, audio_dim=audio_dim)
    g = random_gaussians(N, sh_degree, seed=seed)
    torch.manual_seed(seed)
    model = GaussianTalker(ModelConfig(num_layers=num_layers, sh_degree=sh_degree, audio_dim=audio_dim), g["means"]).eval()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()}, strict=False)
    assert not unexpected and all(k.split(".")[0] in TRAINING_ONLY for k in missing), (missing, unexpected)
    return model, w, g


@pytest.mark.parametrize("num_layers,sh_degree", [(1, 1), (2, 3)])
def test_torch_deform_equals_deform_plain(num_layers, sh_degree):
    from gt_export.exporter import _weights

    model, w, g = _talker(num_layers, sh_degree, seed=num_layers)
    exported = _weights(model)
    assert exported.keys() == w.keys() and all(np.array_equal(exported[k], w[k]) for k in w)
    tokens = np.random.default_rng(1).standard_normal((3, NUM_TOKENS, HIDDEN)).astype(np.float32)
    with torch.no_grad():
        *offs, attn = model.deform(torch.from_numpy(tokens), torch.from_numpy(g["queries"]))
    ref = reference.deform_plain(tokens, g["queries"], w, num_layers, sh_degree)
    for key, t in zip(OFFSET_NAMES, offs):
        assert tuple(t.shape) == ref[key].shape, key
        assert float(np.abs(t.numpy() - ref[key]).max()) <= 1e-5, key
    assert tuple(attn.shape) == (3, num_layers, 2, N, NUM_TOKENS)


def test_torch_tokens_equal_reference_tokens():
    dim = 24  # a hubert-like width other than the mel default
    model, w, _ = _talker(1, 0, seed=4, audio_dim=dim)
    rng = np.random.default_rng(4)
    win = rng.standard_normal((3, WINDOW, 2, dim)).astype(np.float32)
    blink = rng.uniform(0, 1, 3).astype(np.float32)
    c2w = np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))
    c2w[:, :3, 3] = rng.standard_normal((3, 3))
    with torch.no_grad():
        got = model.forward_tokens(torch.from_numpy(win), torch.from_numpy(blink), torch.from_numpy(c2w)).numpy()
    enc = reference.TokenEncoder(w)
    ref = enc.tokens(enc.audio(win), blink, c2w)
    assert got.shape == ref.shape == (3, NUM_TOKENS, HIDDEN)
    assert float(np.abs(got - ref).max()) <= 1e-5


def test_torch_apply_offsets_equals_reference():
    """Raw sums bit for bit; torch's exp / sigmoid (gt_train.render) vs the reference activations."""
    model, w, g = _talker(2, 3, seed=5)
    canon = {k: g[k] for k in reference.CANONICAL_KEYS}
    tokens = np.random.default_rng(5).standard_normal((2, NUM_TOKENS, HIDDEN)).astype(np.float32)
    with torch.no_grad():
        *offs, _ = model.deform(torch.from_numpy(tokens), torch.from_numpy(g["queries"]))
        raw = apply_offsets({k: torch.from_numpy(v) for k, v in canon.items()}, *offs)
    off = {k: t.numpy() for k, t in zip(OFFSET_NAMES, offs)}
    ref_raw = reference.offset_gaussians(canon, off)
    assert raw.keys() == ref_raw.keys()
    for k in ref_raw:
        np.testing.assert_array_equal(raw[k].numpy(), ref_raw[k], err_msg=k)
    act = reference.apply_offsets(canon, off)
    np.testing.assert_allclose(torch.exp(raw["log_scales"]).numpy(), act["scales"], rtol=1e-6)
    np.testing.assert_allclose(torch.sigmoid(raw["opacity_logits"]).numpy(), act["opacities"], rtol=1e-6, atol=1e-7)
    for k in ("means", "quats", "sh"):
        np.testing.assert_array_equal(raw[k].numpy(), act[k], err_msg=k)

