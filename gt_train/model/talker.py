"""The whole GaussianTalker model (docs/MODEL.md): canonical stage and deformed forward.

State names: `gaussians.means`, `triplane.*`, `fcan.*`, `query_norm.*` (training only,
`TRAINING_ONLY`; the bundle stores their result), and, exactly as MODEL.md, `audio.*`, `eye.*`, `view.*`, `null`, `deform.*`.

Pieces the exporter traces separately:
    tokens = model.forward_tokens(audio_window [B, 15, 2, D], blink [B], c2w [B, 4, 4])  # [B, 4, 64], D = cfg.audio_dim
    dmu, drot, dscale, dsh, dopacity, attn = model.deform(tokens, queries [N, 64])
    arrays = model.export_arrays()  # frozen canonical Gaussians + queries, numpy
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gt_runtime.contract import GAUSSIAN_KEYS, sh_bases
from gt_train.config import ModelConfig
from gt_train.model.canonical import CanonicalMLP
from gt_train.model.deform import DeformationNetwork
from gt_train.model.gaussians import GaussianPoints
from gt_train.model.tokens import AudioEncoder, eye_encoding, token_mlp, view_encoding
from gt_train.model.triplane import Triplane

# state-name prefixes of the modules a bundle does not carry (it stores the canonical Gaussians and queries instead)
TRAINING_ONLY = ("gaussians", "triplane", "fcan", "query_norm")


def mean_nn_distance(points: np.ndarray, k: int = 3) -> float:
    """Mean distance of each point to its k nearest neighbours (the initial Gaussian size)."""
    from scipy.spatial import cKDTree

    pts = np.asarray(points, np.float64)
    if len(pts) < 2:
        return 0.01
    d, _ = cKDTree(pts).query(pts, k=min(k, len(pts) - 1) + 1)
    return float(np.mean(d[:, 1:])) or 0.01


def apply_offsets(canon: dict, dmu, drot, dscale, dsh, dopacity) -> dict:
    """Raw canonical attributes (unbatched, [N, ...]) + offsets [B, N, ...] -> raw deformed attributes [B, N, ...].

    means + dmu, quats + drot, log_scales + dscale, sh + dsh.reshape(B, N, K, 3), opacity_logits + dopacity[..., 0].
    The torch form (autograd) of `gt_runtime.model.reference.offset_gaussians`, tested against it; the
    activations (exp, sigmoid) are the renderer's (gt_train.render).
    """
    B, N = dmu.shape[:2]
    K = canon["sh"].shape[1]
    return {
        "means": canon["means"][None] + dmu,
        "quats": canon["quats"][None] + drot,
        "log_scales": canon["log_scales"][None] + dscale,
        "sh": canon["sh"][None] + dsh.reshape(B, N, K, 3),
        "opacity_logits": canon["opacity_logits"][None] + dopacity[..., 0],
    }


class GaussianTalker(nn.Module):
    """points [N, 3]: initial Gaussian centres (also define the triplane AABB and the initial scale)."""

    def __init__(self, cfg: ModelConfig, points, aabb=None):
        super().__init__()
        self.cfg = cfg
        points = np.asarray(points, np.float32)
        self.K = sh_bases(cfg.sh_degree)
        self.gaussians = GaussianPoints(points)
        lo, hi = (points.min(0), points.max(0)) if aabb is None else (np.asarray(aabb[0]), np.asarray(aabb[1]))
        self.triplane = Triplane(lo, hi, cfg.triplane_channels, cfg.triplane_resolutions)
        self.fcan = CanonicalMLP(self.triplane.out_dim, cfg.fcan_width, cfg.sh_degree,
                                 init_log_scale=math.log(mean_nn_distance(points)),
                                 init_opacity=cfg.init_opacity, gain=cfg.out_init_gain)
        d = cfg.hidden
        # LayerNorm of the triplane feature: the raw features are small (|f| ~ 0.5), which leaves the attention
        # logits near 0 and the softmax uniform; normalised queries give W_q / W_k a signal to learn from
        self.query_norm = nn.LayerNorm(d, eps=1e-5)
        self.audio = AudioEncoder(d, audio_dim=cfg.audio_dim)
        self.eye = token_mlp(9, d)
        self.view = token_mlp(12, d)
        self.null = nn.Parameter(torch.randn(d) * 0.1)
        self.deform = DeformationNetwork(d, cfg.num_layers, cfg.num_heads, cfg.ffn_width, cfg.head_width,
                                         cfg.sh_degree, cfg.out_init_gain)

    # ---- parameter groups ------------------------------------------------------------
    def canonical_modules(self) -> dict[str, list[nn.Parameter]]:
        return {"means": [self.gaussians.means], "triplane": list(self.triplane.parameters()),
                "fcan": list(self.fcan.parameters())}

    def deform_parameters(self) -> list[nn.Parameter]:
        return [*self.query_norm.parameters(), *self.audio.parameters(), *self.eye.parameters(), *self.view.parameters(), self.null,
                *self.deform.parameters()]

    @property
    def num_gaussians(self) -> int:
        return self.gaussians.num

    # ---- canonical stage --------------------------------------------------------------
    def canonical(self, means: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """-> raw canonical attributes {means [N, 3], quats [N, 4], log_scales [N, 3], sh [N, K, 3],
        opacity_logits [N]} and queries [N, 64] (LayerNorm of the triplane features of the means)."""
        means = self.gaussians.means if means is None else means
        f = self.triplane(means)
        out = self.fcan(f)
        out["means"] = means
        out["queries"] = self.query_norm(f)
        return out

    # ---- tokens and deformation ---------------------------------------------------------
    def forward_tokens(self, audio_window: torch.Tensor, blink: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
        """audio_window [B, 15, 2, D], blink [B], c2w [B, 4, 4] -> tokens [B, 4, 64] (audio, eye, view, null)."""
        a = self.audio(audio_window)
        e = self.eye(eye_encoding(blink))
        v = self.view(view_encoding(c2w))
        n = self.null[None].expand(a.shape[0], -1)
        return torch.stack([a, e, v, n], 1)

    def forward(self, audio_window: torch.Tensor, blink: torch.Tensor, c2w: torch.Tensor,
                canonical_only: bool = False) -> dict:
        """-> {raw deformed attributes [B, N, ...] (apply_offsets), "canonical": dict, "offsets": 5-tuple | None,
        "attn": [B, L, heads, N, 4] | None}. canonical_only: the canonical Gaussians broadcast to B."""
        canon = self.canonical()
        B = audio_window.shape[0]
        if canonical_only:
            out = {k: canon[k][None].expand(B, *canon[k].shape) for k in ("means", "quats", "log_scales", "sh", "opacity_logits")}
            out.update(canonical=canon, offsets=None, attn=None)
            return out
        tokens = self.forward_tokens(audio_window, blink, c2w)
        *offs, attn = self.deform(tokens, canon["queries"])
        out = apply_offsets(canon, *offs)
        out.update(canonical=canon, offsets=tuple(offs), attn=attn)
        return out

    # ---- export ------------------------------------------------------------------------
    @torch.no_grad()
    def export_arrays(self) -> dict[str, np.ndarray]:
        """-> frozen canonical Gaussians (raw) as float32 numpy: means [N, 3], quats [N, 4], log_scales [N, 3],
        opacity_logits [N], sh [N, K, 3], queries [N, 64] (triplane features of the final canonical means)."""
        c = self.canonical()
        return {k: c[k].detach().float().cpu().numpy().copy() for k in GAUSSIAN_KEYS}

    @classmethod
    def from_state_dict(cls, cfg: ModelConfig, state: dict) -> "GaussianTalker":
        """Rebuild a model (any Gaussian count) from a state dict saved by the trainer."""
        means = state["gaussians.means"].float().cpu().numpy()
        aabb = state["triplane.aabb"].float().cpu().numpy()
        model = cls(cfg, means, aabb=(aabb[0], aabb[1]))
        model.load_state_dict(state)
        return model
