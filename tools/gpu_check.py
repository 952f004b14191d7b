"""The one prepared check for a lent GPU: the `gpu` tests, then the GPU benchmarks -> JSON + Markdown.

    PYTHONPATH=. python tools/gpu_check.py                 # writes $OUT/gpu_check.{json,md} (else out/gpu_check/)
    PYTHONPATH=. python tools/gpu_check.py --dry-run       # every step skipped with its reason (exit 0)
    make gpu-check

Steps, each within its share of --budget (default 450 s, under the 8 minutes a lent H100 gets; a step that
would start with too little left is skipped, with the reason):

1. env:    the card, driver and CUDA versions, CuPy / torch / onnxruntime / TensorRT versions, ORT providers.
2. tests:  `pytest -m "gpu or trt"` in a subprocess (a timeout; junit XML parsed: passed / failed / skipped, and
           the first line of each failure).
3. raster: the CUDA rasterizer (CuPy) on a random bundle's Gaussians (N = --gaussians, --size², SH 3), B = 1 and
           B = 16 frames per render: ms per render and per frame; gsplat's `rasterization` in the same run when
           it is installed.
4. deform: every deform engine found (array-cupy, cuda-fused, onnxruntime-cuda FP32 / FP16, tensorrt FP32 / FP16) at B = 1
           and B = 16 against eager torch on CUDA (gt_train's DeformationNetwork on the same weights): ms, speed-up,
           max |difference| from torch.
5. frame:  whole frames (audio features -> tokens -> deform -> activations -> raster -> uint8 on the host)
           through the Player with each engine and the CUDA raster, against eager torch on CUDA (tokens,
           deformation and activations in torch, then the same CUDA rasterizer through DLPack): FPS.

Timing: wall clock around each call followed by a device synchronisation, median after a warm-up. Without a
GPU (no CuPy, or no device) every step is skipped with the reason and the exit code is 0; a failed test or a
step that raised makes it 1. Run from the source tree (PYTHONPATH=.): the tests and gt_train come from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from gt_runtime.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parents[1]
DEFORM_ENGINES = ("array-cupy", "cuda-fused-fp32", "onnxruntime-cuda-fp32", "onnxruntime-cuda-fp16", "tensorrt-fp32", "tensorrt-fp16")
STEPS = ("env", "tests", "raster", "deform", "frame")
MIN_STEP_S = {"env": 0, "tests": 30, "raster": 20, "deform": 30, "frame": 30}


class Skip(Exception):
    """A step that cannot run here; the message is the reason."""


def first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


def gpu_reason() -> str | None:
    """None when CuPy sees a CUDA device, else why not (one line)."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return f"CuPy is not importable ({first_line(exc)})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy sees no CUDA device ({first_line(exc)})"
    return None if n > 0 else "CuPy sees no CUDA device"


