"""Image losses (DESIGN.md section 4): L1, D-SSIM (3DGS: gaussian window 11, sigma 1.5), lip-box L1, optional LPIPS."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from gt_runtime.errors import InputError


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


@lru_cache(maxsize=4)
def _gauss1d(size: int, sigma: float, device: str) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return (g / g.sum()).to(device)


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable gaussian blur with zero padding of x [1, C, H, W] (= the 2-D 11x11 window of 3DGS)."""
    C, k = x.shape[1], g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(C, 1, 1, k), padding=(0, k // 2), groups=C)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(C, 1, k, 1), padding=(k // 2, 0), groups=C)


def ssim(a: torch.Tensor, b: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """a, b [H, W, 3] in [0, 1] -> mean SSIM (3DGS: gaussian window 11, sigma 1.5, zero padding, C1 = 0.01^2, C2 = 0.03^2)."""
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    g = _gauss1d(size, sigma, str(a.device))
    mu_x, mu_y, exx, eyy, exy = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), g).split(3, 1)
    sxx, syy, sxy = exx - mu_x ** 2, eyy - mu_y ** 2, exy - mu_x * mu_y
    C1, C2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_x * mu_y + C1) * (2 * sxy + C2)) / ((mu_x ** 2 + mu_y ** 2 + C1) * (sxx + syy + C2))
    return m.mean()


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
