"""Condition tokens, each [B, 64], in the order audio, eye, view, null (docs/MODEL.md).

`AudioEncoder` (state names `audio.*`) takes the 15-frame window of per-frame audio
features `feats[t-8 .. t+6]` [B, 15, 2, D] (D = audio_dim: 80 mel bins, or the hidden size
of a hubert / wav2vec2 front end): AudioNet encodes the 8 frames u = t-4 .. t+3,
each from its own 8-frame window `feats[u-4 .. u+3]` (16 rows), AudioAttNet
weights the 8 codes, and an MLP maps the smoothed code to the audio token.
"""
from __future__ import annotations

import math

import torch
from torch import nn

WINDOW = 15  # frames t-8 .. t+6
CENTER = 8  # index of frame t in the window
SUB = 8  # AudioNet frames per code, and codes per window


def window_indices(t: int, T: int) -> list[int]:
    """-> the 15 frame indices t-8 .. t+6 clamped to [0, T-1]."""
    return [min(max(u, 0), T - 1) for u in range(t - CENTER, t - CENTER + WINDOW)]


class AudioNet(nn.Module):
    """x [M, D, 16] (features x rows; D = 80 mel bins by default) -> code [M, 32]."""

    def __init__(self, dim_in: int = 80, dim_code: int = 32):
        super().__init__()
        lr = lambda: nn.LeakyReLU(0.02)
        self.conv = nn.Sequential(
            nn.Conv1d(dim_in, 32, 3, 2, 1), lr(), nn.Conv1d(32, 32, 3, 2, 1), lr(),
            nn.Conv1d(32, 64, 3, 2, 1), lr(), nn.Conv1d(64, 64, 3, 2, 1), lr(),
        )
        self.fc = nn.Sequential(nn.Linear(64, 64), lr(), nn.Linear(64, dim_code))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class AudioAttNet(nn.Module):
    """codes [B, 32, 8] (code x frames) -> softmax weights [B, 8] over the frames."""

    def __init__(self, dim_code: int = 32, seq: int = SUB):
        super().__init__()
        lr = lambda: nn.LeakyReLU(0.02)
        self.conv = nn.Sequential(
            nn.Conv1d(dim_code, 16, 3, 1, 1), lr(), nn.Conv1d(16, 8, 3, 1, 1), lr(),
            nn.Conv1d(8, 4, 3, 1, 1), lr(), nn.Conv1d(4, 2, 3, 1, 1), lr(),
            nn.Conv1d(2, 1, 3, 1, 1), lr(),
        )
        self.fc = nn.Linear(seq, seq)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(self.conv(c)[:, 0]), dim=-1)


class AudioEncoder(nn.Module):
    """window [B, 15, 2, D] -> audio token [B, 64]. State: audio.net.*, audio.att.*, audio.mlp.*"""

    def __init__(self, dim_out: int = 64, dim_code: int = 32, audio_dim: int = 80):
        super().__init__()
        self.audio_dim = audio_dim
        self.net = AudioNet(audio_dim, dim_code)
        self.att = AudioAttNet(dim_code)
        self.mlp = nn.Sequential(nn.Linear(dim_code, 64), nn.ReLU(), nn.Linear(64, dim_out))
        # He init, zero bias: PyTorch's default init shrinks the signal ~2.5x per layer, and over the 8 layers
        # from mel to token the audio token barely varies with the audio (std over frames ~1e-4 of its norm),
        # which leaves the deformation stage almost no audio gradient to start from
        for m in (*self.net.modules(), *self.mlp.modules()):
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.02, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    def forward(self, window: torch.Tensor, return_weights: bool = False):
        B, W, R, M = window.shape
        assert (W, R, M) == (WINDOW, 2, self.audio_dim), window.shape
        # code i (frame u = t-4+i) reads window rows i .. i+7 (frames u-4 .. u+3)
        subs = torch.stack([window[:, i:i + SUB] for i in range(SUB)], 1)  # [B, 8, 8, 2, M]
        x = subs.reshape(B * SUB, SUB * R, M).transpose(1, 2)  # [B*8, M, 16]
        codes = self.net(x).view(B, SUB, -1)  # [B, 8, 32]
        w = self.att(codes.transpose(1, 2))  # [B, 8]
        token = self.mlp((w[:, :, None] * codes).sum(1))
        return (token, w) if return_weights else token


def eye_encoding(blink: torch.Tensor) -> torch.Tensor:
    """blink [B] -> [B, 9]: b, then sin(2^k pi b), cos(2^k pi b) for k = 0..3."""
    parts = [blink]
    for k in range(4):
        parts += [torch.sin((2 ** k) * math.pi * blink), torch.cos((2 ** k) * math.pi * blink)]
    return torch.stack(parts, -1)


def view_encoding(c2w: torch.Tensor) -> torch.Tensor:
    """c2w [B, 4, 4] -> [B, 12]: R row-major (9), then t (3)."""
    return torch.cat([c2w[:, :3, :3].reshape(-1, 9), c2w[:, :3, 3]], -1)


def token_mlp(d_in: int, d: int = 64) -> nn.Sequential:
    """`{name}.0`: Linear(d_in, 64), ReLU, `{name}.2`: Linear(64, 64)."""
    return nn.Sequential(nn.Linear(d_in, 64), nn.ReLU(), nn.Linear(64, d))