def timed(fn, sync, reps: int, budget_s: float, warmup: int = 2) -> float:
    """Median wall ms of fn() + sync() over up to `reps` calls (at least 3) after `warmup` calls, within budget_s."""
    for _ in range(warmup):
        fn()
    sync()
    times, t_end = [], time.perf_counter() + budget_s
    while len(times) < reps and (len(times) < 3 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cupy_sync():
    import cupy

    cupy.cuda.Device().synchronize()


def torch_cuda():
    """torch with CUDA, or Skip with the reason."""
    try:
        import torch
    except Exception as exc:
        raise Skip(f"torch is not importable ({first_line(exc)})") from None
    if not torch.cuda.is_available():
        raise Skip("torch has no CUDA device")
    return torch


# -- steps ----------------------------------------------------------------------------------------


def step_env(ctx) -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine()}
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    info.update(gpu=name.decode() if isinstance(name, bytes) else str(name), sm=f"{props['major']}.{props['minor']}",
                memory_gib=round(props["totalGlobalMem"] / 2**30, 1), cupy=cupy.__version__,
                cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(), cuda_driver=cupy.cuda.runtime.driverGetVersion())  # fmt: skip
    for mod in ("torch", "onnxruntime", "tensorrt", "onnx", "triton", "gsplat"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except Exception as exc:
            info[mod] = f"absent ({first_line(exc)[:80]})"
    try:
        import onnxruntime

        info["ort_providers"] = onnxruntime.get_available_providers()
    except Exception:
        pass
    ctx["gpu_name"] = info["gpu"]
    return {"info": info}


def step_tests(ctx) -> dict:
    xml = Path(ctx["work"]) / "gpu_tests.xml"
    # at most 200 s: the benchmarks keep the rest of the budget
    timeout = max(30, int(min(ctx["left"]() - ctx["reserve"], 200)))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu or trt", "-p", "no:cacheprovider", f"--junitxml={xml}", "tests"]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", GT_QUIET="1")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": True, "error": f"pytest ran past {timeout} s"}
    counts, failures = {"passed": 0, "failed": 0, "skipped": 0}, []
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                counts["failed"] += 1
                failures.append(f"{case.get('classname')}::{case.get('name')}: {(bad.get('message') or '').splitlines()[0][:200] if bad.get('message') else ''}")
            elif case.find("skipped") is not None:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    return {"failed": proc.returncode not in (0, 5) or counts["failed"] > 0, "counts": counts, "failures": failures,
            "summary": tail[0] if tail else "", "returncode": proc.returncode}  # fmt: skip


def make_bundle(ctx):
    """A random bundle (SH 3, L = 2, with ONNX; FP16 ONNX when onnxconverter-common is there), made once."""
    if "bundle" in ctx:
        return ctx["bundle"]
    from gt_runtime.bundle import Bundle
    from gt_runtime.bundle.synthetic import make_random_bundle

    n, size = ctx["gaussians"], ctx["size"]
    path = Path(ctx["work"]) / f"random-n{n}-{size}.gtb"
    kw = dict(n_gaussians=n, sh_degree=3, num_layers=2, width=size, height=size, n_track_frames=8, seed=0)
    try:
        make_random_bundle(path, onnx=True, fp16=True, **kw)
    except Exception as exc:  # no onnxconverter-common (or no onnx): fewer engines, said in the notes
        ctx["notes"].append(f"bundle without the FP16 graph ({first_line(exc)})")
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        try:
            make_random_bundle(path, onnx=True, **kw)
        except Exception as exc2:
            ctx["notes"].append(f"bundle without ONNX graphs ({first_line(exc2)})")
            shutil.rmtree(path, ignore_errors=True)
            make_random_bundle(path, onnx=False, **kw)
    ctx["bundle"] = Bundle.open(path)
    return ctx["bundle"]


def canonical_scene(bundle):
    """The bundle's canonical Gaussians activated + one camera of its track (numpy float32)."""
    from gt_runtime.playback.scene import Scene

    g = bundle.gaussians
    scene = Scene(bundle)
    return dict(means=g["means"], quats=g["quats"], scales=np.exp(g["log_scales"]).astype(np.float32),
                opacities=(1 / (1 + np.exp(-g["opacity_logits"]))).astype(np.float32), colors=g["sh"],
                viewmat=scene.viewmats[0], K=np.asarray(bundle.K, np.float32))  # fmt: skip


def step_raster(ctx) -> dict:
    import cupy as cp

    from gt_runtime.raster._cuda import CudaRasterizer

    b = make_bundle(ctx)
    s = canonical_scene(b)
    r = CudaRasterizer()
    rows = []
    for B in ctx["batches"]:
        views, Ks = np.repeat(s["viewmat"][None], B, 0), np.repeat(s["K"][None], B, 0)
        args = [cp.asarray(s[k]) for k in ("means", "quats", "scales", "opacities", "colors")]
        views_d, Ks_d = cp.asarray(views), cp.asarray(Ks)
        ms = timed(lambda a=args, v=views_d, k=Ks_d: r.render(*a, v, k, b.width, b.height, sh=True), cupy_sync, 30, ctx["share"]())
        row = {"what": "gt CUDA raster (CuPy)", "B": B, "ms": round(ms, 3), "ms_per_frame": round(ms / B, 3)}
        rows.append(row)
        row_g = gsplat_row(s, B, b, ctx)
        if row_g:
            rows.append(row_g)
            row["x_gsplat"] = round(row_g["ms"] / ms, 2)
    return {"rows": rows, "N": b.num_gaussians, "size": f"{b.width}x{b.height}"}


