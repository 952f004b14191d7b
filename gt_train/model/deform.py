"""Spatial-audio cross-attention and the 5 deformation heads (docs/MODEL.md, `deform.*`).

queries q [N, 64] attend to tokens c [B, 4, 64] through L post-norm layers, then 5 MLP
heads give the raw-space offsets dmu [B, N, 3], drot [B, N, 4], dscale [B, N, 3],
dsh [B, N, 3K], dopacity [B, N, 1]. Tested against the array reference
`gt_runtime.model.reference.deform_plain` (tests/train/test_torch_vs_reference.py).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gt_runtime.contract import HEAD_HIDDEN, HEAD_NAMES, HEADS, HIDDEN, LN_EPS, head_dims
from gt_train.model.canonical import small_linear


class CrossAttentionLayer(nn.Module):
    """deform.layers.{l}: q, k, v, o (Linear(64, 64)), norm1, norm2 (LayerNorm 64), ffn1 (64->128), ffn2 (128->64)."""

    def __init__(self, d: int = HIDDEN, heads: int = HEADS, ffn: int = 2 * HIDDEN):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=LN_EPS), nn.LayerNorm(d, eps=LN_EPS)
        self.ffn1, self.ffn2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, N, 64], c [B, 4, 64] -> (h [B, N, 64], A [B, heads, N, 4])."""
        B, N, D = h.shape
        Q = self.q(h).view(B, N, self.h, self.dh).transpose(1, 2)  # [B, h, N, dh]
        Kt = self.k(c).view(B, -1, self.h, self.dh).transpose(1, 2)  # [B, h, 4, dh]
        V = self.v(c).view(B, -1, self.h, self.dh).transpose(1, 2)  # [B, h, 4, dh]
        A = torch.softmax(Q @ Kt.transpose(-1, -2) / math.sqrt(self.dh), dim=-1)  # [B, h, N, 4]
        # concat_heads(A V) Wo^T = sum_h A_h (V_h Wo_h^T): Wo meets the 4 token rows, not the N Gaussian rows
        Wo = self.o.weight.view(D, self.h, self.dh).permute(1, 2, 0)  # [h, dh, 64]
        O = (A @ (V @ Wo)).sum(1) + self.o.bias  # [B, N, 64]
        h = self.norm1(h + O)
        h = self.norm2(h + self.ffn2(torch.relu(self.ffn1(h))))
        return h, A


class Head(nn.Module):
    """deform.heads.{name}: fc1 Linear(64, 128), ReLU, fc2 Linear(128, k) (xavier gain ~0.1, zero bias)."""

    def __init__(self, d: int, width: int, k: int, gain: float):
        super().__init__()
        self.fc1 = nn.Linear(d, width)
        self.fc2 = small_linear(width, k, gain)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(h)))


class DeformationNetwork(nn.Module):
    """(tokens [B, 4, 64], queries [N, 64]) -> (dmu, drot, dscale, dsh [B, N, 3K], dopacity [B, N, 1], attn [B, L, heads, N, 4])."""

    def __init__(self, d: int = HIDDEN, num_layers: int = 2, heads: int = HEADS, ffn: int = 2 * HIDDEN,
                 head_width: int = HEAD_HIDDEN, sh_degree: int = 3, gain: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList([CrossAttentionLayer(d, heads, ffn) for _ in range(num_layers)])
        # dmu is in metres (a head is ~0.2 m): its head starts 10x smaller than the others
        self.heads = nn.ModuleDict({name: Head(d, head_width, k, gain * (0.1 if name == "mu" else 1.0))
                                    for name, k in head_dims(sh_degree).items()})

    def forward(self, tokens: torch.Tensor, queries: torch.Tensor):
        B = tokens.shape[0]
        h = queries[None].expand(B, -1, -1)
        attn = []
        for layer in self.layers:
            h, A = layer(h, tokens)
            attn.append(A)
        # the 5 heads' fc1 as one Linear(64, 640) (same function, one GEMM)
        w1 = torch.cat([self.heads[name].fc1.weight for name in HEAD_NAMES], 0)
        b1 = torch.cat([self.heads[name].fc1.bias for name in HEAD_NAMES], 0)
        z = torch.relu(torch.nn.functional.linear(h, w1, b1)).split([self.heads[name].fc1.out_features for name in HEAD_NAMES], -1)
        outs = tuple(self.heads[name].fc2(zi) for name, zi in zip(HEAD_NAMES, z))
        return (*outs, torch.stack(attn, 1))
