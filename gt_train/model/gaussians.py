"""The canonical Gaussians' learnable positions and 3DGS-style densification (no opacity reset).

In this model only the positions `gaussians.means [N, 3]` are per-Gaussian parameters;
rotation, scale, SH and opacity come from F_can(triplane(means)). Densification clones
small Gaussians (a copy at the same position, as 3DGS) and splits large ones (2 new
positions sampled from the Gaussian, the original removed; their scale then follows
from F_can at the new positions, since there is no per-Gaussian scale to divide by 1.6).
Pruning removes Gaussians with opacity < threshold. The Adam state of `means` follows
every change, and the Gaussian cap is respected by keeping the largest gradients.
"""
from __future__ import annotations

import torch
from torch import nn


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """q [N, 4] wxyz (any norm) -> R [N, 3, 3]."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).view(-1, 3, 3)


class GaussianPoints(nn.Module):
    """means [N, 3] (parameter) + densification statistics (not saved: reset at every densify step)."""

    def __init__(self, means):
        super().__init__()
        self.means = nn.Parameter(torch.as_tensor(means, dtype=torch.float32).clone())
        self.reset_stats()

    @property
    def num(self) -> int:
        return self.means.shape[0]

    def reset_stats(self) -> None:
        self.grad_accum = torch.zeros(self.num, device=self.means.device)
        self.grad_count = torch.zeros(self.num, device=self.means.device)

    @torch.no_grad()
    def add_stats(self, v_means: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int) -> None:
        """Accumulate the screen-space (NDC) gradient norm of each mean, as 3DGS.

        v_means [N, 3]: gradient of the loss w.r.t. the means given to the rasterizer (world).
        The 2-D gradient is recovered from the camera-space one (v_u = v_x z / fx), in NDC units.
        Gaussians with a zero gradient count as not visible.
        """
        R, t = viewmat[:3, :3], viewmat[:3, 3]
        means = self.means.detach()
        z = (means @ R[2] + t[2]).clamp_min(1e-6)
        g = v_means @ R.t()  # [N, 3] camera space
        gx = g[:, 0] * z / K[0, 0] * (width / 2)
        gy = g[:, 1] * z / K[1, 1] * (height / 2)
        norm = torch.sqrt(gx * gx + gy * gy)
        vis = v_means.abs().sum(-1) > 0
        self.grad_accum += torch.where(vis, norm, torch.zeros_like(norm))
        self.grad_count += vis.float()

    @torch.no_grad()
    def _replace(self, new_means: torch.Tensor, keep: torch.Tensor, n_new: int, optimizer: torch.optim.Optimizer | None) -> None:
        """means <- cat(means[keep], new_means); Adam moments follow (zeros for the new rows)."""
        old = self.means
        param = nn.Parameter(torch.cat([old.detach()[keep], new_means], 0))
        if optimizer is not None:
            for group in optimizer.param_groups:
                for i, p in enumerate(group["params"]):
                    if p is old:
                        group["params"][i] = param
                        st = optimizer.state.pop(old, None)
                        if st:
                            for k in ("exp_avg", "exp_avg_sq"):
                                st[k] = torch.cat([st[k][keep], torch.zeros_like(new_means)], 0)
                            optimizer.state[param] = st
        self.means = param

    @torch.no_grad()
    def densify_and_prune(self, log_scales: torch.Tensor, quats: torch.Tensor, opacity_logits: torch.Tensor,
                          grad_threshold: float, percent_dense: float, extent: float, min_opacity: float,
                          max_gaussians: int, optimizer: torch.optim.Optimizer | None) -> dict:
        """Clone / split where the mean screen gradient >= grad_threshold, then prune opacity < min_opacity.

        log_scales [N, 3], quats [N, 4], opacity_logits [N]: the current canonical attributes.
        -> counts {"cloned", "split", "pruned", "num"}.
        """
        N = self.num
        grads = self.grad_accum / self.grad_count.clamp_min(1)
        big = log_scales.exp().max(-1).values > percent_dense * extent
        cand = grads >= grad_threshold
        # the cap: a split adds 1 net Gaussian, a clone 1; keep the largest gradients
        room = max(0, max_gaussians - N)
        if int(cand.sum()) > room:
            order = torch.argsort(torch.where(cand, grads, torch.full_like(grads, -1.0)), descending=True)
            cand = torch.zeros_like(cand)
            cand[order[:room]] = True
        clone, split = cand & ~big, cand & big
        # split: 2 samples from N(mean, R S^2 R^T)
        std = log_scales[split].exp().repeat(2, 1)
        samples = torch.randn_like(std) * std
        R = quat_to_rotmat(quats[split]).repeat(2, 1, 1)
        split_means = self.means[split].repeat(2, 1) + (R @ samples[..., None])[..., 0]
        new = torch.cat([self.means[clone], split_means], 0)
        new_opacity = torch.cat([opacity_logits[clone], opacity_logits[split].repeat(2)], 0)
        keep = ~split
        # prune (old and new rows), never below 1 Gaussian
        low_old = torch.sigmoid(opacity_logits) < min_opacity
        low_new = torch.sigmoid(new_opacity) < min_opacity
        keep = keep & ~low_old
        new = new[~low_new]
        if int(keep.sum()) + new.shape[0] == 0:
            keep = torch.zeros_like(keep)
            keep[torch.argmax(opacity_logits)] = True
        self._replace(new, keep, new.shape[0], optimizer)
        self.reset_stats()
        return {"cloned": int(clone.sum()), "split": int(split.sum()), "pruned": int((low_old & ~split).sum() + low_new.sum()),
                "num": self.num}
