"""Parity of the exported graphs against the torch model, on the identity's val frames.

For each val frame (up to `ExportConfig.parity_frames`, evenly spaced) the torch model gives
the reference tokens (audio, eye, view, null) and offsets. Every engine (ONNX FP32, FP16,
INT8 through ONNX Runtime, and TensorRT on a GPU) runs on the *same* tokens; the audio
encoder graph runs on the same feature windows. For each engine and output: max / mean
absolute error (gt_runtime.engines.comparator), and the render PSNR between the torch
render and the engine's render, both made by one rasterizer (the C++ `cpu` backend, or the
numpy reference when it is not built) over the bundle's own background + torso, quantised
to uint8 as the player does. PSNR against the ground-truth frames is recorded too.

The result is a JSON-ready dict written into the manifest (`parity`) and shown as a rich table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gt_runtime.contract import OFFSET_NAMES
from gt_runtime.engines.base import AUDIO_INPUTS, AUDIO_OUTPUTS, DEFORM_INPUTS, DEFORM_OUTPUTS, Runner
from gt_runtime.engines.comparator import compare_outputs, psnr, to_numpy

PSNR_CAP = 100.0  # identical renders are reported as 100 dB (JSON has no infinity)
REFERENCE = "torch-fp32"


@dataclass
class ParityFrames:
    """The frames a parity check runs on (dataset frame index = scene track index)."""

    frames: np.ndarray      # [F] int
    windows: np.ndarray     # [F, 15, 2, D] float32 (D = audio_dim)
    blink: np.ndarray       # [F] float32
    c2w: np.ndarray         # [F, 4, 4] float32
    ground_truth: np.ndarray | None = None  # [F, H, W, 3] uint8 at the bundle resolution


def pick_frames(val_idx, n: int) -> np.ndarray:
    """Up to n indices of val_idx, evenly spaced (first and last included)."""
    v = np.asarray(val_idx, np.int64)
    if len(v) <= n:
        return v
    return v[np.round(np.linspace(0, len(v) - 1, n)).astype(np.int64)]


class TorchDeformRunner(Runner):
    """The torch deformation network as a runner (the parity reference)."""

    input_ranks = DEFORM_INPUTS
    output_names = DEFORM_OUTPUTS

    def __init__(self, model, queries):
        super().__init__(REFERENCE)
        self.model, self.queries = model, queries

    def infer_impl(self, feed):
        import torch

        q = feed.get("queries", self.queries)
        with torch.no_grad():
            outs = self.model.deform(torch.as_tensor(feed["tokens"]), torch.as_tensor(np.asarray(q, np.float32)))
        return {k: v.numpy() for k, v in zip(OFFSET_NAMES, outs[:5])}


class TorchAudioRunner(Runner):
    input_ranks = AUDIO_INPUTS
    output_names = AUDIO_OUTPUTS

    def __init__(self, model):
        super().__init__(REFERENCE)
        self.model = model

    def infer_impl(self, feed):
        import torch

        with torch.no_grad():
            return {"audio_token": self.model.audio(torch.as_tensor(feed["audio_window"])).numpy()}


def torch_tokens(model, pf: ParityFrames) -> np.ndarray:
    """-> tokens [F, 4, 64] float32 of the parity frames from the torch model."""
    import torch

    with torch.no_grad():
        t = model.forward_tokens(torch.from_numpy(np.ascontiguousarray(pf.windows, np.float32)),
                                 torch.from_numpy(np.ascontiguousarray(pf.blink, np.float32)),
                                 torch.from_numpy(np.ascontiguousarray(pf.c2w, np.float32)))
    return np.ascontiguousarray(t.numpy(), np.float32)


def raster_backend() -> str:
    from gt_runtime.playback.pipeline import cpu_raster_available

    return "cpu" if cpu_raster_available() else "reference"


def render(bundle, scene, frames, offsets: dict, backend: str) -> np.ndarray:
    """Canonical Gaussians + offsets {dmu [F, N, 3], ..} -> uint8 frames [F, H, W, 3], as gt_runtime.playback.pipeline renders them."""
    from gt_runtime import raster
    from gt_runtime.model.reference import CANONICAL_KEYS, apply_offsets
    from gt_runtime.playback.pipeline import to_uint8

    canon = {k: bundle.gaussians[k] for k in CANONICAL_KEYS}
    off = {k: to_numpy(offsets[k]).astype(np.float32) for k in OFFSET_NAMES}
    out = np.empty((len(frames), bundle.height, bundle.width, 3), np.uint8)
    for b, t in enumerate(frames):
        ti = int(scene.track_index(int(t)))
        g = apply_offsets(canon, {k: v[b] for k, v in off.items()})
        img = raster.rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["sh"], scene.viewmats[ti], bundle.K,
                               bundle.width, bundle.height, background=scene.background_of_track(ti), backend=backend)
        to_uint8(img, out[b])
    return out


def image_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """uint8 images -> PSNR in dB (capped at PSNR_CAP)."""
    return float(min(psnr(a, b, 255.0), PSNR_CAP))


def run_parity(model, bundle, pf: ParityFrames, deform_runners: dict, audio_runners: dict,
               backend: str | None = None) -> tuple[dict, dict]:
    """Torch vs every engine -> (report dict for the manifest, renders {name: uint8 [F,H,W,3]}).

    deform_runners / audio_runners: precision label (e.g. "onnxruntime-fp16") -> Runner.
    report = {"reference", "frames", "raster", "audio_encoder": {label: {max_abs, mean_abs}},
              "engines": {label: {"outputs": {name: {max_abs, mean_abs, p99_abs}}, "max_abs",
              "render_psnr_db" (all frames pooled), "render_psnr_min_db" (worst frame), "gt_psnr_db"}},
              "torch_gt_psnr_db"}
    """
    from gt_runtime.playback.scene import Scene

    backend = backend or raster_backend()
    scene = Scene(bundle)
    tokens = torch_tokens(model, pf)
    feed = {"tokens": tokens, "queries": bundle.gaussians["queries"]}
    report = {"reference": REFERENCE, "frames": [int(t) for t in pf.frames], "raster": backend,
              "audio_encoder": {}, "engines": {}}
    ref_audio = TorchAudioRunner(model).activate().infer({"audio_window": np.ascontiguousarray(pf.windows, np.float32)})
    for label, runner in audio_runners.items():
        with runner:
            out = runner.infer({"audio_window": np.ascontiguousarray(pf.windows, np.float32)})
        c = compare_outputs(ref_audio, out, ref_name=REFERENCE, other_name=label).outputs["audio_token"]
        report["audio_encoder"][label] = {"max_abs": c.max_abs, "mean_abs": c.mean_abs}
    ref = TorchDeformRunner(model, bundle.gaussians["queries"]).activate().infer(feed)
    renders = {REFERENCE: render(bundle, scene, pf.frames, ref, backend)}
    if pf.ground_truth is not None:
        report["torch_gt_psnr_db"] = image_psnr(renders[REFERENCE], pf.ground_truth)
    for label, runner in deform_runners.items():
        with runner:
            # one frame per call keeps TensorRT within its batch profile; errors are pooled
            outs = [runner.infer({"tokens": tokens[i:i + 1], "queries": feed["queries"]}) for i in range(len(tokens))]
        out = {k: np.concatenate([to_numpy(o[k]) for o in outs]) for k in OFFSET_NAMES}
        cmp = compare_outputs(ref, out, ref_name=REFERENCE, other_name=label)
        img = render(bundle, scene, pf.frames, out, backend)
        renders[label] = img
        per_frame = [image_psnr(img[i], renders[REFERENCE][i]) for i in range(len(img))]
        row = {"outputs": {k: {"max_abs": o.max_abs, "mean_abs": o.mean_abs, "p99_abs": o.p99_abs} for k, o in cmp.outputs.items()},
               "max_abs": cmp.max_abs, "render_psnr_db": image_psnr(img, renders[REFERENCE]),
               "render_psnr_min_db": float(min(per_frame))}
        if pf.ground_truth is not None:
            row["gt_psnr_db"] = image_psnr(img, pf.ground_truth)
            row["gt_psnr_drop_db"] = report["torch_gt_psnr_db"] - row["gt_psnr_db"]
        report["engines"][label] = row
    return report, renders


def print_table(report: dict, console=None, verdicts: dict | None = None) -> None:
    """The parity report as a rich table (stderr by default). verdicts: label -> short status text."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = console or Console(file=sys.stderr)
    verdicts = verdicts or {}
    t = Table(title=f"parity vs {report['reference']} on {len(report['frames'])} val frames (raster: {report['raster']})")
    for col, just in (("engine", "left"), ("output", "left"), ("max abs", "right"), ("mean abs", "right"),
                      ("render PSNR dB (min)", "right"), ("PSNR vs GT dB", "right"), ("status", "left")):
        t.add_column(col, justify=just)
    fe = report.get("audio_frontend")
    if fe:
        for what, c in (("vs torch (at gt preprocess)", fe.get("onnx_vs_torch")), ("vs the dataset's features", fe.get("bundle_vs_dataset"))):
            if c:
                t.add_row(f"audio front end ({fe['name']})", what, f"{c['max_abs']:.2e}", f"{c['mean_abs']:.2e}", "", "",
                          verdicts.get("audio_frontend", ""))
    for label, a in report["audio_encoder"].items():
        t.add_row(label, "audio_token", f"{a['max_abs']:.2e}", f"{a['mean_abs']:.2e}", "", "", verdicts.get(f"audio:{label}", ""))
    if "torch_gt_psnr_db" in report:
        t.add_row(report["reference"], "", "", "", "", f"{report['torch_gt_psnr_db']:.2f}", "reference")
    for label, row in report["engines"].items():
        t.add_section()
        for i, (name, o) in enumerate(row["outputs"].items()):
            first = i == 0
            t.add_row(label if first else "", name, f"{o['max_abs']:.2e}", f"{o['mean_abs']:.2e}",
                      f"{row['render_psnr_db']:.2f} ({row['render_psnr_min_db']:.2f})" if first else "",
                      f"{row['gt_psnr_db']:.2f}" if first and "gt_psnr_db" in row else "",
                      verdicts.get(label, "") if first else "")
    console.print(t)
