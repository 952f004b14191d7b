"""Unit tests of the GaussianTalker model pieces (docs/MODEL.md): shapes, names, gradients, determinism."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gt_train.config import ModelConfig, TrainConfig  # noqa: E402
from gt_train.model import GaussianTalker, apply_offsets  # noqa: E402
from gt_train.model.deform import DeformationNetwork  # noqa: E402
from gt_train.model.tokens import AudioEncoder, eye_encoding, view_encoding, window_indices  # noqa: E402
from gt_train.model.triplane import Triplane  # noqa: E402


def _points(n=300, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32) * [0.08, 0.1, 0.07]


def _model(n=300, **kw):
    torch.manual_seed(0)
    return GaussianTalker(ModelConfig(**kw), _points(n))


def test_triplane_shapes_and_gradient_to_planes():
    torch.manual_seed(0)
    tp = Triplane([-1, -1, -1], [1, 1, 1])
    x = torch.rand(50, 3) * 2 - 1
    f = tp(x)
    assert f.shape == (50, 64)
    assert [tuple(p.shape) for ps in tp.planes for p in ps] == [(1, 32, 64, 64)] * 3 + [(1, 32, 128, 128)] * 3
    f.sum().backward()
    for ps in tp.planes:
        for p in ps:
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_triplane_aabb_normalisation_maps_corners_to_pm1():
    lo, hi = torch.tensor([-0.2, 0.1, 0.5]), torch.tensor([0.3, 0.4, 0.9])
    tp = Triplane(lo, hi)
    corners = torch.stack([torch.where(torch.tensor([i >> k & 1 for k in range(3)], dtype=torch.bool), hi, lo) for i in range(8)])
    xn = tp.normalize(corners)
    expect = torch.tensor([[1.0 if i >> k & 1 else -1.0 for k in range(3)] for i in range(8)])
    assert torch.allclose(xn, expect, atol=1e-6)
    assert torch.allclose(tp.normalize(((lo + hi) / 2)[None]), torch.zeros(1, 3), atol=1e-6)
    # outside the box is clamped, and (with border padding) samples like the box face
    far = tp.normalize((hi + 10)[None])
    assert torch.allclose(far, torch.ones(1, 3))
    assert torch.allclose(tp(hi[None] + 10), tp(hi[None]))


@pytest.mark.parametrize("layers", [1, 2])
def test_attention_shapes_and_weights_sum_to_one(layers):
    torch.manual_seed(0)
    net = DeformationNetwork(num_layers=layers, sh_degree=3)
    B, N = 3, 40
    tokens, q = torch.randn(B, 4, 64), torch.randn(N, 64)
    dmu, drot, dscale, dsh, dop, attn = net(tokens, q)
    K = 16
    assert dmu.shape == (B, N, 3) and drot.shape == (B, N, 4) and dscale.shape == (B, N, 3)
    assert dsh.shape == (B, N, 3 * K) and dop.shape == (B, N, 1)
    assert attn.shape == (B, layers, 2, N, 4)
    assert torch.allclose(attn.sum(-1), torch.ones(B, layers, 2, N), atol=1e-6)
    assert (attn >= 0).all()


def test_state_dict_names_follow_model_md():
    m = _model(50)
    sd = m.state_dict()
    must = {
        "null": (64,),
        "audio.net.conv.0.weight": (32, 80, 3), "audio.net.conv.2.weight": (32, 32, 3),
        "audio.net.conv.4.weight": (64, 32, 3), "audio.net.conv.6.weight": (64, 64, 3),
        "audio.net.fc.0.weight": (64, 64), "audio.net.fc.2.weight": (32, 64),
        "audio.att.conv.0.weight": (16, 32, 3), "audio.att.conv.8.weight": (1, 2, 3), "audio.att.fc.weight": (8, 8),
        "audio.mlp.0.weight": (64, 32), "audio.mlp.2.weight": (64, 64),
        "eye.0.weight": (64, 9), "eye.2.weight": (64, 64), "view.0.weight": (64, 12), "view.2.weight": (64, 64),
        "deform.layers.1.q.weight": (64, 64), "deform.layers.1.o.bias": (64,), "deform.layers.0.norm1.weight": (64,),
        "deform.layers.0.norm2.bias": (64,), "deform.layers.0.ffn1.weight": (128, 64), "deform.layers.0.ffn2.weight": (64, 128),
        "deform.heads.mu.fc1.weight": (128, 64), "deform.heads.mu.fc2.weight": (3, 128),
        "deform.heads.rot.fc2.weight": (4, 128), "deform.heads.scale.fc2.weight": (3, 128),
        "deform.heads.sh.fc2.weight": (48, 128), "deform.heads.opacity.fc2.weight": (1, 128),
    }
    for k, shape in must.items():
        assert tuple(sd[k].shape) == shape, k
    contract = [k for k in sd if k.split(".")[0] in ("audio", "eye", "view", "null", "deform")]
    assert not [k for k in contract if "layers.2" in k]
    # fc2 of every head starts small with zero bias (the deformation starts near zero)
    for name in ("mu", "rot", "scale", "sh", "opacity"):
        assert sd[f"deform.heads.{name}.fc2.bias"].abs().max() == 0
        assert sd[f"deform.heads.{name}.fc2.weight"].abs().max() < 0.05


def test_offsets_are_added_in_raw_space():
    m = _model(80)
    with torch.no_grad():
        canon = m.canonical()
        tokens = m.forward_tokens(torch.randn(2, 15, 2, 80), torch.rand(2), torch.eye(4)[None].repeat(2, 1, 1))
        dmu, drot, dscale, dsh, dop, attn = m.deform(tokens, canon["queries"])
        out = apply_offsets(canon, dmu, drot, dscale, dsh, dop)
    assert torch.allclose(out["means"], canon["means"][None] + dmu)
    assert torch.allclose(out["quats"], canon["quats"][None] + drot)
    assert torch.allclose(out["log_scales"], canon["log_scales"][None] + dscale)
    assert torch.allclose(out["sh"], canon["sh"][None] + dsh.view(2, 80, 16, 3))
    assert torch.allclose(out["opacity_logits"], canon["opacity_logits"][None] + dop[..., 0])
    # the full forward gives the same
    with torch.no_grad():
        full = m(torch.zeros(1, 15, 2, 80), torch.zeros(1), torch.eye(4)[None])
    assert full["sh"].shape == (1, 80, 16, 3) and full["opacity_logits"].shape == (1, 80)


def test_head_output_shapes_follow_sh_degree():
    for deg in (0, 1, 2, 3):
        m = _model(20, sh_degree=deg)
        K = (deg + 1) ** 2
        with torch.no_grad():
            tokens = torch.randn(1, 4, 64)
            outs = m.deform(tokens, m.canonical()["queries"])
        assert outs[3].shape == (1, 20, 3 * K)
        assert m.canonical()["sh"].shape == (20, K, 3)


def test_audio_encoder_window_handling():
    torch.manual_seed(0)
    enc = AudioEncoder()
    w = torch.randn(2, 15, 2, 80)
    tok, weights = enc(w, return_weights=True)
    assert tok.shape == (2, 64) and weights.shape == (2, 8)
    assert torch.allclose(weights.sum(-1), torch.ones(2))
    # the first and last window frames are used (code 0 reads rows 0..7, code 7 rows 7..14)
    for j in (0, 14):
        w2 = w.clone()
        w2[:, j] += 1.0
        assert not torch.allclose(enc(w2), tok)
    # batch items are independent
    assert torch.allclose(enc(w[:1]), tok[:1], atol=1e-6)
    # code i = AudioNet of window rows i .. i+7 as [80, 16] (channels = mel bins, length = frame-major rows)
    x = w[0, 3:11].reshape(16, 80).t()[None]
    codes = enc.net(torch.stack([w[0, i:i + 8].reshape(16, 80).t() for i in range(8)]))
    assert torch.allclose(enc.net(x)[0], codes[3], atol=1e-6)
    with pytest.raises(AssertionError):
        enc(torch.randn(1, 8, 2, 80))
    # the window of frame t is t-8 .. t+6, clamped
    assert window_indices(0, 100) == [0] * 9 + [1, 2, 3, 4, 5, 6]
    assert window_indices(50, 100) == list(range(42, 57))
    assert window_indices(99, 100) == list(range(91, 100)) + [99] * 6


def test_eye_and_view_encodings():
    b = torch.tensor([0.0, 0.5])
    e = eye_encoding(b)
    assert e.shape == (2, 9)
    assert torch.allclose(e[1], torch.tensor([0.5, 1.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 1.0]), atol=1e-6)
    c2w = torch.eye(4)[None].clone()
    c2w[0, :3, :3] = torch.arange(9.0).view(3, 3)
    c2w[0, :3, 3] = torch.tensor([10.0, 11.0, 12.0])
    assert torch.equal(view_encoding(c2w)[0], torch.arange(13.0)[:12] + torch.tensor([0] * 9 + [1, 1, 1.0]))


def test_tokens_order_and_shape():
    m = _model(10)
    w, b, c2w = torch.randn(3, 15, 2, 80), torch.rand(3), torch.eye(4)[None].repeat(3, 1, 1)
    tok = m.forward_tokens(w, b, c2w)
    assert tok.shape == (3, 4, 64)
    assert torch.allclose(tok[:, 0], m.audio(w))
    assert torch.allclose(tok[:, 1], m.eye(eye_encoding(b)))
    assert torch.allclose(tok[:, 2], m.view(view_encoding(c2w)))
    assert torch.allclose(tok[:, 3], m.null.detach()[None].expand(3, -1))


def test_export_arrays():
    m = _model(60)
    a = m.export_arrays()
    assert {k: v.shape for k, v in a.items()} == {
        "means": (60, 3), "quats": (60, 4), "log_scales": (60, 3), "opacity_logits": (60,), "sh": (60, 16, 3), "queries": (60, 64)}
    assert all(v.dtype == np.float32 for v in a.values())
    assert np.allclose(a["queries"], m.query_norm(m.triplane(m.gaussians.means)).detach().numpy(), atol=1e-6)


def test_densify_clone_split_prune_and_cap():
    m = _model(100)
    opt = torch.optim.Adam([m.gaussians.means], lr=1e-3)
    m.gaussians.means.grad = torch.ones(100, 3)
    opt.step()
    c = m.canonical()
    ls = c["log_scales"].detach().clone()
    ls[:10] = -10.0  # small -> clone
    ls[10:20] = 0.0  # big -> split
    op = c["opacity_logits"].detach().clone()
    op[90:] = -10.0  # prune
    m.gaussians.grad_accum[:20] = 1.0
    m.gaussians.grad_count[:20] = 1.0
    r = m.gaussians.densify_and_prune(ls, c["quats"].detach(), op, 2e-4, 0.01, 1.0, 0.005, 10_000, opt)
    assert r["cloned"] == 10 and r["split"] == 10
    assert m.num_gaussians == 100 + 10 + 10 - 10
    assert opt.param_groups[0]["params"][0] is m.gaussians.means
    assert opt.state[m.gaussians.means]["exp_avg"].shape == (110, 3)
    # the cap
    m.gaussians.grad_accum[:] = 1.0
    m.gaussians.grad_count[:] = 1.0
    c = m.canonical()
    m.gaussians.densify_and_prune(c["log_scales"].detach(), c["quats"].detach(), c["opacity_logits"].detach(),
                                  2e-4, 0.01, 1.0, 0.0, 115, opt)
    assert m.num_gaussians <= 115


def test_from_state_dict_roundtrip_with_other_count():
    m = _model(70)
    m.gaussians.means = torch.nn.Parameter(torch.randn(33, 3) * 0.05)
    m2 = GaussianTalker.from_state_dict(m.cfg, m.state_dict())
    assert m2.num_gaussians == 33
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


def test_deterministic_parameters_after_steps():
    def run():
        torch.manual_seed(123)
        m = GaussianTalker(ModelConfig(sh_degree=1), _points(64))
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(5)
        for _ in range(3):
            out = m(torch.randn(2, 15, 2, 80, generator=g), torch.rand(2, generator=g), torch.eye(4)[None].repeat(2, 1, 1))
            loss = sum(out[k].square().mean() for k in ("means", "quats", "log_scales", "sh", "opacity_logits"))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return m.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_presets():
    p = TrainConfig.from_preset("paper")
    assert (p.resolution, p.max_gaussians, p.iterations_canonical, p.iterations_deform) == (512, 50_000, 8000, 8000)
    assert (p.densify_from, p.densify_until, p.densify_every, p.sh_increase_every) == (1000, 7000, 100, 1000)
    assert p.model.num_layers == 2 and p.model.sh_degree == 3
    s = TrainConfig.from_preset("cpu-small")
    assert s.resolution == 256 and s.max_gaussians == 20_000
    t = TrainConfig.from_preset("test-tiny", iterations_canonical=800)
    assert t.resolution <= 128 and t.max_gaussians <= 3000
    assert t.densify_until == 700 and t.densify_from == 100
    d = t.to_dict()
    assert TrainConfig.from_dict(d).to_dict() == d
    assert t.resume_mismatch(d) == []
    other = TrainConfig.from_preset("test-tiny", iterations_canonical=800, seed=3)
    assert other.resume_mismatch(d) == ["seed: 0 -> 3"]
    with pytest.raises(Exception, match="preset"):
        TrainConfig.from_preset("huge")


def test_deform_network_equals_model_md_formulas():
    """The optimised torch forward (Wo on the tokens, fused fc1) computes MODEL.md's formulas exactly."""
    import math

    torch.manual_seed(1)
    net = DeformationNetwork(num_layers=2, sh_degree=1)
    for p in net.parameters():  # non-trivial heads
        torch.nn.init.normal_(p, std=0.2)
    B, N = 2, 30
    c, q = torch.randn(B, 4, 64), torch.randn(N, 64)
    h = q[None].expand(B, -1, -1)
    attn = []
    for lyr in net.layers:
        Q, Kt, V = lyr.q(h), lyr.k(c), lyr.v(c)
        heads = []
        As = []
        for i in range(2):
            s = slice(32 * i, 32 * i + 32)
            A = torch.softmax(Q[..., s] @ Kt[..., s].transpose(-1, -2) / math.sqrt(32), -1)
            heads.append(A @ V[..., s])
            As.append(A)
        h = lyr.norm1(h + lyr.o(torch.cat(heads, -1)))
        h = lyr.norm2(h + lyr.ffn2(torch.relu(lyr.ffn1(h))))
        attn.append(torch.stack(As, 1))
    ref = [net.heads[n].fc2(torch.relu(net.heads[n].fc1(h))) for n in ("mu", "rot", "scale", "sh", "opacity")]
    got = net(c, q)
    for r, g in zip(ref, got[:5]):
        assert torch.allclose(r, g, atol=1e-5), (r - g).abs().max()
    assert torch.allclose(torch.stack(attn, 1), got[5], atol=1e-6)


def test_ssim_matches_2d_window():
    import torch.nn.functional as F

    from gt_train.losses import ssim

    torch.manual_seed(0)
    a, b = torch.rand(20, 24, 3), torch.rand(20, 24, 3)
    x = torch.arange(11.0) - 5
    g = torch.exp(-x * x / 4.5)
    g = g / g.sum()
    w = (g[:, None] @ g[None]).expand(3, 1, 11, 11)
    X, Y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    f = lambda t: F.conv2d(t, w, groups=3)  # valid window positions only (pytorch_msssim, scikit-image)
    mx, my = f(X), f(Y)
    sxx, syy, sxy = f(X * X) - mx ** 2, f(Y * Y) - my ** 2, f(X * Y) - mx * my
    ref = (((2 * mx * my + 1e-4) * (2 * sxy + 9e-4)) / ((mx ** 2 + my ** 2 + 1e-4) * (sxx + syy + 9e-4))).mean()
    assert torch.allclose(ssim(a, b), ref, atol=1e-5)
    assert torch.allclose(ssim(a, a), torch.tensor(1.0), atol=1e-5)
