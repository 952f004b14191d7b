"""Multi-resolution triplane (K-Planes style): position [N, 3] -> feature [N, 64] (docs/MODEL.md, "Queries").

Two scales (64 and 128) of 3 planes (xy, xz, yz), 32 channels each. A position is
normalised by the AABB of the initial points to [-1, 1], sampled bilinearly on each
plane (`grid_sample`, align_corners=True, border padding), the 3 planes of a scale
are multiplied (Hadamard), and the 2 scales are concatenated.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

# Plane p uses position axes PLANES[p] = (a, b): grid x = x_n[:, a] (plane width), grid y = x_n[:, b] (height).
PLANES = ((0, 1), (0, 2), (1, 2))


class Triplane(nn.Module):
    """planes.{s}.{p}: [1, C, R_s, R_s] for scale s in (0, 1) and plane p in (xy, xz, yz); aabb [2, 3] buffer."""

    def __init__(self, aabb_min, aabb_max, channels: int = 32, resolutions=(64, 128)):
        super().__init__()
        self.register_buffer("aabb", torch.stack([torch.as_tensor(aabb_min, dtype=torch.float32),
                                                  torch.as_tensor(aabb_max, dtype=torch.float32)]))
        self.planes = nn.ModuleList()
        for r in resolutions:
            ps = nn.ParameterList([nn.Parameter(torch.empty(1, channels, r, r).uniform_(0.1, 0.5)) for _ in PLANES])
            self.planes.append(ps)
        self.out_dim = channels * len(resolutions)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] world -> [N, 3] in [-1, 1]: 2 (x - min) / (max - min) - 1, clamped."""
        lo, hi = self.aabb[0], self.aabb[1]
        return (2.0 * (x - lo) / (hi - lo).clamp_min(1e-8) - 1.0).clamp(-1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] world positions -> features [N, 64]."""
        xn = self.normalize(x)
        feats = []
        for ps in self.planes:
            f = None
            for (a, b), plane in zip(PLANES, ps):
                grid = torch.stack([xn[:, a], xn[:, b]], -1).view(1, 1, -1, 2)  # [1, 1, N, 2]
                s = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)  # [1, C, 1, N]
                s = s[0, :, 0].t()  # [N, C]
                f = s if f is None else f * s
            feats.append(f)
        return torch.cat(feats, -1)
