"""The runner interface shared by every engine (Polygraphy style).

A runner has `activate()` / `infer(feed)` / `deactivate()` and is a context manager.
The public `infer` checks the feed (names, float32, ranks, consistent B and N) and
times the call; subclasses override only `activate_impl`, `infer_impl` and
`deactivate_impl`. Nothing heavy happens before `activate()`.

Two graphs are run through runners:

- `deform`: {"tokens": [B, 4, 64], "queries": [N, 64] (optional: the bundle's)} ->
  {"dmu": [B,N,3], "drot": [B,N,4], "dscale": [B,N,3], "dsh": [B,N,3K], "dopacity": [B,N,1]};
- `audio`:  {"audio_window": [B, 15, 2, D]} -> {"audio_token": [B, 64]}  (D = the bundle's audio_dim, 80 for mel).

Arrays are numpy on CPU runners and CuPy (device buffers) on GPU runners; a GPU
runner also accepts numpy inputs and copies them to the device. A GPU runner runs on
its own CUDA stream: `infer` orders that stream after the caller's current CuPy stream
(the inputs are written) and the caller's stream after it (the outputs are read), with
events, so the caller uses the outputs on its stream with no synchronisation.

Runners are given what they run (Polygraphy's loader/runner split): a loader
(gt_runtime.engines.loaders) that `activate()` calls to create the session.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from gt_runtime.contract import AUDIO_INPUTS, AUDIO_OUTPUTS, DEFORM_INPUTS, DEFORM_OUTPUTS  # noqa: F401 (re-exported)


def is_float32(a) -> bool:
    return getattr(a, "dtype", None) is not None and np.dtype(a.dtype) == np.float32


class Runner:
    """Base runner: `with runner: out = runner.infer(feed)`."""

    #: input name -> rank; optional inputs are listed in `optional_inputs`
    input_ranks: dict = {}
    optional_inputs: tuple = ()
    output_names: tuple = ()
    #: "cpu" or "cuda": where infer's outputs live
    device = "cpu"
    #: D of "audio_window" [B, 15, 2, D] (the bundle's audio_dim); None: not checked
    audio_dim = None

    def __init__(self, name: str):
        self.name = name
        self.is_active = False
        self.last_inference_time = None   # seconds of the last infer (synchronised)
        self.total_time = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()

    def activate_impl(self) -> None:  # pragma: no cover - trivial default
        pass

    def deactivate_impl(self) -> None:  # pragma: no cover - trivial default
        pass

    # -- inference ---------------------------------------------------------------------
    def check_feed(self, feed: dict) -> None:
        """Raise ValueError 'Input tensor: x | what was received | expected' on a bad feed."""
        for name in feed:
            if name not in self.input_ranks:
                raise ValueError(f"{self.name}: input tensor {name!r} | not an input of this runner | expected one of {sorted(self.input_ranks)}")
        for name, rank in self.input_ranks.items():
            if name not in feed:
                if name in self.optional_inputs:
                    continue
                raise ValueError(f"{self.name}: input tensor {name!r} | missing | expected inputs {sorted(self.input_ranks)}")
            a = feed[name]
            if not is_float32(a):
                raise ValueError(f"{self.name}: input tensor {name!r} | received dtype {getattr(a, 'dtype', type(a))} | expected float32")
            if a.ndim != rank:
                raise ValueError(f"{self.name}: input tensor {name!r} | received shape {tuple(a.shape)} | expected rank {rank}")
        if "tokens" in feed and tuple(feed["tokens"].shape[1:]) != (4, 64):
            raise ValueError(f"{self.name}: input tensor 'tokens' | received shape {tuple(feed['tokens'].shape)} | expected [B, 4, 64]")
        if "queries" in feed and feed["queries"].shape[1] != 64:
            raise ValueError(f"{self.name}: input tensor 'queries' | received shape {tuple(feed['queries'].shape)} | expected [N, 64]")
        if "audio_window" in feed:
            shape, d = tuple(feed["audio_window"].shape), self.audio_dim
            if shape[1:3] != (15, 2) or (d is not None and shape[3] != d):
                raise ValueError(f"{self.name}: input tensor 'audio_window' | received shape {shape} | expected [B, 15, 2, {d or 'D'}]"
                                 " (the bundle's audio_dim)")

    def infer(self, feed: dict) -> dict:
        """feed name -> array => output name -> array (on `self.device`); times the call."""
        if not self.is_active:
            raise RuntimeError(f"{self.name}: infer() before activate() | use `with runner:` or call activate()")
        self.check_feed(feed)
        t0 = time.perf_counter()
        out = self.infer_impl(feed)
        self.synchronize()
        dt = time.perf_counter() - t0
        self.last_inference_time = dt
        self.total_time += dt
        self.calls += 1
        return out

    def infer_impl(self, feed: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for the device (GPU runners); a no-op on CPU."""


@dataclass
class EngineSet:
    """What a player runs: an audio runner and a deform runner, plus how to describe them."""

    name: str            # e.g. "onnxruntime-cpu-int8", "array-numpy", "tensorrt-fp16"
    device: str          # "cpu" or "cuda"
    audio: Runner
    deform: Runner
    xp: object = np      # array namespace of the outputs

    def activate(self) -> "EngineSet":
        self.audio.activate()
        self.deform.activate()
        return self

    def deactivate(self) -> None:
        self.audio.deactivate()
        self.deform.deactivate()

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()
