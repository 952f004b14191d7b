"""The one synthetic speech of the tests: a seeded, speech-like signal, no files, no torch.

    pcm = speech(2.0)                          # [32000] float32 at 16 kHz
    pcm = speech(1.2, 48000, channels=2)       # [57600, 2]: other rates and stereo for the loaders
    pcm = speech(2.0, gated=True)              # syllables with true silence between them
"""

from __future__ import annotations

import numpy as np

from gt_runtime.contract import SAMPLE_RATE

PITCH_HZ = 180.0     # the voiced tone
SYLLABLE_HZ = 3.0    # the envelope: three syllables per second
VOICE = 0.3          # amplitude of the tone at the envelope's peak
NOISE = 0.02         # standard deviation of the breath noise


def speech(seconds: float, sr: int = SAMPLE_RATE, *, seed: int = 0, channels: int = 1, gated: bool = False) -> np.ndarray:
    """Speech-like audio -> pcm [n] float32 (channels=1) or [n, 2] (channels=2; right = half the left), n = round(seconds * sr).

    A PITCH_HZ tone of amplitude VOICE under a SYLLABLE_HZ envelope, plus seeded white noise of std NOISE:
    the loudness rises and falls like syllables, so the mouth moves, and the noise makes every seed's clip differ.

    gated=False: the envelope is 0.5 + 0.5 sin(2 pi SYLLABLE_HZ t) on the tone, the noise is a constant floor (never silent).
    gated=True: the envelope is on where sin(2 pi SYLLABLE_HZ t) > 0 and zero elsewhere, on tone and noise both, so a test
    knows which stretches are loud and which are silent (exact zeros).
    """
    if channels not in (1, 2):
        raise ValueError(f"channels: got {channels}, expected 1 or 2")
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    wave = np.sin(2 * np.pi * SYLLABLE_HZ * t)
    tone = VOICE * np.sin(2 * np.pi * PITCH_HZ * t)
    noise = NOISE * rng.standard_normal(t.size)
    x = ((wave > 0) * (tone + noise) if gated else (0.5 + 0.5 * wave) * tone + noise).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x
