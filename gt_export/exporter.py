"""`export(cfg) -> Path`: a trained run -> a validated bundle directory (README: "Bundle format").

Steps (a rich progress display on stderr unless quiet):

1. load the checkpoint (`torch.load(weights_only=True)`) and rebuild the model;
2. freeze the canonical Gaussians (raw) + per-Gaussian queries, and the MODEL.md weights;
3. deform.onnx and audio_encoder.onnx (gt_export.onnx_export; the audio window is
   [B, 15, 2, D], D = model.audio_dim); deform.fp16.onnx (--fp16), a deform.int8.onnx
   candidate (--int8); TensorRT's operator check on the TensorRT graphs;
3b. the audio front end: the dataset's (audio_frontend.json; mel when absent) must be the
   one the checkpoint was trained with. For hubert / wav2vec2 the dataset's
   audio_frontend.onnx (exported and checked against torch by gt preprocess, error in
   its audio_frontend.json) is copied into the bundle, and the runtime's front end on
   that graph must reproduce the dataset's audio_features.npy from its audio.wav (the
   first FRONTEND_CHECK_FRAMES frames); both errors go into the manifest (`audio.checks`)
   and the parity table;
4. write the bundle (gt_runtime.bundle.write_bundle) into a temporary sibling directory,
   with the scene (background plate, torso frames, camera track + blink) at the run's
   working resolution;
5. a TensorRT engine when tensorrt imports and a GPU is present (gt_runtime.engines.trt_engine);
6. parity against torch on the val frames (gt_export.parity) -> manifest `parity`; the
   export fails (one line, nothing left behind) if ONNX FP32 differs from torch or the
   FP16 render PSNR is below cfg.fp16_min_psnr; INT8 ships only above cfg.int8_min_psnr;
7. rename the temporary directory to the output.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gt_export.config import ExportConfig
from gt_runtime.bundle import Bundle, sha256_file, update_manifest, weight_shapes, write_bundle
from gt_runtime.contract import AUDIO_FRONTEND_ONNX, AUDIO_ONNX, DEFORM_ONNX
from gt_runtime.errors import InputError, require
from gt_runtime.util.staging import commit_dir, staging_dir


FRONTEND_CHECK_FRAMES = 250  # 10 s of the dataset's audio through the bundled front end at export


class ParityError(InputError):
    """An exported graph does not reproduce the torch model within the gate."""


# -- progress ---------------------------------------------------------------------------
class _Steps:
    """One rich progress line per export step (spinner while running, elapsed time); silent when quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.times: dict[str, float] = {}
        self._progress = None

    def __enter__(self):
        if not self.quiet:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            console = Console(file=sys.stderr)
            if console.width < 120 and not console.is_terminal:
                console = Console(file=sys.stderr, width=120)
            self._progress = Progress(SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"),
                                      TimeElapsedColumn(), console=console)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)

    @contextlib.contextmanager
    def step(self, name: str):
        task = self._progress.add_task(name, total=1) if self._progress is not None else None
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(time.perf_counter() - t0, 3)
            if task is not None:
                self._progress.update(task, completed=1)

    @property
    def console(self):
        return None if self._progress is None else self._progress.console

    def say(self, msg: str) -> None:
        if self._progress is not None:
            self._progress.console.print(msg)


