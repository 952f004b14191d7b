"""The `array` engine: the deformation network and audio encoder on numpy or CuPy arrays.

With numpy it runs on the CPU (float32, `array_deform.DeformNet`: the algebraic savings);
with CuPy it runs on the GPU (cuBLAS) for machines that have neither TensorRT nor ONNX
Runtime's CUDA provider. `fast=False` runs the plain reference
(`gt_runtime.model.reference.deform_plain`) instead; the audio encoder is the reference's.
"""
from __future__ import annotations

import numpy as np

from gt_runtime.contract import AUDIO_INPUTS, AUDIO_OUTPUTS, DEFORM_INPUTS, DEFORM_OUTPUTS
from gt_runtime.engines.array_deform import DeformNet
from gt_runtime.engines.base import Runner
from gt_runtime.model import reference


def get_xp(device: str):
    """"cpu" -> numpy, "cuda" -> cupy (lazy; one-line error if missing)."""
    if device == "cpu":
        return np
    from gt_runtime.errors import require

    return require("cupy", "engine array-cupy")


class ArrayDeformRunner(Runner):
    """deform graph on the array namespace of `device`."""

    input_ranks = DEFORM_INPUTS
    optional_inputs = ("queries",)
    output_names = DEFORM_OUTPUTS

    def __init__(self, weights, queries, num_layers: int, sh_degree: int, device: str = "cpu", fast: bool = True,
                 threads: int | None = None):
        super().__init__(f"array-{'numpy' if device == 'cpu' else 'cupy'}{'' if fast else '-plain'}")
        self.threads = threads  # numpy BLAS threads (process-wide; None leaves them alone)
        self.device = device
        self._weights, self._queries = weights, queries
        self.num_layers, self.sh_degree, self.fast = num_layers, sh_degree, fast
        self.net = None

    def activate_impl(self):
        self.xp = get_xp(self.device)
        if self.device == "cpu" and self.threads:
            from gt_runtime.util.cpu import set_blas_threads

            set_blas_threads(self.threads)
        self.net = DeformNet(self._weights, self._queries, self.num_layers, self.sh_degree, self.xp)
        self._w = None  # the plain path's weights, made on first use (on a GPU a second copy of the network)

    def _plain_weights(self):
        if self._w is None:
            self._w = {k: self.xp.asarray(v, dtype=self.xp.float32) for k, v in self._weights.items()
                       if k.startswith("deform.")}
        return self._w

    def infer_impl(self, feed):
        xp = self.xp
        tokens = xp.asarray(feed["tokens"])
        q = feed.get("queries")
        if q is not None and q is not self._queries:
            q = xp.asarray(q)
            # other queries than the bound ones: the plain network (DeformNet is prepared for one set)
            if q.shape != self.net.queries.shape or not bool((q == self.net.queries).all()):
                return reference.deform_plain(tokens, q, self._plain_weights(), self.num_layers, self.sh_degree, xp)
        if self.fast:
            return self.net(tokens)
        return reference.deform_plain(tokens, self.net.queries, self._plain_weights(), self.num_layers, self.sh_degree, xp)

    def synchronize(self):
        if self.device != "cpu":
            self.xp.cuda.get_current_stream().synchronize()


class ArrayAudioRunner(Runner):
    """audio_encoder graph on the array namespace of `device`."""

    input_ranks = AUDIO_INPUTS
    output_names = AUDIO_OUTPUTS

    def __init__(self, weights, device: str = "cpu"):
        super().__init__(f"array-audio-{'numpy' if device == 'cpu' else 'cupy'}")
        self.device = device
        self._weights = weights
        self.audio_dim = int(weights["audio.net.conv.0.weight"].shape[1])

    def activate_impl(self):
        self.xp = get_xp(self.device)
        self.enc = reference.TokenEncoder(self._weights, self.xp)

    def infer_impl(self, feed):
        return {"audio_token": self.enc.audio(self.xp.asarray(feed["audio_window"]))}

    def synchronize(self):
        if self.device != "cpu":
            self.xp.cuda.get_current_stream().synchronize()
