"""`--engine auto` by measurement: time the engines that pass parity on the bundle's first frames, keep the fastest.

A fixed order (`gt_runtime.engines.select.resolve_engine_name`, what GT_AUTOTUNE=0 takes) is wrong
on some CPUs (ORT FP32 beats the INT8 graph on a Xeon with AMX), so `auto` measures, once per machine
and bundle:

1. candidates: the concrete engines this machine can run for this bundle (`candidates`);
2. parity, on `PARITY_FRAMES` frames of the bundle's own inputs (audio windows of the bundled
   speech through the bundle's front end, eye / view tokens of its first track frames) against
   the numpy reference (`array`): FP32 engines per output within `FP32_ATOL + FP32_RTOL * |ref|`;
   INT8 / FP16 engines by the render PSNR of those frames against the reference's renders
   (C++ rasterizer) >= `MIN_RENDER_PSNR` dB (gt export's gates), or, without the C++
   rasterizer, offsets within `REDUCED_ATOL` (the tolerance tests/runtime/test_engines.py uses);
3. timing of the audio encoder + token stack + deform of one batch (the player's B): the parity
   call is the warm-up, then the best of `REPS` calls (the machine may be loaded; the best is the
   least noisy); a candidate whose parity call is already `PRUNE_FACTOR` x slower per frame than
   the best so far, and still so on a second call, is not timed further (the second call's time is
   reported, marked "pruned"); nor is `array` when the reference's one-thread time divided by the
   engine threads is above the best (the reference is that engine: it could not win);
   `onnxruntime-fp32` is timed on the bundle's FP32 graph while the `onnx` package is not yet
   imported (the CPU-tuned graph it plays is built with `onnx`, whose import alone can take
   seconds; that graph is the faster of the two, so its time is an upper bound);
4. the fastest passing engine is kept and the decision cached in `$XDG_CACHE_HOME/gt/autotune.json`
   (`cache_path`), keyed by the bundle's file hashes, the CPU (model, ISA flags, usable cores),
   the GPU, the gt version, the engine threads and batch, and the candidate set (`cache_key`).

`GT_AUTOTUNE` (gt_runtime.contract.AUTOTUNE): 1 (default) measure once and reuse the cache;
refresh: measure again and overwrite the entry; 0: no measurement, the fixed order.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gt_runtime.contract import AUTOTUNE, OFFSET_NAMES, SAMPLES_PER_FRAME, WINDOW_AFTER, WINDOW_BEFORE
from gt_runtime.engines import select
from gt_runtime.engines.select import gpu_available, select_engine

CACHE_SCHEMA = "gt-autotune/1"
PARITY_FRAMES = 2
REPS = 3
FP32_ATOL, FP32_RTOL = 1e-4, 1e-4
MIN_RENDER_PSNR = {"int8": 38.0, "fp16": 40.0}   # gt export's int8_min_psnr / fp16_min_psnr
REDUCED_ATOL = 0.05
PRUNE_FACTOR = 3.0
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "neon", "asimd")


@dataclass
class Choice:
    """What `auto` chose and why: ms per frame of each engine that passed parity, the reason of each that did not."""

    name: str
    times_ms: dict = field(default_factory=dict)    # engine -> ms per frame (audio encoder + deform)
    rejected: dict = field(default_factory=dict)    # engine -> why it was not timed (parity, error)
    pruned: list = field(default_factory=list)      # engines timed by their parity call only (far slower)
    cached: bool = False
    measure_s: float = 0.0                          # seconds the measurement took (0 when cached)

    def line(self) -> str:
        """One line: the choice, then every engine's time (and the rejected ones)."""
        times = ", ".join(f"{k} {v:.2f}{' (pruned)' if k in self.pruned else ''}"
                          for k, v in sorted(self.times_ms.items(), key=lambda kv: kv[1]))
        rej = "".join(f"; {k}: {v}" for k, v in self.rejected.items())
        how = "cached" if self.cached else f"measured in {self.measure_s:.2f} s"
        return f"auto chose {self.name} ({how}; ms/frame: {times}{rej})"


