"""F_can: triplane feature [N, 64] -> canonical raw attributes of each Gaussian (docs/MODEL.md).

A shared MLP (64 -> 128 -> 128, ReLU) and four heads: rotation (4, wxyz), log-scale (3),
SH coefficients (3K) and opacity logit (1). The heads' weights start small (xavier
gain ~0.1) and their biases at a sensible Gaussian: identity rotation, the initial
log-scale, grey colour (SH DC 0 -> 0.5 after the +0.5 offset), opacity init_opacity.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def small_linear(i: int, o: int, gain: float) -> nn.Linear:
    """Linear(i, o) with xavier_uniform(gain) weight and zero bias."""
    lin = nn.Linear(i, o)
    nn.init.xavier_uniform_(lin.weight, gain=gain)
    nn.init.zeros_(lin.bias)
    return lin


class CanonicalMLP(nn.Module):
    """fcan.mlp.{0,2}, fcan.rotation, fcan.scale, fcan.sh, fcan.opacity."""

    def __init__(self, in_dim: int = 64, width: int = 128, sh_degree: int = 3, init_log_scale: float = -4.0,
                 init_opacity: float = 0.1, gain: float = 0.1):
        super().__init__()
        self.K = (sh_degree + 1) ** 2
        self.mlp = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.rotation = small_linear(width, 4, gain)
        self.scale = small_linear(width, 3, gain)
        self.sh = small_linear(width, 3 * self.K, gain)
        self.opacity = small_linear(width, 1, gain)
        with torch.no_grad():
            self.rotation.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
            self.scale.bias.fill_(float(init_log_scale))
            self.opacity.bias.fill_(math.log(init_opacity / (1 - init_opacity)))

    def forward(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """feat [N, 64] -> {quats [N, 4], log_scales [N, 3], sh [N, K, 3], opacity_logits [N]} (raw)."""
        h = self.mlp(feat)
        return {
            "quats": self.rotation(h),
            "log_scales": self.scale(h),
            "sh": self.sh(h).view(-1, self.K, 3),
            "opacity_logits": self.opacity(h)[:, 0],
        }