def gsplat_row(s, B, b, ctx) -> dict | None:
    try:
        import gsplat
    except Exception as exc:
        note = f"raster: no gsplat baseline ({first_line(exc)[:100]})"
        if note not in ctx["notes"]:
            ctx["notes"].append(note)
        return None
    torch = torch_cuda()
    t = {k: torch.from_numpy(np.ascontiguousarray(v)).cuda() for k, v in s.items()}
    views, Ks = t["viewmat"][None].repeat(B, 1, 1), t["K"][None].repeat(B, 1, 1)
    deg = int(round(s["colors"].shape[1] ** 0.5)) - 1

    def run():
        gsplat.rasterization(t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], views, Ks, b.width, b.height,
                             sh_degree=deg, near_plane=0.01, eps2d=0.3, packed=False, rasterize_mode="classic")  # fmt: skip

    ms = timed(run, torch.cuda.synchronize, 30, ctx["share"]())
    return {"what": f"gsplat {gsplat.__version__} (torch)", "B": B, "ms": round(ms, 3), "ms_per_frame": round(ms / B, 3)}


class EagerTorchCuda:
    """gt_train's GaussianTalker on the bundle's weights, eager, on CUDA (the baseline the engines are measured against)."""

    def __init__(self, bundle):
        torch = torch_cuda()
        from gt_train.config import ModelConfig
        from gt_train.model import GaussianTalker
        from gt_train.model.talker import TRAINING_ONLY

        self.torch, self.bundle = torch, bundle
        g = bundle.gaussians
        self.model = GaussianTalker(ModelConfig(num_layers=bundle.num_layers, sh_degree=bundle.sh_degree), g["means"][:64]).eval()
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in bundle.weights.items()}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or not all(k.split(".")[0] in TRAINING_ONLY for k in missing):
            raise RuntimeError(f"torch model does not take the bundle's weights: missing {missing}, unexpected {unexpected}")
        self.model = self.model.cuda()
        self.queries = torch.from_numpy(np.ascontiguousarray(g["queries"])).cuda()
        self.canon = {k: torch.from_numpy(np.ascontiguousarray(g[k])).cuda() for k in ("means", "quats", "log_scales", "opacity_logits", "sh")}

    def deform(self, tokens):
        with self.torch.no_grad():
            return self.model.deform(tokens, self.queries)