def mode() -> str:
    """GT_AUTOTUNE as "on", "refresh" or "off"."""
    v = AUTOTUNE.get().strip().lower()
    if v == "refresh":
        return "refresh"
    return "on" if AUTOTUNE.on() else "off"


# -- candidates ------------------------------------------------------------------------
def candidates(bundle, gpu: bool) -> list[str]:
    """The concrete engines this machine runs for this bundle, the likely fastest first (so that pruning saves most)."""

    if gpu:
        from gt_runtime.engines import ort_engine

        names = []
        if select._has("tensorrt"):
            names.append(select.resolve_engine_name(bundle, "tensorrt", gpu=True))
        if select._has("onnxruntime") and ort_engine.cuda_available():
            names.append("onnxruntime-cuda")
        names += [n for n in ("cuda-fused-int8", "cuda-fused-fp32") if n in select.ENGINE_NAMES]
        return names + ["array-cupy"]
    from gt_runtime.engines import fused_cpu

    names = ["cpu-fused-int8", "cpu-fused-fp32"] if fused_cpu.available() else []
    if select._has("onnxruntime"):
        names += [f"onnxruntime-{p}" for p in ("int8", "fp32", "fp16") if p in bundle.precisions]
    return names + ["array"]


def precision(engine_name: str) -> str:
    """"int8" | "fp16" | "fp32" of a concrete engine name (EngineSet.name)."""
    for p in ("int8", "fp16"):
        if p in engine_name:
            return p
    return "fp32"


