"""The array engine's fast deformation network: docs/MODEL.md with the algebraic savings.

`DeformNet` computes the function of `gt_runtime.model.reference.deform_plain` (the
reference it is tested against, tests/runtime/test_model_reference.py) with less work,
on numpy or CuPy (`xp`), float32:

- layer 0's query projection is constant per Gaussian: q0 = queries Wq0^T + bq0 is made once;
- W_o meets the 4 token vectors, not the N Gaussian rows: A (V Wo_h^T) instead of (A V) Wo^T;
- the five heads' fc1 layers are fused into one 64 -> 640 GEMM.

Letters: N Gaussians, B frames, K = (deg + 1)^2 SH bases.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from gt_runtime.contract import HEAD_HIDDEN, HEAD_NAMES, HEADS, HIDDEN, NUM_TOKENS, OFFSET_NAMES, head_dims
from gt_runtime.model.reference import layer_norm, relu


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
        w = {k: xp.asarray(v, dtype=xp.float32) for k, v in weights.items() if k.startswith("deform.")}
        self.queries = xp.asarray(queries, dtype=xp.float32)
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
        # Five head fc1 layers fused: [64, 5 HEAD_HIDDEN] = [64, 640].
        self.h1_t = xp.ascontiguousarray(
            xp.concatenate([w[f"deform.heads.{n}.fc1.weight"] for n in HEAD_NAMES], axis=0).T)
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
        c = xp.asarray(tokens, dtype=xp.float32)
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
        width = HEAD_HIDDEN
        for i, (key, (w2, b2)) in enumerate(zip(OFFSET_NAMES, self.h2)):
            y = hh[:, i * width:(i + 1) * width] @ w2
            y += b2
            out[key] = y.reshape(bsz, n, -1)
        return out