def step_deform(ctx) -> dict:
    import cupy as cp

    b = make_bundle(ctx)
    rng = np.random.default_rng(0)
    feeds = {B: rng.standard_normal((B, 4, 64)).astype(np.float32) for B in ctx["batches"]}
    rows, ref = [], {}
    try:
        eager = EagerTorchCuda(b)
        torch = eager.torch
        for B, tok in feeds.items():
            t = torch.from_numpy(tok).cuda()
            ms = timed(lambda t=t: eager.deform(t), torch.cuda.synchronize, 30, ctx["share"]())
            ref[B] = [o.float().cpu().numpy() for o in eager.deform(t)[:5]]
            rows.append({"engine": "torch eager (CUDA)", "B": B, "ms": round(ms, 3)})
    except Skip as exc:
        ctx["notes"].append(f"deform: no eager torch baseline ({exc})")
    except Exception as exc:
        ctx["notes"].append(f"deform: eager torch failed ({first_line(exc)})")
    torch_ms = {r["B"]: r["ms"] for r in rows}
    for name in ctx["engines"]:
        try:
            runner = deform_runner(b, name, max(ctx["batches"]))
            runner.activate()
        except (Skip, MissingDependencyError) as exc:
            rows.append({"engine": name, "skipped": first_line(exc)})
            continue
        except Exception as exc:  # found but broken (e.g. the CUDA EP listed but not loading): a failure
            rows.append({"engine": name, "failed": first_line(exc)})
            continue
        try:
            for B, tok in feeds.items():
                feed = {"tokens": cp.asarray(tok)}
                ms = timed(lambda r=runner, f=feed: r.infer(f), cupy_sync, 30, ctx["share"]())
                row = {"engine": name, "B": B, "ms": round(ms, 3)}
                if B in torch_ms:
                    out = runner.infer(feed)
                    row["x_torch"] = round(torch_ms[B] / ms, 2)
                    try:
                        row["max_err_vs_torch"] = float(max(np.abs(cp.asnumpy(out[k]) - ref[B][i].reshape(out[k].shape)).max()
                                                            for i, k in enumerate(runner.output_names)))  # fmt: skip
                    except Exception as exc:  # a comparison problem must not hide the timings
                        row["max_err_vs_torch"] = f"not compared ({first_line(exc)[:120]})"
                rows.append(row)
        finally:
            runner.deactivate()
    return {"rows": rows, "N": b.num_gaussians, "failed": any("failed" in r for r in rows)}


def deform_runner(bundle, name: str, max_batch: int):
    """A deform runner for a DEFORM_ENGINES name (not activated)."""
    if name == "array-cupy":
        from gt_runtime.engines.array_engine import ArrayDeformRunner

        return ArrayDeformRunner(bundle.weights, bundle.gaussians["queries"], bundle.num_layers, bundle.sh_degree, "cuda")
    if name == "cuda-fused-fp32":
        from gt_runtime.engines.fused_cuda import FusedCudaDeformRunner

        return FusedCudaDeformRunner(bundle.weights, bundle.gaussians["queries"], bundle.num_layers, bundle.sh_degree)
    prec = name.rsplit("-", 1)[1]
    if prec not in bundle.precisions:
        raise Skip(f"the bundle has no {prec} graph")
    if name.startswith("onnxruntime-cuda"):
        from gt_runtime.engines import ort_engine

        if not ort_engine.cuda_available():
            raise Skip("onnxruntime lists no CUDA execution provider (onnxruntime-gpu is not installed)")
        return ort_engine.deform_runner(bundle, prec, "cuda", graph="bundle")
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        raise Skip("tensorrt is not installed")
    from gt_runtime.engines.trt_engine import TrtDeformRunner

    return TrtDeformRunner(bundle, prec, max_batch=max(8, max_batch))


def speech(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 180 * t)).astype(np.float32)


def step_frame(ctx) -> dict:
    from gt_runtime.playback.player import Player

    b = make_bundle(ctx)
    pcm = speech(ctx["seconds"])
    import importlib.util

    from gt_runtime.engines import ort_engine

    rows = []
    missing = {"onnxruntime-cuda": None if ort_engine.cuda_available() else "onnxruntime lists no CUDA execution provider",
               "tensorrt": None if importlib.util.find_spec("tensorrt") else "tensorrt is not installed"}  # fmt: skip
    for name in ("array-cupy", "cuda-fused", "onnxruntime-cuda", "tensorrt"):
        if missing.get(name):
            rows.append({"engine": name, "skipped": missing[name]})
            continue
        for B in ctx["batches"]:
            try:
                p = Player(b, engine=name, raster="cuda", batch=B)
            except Exception as exc:
                rows.append({"engine": name, "B": B, "failed": first_line(exc)})
                break
            try:
                list(p.play(pcm[: 16000]))  # warm-up: compile, build, allocate
                t0 = time.perf_counter()
                n = sum(1 for _ in p.play(pcm))
                dt = time.perf_counter() - t0
                rows.append({"engine": p.describe()["engine"], "B": B, "frames": n, "fps": round(n / dt, 1), "ms_per_frame": round(1e3 * dt / n, 3)})
            except Exception as exc:
                rows.append({"engine": name, "B": B, "failed": first_line(exc)})
            finally:
                p.close()
            if ctx["left"]() < ctx["reserve"]:
                ctx["notes"].append("frame: budget spent, remaining engines not run")
                return {"rows": rows, "failed": any("failed" in r for r in rows)}
    try:
        rows += torch_frames(b, pcm, ctx)
    except Skip as exc:
        ctx["notes"].append(f"frame: no eager torch baseline ({exc})")
    best = {r["B"]: r["fps"] for r in rows if r.get("engine", "").startswith("torch") and "fps" in r}
    for r in rows:
        if "fps" in r and r["B"] in best and not r["engine"].startswith("torch"):
            r["x_torch"] = round(r["fps"] / best[r["B"]], 2)
    return {"rows": rows, "N": b.num_gaussians, "size": f"{b.width}x{b.height}", "seconds_of_speech": ctx["seconds"],
            "failed": any("failed" in r for r in rows)}