# -- inputs -----------------------------------------------------------------------------
def _load(cfg: ExportConfig):
    """-> (model, train config, checkpoint path, checkpoint iteration, the checkpoint's audio front end or None)."""
    from gt_train.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint
    from gt_train.config import TrainConfig
    from gt_train.model import GaussianTalker

    run = cfg.run
    if cfg.checkpoint is not None:
        ckpt = cfg.checkpoint
    else:
        if not run.is_dir():
            raise InputError(f"{run}: no such run directory | pass the -o directory of gt train (it holds checkpoints/ and config.json)")
        ckpt = latest_checkpoint(run)
        if ckpt is None:
            raise InputError(f"{run}: no checkpoints in {checkpoint_dir(run)} | train first with gt train DATA -o {run}, or pass --checkpoint")
    ck = load_checkpoint(ckpt)  # weights_only=True
    try:
        tcfg = TrainConfig.from_dict(ck["config"])
        model = GaussianTalker.from_state_dict(tcfg.model, ck["model"]).eval()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{ckpt}: cannot rebuild the model from this checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}) | export a checkpoint written by this gt version") from None
    return model, tcfg, Path(ckpt), int(ck.get("iteration", -1)), ck.get("audio_frontend")


def _dataset_path(cfg: ExportConfig, tcfg) -> Path:
    if cfg.dataset is not None:
        return cfg.dataset
    p = Path(tcfg.data)
    if not p.is_absolute() and not p.exists() and (cfg.run / p).exists():
        p = cfg.run / p
    if not p.is_dir():
        raise InputError(f"{p}: the dataset recorded in {cfg.run / 'config.json'} is not there | pass --dataset PATH (the identity the run was trained on)")
    return p


def _load_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        if im.size != size:
            im = im.resize(size, Image.LANCZOS)
        return np.asarray(im)


class _LazyImages(Sequence):
    """Images read (and resized) one at a time, so write_bundle never holds every torso frame."""

    def __init__(self, paths, mode: str, size: tuple[int, int]):
        self.paths, self.mode, self.size = list(paths), mode, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return _load_image(self.paths[i], self.mode, self.size)


def _weights(model) -> dict[str, np.ndarray]:
    """MODEL.md parameter names (audio.*, eye.*, view.*, null, deform.*) -> float32 arrays, torch layouts."""
    sd = model.state_dict()
    shapes = weight_shapes(model.cfg.num_layers, model.cfg.sh_degree, model.cfg.hidden, model.cfg.audio_dim)
    out = {}
    for name, shape in shapes.items():
        if name not in sd or tuple(sd[name].shape) != shape:
            got = None if name not in sd else tuple(sd[name].shape)
            raise InputError(f"model parameter {name}: {got} | expected {shape} (docs/MODEL.md); the run does not follow the bundle contract")
        out[name] = sd[name].detach().float().cpu().numpy().copy()
    return out


def _clean_train_config(tcfg) -> dict:
    d = tcfg.to_dict()
    for k in ("data", "out", "lpips_weights"):
        if d.get(k) is not None:
            d[k] = Path(d[k]).name
    return d


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "onnx", "onnxruntime", "onnxscript", "onnxconverter-common"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


# -- TensorRT ---------------------------------------------------------------------------
def _trt_wanted(cfg: ExportConfig) -> bool:
    from gt_runtime.engines import trt_engine

    if cfg.trt is False:
        return False
    ok = trt_engine.available()
    if cfg.trt and not ok:
        raise InputError("--trt: needs the tensorrt package, CuPy and a CUDA GPU, not all found | export without --trt (the runtime builds the engine on first use on a GPU)")
    return ok


def build_engine(bundle_path: Path, precision: str, max_batch: int) -> Path:
    """Build engines/<gpu>-sm<cc>-trt<version>-<precision>.plan (+ .json) for the bundle on this GPU -> plan path.

    Uses gt_runtime.engines.trt_engine.build_plan (strongly typed network, B/N profile,
    timing cache); adds the driver and CUDA runtime versions to the engine JSON.
    """
    cp = require("cupy", "TensorRT engine build")

    from gt_runtime.engines import trt_engine

    bundle = Bundle.open(bundle_path, verify_hashes=False)
    key = trt_engine.device_key(precision)
    d = bundle.engines_dir
    d.mkdir(exist_ok=True)
    plan = d / f"{trt_engine.key_name(key)}.plan"
    trt_engine.build_plan(bundle.onnx_path(precision), plan, key, bundle.num_gaussians, max_batch=max_batch,
                          timing_cache=d / "timing.cache")
    meta_path = plan.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta.update({"cuda_driver": int(cp.cuda.runtime.driverGetVersion()),
                 "cuda_runtime": int(cp.cuda.runtime.runtimeGetVersion()),
                 "bundle_weights_sha256": bundle.manifest["files"]["weights.npz"]})
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return plan


