"""The gt model's one readable reference (docs/MODEL.md), written against the array namespace `xp`.

numpy on the CPU, CuPy on a GPU: the same code, float32 throughout. Every other form of
the model is tested against this one (the torch model of gt_train, the exported and the
hand-built ONNX graphs, the array engine's fast `DeformNet`), as gsplat's `_torch_impl`
backs its CUDA ops. Written for reading, line by line as docs/MODEL.md, not for speed.

- condition tokens: `audio_token`, `eye_token`, `view_token`, `stack_tokens` (and
  `TokenEncoder`, the same bound to one set of weights);
- the deformation network: `deform_plain`;
- the offset/activation step: `offset_gaussians` (raw space, as the torch model's
  `apply_offsets`), `activate`, and both at once, `apply_offsets`.

Letters: N Gaussians, B frames, K = (deg + 1)^2 SH bases, D audio feature width.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from gt_runtime.contract import (
    GAUSSIAN_KEYS,
    HEAD_NAMES,
    HEADS,
    HIDDEN,
    LEAK,
    LN_EPS,
    NUM_TOKENS,
    OFFSET_NAMES,
    SUB_FRAMES,
    WINDOW_AFTER,
    WINDOW_BEFORE,
    head_dims,
)
from gt_runtime.errors import InputError


def _f32(xp, a):
    return xp.asarray(a, dtype=xp.float32)


def leaky(xp, x):
    return xp.maximum(x, x * xp.float32(LEAK))


def relu(xp, x):
    return xp.maximum(x, xp.float32(0))


def layer_norm(xp, x, w, b, eps=LN_EPS):
    """LayerNorm over the last axis (biased variance, as torch)."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    return xc / xp.sqrt(var + xp.float32(eps)) * w + b


def softmax(xp, x, axis=-1):
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def linear(x, w, b):
    """x [..., in] @ w [out, in]^T + b [out] -> [..., out]."""
    return x @ w.T + b


def conv1d_cl(xp, x, w, b, stride):
    """Channels-last Conv1d, kernel 3, padding 1: x [M, L, C], w [O, C, 3] (torch) -> [M, L', O]."""
    m, length, c = x.shape
    xpad = xp.concatenate([xp.zeros((m, 1, c), x.dtype), x, xp.zeros((m, 1, c), x.dtype)], axis=1)
    lout = (length + 2 - 3) // stride + 1
    # tap kk of output position j reads row j * stride + kk: strided slices, no index array to upload
    taps = [xpad[:, kk:kk + stride * (lout - 1) + 1:stride] for kk in range(3)]  # 3 x [M, L', C]
    cols = xp.concatenate(taps, axis=-1).reshape(m * lout, 3 * c)  # [M L', 3 C], index kk * C + c
    wmat = w.transpose(2, 1, 0).reshape(3 * c, -1)              # [3 C, O]
    return (cols @ wmat + b).reshape(m, lout, -1)


# -- condition tokens -------------------------------------------------------------------
def audio_token(windows, w: Mapping, xp=np):
    """windows [B, 15, 2, D] (feats t-8 .. t+6; D = audio_dim, 80 for mel) -> audio token [B, 64] (docs/MODEL.md, audio.*)."""
    windows = _f32(xp, windows)
    bsz, dim = windows.shape[0], windows.shape[-1]
    x = xp.stack([windows[:, i:i + 8] for i in range(SUB_FRAMES)], axis=1)  # sub-frame i uses window[i .. i+7]
    x = x.reshape(bsz * SUB_FRAMES, 16, dim)                           # [B 8, L=16 rows, C=D features]
    for i in (0, 2, 4, 6):
        x = leaky(xp, conv1d_cl(xp, x, w[f"audio.net.conv.{i}.weight"], w[f"audio.net.conv.{i}.bias"], 2))
    x = x.reshape(bsz * SUB_FRAMES, 64)                                # [B 8, 64] (length 1)
    x = leaky(xp, linear(x, w["audio.net.fc.0.weight"], w["audio.net.fc.0.bias"]))
    code = linear(x, w["audio.net.fc.2.weight"], w["audio.net.fc.2.bias"]).reshape(bsz, SUB_FRAMES, 32)
    a = code
    for i in (0, 2, 4, 6, 8):
        a = leaky(xp, conv1d_cl(xp, a, w[f"audio.att.conv.{i}.weight"], w[f"audio.att.conv.{i}.bias"], 1))
    a = linear(a.reshape(bsz, SUB_FRAMES), w["audio.att.fc.weight"], w["audio.att.fc.bias"])
    att = softmax(xp, a, axis=-1)                                      # [B, 8]
    smooth = (att[:, :, None] * code).sum(axis=1)                      # [B, 32]
    h = relu(xp, linear(smooth, w["audio.mlp.0.weight"], w["audio.mlp.0.bias"]))
    return linear(h, w["audio.mlp.2.weight"], w["audio.mlp.2.bias"])