def torch_frames(b, pcm, ctx) -> list[dict]:
    """Eager torch on CUDA for tokens, deformation and activations; the CUDA rasterizer through DLPack -> FPS."""
    import cupy as cp

    from gt_runtime.audio.frontend import for_bundle
    from gt_runtime.model.reference import audio_windows
    from gt_runtime.playback.scene import Scene
    from gt_runtime.raster._cuda import CudaRasterizer

    eager = EagerTorchCuda(b)
    torch = eager.torch
    from gt_train.model.talker import apply_offsets

    scene, r = Scene(b), CudaRasterizer()
    K = cp.asarray(np.asarray(b.K, np.float32))
    rows = []
    for B in ctx["batches"]:
        t0 = time.perf_counter()
        feats = for_bundle(b).features(pcm)
        T = feats.shape[0]
        wins = audio_windows(feats, np.arange(T), T)
        n = 0
        with torch.no_grad():
            for s0 in range(0, T, B):
                idx = np.arange(s0, min(T, s0 + B))
                ti = [int(scene.track_index(int(t))) for t in idx]
                tokens = eager.model.forward_tokens(torch.from_numpy(wins[idx]).cuda(), torch.from_numpy(scene.blink[ti]).float().cuda(),
                                                    torch.from_numpy(scene.c2w[ti]).float().cuda())  # fmt: skip
                *offs, _ = eager.model.deform(tokens, eager.queries)
                a = apply_offsets(eager.canon, *offs)
                attrs = (a["means"], a["quats"], a["log_scales"].exp(), a["opacity_logits"].sigmoid(), a["sh"])
                dev = [cp.from_dlpack(x.contiguous()) for x in attrs]
                bgs = cp.asarray(np.stack([scene.background_of_track(i) for i in ti]).astype(np.float32))
                # torch's current stream and CuPy's are both the legacy default stream: the render is ordered after torch
                img = r.render(*dev, cp.asarray(scene.viewmats[ti]), cp.broadcast_to(K, (len(idx), 3, 3)), b.width, b.height,
                               bgs, sh=True)  # fmt: skip
                r.to_host((cp.clip(img, 0, 1) * 255 + 0.5).astype(cp.uint8))
                n += len(idx)
        dt = time.perf_counter() - t0
        rows.append({"engine": "torch eager (CUDA) + gt CUDA raster", "B": B, "frames": n, "fps": round(n / dt, 1), "ms_per_frame": round(1e3 * dt / n, 3)})
    return rows


# -- driver ---------------------------------------------------------------------------------------