# -- the export -------------------------------------------------------------------------
def _check_out(cfg: ExportConfig) -> None:
    out = cfg.out
    if out.exists() and not cfg.overwrite:
        if not out.is_dir() or any(out.iterdir()):
            raise InputError(f"{out}: exists | choose another -o, or pass --overwrite to replace it")
    if not out.parent.exists():
        raise InputError(f"{out.parent}: no such directory for -o | create it first")


def export(cfg: ExportConfig) -> Path:
    """Export cfg.run to the bundle cfg.out -> its path (see the module docstring)."""
    for module in ("torch", "onnx") + (("onnxconverter_common",) if cfg.fp16 else ()) + (("onnxruntime",) if cfg.int8 else ()):
        require(module, "gt export")  # before any work
    from gt_export.graph_check import check_graph
    from gt_train.data.format import load_identity, working_camera

    _check_out(cfg)
    tmp = staging_dir(cfg.out)
    t_start = time.perf_counter()
    try:
        with _Steps(cfg.quiet) as steps:
            with steps.step("load checkpoint"):
                model, tcfg, ckpt, iteration, ck_audio = _load(cfg)
                ds = load_identity(_dataset_path(cfg, tcfg))
            with steps.step(f"audio front end: {ds.audio_frontend['name']} (D = {ds.audio_dim})"):
                audio_meta, audio_files = _audio_frontend(cfg, model, ds, ck_audio, ckpt)
            with steps.step(f"freeze {model.num_gaussians} Gaussians + queries and the deformation weights"):
                gaussians = model.export_arrays()
                weights = _weights(model)
            onnx_files = _export_graphs(cfg, model, steps)
            exporter = onnx_files.pop("_exporter")
            int8_bytes = onnx_files.pop("_int8", None)
            with steps.step("TensorRT operator check (deform, audio encoder)"):
                for name in ("deform.onnx", "deform.fp16.onnx", AUDIO_ONNX):
                    if name in onnx_files:
                        check_graph(onnx_files[name], name)
            W, H, intr = working_camera(ds.intrinsics, tcfg.resolution)
            n_track = ds.num_frames if cfg.track_frames is None else min(cfg.track_frames, ds.num_frames)
            with steps.step(f"write bundle: scene {W}x{H}, {n_track} torso frames"):
                mcfg = _clean_train_config(tcfg)["model"]
                mcfg.update(heads=tcfg.model.num_heads, preset=tcfg.preset)
                write_bundle(
                    tmp, gaussians=gaussians, weights=weights, model=mcfg, width=W, height=H, intrinsics=intr,
                    background=_load_image(ds.background_path, "RGB", (W, H)), c2w=ds.c2w[:n_track],
                    blink=ds.blink[:n_track], torso=_LazyImages(ds.torso_paths[:n_track], "RGBA", (W, H)),
                    onnx={**{k: v.SerializeToString() for k, v in onnx_files.items()}, **audio_files},
                    exporter_version=_exporter_version(), fps=25, audio_frontend=audio_meta["name"], audio=audio_meta,
                    extra={"export": {"exporter": exporter, "opset": cfg.opset, "versions": _versions(),
                                      "checkpoint": {"name": ckpt.name, "iteration": iteration, "sha256": sha256_file(ckpt)},
                                      "dataset": Path(ds.root).name, "config": cfg.to_dict()},
                           "train": _clean_train_config(tcfg)})
                bundle = Bundle.open(tmp)
            plans = {}
            if _trt_wanted(cfg):
                prec = "fp16" if "fp16" in bundle.precisions else "fp32"
                with steps.step(f"TensorRT engine ({prec})"):
                    plans[prec] = build_engine(tmp, prec, cfg.trt_max_batch)
            with steps.step("parity vs torch on the val frames"):
                report, verdicts, ship_int8 = _parity(cfg, model, bundle, ds, (W, H), int8_bytes, plans)
                if audio_meta.get("checks"):
                    report["audio_frontend"] = {"name": audio_meta["name"], **audio_meta["checks"]}
                    verdicts["audio_frontend"] = "ok"
            with steps.step("finalize manifest"):
                add = []
                if ship_int8:
                    (tmp / DEFORM_ONNX["int8"]).write_bytes(int8_bytes)
                    add.append(DEFORM_ONNX["int8"])
                for prec, plan in plans.items():
                    if not verdicts.get(f"tensorrt-{prec}", "").startswith("ok"):
                        plan.unlink(missing_ok=True)
                        plan.with_suffix(".json").unlink(missing_ok=True)
                update_manifest(tmp, parity=report, add_files=add)
                Bundle.open(tmp)  # the final bundle must open (hashes, shapes, paths)
                commit_dir(tmp, cfg.out)
            for msg in report.get("notes", []):
                steps.say(f"[yellow]{msg}")
        if not cfg.quiet:
            from gt_export.parity import print_table

            print_table(report, console=steps.console, verdicts=verdicts)
            print(f"exported {cfg.out} in {time.perf_counter() - t_start:.1f} s", file=sys.stderr)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cfg.out


