"""The `cuda-fused` engine: the whole deformation network in two CUDA kernels (plugins/deform/deform_cuda.cu).

CuPy compiles the kernels at run time with NVRTC (as the CUDA rasterizer, gt_runtime.raster._cuda).
Per call, `gt_deform_tokens` reduces each frame's 4 tokens to small matrices (a score is a 64-dot,
the attention output is A [8] @ Z [8, 64]; layer 0's query projection folds into them too), then
`gt_deform_fused` runs one thread per (frame, Gaussian) through both layers and the five heads,
FP32 with FMA, the weights streamed through shared memory. Weights are packed once, on `activate()`,
into one device buffer (`pack_weights`, the layout is written at the top of the .cu file).

Outputs stay on the device: the offsets every deform runner returns, or with `activated()` the
CUDA rasterizer's inputs (canonical + offsets, exp on the scales, sigmoid on the opacities) written
by the kernel into preallocated CuPy arrays. The runner has its own non-blocking stream, ordered
after the caller's current stream and before it by events (as the TensorRT runner).

CuPy is imported inside functions: importing this module never needs it.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from gt_runtime.contract import DEFORM_INPUTS, DEFORM_OUTPUTS, HEAD_HIDDEN, HEAD_NAMES, HIDDEN, NUM_TOKENS, head_dims, sh_bases
from gt_runtime.engines.base import Runner
from gt_runtime.errors import InputError

CUDA_SOURCE = "deform_cuda.cu"
KERNEL_NAMES = ("gt_deform_tokens", "gt_deform_fused")
THREADS = 128       # gt_deform_fused's block (GT_THREADS in the .cu)
MAX_LAYERS = 4      # GT_MAX_LAYERS
_HINT = "install a CuPy that matches your CUDA driver, with NVRTC: pip install 'gt[gpu]', or use --engine array-cupy / cpu-fused"


def _define(name: str) -> int:
    """An integer #define of the .cu, evaluated (the layout constants are written once, there)."""
    defs = dict(re.findall(r"^#define (GT_\w+) ([^/\n]+)", load_source(), re.MULTILINE))
    expr = defs[name]
    while re.search(r"GT_\w+", expr):
        expr = re.sub(r"GT_\w+", lambda m: f"({defs[m.group(0)]})", expr)
    if not re.fullmatch(r"[\d\s()+*/-]+", expr):
        raise ValueError(f"{CUDA_SOURCE}: #define {name} is not an integer expression: {defs[name]}")
    return int(eval(expr, {"__builtins__": {}}))  # digits and + - * / ( ) only, checked above


def source_path() -> Path:
    """deform_cuda.cu: the package copy (wheels), else the source tree."""
    here = Path(__file__).resolve().parent
    for p in (here / "csrc" / CUDA_SOURCE, here.parents[1] / "plugins" / "deform" / CUDA_SOURCE):
        if p.is_file():
            return p
    raise FileNotFoundError(f"{CUDA_SOURCE} not found in {here / 'csrc'} nor in plugins/deform | reinstall gt (pip install .)")


def load_source() -> str:
    return source_path().read_text(encoding="utf-8")


# -- weights ------------------------------------------------------------------------------------
def _records(w1, b1, w2):
    """Linear(64, U) then Linear(U, M) -> U unit records [w1 row (64) | w2 column (M) | b1] flattened."""
    return np.concatenate([w1, w2.T, b1[:, None]], axis=1).ravel()