def eye_encoding(blink, xp=np):
    """blink [B] in [0, 1] -> [B, 9]: b, then sin(2^k pi b), cos(2^k pi b) for k = 0..3."""
    b = _f32(xp, blink).reshape(-1)
    cols = [b]
    for k in range(4):
        arg = b * xp.float32((2.0 ** k) * np.pi)
        cols += [xp.sin(arg), xp.cos(arg)]
    return xp.stack(cols, axis=1).astype(xp.float32)


def view_encoding(c2w, xp=np):
    """c2w [B, 4, 4] -> [B, 12]: R row-major (9) then t (3)."""
    c = _f32(xp, c2w).reshape(-1, 4, 4)
    return xp.concatenate([c[:, :3, :3].reshape(-1, 9), c[:, :3, 3]], axis=1)


def mlp2(x, w: Mapping, prefix: str, xp=np):
    """x [B, in] -> [B, 64]: prefix.0 Linear, ReLU, prefix.2 Linear."""
    h = relu(xp, linear(x, w[f"{prefix}.0.weight"], w[f"{prefix}.0.bias"]))
    return linear(h, w[f"{prefix}.2.weight"], w[f"{prefix}.2.bias"])


def eye_token(blink, w, xp=np):
    """blink [B] -> [B, 64]."""
    return mlp2(eye_encoding(blink, xp), w, "eye", xp)


def view_token(c2w, w, xp=np):
    """c2w [B, 4, 4] -> [B, 64]."""
    return mlp2(view_encoding(c2w, xp), w, "view", xp)


def stack_tokens(audio, eye, view, null, xp=np):
    """audio, eye, view [B, 64], null [64] -> tokens [B, 4, 64] in that order."""
    bsz = audio.shape[0]
    nul = xp.broadcast_to(_f32(xp, null)[None], (bsz, HIDDEN))
    return xp.stack([_f32(xp, audio), _f32(xp, eye), _f32(xp, view), nul], axis=1)


class TokenEncoder:
    """Condition tokens for frames: audio windows + track entries -> tokens [B, 4, 64] (array namespace xp)."""

    def __init__(self, weights: Mapping, xp=np):
        self.xp = xp
        self.w = {k: _f32(xp, v) for k, v in weights.items() if not k.startswith("deform.")}

    def audio(self, windows):
        """windows [B, 15, 2, D] -> [B, 64]."""
        return audio_token(windows, self.w, self.xp)

    def eye(self, blink):
        """blink [B] -> [B, 64]."""
        return eye_token(blink, self.w, self.xp)

    def view(self, c2w):
        """c2w [B, 4, 4] -> [B, 64]."""
        return view_token(c2w, self.w, self.xp)

    def tokens(self, audio, blink, c2w):
        """audio [B, 64], blink [B], c2w [B, 4, 4] -> tokens [B, 4, 64]."""
        return stack_tokens(audio, self.eye(blink), self.view(c2w), self.w["null"], self.xp)


# -- deformation network, plain ------------------------------------------------------------
def deform_plain(tokens, queries, w: Mapping, num_layers: int, sh_degree: int, xp=np) -> dict:
    """tokens [B, 4, 64], queries [N, 64] -> {dmu [B,N,3], drot [B,N,4], dscale [B,N,3], dsh [B,N,3K], dopacity [B,N,1]}.

    Line by line docs/MODEL.md (post-norm layers, 2 heads of 32). w: the docs/MODEL.md
    parameters (`deform.*`, torch layout, arrays of xp); num_layers L; sh_degree fixes K.
    """
    k_sh = int(w["deform.heads.sh.fc2.weight"].shape[0])
    if k_sh != head_dims(sh_degree)["sh"]:
        raise InputError(f"deform.heads.sh.fc2.weight: {k_sh} rows | expected 3 (deg + 1)^2 = {head_dims(sh_degree)['sh']} for sh_degree {sh_degree}")
    c = _f32(xp, tokens)
    q = _f32(xp, queries)
    bsz, n = c.shape[0], q.shape[0]
    dh = HIDDEN // HEADS
    h = xp.broadcast_to(q[None], (bsz, n, HIDDEN))
    for layer in range(num_layers):
        p = f"deform.layers.{layer}"
        qq = linear(h, w[f"{p}.q.weight"], w[f"{p}.q.bias"]).reshape(bsz, n, HEADS, dh).transpose(0, 2, 1, 3)
        kk = linear(c, w[f"{p}.k.weight"], w[f"{p}.k.bias"]).reshape(bsz, NUM_TOKENS, HEADS, dh).transpose(0, 2, 1, 3)
        vv = linear(c, w[f"{p}.v.weight"], w[f"{p}.v.bias"]).reshape(bsz, NUM_TOKENS, HEADS, dh).transpose(0, 2, 1, 3)
        att = softmax(xp, (qq @ kk.transpose(0, 1, 3, 2)) / xp.float32(np.sqrt(dh)), axis=-1)  # [B, 2, N, 4]
        o = (att @ vv).transpose(0, 2, 1, 3).reshape(bsz, n, HIDDEN)
        o = linear(o, w[f"{p}.o.weight"], w[f"{p}.o.bias"])
        h = layer_norm(xp, h + o, w[f"{p}.norm1.weight"], w[f"{p}.norm1.bias"])
        f = linear(relu(xp, linear(h, w[f"{p}.ffn1.weight"], w[f"{p}.ffn1.bias"])), w[f"{p}.ffn2.weight"], w[f"{p}.ffn2.bias"])
        h = layer_norm(xp, h + f, w[f"{p}.norm2.weight"], w[f"{p}.norm2.bias"])
    out = {}
    for name, key in zip(HEAD_NAMES, OFFSET_NAMES):
        p = f"deform.heads.{name}"
        out[key] = linear(relu(xp, linear(h, w[f"{p}.fc1.weight"], w[f"{p}.fc1.bias"])), w[f"{p}.fc2.weight"], w[f"{p}.fc2.bias"])
    return out