def run(out: Path, budget_s: float = 450, dry_run: bool = False, gaussians: int = 50_000, size: int = 512,
        batches=(1, 16), seconds: float = 4.0, steps=STEPS, engines=DEFORM_ENGINES, measure_s: float | None = None) -> dict:
    """Run the steps -> the report (also written to out/gpu_check.json and out/gpu_check.md)."""
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    left = lambda: budget_s - (time.perf_counter() - t_start)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="gt_gpu_check_"))
    ctx = {"work": work, "left": left, "reserve": 20.0, "notes": [], "gaussians": gaussians, "size": size,
           "batches": tuple(batches), "seconds": seconds, "engines": tuple(engines)}  # fmt: skip
    # a bench measurement gets a slice of what is left, so later steps keep theirs
    ctx["share"] = (lambda: measure_s) if measure_s else (lambda: max(1.0, min(8.0, left() / 40)))
    no_gpu = "dry run" if dry_run else gpu_reason()
    report = {"tool": "tools/gpu_check.py", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": budget_s,
              "host": platform.node(), "gpu": None, "steps": [], "notes": ctx["notes"]}  # fmt: skip
    fns = {"env": step_env, "tests": step_tests, "raster": step_raster, "deform": step_deform, "frame": step_frame}
    for name in steps:
        t0 = time.perf_counter()
        entry = {"name": name}
        if no_gpu:
            entry.update(status="skipped", reason=no_gpu)
        elif left() < MIN_STEP_S[name] + (ctx["reserve"] if name != "env" else 0):
            entry.update(status="skipped", reason=f"budget spent ({left():.0f} s of {budget_s:.0f} s left)")
        else:
            try:
                res = fns[name](ctx)
                failed = bool(res.pop("failed", False))
                entry.update(status="failed" if failed else "passed", **res)
            except Skip as exc:
                entry.update(status="skipped", reason=str(exc))
            except Exception as exc:
                entry.update(status="failed", error=first_line(exc), traceback=traceback.format_exc(limit=6))
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        report["steps"].append(entry)
        print(f"[gpu-check] {name}: {entry['status']} ({entry['seconds']} s){' - ' + entry.get('reason', entry.get('error', '')) if entry['status'] != 'passed' else ''}",
              file=sys.stderr, flush=True)  # fmt: skip
    report["gpu"] = ctx.get("gpu_name")
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    report["exit_code"] = 1 if any(s["status"] == "failed" for s in report["steps"]) else 0
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    return report


def _table(rows: list[dict]) -> list[str]:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return lines


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({report['started']})", "",
             f"GPU: {report['gpu'] or 'none'}; {report['seconds']} s of a {report['budget_s']:.0f} s budget; exit code {report['exit_code']}.", "",
             "| step | status | seconds | detail |", "|---|---|---|---|"]  # fmt: skip
    for s in report["steps"]:
        detail = s.get("reason") or s.get("error") or s.get("summary") or ""
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']} | {detail} |")
    for s in report["steps"]:
        if s["status"] == "skipped":
            continue
        lines += ["", f"## {s['name']}", ""]
        if s["name"] == "env":
            lines += [f"- {k}: {v}" for k, v in s.get("info", {}).items()]
        if s["name"] == "tests":
            lines += [f"- {k}: {v}" for k, v in s.get("counts", {}).items()] + [f"- FAILED {f}" for f in s.get("failures", [])]
        if s.get("rows"):
            extra = ", ".join(f"{k} {s[k]}" for k in ("N", "size", "seconds_of_speech") if k in s)
            lines += ([extra, ""] if extra else []) + _table(s["rows"])
        if s.get("traceback"):
            lines += ["```", s["traceback"].rstrip(), "```"]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "out" / "gpu_check")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for everything (default 450)")
    ap.add_argument("--dry-run", action="store_true", help="skip every step (checks the script and its outputs)")
    ap.add_argument("--gaussians", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=4.0, help="speech per whole-frame run")
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    a = ap.parse_args(argv)
    rep = run(a.out, a.budget, a.dry_run, a.gaussians, a.size, seconds=a.seconds, steps=a.steps)
    print(f"[gpu-check] wrote {a.out / 'gpu_check.json'} and {a.out / 'gpu_check.md'}", file=sys.stderr)
    return rep["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