def pack_weights(weights, num_layers: int, sh_degree: int) -> np.ndarray:
    """The `deform.*` weights (torch layout) -> the kernel's one float32 buffer (layout: deform_cuda.cu's header)."""
    w = {k: np.asarray(v, np.float32) for k, v in weights.items() if k.startswith("deform.")}
    parts = []
    for layer in range(num_layers):
        p = f"deform.layers.{layer}"
        parts += [w[f"{p}.{m}.weight"].ravel() for m in "qkvo"]
        parts += [w[f"{p}.{m}.bias"] for m in "qkvo"]
        parts += [w[f"{p}.{m}"] for m in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")]
        parts += [_records(w[f"{p}.ffn1.weight"], w[f"{p}.ffn1.bias"], w[f"{p}.ffn2.weight"]), w[f"{p}.ffn2.bias"]]
    for name, m in zip(HEAD_NAMES, head_dims(sh_degree).values()):
        p = f"deform.heads.{name}"
        if w[f"{p}.fc2.weight"].shape != (m, HEAD_HIDDEN):
            raise InputError(f"{p}.fc2.weight: shape {list(w[f'{p}.fc2.weight'].shape)} | expected [{m}, {HEAD_HIDDEN}] "
                             f"for sh_degree {sh_degree}")
        parts += [_records(w[f"{p}.fc1.weight"], w[f"{p}.fc1.bias"], w[f"{p}.fc2.weight"]), w[f"{p}.fc2.bias"]]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


# -- module -------------------------------------------------------------------------------------
def _require_cupy():
    from gt_runtime.raster import _cuda

    try:
        import cupy
    except Exception as exc:
        raise _cuda.CudaUnavailableError(f"--engine cuda-fused: CuPy is not importable ({exc}) | {_HINT}") from None
    if not _cuda.cuda_available():
        raise _cuda.CudaUnavailableError(f"--engine cuda-fused: CuPy found no usable CUDA device | {_HINT}")
    return cupy


_MODULES: dict = {}
_LOCK = threading.Lock()


def get_module():
    """{kernel name: RawKernel} for the current device, compiled once per process (CuPy also caches on disk)."""
    from gt_runtime.raster._cuda import CudaCompileError, CudaUnavailableError

    cupy = _require_cupy()
    key = cupy.cuda.Device().id
    with _LOCK:
        mod = _MODULES.get(key)
        if mod is None:
            try:
                raw = cupy.RawModule(code=load_source(), options=("--std=c++17",), backend="nvrtc")
                mod = {name: raw.get_function(name) for name in KERNEL_NAMES}
            except cupy.cuda.compiler.CompileException as exc:
                log = exc.get_message() if hasattr(exc, "get_message") else str(exc)
                raise CudaCompileError(f"{CUDA_SOURCE}: NVRTC compilation failed | compiler log:\n{log}") from None
            except (RuntimeError, OSError) as exc:
                first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
                raise CudaUnavailableError(f"{CUDA_SOURCE}: CuPy cannot compile kernels ({first}) | {_HINT}") from None
            _MODULES[key] = mod
    return mod


# -- runner -------------------------------------------------------------------------------------
class FusedCudaDeformRunner(Runner):
    """deform graph by the fused CUDA kernels: tokens [B, 4, 64] (CuPy or numpy) -> offsets (DEFORM_OUTPUTS, CuPy)."""

    input_ranks = DEFORM_INPUTS
    optional_inputs = ("queries",)
    output_names = DEFORM_OUTPUTS
    device = "cuda"

    def __init__(self, weights, queries, num_layers: int, sh_degree: int):
        super().__init__("cuda-fused-fp32")
        if not 1 <= int(num_layers) <= MAX_LAYERS:
            raise InputError(f"num_layers {num_layers}: the cuda-fused kernel runs 1..{MAX_LAYERS} layers | use --engine array-cupy")
        self._weights = {k: v for k, v in weights.items() if k.startswith("deform.")}
        self._queries = queries
        self.num_layers, self.sh_degree = int(num_layers), int(sh_degree)
        self.k_sh = sh_bases(self.sh_degree)
        self.tm_floats = _define("GT_TM_FLOATS")

    def activate_impl(self):
        cp = self.cp = _require_cupy()
        self.kernels = get_module()
        self.stream = cp.cuda.Stream(non_blocking=True)
        packed = pack_weights(self._weights, self.num_layers, self.sh_degree)
        want = self.num_layers * _define("GT_LAYER_FLOATS") + sum(HEAD_HIDDEN * (HIDDEN + m + 1) + m
                                                                  for m in head_dims(self.sh_degree).values())
        assert packed.size == want, (packed.size, want)  # pack_weights and the .cu agree on the layout
        with self.stream:  # the one upload of the network and the queries
            self.weights = cp.asarray(packed)
            self.queries = cp.ascontiguousarray(cp.asarray(self._queries, dtype=cp.float32))
            self._dummy = cp.zeros(4, dtype=cp.float32)
        self.n = int(self.queries.shape[0])

    def deactivate_impl(self):
        self.weights = self.queries = self._dummy = None

    def synchronize(self):
        self.stream.synchronize()

    def _run(self, tokens, queries, activate: int, canon, outs) -> None:
        """Launch both kernels on the runner's stream, ordered after and before the caller's stream."""
        cp, s, k = self.cp, self.stream, self.kernels
        i32 = np.int32
        caller = cp.cuda.get_current_stream()
        if caller.ptr != s.ptr:
            s.wait_event(caller.record())  # the inputs the caller queued come first
        with s:
            tokens = cp.ascontiguousarray(cp.asarray(tokens, dtype=cp.float32))
            b, n, layers = int(tokens.shape[0]), int(queries.shape[0]), self.num_layers
            if b and n:
                tm = cp.empty((b, layers, self.tm_floats), dtype=cp.float32)
                k["gt_deform_tokens"]((b, layers, 1), (HIDDEN, 1, 1), (i32(b), i32(layers), tokens, self.weights, tm), stream=s)
                k["gt_deform_fused"](
                    ((n + THREADS - 1) // THREADS, b, 1), (THREADS, 1, 1),
                    (i32(b), i32(n), i32(layers), i32(self.k_sh), queries, self.weights, tm, i32(activate), *canon, *outs),
                    stream=s)
        if caller.ptr != s.ptr:
            caller.wait_event(s.record())  # the caller's later work sees the outputs

    def _queries_for(self, feed):
        q = feed.get("queries")
        if q is None or q is self._queries or q is self.queries:
            return self.queries
        with self.stream:
            return self.cp.ascontiguousarray(self.cp.asarray(q, dtype=self.cp.float32))

    def infer_impl(self, feed):
        cp = self.cp
        tokens = feed["tokens"]
        queries = self._queries_for(feed)
        b, n = int(tokens.shape[0]), int(queries.shape[0])
        with self.stream:  # fresh outputs per call: a caller may still hold the last ones
            outs = [cp.empty((b, n, m), dtype=cp.float32) for m in head_dims(self.sh_degree).values()]
        self._run(tokens, queries, 0, [self._dummy] * 5, outs)
        return dict(zip(DEFORM_OUTPUTS, outs))

    def activated(self, tokens, canon: dict, out: dict | None = None) -> dict:
        """tokens [B, 4, 64], canon (the bundle's raw means [N,3], quats [N,4], log_scales [N,3], opacity_logits [N],
        sh [N,K,3], CuPy) -> the CUDA rasterizer's inputs for B frames, CuPy: means [B,N,3], quats [B,N,4],
        scales [B,N,3], opacities [B,N], sh [B,N,K,3] (reference.apply_offsets of this runner's offsets), written
        by the kernel. `out`: CuPy arrays of those shapes to write into (reused between calls); missing ones are made.
        """
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activated() before activate() | use `with runner:` or call activate()")
        cp, b, n, k = self.cp, int(tokens.shape[0]), self.n, self.k_sh
        shapes = {"means": (b, n, 3), "quats": (b, n, 4), "scales": (b, n, 3), "sh": (b, n, k, 3), "opacities": (b, n)}
        out = dict(out or {})
        with self.stream:
            for key, shape in shapes.items():
                a = out.get(key)
                if a is None or tuple(a.shape) != shape or a.dtype != cp.float32 or not a.flags.c_contiguous:
                    out[key] = cp.empty(shape, dtype=cp.float32)
            c = []
            for key, shape in (("means", (n, 3)), ("quats", (n, 4)), ("log_scales", (n, 3)), ("sh", (n, k, 3)),
                               ("opacity_logits", (n,))):
                a = cp.ascontiguousarray(cp.asarray(canon[key], dtype=cp.float32))
                if tuple(a.shape) != shape:
                    raise InputError(f"{self.name}.activated: canon[{key!r}] shape {list(a.shape)} | expected {list(shape)}")
                c.append(a)
        self._run(tokens, self.queries, 1, c, [out[key] for key in shapes])
        return out


assert NUM_TOKENS == 4 and HIDDEN == 64 and HEAD_HIDDEN == 128  # what deform_cuda.cu is written for
