"""The `cpu-fused` engine: the whole deformation network in one C++ kernel (gt_runtime._deform_cpu).

The extension (plugins/deform) runs tiles of 32 Gaussians through both attention layers and
the five heads with the tile's activations in L1, OpenMP over tiles, all B frames of a call
per loaded tile. Per frame it first reduces the 4 tokens to small matrices (scores are a
64-dot per head and token, the attention output is A [N, 8] @ Z [8, 64]). Weights are packed
once, on `activate()`: FP32, or INT8 with per-channel scales (the ffn Linears, the heads' fused
fc1 and the sh head's fc2; rows quantised on the fly; attention and the 1-4-output heads stay
FP32), run by AMX (INT8 GEMMs on tiles, where Linux grants the tile state), AVX-512 VNNI, AVX2 or
generic kernels picked by CPUID (`GT_DEFORM_ISA=avx512|avx2|generic` caps the choice, or pass `isa=`).

Outputs are the offsets every deform runner returns; `activated()` also writes the
rasterizer's inputs (canonical + offsets, exp / sigmoid applied) straight from the kernel.
"""
from __future__ import annotations


import numpy as np

from gt_runtime.contract import DEFORM_INPUTS, DEFORM_OUTPUTS, sh_bases
from gt_runtime.engines.base import Runner
from gt_runtime.util.native import NativeExtension

_EXT = NativeExtension("_deform_cpu", "the fused C++ deformation kernel of --engine cpu-fused", "or use --engine onnxruntime")
load = _EXT.load
available = _EXT.available


def isas() -> list[str]:
    """Kernel variants this build has and this CPU runs, best first (e.g. ['avx2', 'generic'])."""
    return list(load().isas())


def isa() -> str:
    """The variant a call without `isa=` uses now (the best one, capped by GT_DEFORM_ISA)."""
    return str(load().isa())


class FusedDeformRunner(Runner):
    """deform graph by the fused C++ kernel: tokens [B, 4, 64] -> offsets (DEFORM_OUTPUTS)."""

    input_ranks = DEFORM_INPUTS
    optional_inputs = ("queries",)
    output_names = DEFORM_OUTPUTS

    def __init__(self, weights, queries, num_layers: int, sh_degree: int, int8: bool = True,
                 threads: int | None = None, isa: str = ""):
        super().__init__(f"cpu-fused-{'int8' if int8 else 'fp32'}")
        self._weights = {k: v for k, v in weights.items() if k.startswith("deform.")}
        self._queries = queries
        self.num_layers, self.sh_degree, self.int8 = int(num_layers), int(sh_degree), bool(int8)
        self.threads = int(threads or 0)   # OpenMP threads per call; 0: OpenMP's default
        self.isa = isa                     # "" = best (GT_DEFORM_ISA caps it)
        self.model = None
        self._other = (None, None)         # (queries, model) of the last feed with other queries

    def _build(self, queries):
        q = np.ascontiguousarray(queries, dtype=np.float32)
        return load().Model(self._weights, q, self.num_layers, self.sh_degree, self.int8, self.threads)

    def activate_impl(self):
        self.model = self._build(self._queries)
        self.variant = self.isa or load().isa()

    def deactivate_impl(self):
        self.model = None
        self._other = (None, None)

    def _model_for(self, feed):
        q = feed.get("queries")
        if q is None or q is self._queries:
            return self.model
        if self._other[0] is not q:  # other queries: pack a model for them (kept for the next call)
            self._other = (q, self._build(q))
        return self._other[1]

    def infer_impl(self, feed):
        tokens = np.ascontiguousarray(feed["tokens"], dtype=np.float32)
        out = self._model_for(feed).offsets(tokens, self.isa)
        return dict(zip(DEFORM_OUTPUTS, out))

    def activated(self, tokens, canon: dict, out: dict | None = None) -> dict:
        """tokens [B, 4, 64], canon (the bundle's raw means [N,3], quats [N,4], log_scales [N,3],
        opacity_logits [N], sh [N,K,3]) -> the rasterizer's inputs for B frames: means [B,N,3],
        quats [B,N,4], scales [B,N,3], opacities [B,N], sh [B,N,K,3] (gt_runtime.model.reference.
        apply_offsets of this runner's offsets). `out`: arrays of those shapes to write into (reused
        between calls); missing ones are allocated.
        """
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activated() before activate() | use `with runner:` or call activate()")
        tokens = np.ascontiguousarray(tokens, dtype=np.float32)
        b, n, k = tokens.shape[0], self.model.n, sh_bases(self.sh_degree)
        shapes = {"means": (b, n, 3), "quats": (b, n, 4), "scales": (b, n, 3), "opacities": (b, n), "sh": (b, n, k, 3)}
        out = dict(out or {})
        for key, shape in shapes.items():
            if key not in out or out[key].shape != shape:
                out[key] = np.empty(shape, np.float32)
        c = {key: np.ascontiguousarray(canon[key], dtype=np.float32)
             for key in ("means", "quats", "log_scales", "opacity_logits", "sh")}
        self.model.activated(tokens, c["means"], c["quats"], c["log_scales"], c["opacity_logits"], c["sh"],
                             out["means"], out["quats"], out["scales"], out["opacities"], out["sh"], self.isa)
        return out