# -- the cache -------------------------------------------------------------------------
def cache_path() -> Path:
    """$XDG_CACHE_HOME/gt/autotune.json (default ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gt" / "autotune.json"


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [fl for fl in _ISA_FLAGS if fl in have]
    except OSError:
        pass
    return []


def machine_key(gpu: bool) -> dict:
    """CPU model, ISA flags, usable cores (and the GPU's name when the engines run there)."""
    from gt_runtime.util.cpu import cpu_name, usable_cores

    key = {"cpu": cpu_name(), "isa": _cpu_flags(), "cores": usable_cores(), "gpu": ""}
    if gpu:
        try:
            import cupy

            name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
            key["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:
            key["gpu"] = "cuda"
    return key


def cache_key(bundle, names: list[str], gpu: bool, threads: int | None, batch: int) -> tuple[str, dict]:
    """-> (sha256 key, what it hashes): the bundle's model files, the machine, gt's version, threads, batch, candidates."""
    from gt_runtime import __version__

    files = {k: v for k, v in sorted(bundle.manifest["files"].items()) if not k.startswith("scene/")}
    parts = {"bundle": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(),
             "machine": machine_key(gpu), "gt": __version__, "threads": threads, "batch": int(batch),
             "candidates": sorted(names)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), parts


def read_cache(path: Path) -> dict:
    """The cache's entries {key: entry}; {} (with a warning) when the file is unreadable or not ours."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA or not isinstance(data.get("entries"), dict):
            raise ValueError(f"not a {CACHE_SCHEMA} file")
        return data["entries"]
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: autotune cache ignored ({str(exc).splitlines()[0]}) | it is rewritten after this "
                      "measurement; delete it if this repeats", RuntimeWarning, stacklevel=2)
        return {}


def write_cache(path: Path, key: str, entry: dict) -> None:
    """Add or replace one entry (atomic rename; a read-only cache dir only costs the next run a measurement)."""
    entries = read_cache(path) if path.is_file() else {}
    entries[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"schema": CACHE_SCHEMA, "entries": entries}, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        print(f"gt: warning: {path}: cannot write the autotune cache ({exc}) | --engine auto measures again next time",
              file=sys.stderr)


# -- the bundle's inputs -----------------------------------------------------------------
@dataclass
class ProbeInputs:
    """The first F frames of the bundle: windows [F, 15, 2, D], eye / view tokens [F, 64], null [64], frames [F]."""

    frames: np.ndarray
    windows: np.ndarray
    eye: np.ndarray
    view: np.ndarray
    null: np.ndarray

    def tokens(self, audio_token, xp=np) -> object:
        """audio_token [B, 64] of frames[:B] -> tokens [B, 4, 64]."""
        from gt_runtime.model.reference import stack_tokens

        b = audio_token.shape[0]
        return xp.ascontiguousarray(stack_tokens(*(xp.asarray(a, dtype=xp.float32) for a in
                                                   (audio_token, self.eye[:b], self.view[:b], self.null)), xp))


def probe_inputs(bundle, n_frames: int, scene=None) -> ProbeInputs:
    """The bundled "human" speech through the bundle's front end, and its first track frames' tokens."""
    from gt_runtime.assets import speech_path
    from gt_runtime.audio import load_audio
    from gt_runtime.audio.frontend import for_bundle
    from gt_runtime.model.reference import TokenEncoder
    from gt_runtime.playback.scene import Scene

    scene = scene or Scene(bundle)
    pcm, _ = load_audio(speech_path("human"))
    pcm = pcm[:(n_frames + WINDOW_AFTER + 1) * SAMPLES_PER_FRAME]
    total = -(-pcm.size // SAMPLES_PER_FRAME)
    st = for_bundle(bundle).activate().stream()
    feats = np.concatenate([st.push(pcm), st.finish(total)]).astype(np.float32)
    frames = np.arange(n_frames)
    idx = np.clip(frames[:, None] + np.arange(-WINDOW_BEFORE, WINDOW_AFTER + 1)[None, :], 0, len(feats) - 1)
    ti = scene.track_index(frames)
    enc = TokenEncoder(bundle.weights, np)
    return ProbeInputs(frames, np.ascontiguousarray(feats[idx]), enc.eye(scene.blink[ti]).astype(np.float32),
                       enc.view(scene.c2w[ti]).astype(np.float32), np.asarray(bundle.weights["null"], np.float32))


def run_stage(es, inp: ProbeInputs, b: int) -> dict:
    """The player's stage A on frames[:b]: audio encoder -> token stack -> deform -> offsets."""
    atok = es.audio.infer({"audio_window": inp.windows[:b]})["audio_token"]
    return es.deform.infer({"tokens": inp.tokens(atok, es.xp)})


# -- parity ---------------------------------------------------------------------------------
def _render(bundle, scene, frames, off: dict) -> np.ndarray:
    """Offsets of F frames -> uint8 [F, H, W, 3] through the C++ rasterizer, as the player renders them."""
    from gt_runtime import raster
    from gt_runtime.engines.comparator import to_numpy
    from gt_runtime.model.reference import CANONICAL_KEYS, apply_offsets
    from gt_runtime.playback.pipeline import to_uint8

    canon = {k: bundle.gaussians[k] for k in CANONICAL_KEYS}
    out = np.empty((len(frames), bundle.height, bundle.width, 3), np.uint8)
    for b, t in enumerate(frames):
        ti = int(scene.track_index(int(t)))
        g = apply_offsets(canon, {k: to_numpy(off[k][b]).astype(np.float32) for k in OFFSET_NAMES}, np)
        img = raster.rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["sh"], scene.viewmats[ti], bundle.K,
                               bundle.width, bundle.height, background=scene.background_of_track(ti), backend="cpu")
        to_uint8(img, out[b])
    return out


class Reference:
    """The numpy reference's offsets (and, lazily, renders) of the probe frames."""

    def __init__(self, bundle, inp: ProbeInputs, scene, ref_engines=None):

        self.bundle, self.inp, self.scene = bundle, inp, scene
        # one thread: OpenBLAS's pool is slow to share a loaded machine, and the reference is not timed
        with (ref_engines or select_engine(bundle, "array", gpu=False, threads=1)) as es:
            t0 = time.perf_counter()
            self.offsets = run_stage(es, inp, len(inp.frames))
            self.seconds = (time.perf_counter() - t0) / len(inp.frames)   # per frame, one thread
        self._renders = None

    def renders(self) -> np.ndarray:
        if self._renders is None:
            self._renders = _render(self.bundle, self.scene, self.inp.frames, self.offsets)
        return self._renders

    def check(self, name: str, off: dict) -> str:
        """Offsets of a candidate -> "" when it passes, else the reason (one short phrase)."""
        from gt_runtime.engines.comparator import compare_outputs, psnr
        from gt_runtime.playback.pipeline import cpu_raster_available

        prec = precision(name)
        if prec == "fp32":
            cmp = compare_outputs(self.offsets, off, FP32_ATOL, FP32_RTOL, "array", name)
            return "" if cmp.passed else f"failed parity (max abs {cmp.max_abs:.2g} > {FP32_ATOL:g} + {FP32_RTOL:g}|ref|)"
        if cpu_raster_available():
            ref = self.renders()
            img = _render(self.bundle, self.scene, self.inp.frames, off)
            worst = min(psnr(ref[i], img[i], 255.0) for i in range(len(img)))
            gate = MIN_RENDER_PSNR[prec]
            return "" if worst >= gate else f"failed parity (render PSNR {worst:.1f} dB < {gate:g} dB)"
        cmp = compare_outputs(self.offsets, off, REDUCED_ATOL, 0.0, "array", name)
        return "" if cmp.passed else f"failed parity (max abs {cmp.max_abs:.2g} > {REDUCED_ATOL:g})"


# -- timing ---------------------------------------------------------------------------------
def time_engine(es, inp: ProbeInputs, batch: int) -> float:
    """Seconds per frame of the stage on `batch` frames: the best of REPS calls (warm the engine up first)."""
    best = float("inf")
    for _ in range(REPS):
        t0 = time.perf_counter()
        run_stage(es, inp, batch)
        es.deform.synchronize()
        best = min(best, (time.perf_counter() - t0) / batch)
    return best


def measure(bundle, names: list[str], build, batch: int = 1, timer=None, threads: int | None = None) -> tuple[Choice, object]:
    """Check and time each candidate -> (Choice, the winner's activated EngineSet).

    build(name) -> EngineSet (not activated); timer(name, es, inp, batch) -> seconds per frame
    (default `time_engine`; tests inject timings). Raises RuntimeError when no candidate passes.
    """
    from gt_runtime.playback.scene import Scene
    from gt_runtime.util.cpu import usable_cores

    t_start = time.perf_counter()
    timer = timer or (lambda name, es, inp, b: time_engine(es, inp, b))
    scene = Scene(bundle)
    inp = probe_inputs(bundle, max(PARITY_FRAMES, batch), scene)
    ref = Reference(bundle, inp, scene)
    choice = Choice(name="")
    best_es, best_s = None, None
    for name in names:
        if name == "array" and best_s is not None and ref.seconds / (threads or usable_cores()) > best_s:
            # the reference is this engine on one thread: even perfect scaling over the cores would not win
            choice.times_ms[name] = 1e3 * ref.seconds
            choice.pruned.append(name)
            continue
        try:
            es = build(name).activate()
        except Exception as exc:  # a candidate that cannot start is skipped, not fatal
            choice.rejected[name] = f"did not start ({str(exc).splitlines()[0][:80]})"
            continue
        keep = False
        try:
            t0 = time.perf_counter()
            off = run_stage(es, inp, len(inp.frames))
            es.deform.synchronize()
            first = (time.perf_counter() - t0) / len(inp.frames)
            why = ref.check(es.name, off)
            if why:
                choice.rejected[name] = why
                continue
            if best_s is not None and first > PRUNE_FACTOR * best_s:
                # far slower on its first call (which may include one-off costs): once more, warm
                t0 = time.perf_counter()
                run_stage(es, inp, batch)
                es.deform.synchronize()
                second = (time.perf_counter() - t0) / batch
                if second > PRUNE_FACTOR * best_s:
                    choice.times_ms[name] = 1e3 * second  # not worth the timed calls
                    choice.pruned.append(name)
                    continue
            s = timer(name, es, inp, batch)
            choice.times_ms[name] = 1e3 * s
            if best_s is None or s < best_s:
                if best_es is not None:
                    best_es.deactivate()
                best_es, best_s, keep = es, s, True
                choice.name = name
        except Exception as exc:
            choice.rejected[name] = f"failed ({str(exc).splitlines()[0][:80]})"
        finally:
            if not keep:
                es.deactivate()
    if best_es is None:
        raise RuntimeError(f"--engine auto: no engine passed parity on this bundle ({choice.rejected}) | "
                           "use --engine array, or GT_AUTOTUNE=0 for the fixed order")
    choice.measure_s = time.perf_counter() - t_start
    return choice, best_es


def _onnx_imported() -> bool:
    return "onnx" in sys.modules


def _builder(bundle, gpu: bool, threads: int | None, max_batch: int):
    """name -> EngineSet as select_engine builds it, but ORT FP32 on the bundle's graph while `onnx` is not imported."""
    from gt_runtime.engines.select import select_engine

    def build(name):
        if name == "onnxruntime-fp32" and not gpu and not _onnx_imported() and "fp32" in bundle.precisions:
            from gt_runtime.contract import AUDIO_ONNX
            from gt_runtime.engines import ort_engine
            from gt_runtime.engines.array_engine import ArrayAudioRunner
            from gt_runtime.engines.base import EngineSet

            audio = ort_engine.audio_runner(bundle, "cpu") if bundle.has(AUDIO_ONNX) else ArrayAudioRunner(bundle.weights)
            es = EngineSet(name, "cpu", audio, ort_engine.deform_runner(bundle, "fp32", "cpu", graph="bundle", threads=threads))
            es.stand_in = True  # the player builds the real engine if this one wins
            return es
        return select_engine(bundle, name, gpu=gpu, threads=threads, max_batch=max_batch)
    return build


def choose(bundle, gpu: bool, threads: int | None = None, batch: int = 1, max_batch: int = 8,
           names: list[str] | None = None, build=None, timer=None) -> tuple[Choice, object | None]:
    """`auto` on this machine -> (Choice, the winner's EngineSet activated, or None when the cache answered).

    names / build / timer: the candidates, how to build one, how to time one (defaults: `candidates`,
    `select_engine` with `threads` and `max_batch` (`_builder`), `time_engine`).
    """
    names = list(names if names is not None else candidates(bundle, gpu))
    build = build or _builder(bundle, gpu, threads, max_batch)
    key, parts = cache_key(bundle, names, gpu, threads, batch)
    path = cache_path()
    if mode() != "refresh":
        hit = read_cache(path).get(key)
        if isinstance(hit, dict) and hit.get("name") in names:
            return Choice(hit["name"], dict(hit.get("times_ms", {})), dict(hit.get("rejected", {})),
                          list(hit.get("pruned", [])), cached=True), None
    choice, es = measure(bundle, names, build, batch, timer, threads)
    entry = {k: v for k, v in asdict(choice).items() if k != "cached"}
    write_cache(path, key, dict(entry, key=parts, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
    if getattr(es, "stand_in", False):
        es.deactivate()
        es = None
    return choice, es


def choose_engine(bundle, engine: str = "auto", gpu: bool | None = None, threads: int | None = None,
                  max_batch: int = 8, batch: int = 1):
    """-> (EngineSet, autotune Choice or None): `auto` measured (unless GT_AUTOTUNE=0), any other name as select_engine.

    The EngineSet may already be activated (the measurement's winner); activate() is idempotent.
    """
    gpu = gpu_available() if gpu is None else gpu
    if engine != "auto" or mode() == "off":
        return select_engine(bundle, engine, gpu, threads, max_batch), None
    choice, es = choose(bundle, gpu, threads=threads, batch=batch, max_batch=max_batch)
    return (es or select_engine(bundle, choice.name, gpu, threads, max_batch)), choice
