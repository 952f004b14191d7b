"""Playing audio into a Player or a Session and comparing the uint8 frames [T, H, W, 3] that come out."""

from __future__ import annotations

from typing import Callable

import numpy as np

from gt_runtime.contract import SAMPLE_RATE
from gt_runtime.playback.pipeline import cpu_raster_available

# The CPU rasterizer the GPU paths are compared with: the C++ one where it is built, else the numpy reference.
CPU_RASTER = "cpu" if cpu_raster_available() else "reference"
# (width, height) of the GPU-path tests' bundles: not square, not a multiple of the 16-pixel tile (3 x 2 tiles).
ODD_SIZE = (40, 24)


def play(player, pcm: np.ndarray, batch: int = 1) -> np.ndarray:
    """Player.play(pcm) on a fresh Session of `batch` -> frames [T, H, W, 3] uint8 (each checked: a host numpy array)."""
    frames = list(player.play(pcm, session=player.session(batch=batch)))
    assert all(type(f) is np.ndarray and f.dtype == np.uint8 and f.shape == (player.height, player.width, 3) for f in frames)
    return np.stack(frames)


def stream_in_chunks(session, pcm: np.ndarray, next_size: Callable[[], float], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Push pcm into a Session in chunks of next_size() samples, pulling frames after every push, then finish
    -> frames [T, H, W, 3] uint8 (what streaming tests compare with the whole-file path). Closes the session."""
    out, i = [], 0
    while i < len(pcm):
        n = max(1, int(next_size()))
        session.push_audio(pcm[i:i + n], sample_rate)
        out += list(session.frames())
        i += n
    session.finish()
    out += list(session.frames())
    session.close()
    return np.stack(out)


def parity(got: np.ndarray, ref: np.ndarray) -> tuple[int, float, float]:
    """-> (max |difference| in uint8 steps, PSNR in dB, fraction of values that differ) of two uint8 frame stacks.

    Asserts max <= 2, PSNR >= 45 dB and at most 1 % of values off (float rounding flips a few values by one
    step; a truncating or otherwise biased uint8 conversion flips about half of them)."""
    assert got.shape == ref.shape and got.dtype == ref.dtype == np.uint8
    d = got.astype(np.int64) - ref.astype(np.int64)
    mse = float(np.mean(d.astype(np.float64) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    worst, frac = int(np.abs(d).max()), float(np.mean(d != 0))
    msg = f"GPU path vs CPU path, {len(got)} frames: max |diff| {worst}, PSNR {psnr:.1f} dB, {100 * frac:.4f} % of values differ"
    print(msg)
    assert worst <= 2 and psnr >= 45.0 and frac <= 0.01, msg
    return worst, psnr, frac