def _audio_frontend(cfg: ExportConfig, model, ds, ck_audio: dict | None, ckpt: Path) -> tuple[dict, dict]:
    """-> (the manifest's `audio` description, {bundle file: source path}) for the dataset's front end.

    Refuses a dataset whose front end is not the checkpoint's, a model whose audio_dim is not the
    features' width, and a front-end graph that changed since gt preprocess or does not reproduce
    the dataset's features (see the module docstring, step 3b).
    """
    from gt_runtime.audio import load_audio
    from gt_runtime.audio.frontend import MEL_META, MODEL_FRONTENDS, frontend_from_meta

    meta = dict(ds.audio_frontend)
    fix = "export with the dataset the run was trained on (--dataset), or retrain on this one"
    trained = dict(ck_audio) if ck_audio else dict(MEL_META)
    for key in ("name", "dim", "onnx_sha256"):
        if trained.get(key) != meta.get(key) and (key != "onnx_sha256" or meta["name"] in MODEL_FRONTENDS):
            raise InputError(f"{ds.root}: audio front end {meta.get('name')} (D = {meta.get('dim')}, graph {str(meta.get('onnx_sha256'))[:12]}) "
                             f"is not the one {ckpt.name} was trained with ({trained.get('name')}, D = {trained.get('dim')}, "
                             f"graph {str(trained.get('onnx_sha256'))[:12]}) | {fix}")
    if model.cfg.audio_dim != ds.audio_dim:
        raise InputError(f"{ckpt}: the model reads audio features of width {model.cfg.audio_dim}, {ds.root} has {ds.audio_dim} | {fix}")
    if meta["name"] not in MODEL_FRONTENDS:
        return dict(MEL_META), {}
    src = Path(ds.root) / meta.get("onnx", AUDIO_FRONTEND_ONNX)
    if sha256_file(src) != meta.get("onnx_sha256"):
        raise InputError(f"{src}: the front-end graph changed since gt preprocess wrote it (SHA-256 differs from audio_frontend.json) | re-run gt preprocess --audio-model, then gt train")
    # The runtime's front end on this graph vs the features the model was trained on, from the same audio.wav.
    fe = frontend_from_meta(meta, src)
    pcm, _ = load_audio(ds.audio_path, allow_silent=True)
    n = min(ds.num_frames, FRONTEND_CHECK_FRAMES)
    end = fe.spec.window_end(-(-n // fe.spec.frames_per_block) - 1)
    if end <= pcm.size:
        got = fe.stream().push(pcm[:end])[:n]  # the blocks of the first n frames, no end padding needed
    else:
        got = fe.features(pcm, num_frames=ds.num_frames)[:n]
    want = np.asarray(ds.audio_features[: len(got)], np.float64)
    err = np.abs(got - want)
    scale = float(np.abs(want).max()) if want.size else 0.0
    check = {"max_abs": float(err.max()) if err.size else 0.0, "mean_abs": float(err.mean()) if err.size else 0.0,
             "frames": int(len(got)), "gate_max_abs": cfg.fp32_max_abs * max(1.0, scale)}
    if len(got) < n or check["max_abs"] > check["gate_max_abs"]:
        raise ParityError(f"{src}: the bundled front end gives features that differ from {ds.root / 'audio_features.npy'} "
                          f"(max abs {check['max_abs']:.3g} over {len(got)} frames, gate {check['gate_max_abs']:.3g}) | re-run gt preprocess --audio-model, then gt train")
    out = {k: v for k, v in meta.items() if k not in ("features_s",)}
    src_info = dict(out.get("source") or {})
    if "path" in src_info:
        src_info["path"] = Path(src_info["path"]).name  # a bundle does not carry the exporting machine's paths
    out["source"] = src_info
    out["checks"] = {"onnx_vs_torch": meta.get("onnx_vs_torch"), "bundle_vs_dataset": check}
    return out, {AUDIO_FRONTEND_ONNX: src}


def _exporter_version() -> str:
    from gt_export import __version__

    return __version__


def _export_graphs(cfg: ExportConfig, model, steps: _Steps) -> dict:
    """-> {bundle file name: ModelProto, "_exporter": str, "_int8": bytes (candidate)}."""
    from gt_export import onnx_export, precision

    out = {}
    with steps.step(f"export deform.onnx (opset {cfg.opset}, B and N dynamic)"):
        out["deform.onnx"], used = onnx_export.export_deform(model, cfg.opset)
    with steps.step("export audio_encoder.onnx"):
        out[AUDIO_ONNX], _ = onnx_export.export_audio(model, cfg.opset)
    out["_exporter"] = used
    if cfg.fp16:
        with steps.step("FP16 mixed precision (LayerNorm, Softmax, residual adds and I/O FP32)"):
            out["deform.fp16.onnx"] = precision.to_fp16(out["deform.onnx"])
    if cfg.int8:
        with steps.step("INT8 dynamic quantisation (ONNX Runtime)"):
            out["_int8"] = precision.to_int8(out["deform.onnx"], per_channel=cfg.int8_per_channel,
                                            weight_type=cfg.int8_weight_type)
    return out


def _parity(cfg: ExportConfig, model, bundle: Bundle, ds, size, int8_bytes, plans: dict):
    """-> (report for the manifest, verdicts label -> text, ship INT8?). Raises ParityError on a failed gate."""
    from gt_export.parity import ParityFrames, pick_frames, run_parity
    from gt_runtime.model.reference import audio_windows
    from gt_runtime.engines.base import AUDIO_INPUTS, AUDIO_OUTPUTS, DEFORM_INPUTS, DEFORM_OUTPUTS
    from gt_runtime.engines.ort_engine import OrtRunner

    frames = pick_frames(ds.val_idx, cfg.parity_frames)
    gt = np.stack([_load_image(ds.frame_paths[int(t)], "RGB", size) for t in frames])
    pf = ParityFrames(frames, audio_windows(ds.audio_features, frames), ds.blink[frames], ds.c2w[frames], gt)

    def ort(model_src, label, inputs, outputs):
        return OrtRunner(model_src, label, inputs, outputs)

    deform = {"onnxruntime-fp32": ort(bundle.onnx_path("fp32"), "onnxruntime-fp32", DEFORM_INPUTS, DEFORM_OUTPUTS)}
    if "fp16" in bundle.precisions:
        deform["onnxruntime-fp16"] = ort(bundle.onnx_path("fp16"), "onnxruntime-fp16", DEFORM_INPUTS, DEFORM_OUTPUTS)
    if int8_bytes is not None:
        deform["onnxruntime-int8"] = ort(int8_bytes, "onnxruntime-int8", DEFORM_INPUTS, DEFORM_OUTPUTS)
    for prec, plan in plans.items():
        from gt_runtime.engines.trt_engine import TrtDeformRunner

        deform[f"tensorrt-{prec}"] = TrtDeformRunner(bundle, prec, plan_path=plan)
    audio = {"onnxruntime-fp32": ort(bundle.file(AUDIO_ONNX), "onnxruntime-audio", AUDIO_INPUTS, AUDIO_OUTPUTS)}
    report, _ = run_parity(model, bundle, pf, deform, audio)
    verdicts, notes = {}, []
    a = report["audio_encoder"]["onnxruntime-fp32"]["max_abs"]
    verdicts["audio:onnxruntime-fp32"] = "ok" if a <= cfg.fp32_max_abs else "FAIL"
    e32 = report["engines"]["onnxruntime-fp32"]["max_abs"]
    verdicts["onnxruntime-fp32"] = "ok" if e32 <= cfg.fp32_max_abs else "FAIL"
    if max(a, e32) > cfg.fp32_max_abs:
        raise ParityError(f"{cfg.run}: ONNX FP32 differs from torch (deform max abs {e32:.3g}, audio {a:.3g} > {cfg.fp32_max_abs:g}) | report it with the run's config.json; the export was not written")
    if "onnxruntime-fp16" in report["engines"]:
        p16 = report["engines"]["onnxruntime-fp16"]["render_psnr_min_db"]
        verdicts["onnxruntime-fp16"] = f"ok (>= {cfg.fp16_min_psnr:g} dB)" if p16 >= cfg.fp16_min_psnr else "FAIL"
        if p16 < cfg.fp16_min_psnr:
            raise ParityError(f"{cfg.run}: FP16 render PSNR vs torch is {p16:.2f} dB < {cfg.fp16_min_psnr:g} dB on val frame(s) | export without --fp16 (the FP32 graph is exact); nothing was written")
    ship_int8 = False
    if "onnxruntime-int8" in report["engines"]:
        p8 = report["engines"]["onnxruntime-int8"]["render_psnr_min_db"]
        ship_int8 = p8 >= cfg.int8_min_psnr
        verdicts["onnxruntime-int8"] = f"ok, shipped (>= {cfg.int8_min_psnr:g} dB)" if ship_int8 else "left out"
        report["engines"]["onnxruntime-int8"]["shipped"] = ship_int8
        if not ship_int8:
            notes.append(f"INT8 left out of the bundle: render PSNR vs torch {p8:.2f} dB < {cfg.int8_min_psnr:g} dB (the CPU runtime uses FP32)")
    for prec in plans:
        label = f"tensorrt-{prec}"
        p = report["engines"][label]["render_psnr_min_db"]
        gate = cfg.fp16_min_psnr if prec == "fp16" else 45.0
        verdicts[label] = f"ok (>= {gate:g} dB)" if p >= gate else "left out"
        if p < gate:
            notes.append(f"TensorRT {prec} engine left out: render PSNR vs torch {p:.2f} dB < {gate:g} dB (the runtime rebuilds it on first use)")
    report["gates"] = {"fp32_max_abs": cfg.fp32_max_abs, "fp16_min_psnr_db": cfg.fp16_min_psnr, "int8_min_psnr_db": cfg.int8_min_psnr}
    report["verdicts"] = verdicts
    report["notes"] = notes
    return report, verdicts, ship_int8
