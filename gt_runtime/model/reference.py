"""Array reference of the gt condition tokens and deformation network (docs/MODEL.md).

Written once against the array namespace `xp` (numpy on CPU, CuPy on a GPU), float32
throughout. Two forms of the deformation network compute the same function:

- `deform_plain`: line by line as docs/MODEL.md writes it (the readable reference);
- `DeformNet.__call__`: the algebraic savings of DESIGN.md section 6 - layer 0's
  query projection precomputed per Gaussian, W_o applied to the 4 token vectors
  (A (V W_o^T) instead of (A V) W_o^T), and the five head input layers fused into one
  64 -> 640 GEMM. Tests check it against `deform_plain`.

Letters: N Gaussians, B frames, K = (deg + 1)^2 SH bases, D = 64.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from gt_runtime.contract import (
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
    """prefix.0: Linear, ReLU, prefix.2: Linear."""
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


# -- deformation network, plain ------------------------------------------------------------
def deform_plain(tokens, queries, w: Mapping, num_layers: int, sh_degree: int, xp=np) -> dict:
    """tokens [B, 4, 64], queries [N, 64] -> {dmu [B,N,3], drot [B,N,4], dscale [B,N,3], dsh [B,N,3K], dopacity [B,N,1]}.

    Line by line docs/MODEL.md (post-norm layers, 2 heads of 32).
    """
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


# -- deformation network, with the algebraic savings -----------------------------------------
class DeformNet:
    """The deformation network bound to one set of queries, with the algebraic savings.

    Holds only immutable prepared arrays (shareable between threads/sessions):
    q0 = queries Wq0^T + bq0 [N, 64] (layer 0's constant query projection), the
    transposed layer weights, the fused heads' fc1 [64, 640] and each head's fc2.
    """

    def __init__(self, weights: Mapping, queries, num_layers: int, sh_degree: int, xp=np, chunk: int | None = None):
        self.xp = xp
        # numpy: 1024-row chunks keep the [rows, 640] head activations in cache; CuPy: one launch over all rows.
        self.chunk = chunk if chunk is not None else (1024 if xp is np else 0)
        self.num_layers = int(num_layers)
        self.sh_degree = int(sh_degree)
        self.dims = head_dims(sh_degree)
        w = {k: _f32(xp, v) for k, v in weights.items() if k.startswith("deform.")}
        self.queries = _f32(xp, queries)
        self.n = int(self.queries.shape[0])
        t = lambda a: xp.ascontiguousarray(a.T)  # noqa: E731
        self.layers = []
        for layer in range(self.num_layers):
            p = f"deform.layers.{layer}"
            self.layers.append({
                "wq_t": t(w[f"{p}.q.weight"]), "bq": w[f"{p}.q.bias"],
                "wk": w[f"{p}.k.weight"], "bk": w[f"{p}.k.bias"],
                "wv": w[f"{p}.v.weight"], "bv": w[f"{p}.v.bias"],
                "wo": w[f"{p}.o.weight"], "bo": w[f"{p}.o.bias"],
                "n1w": w[f"{p}.norm1.weight"], "n1b": w[f"{p}.norm1.bias"],
                "n2w": w[f"{p}.norm2.weight"], "n2b": w[f"{p}.norm2.bias"],
                "f1_t": t(w[f"{p}.ffn1.weight"]), "f1b": w[f"{p}.ffn1.bias"],
                "f2_t": t(w[f"{p}.ffn2.weight"]), "f2b": w[f"{p}.ffn2.bias"],
            })
        # Layer 0's Q is constant per Gaussian.
        l0 = self.layers[0]
        self.q0 = xp.ascontiguousarray(self.queries @ l0["wq_t"] + l0["bq"])  # [N, 64]
        # Five head fc1 layers fused: [64, 640].
        self.h1_t = xp.ascontiguousarray(xp.concatenate([w[f"deform.heads.{n}.fc1.weight"] for n in HEAD_NAMES], axis=0).T)
        self.h1b = xp.concatenate([w[f"deform.heads.{n}.fc1.bias"] for n in HEAD_NAMES])
        self.h2 = [(t(w[f"deform.heads.{n}.fc2.weight"]), w[f"deform.heads.{n}.fc2.bias"]) for n in HEAD_NAMES]

    def _token_mats(self, lay, c):
        """c [B, 4, 64] -> Kblk [B, 64, 8] (scaled, block per head), VO [B, 8, 64] (= V_h Wo_h^T)."""
        xp = self.xp
        bsz = c.shape[0]
        dh = HIDDEN // HEADS
        k = c @ lay["wk"].T + lay["bk"]  # [B, 4, 64]
        v = c @ lay["wv"].T + lay["bv"]
        kblk = xp.zeros((bsz, HIDDEN, HEADS * NUM_TOKENS), xp.float32)
        vo = xp.empty((bsz, HEADS * NUM_TOKENS, HIDDEN), xp.float32)
        scale = xp.float32(1.0 / np.sqrt(dh))
        for hd in range(HEADS):
            sl = slice(hd * dh, (hd + 1) * dh)
            kblk[:, sl, hd * NUM_TOKENS:(hd + 1) * NUM_TOKENS] = k[:, :, sl].transpose(0, 2, 1) * scale
            vo[:, hd * NUM_TOKENS:(hd + 1) * NUM_TOKENS] = v[:, :, sl] @ lay["wo"][:, sl].T
        return kblk, vo

    def __call__(self, tokens) -> dict:
        """tokens [B, 4, 64] -> offsets dict (see `deform_plain`), arrays of the namespace xp.

        Rows (Gaussians) are processed in chunks of `self.chunk` so that the [rows, 640]
        head activations stay in cache; every row's arithmetic is the same whatever the chunk.
        """
        xp = self.xp
        c = _f32(xp, tokens)
        bsz, n = c.shape[0], self.n
        mats = [self._token_mats(lay, c) for lay in self.layers]
        outs = {key: xp.empty((bsz, n, k), xp.float32) for key, k in zip(OFFSET_NAMES, self.dims.values())}
        step = self.chunk or n
        for i in range(0, n, step):
            part = self._rows(bsz, mats, self.q0[i:i + step], self.queries[i:i + step])
            for key, y in part.items():
                outs[key][:, i:i + step] = y
        return outs

    def _rows(self, bsz, mats, q0, queries) -> dict:
        """One chunk of rows: q0, queries [n, 64] -> offsets {key: [B, n, k]}."""
        xp = self.xp
        n = q0.shape[0]
        h = None
        for li, (lay, (kblk, vo)) in enumerate(zip(self.layers, mats)):
            if li == 0:
                s = xp.matmul(q0[None], kblk)                                   # [B, n, 8]
                resid = queries[None]
            else:
                s = xp.matmul((h @ lay["wq_t"] + lay["bq"]).reshape(bsz, n, HIDDEN), kblk)
                resid = h.reshape(bsz, n, HIDDEN)
            s = s.reshape(bsz, n, HEADS, NUM_TOKENS)
            s = xp.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            o = xp.matmul(s.reshape(bsz, n, HEADS * NUM_TOKENS), vo)          # [B, n, 64]
            o += lay["bo"]
            o += resid
            h = layer_norm(xp, o.reshape(bsz * n, HIDDEN), lay["n1w"], lay["n1b"])
            f = h @ lay["f1_t"]
            f += lay["f1b"]
            f = relu(xp, f) @ lay["f2_t"]
            f += lay["f2b"]
            f += h
            h = layer_norm(xp, f, lay["n2w"], lay["n2b"])
        hh = h @ self.h1_t
        hh += self.h1b
        xp.maximum(hh, xp.float32(0), out=hh)
        out = {}
        width = 2 * HIDDEN
        for i, (key, (w2, b2)) in enumerate(zip(OFFSET_NAMES, self.h2)):
            y = hh[:, i * width:(i + 1) * width] @ w2
            y += b2
            out[key] = y.reshape(bsz, n, -1)
        return out


class TokenEncoder:
    """Condition tokens for frames: audio windows + track entries -> tokens [B, 4, 64] (array namespace xp)."""

    def __init__(self, weights: Mapping, xp=np):
        self.xp = xp
        self.w = {k: _f32(xp, v) for k, v in weights.items() if not k.startswith("deform.")}

    def audio(self, windows):
        """windows [B, 15, 2, D] -> [B, 64]."""
        return audio_token(windows, self.w, self.xp)

    def eye(self, blink):
        return eye_token(blink, self.w, self.xp)

    def view(self, c2w):
        return view_token(c2w, self.w, self.xp)

    def tokens(self, audio, blink, c2w):
        """audio [B, 64], blink [B], c2w [B, 4, 4] -> tokens [B, 4, 64]."""
        return stack_tokens(audio, self.eye(blink), self.view(c2w), self.w["null"], self.xp)


def audio_windows(feats: np.ndarray, frames: np.ndarray, total: int | None = None) -> np.ndarray:
    """feats [T', 2, D] (feature frames from index 0), frames [B] -> windows [B, 15, 2, D].

    Window of frame t = feats[t-8 .. t+6], indices clamped to [0, total-1] (total = the
    speech's frame count T; None while streaming, when t+6 must already be < T').
    """
    frames = np.asarray(frames, np.int64)
    hi = (feats.shape[0] if total is None else total) - 1
    idx = np.clip(frames[:, None] + np.arange(-WINDOW_BEFORE, WINDOW_AFTER + 1)[None, :], 0, hi)
    return feats[idx]
