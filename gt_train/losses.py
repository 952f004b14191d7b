"""Image losses (docs/MODEL.md): L1, D-SSIM (pytorch_msssim: gaussian window 11, sigma 1.5), lip-box L1, optional LPIPS."""
from __future__ import annotations

from pathlib import Path

import torch

from gt_runtime.errors import InputError, require

pytorch_msssim = require("pytorch_msssim", "gt train (D-SSIM loss)")


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b [H, W, 3] in [0, 1], H, W >= 11 -> mean SSIM, differentiable (pytorch_msssim.ssim).

    Gaussian window 11, sigma 1.5, K = (0.01, 0.03), data range 1, averaged over the window
    positions inside the image (no padding). The 3DGS loss zero-pads instead; the two differ
    only in the 5-pixel border. `gt_train.metrics.ssim` (scikit-image) is the same function.
    """
    return pytorch_msssim.ssim(a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None], data_range=1.0,
                               win_size=11, win_sigma=1.5)


def dssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - SSIM (the 3DGS 'D-SSIM' term)."""
    return 1.0 - ssim(a, b)


def lip_l1(a: torch.Tensor, b: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """L1 inside the lip box (x0, y0, x1, y1) of [H, W, 3] images."""
    x0, y0, x1, y1 = box
    return l1(a[y0:y1, x0:x1], b[y0:y1, x0:x1])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10.0 * torch.log10(torch.tensor(1.0 / max(mse, 1e-10))).item()


class LPIPS:
    """LPIPS(alex) from a local state dict of `lpips.LPIPS(net="alex")`; needs the `lpips` package (no downloads)."""

    def __init__(self, weights: Path, device):
        weights = Path(weights)
        if not weights.is_file():
            raise InputError(f"{weights}: LPIPS weights not found | give a local state dict of lpips.LPIPS(net='alex'), or omit lpips_weights")
        try:
            import lpips
        except ImportError:
            raise InputError(f"{weights}: LPIPS needs the 'lpips' package | pip install lpips, or omit lpips_weights") from None
        self.net = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
        try:
            self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise InputError(f"{weights}: not an LPIPS(alex) state dict ({type(exc).__name__}) | expected lpips.LPIPS(net='alex').state_dict()") from None
        self.net = self.net.to(device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b [H, W, 3] in [0, 1] -> LPIPS distance."""
        return self.net(a.permute(2, 0, 1)[None] * 2 - 1, b.permute(2, 0, 1)[None] * 2 - 1).mean()