# -- offsets and activations ----------------------------------------------------------------
CANONICAL_KEYS = GAUSSIAN_KEYS[:5]                             # means, quats, log_scales, opacity_logits, sh
ACTIVATED_KEYS = ("means", "quats", "scales", "opacities", "sh")  # what a rasterizer takes


def offset_gaussians(canon: Mapping, offsets: Mapping, xp=np) -> dict:
    """Raw canonical Gaussians + offsets, in raw space (docs/MODEL.md; torch: gt_train's `apply_offsets`).

    canon: means [N, 3], quats [N, 4], log_scales [N, 3], opacity_logits [N], sh [N, K, 3];
    offsets (one frame or a batch, leading dims F = () or (B,)): dmu [F.., N, 3], drot [F.., N, 4],
    dscale [F.., N, 3], dsh [F.., N, 3K], dopacity [F.., N, 1]
    -> means [F.., N, 3], quats [F.., N, 4], log_scales [F.., N, 3], opacity_logits [F.., N], sh [F.., N, K, 3].
    Offsets are cast to float32 first (no copy when they are float32 already).
    """
    o = {k: _f32(xp, offsets[k]) for k in OFFSET_NAMES}
    dsh = o["dsh"]
    return {
        "means": canon["means"] + o["dmu"],
        "quats": canon["quats"] + o["drot"],
        "log_scales": canon["log_scales"] + o["dscale"],
        "opacity_logits": canon["opacity_logits"] + o["dopacity"][..., 0],
        "sh": canon["sh"] + dsh.reshape(*dsh.shape[:-1], canon["sh"].shape[-2], 3),
    }


def activate(raw: Mapping, xp=np) -> dict:
    """Raw Gaussians [.., N, ...] -> what a rasterizer takes: means, quats (unnormalised; the rasterizer
    normalises them), scales = exp(log_scales), opacities = sigmoid(opacity_logits), sh (the rasterizer
    turns SH into colour). Shapes as `offset_gaussians`' output; opacities [.., N] float32.
    """
    # 1 / (1 + exp(-x)) in this order: the player's frames are bit-identical to the ones before this module
    opac = 1.0 / (1.0 + xp.exp(-raw["opacity_logits"]))
    return {"means": raw["means"], "quats": raw["quats"], "scales": xp.exp(raw["log_scales"]),
            "opacities": opac.astype(xp.float32), "sh": raw["sh"]}


def apply_offsets(canon: Mapping, offsets: Mapping, xp=np) -> dict:
    """Canonical Gaussians + offsets -> activated Gaussians (ACTIVATED_KEYS), one frame or a batch.

    canon [N, ...] and offsets [F.., N, ...] as `offset_gaussians`; -> means [F.., N, 3], quats [F.., N, 4],
    scales [F.., N, 3], opacities [F.., N], sh [F.., N, K, 3], arrays of xp (numpy or CuPy).
    """
    return activate(offset_gaussians(canon, offsets, xp), xp)


# -- inputs ----------------------------------------------------------------------------------
def audio_windows(feats: np.ndarray, frames: np.ndarray, total: int | None = None) -> np.ndarray:
    """feats [T', 2, D] (feature frames from index 0), frames [B] -> windows [B, 15, 2, D].

    Window of frame t = feats[t-8 .. t+6], indices clamped to [0, total-1] (total = the
    speech's frame count T; None while streaming, when t+6 must already be < T').
    """
    frames = np.asarray(frames, np.int64)
    hi = (feats.shape[0] if total is None else total) - 1
    idx = np.clip(frames[:, None] + np.arange(-WINDOW_BEFORE, WINDOW_AFTER + 1)[None, :], 0, hi)
    return feats[idx]
